"""Values shared by the SQL repositories: the clock, JSON and usage columns, page cursors, verbatim imports."""

from __future__ import annotations

import base64
import binascii
import json
from collections.abc import Callable
from datetime import UTC, datetime
from json.scanner import make_scanner
from typing import Any, cast

from planflow.errors import ValidationError
from planflow.infra import inputs
from planflow.models import UsageEntry, UsageSummary


def now() -> datetime:
    """The current time as an aware UTC datetime (the repositories' clock)."""
    return datetime.now(UTC)


#: ``(text, index) -> (value, end index)``: the C scanner that ``json.loads`` runs (typeshed's stub of its
#: constructor names the wrong argument type).
_scan_once: Callable[[str, int], tuple[Any, int]] = make_scanner(json.JSONDecoder())  # pyright: ignore[reportArgumentType]


def loads(text: str) -> Any:
    """``json.loads`` of a JSON column, at about half its cost on the small documents rows hold.

    Calls the C scanner that ``json.loads`` runs underneath directly: on a small object, ``json.loads``' own
    checks and whitespace handling cost as much again as the decoding (measured: 1.4 against 2.9 µs), and a
    row holds four such columns. Text that is not one JSON value from its first character to its last
    (whitespace around it, say, written by another tool) goes through ``json.loads``, which also raises the
    usual error for text that is not JSON.
    """
    try:
        value, end = _scan_once(text, 0)
    except StopIteration:
        return json.loads(text)
    return value if end == len(text) else json.loads(text)


#: The token counts of a usage entry, in the order of its fields and of the stored documents. Documents written
#: before schema 7 lack the last two; they read as 0.


def dump_usage(usage: object, field: str = "usage") -> str | None:
    """A usage summary as a JSON list of entries (``None`` stays NULL), checked (``inputs.check_usage``).

    Raises:
        ValidationError: not a UsageSummary of UsageEntry values, or a count that is not a non-negative int.
    """
    if usage is None:
        return None
    return usage_json(inputs.check_usage(usage, field))


def usage_json(summary: UsageSummary) -> str:
    """A summary whose values are known to be valid as the JSON text of its column."""
    entries = [
        {
            "provider": entry.provider,
            "model": entry.model,
            "source": entry.source,
            "prompt_tokens": entry.prompt_tokens,
            "completion_tokens": entry.completion_tokens,
            "total_tokens": entry.total_tokens,
            "cached_tokens": entry.cached_tokens,
            "reasoning_tokens": entry.reasoning_tokens,
        }
        for entry in summary.entries
    ]
    return json.dumps(entries, ensure_ascii=False, separators=(",", ":"))


def load_usage(text: object) -> UsageSummary | None:
    """Parse a usage column (``None`` for NULL)."""
    if text is None:
        return None
    items: list[dict[str, Any]] = loads(text)  # pyright: ignore[reportArgumentType]
    # Positional arguments: a read maps this per row, and keywords cost 15% more (dump_usage writes all eight;
    # entries stored before the cached and reasoning counts existed read them as 0).
    return UsageSummary(
        tuple(
            [
                UsageEntry(
                    item["provider"],
                    item["model"],
                    item["source"],
                    item["prompt_tokens"],
                    item["completion_tokens"],
                    item["total_tokens"],
                    item.get("cached_tokens", 0),
                    item.get("reasoning_tokens", 0),
                )
                for item in items
            ]
        )
    )


def stored_meta(
    version: object, created_at: object, updated_at: object, owner: str
) -> tuple[int, datetime, datetime]:
    """Check the version and timestamps of a record imported verbatim.

    Raises:
        ValidationError: a version outside 1..2**31-1, or a missing or naive timestamp.
    """
    checked = inputs.check_int(version, f"the version of {owner}", 1, inputs.MAX_INT32)
    return (
        checked,
        inputs.check_aware(created_at, f"created_at of {owner}"),
        inputs.check_aware(updated_at, f"updated_at of {owner}"),
    )


def encode_cursor(created_at: datetime, key: str, order: str = "asc") -> str:
    """An opaque page cursor for the keyset ``(created_at, key)`` of a listing in ``order``."""
    payload: list[str] = [created_at.isoformat(), key] + ([] if order == "asc" else [order])
    raw = json.dumps(payload, ensure_ascii=False).encode()
    return base64.urlsafe_b64encode(raw).decode("ascii")


def decode_cursor(cursor: str, order: str = "asc") -> tuple[datetime, str]:
    """The keyset of a cursor made by :func:`encode_cursor` for a listing in ``order``.

    Raises:
        ValidationError: the cursor was not made by planflow, or was made by a listing in the other order.
    """
    try:
        if len(cursor) > 4 * inputs.MAX_ID_LENGTH:
            raise ValueError("too long for a cursor")
        payload = json.loads(base64.urlsafe_b64decode(cursor.encode("ascii")))
        if not isinstance(payload, list) or len(payload) not in (2, 3):  # pyright: ignore[reportUnknownArgumentType]
            raise ValueError("bad cursor payload")
        stamp, key, *direction = cast("list[object]", payload)
        moment = datetime.fromisoformat(cast("str", stamp))
        if not isinstance(key, str) or moment.tzinfo is None or direction not in ([], ["desc"]):
            raise ValueError("bad cursor payload")
        inputs.check_id(key, "cursor")
        inputs.check_aware(moment, "cursor")  # one that no engine can compare (no UTC form) is not ours
    except (ValueError, TypeError, RecursionError, binascii.Error, UnicodeError, ValidationError) as exc:
        raise ValidationError(f"invalid page cursor {cursor[:80]!r}") from exc
    made_for = direction[0] if direction else "asc"
    if made_for != order:
        raise ValidationError(
            f"page cursor {cursor[:80]!r} continues a listing in {made_for!r} order, not {order!r}"
        )
    return moment, key
