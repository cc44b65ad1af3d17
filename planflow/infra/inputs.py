"""The input rules of DESIGN.md, in one place, the same for every driver and both APIs.

A value one driver accepts, every driver accepts (so ``planflow copy`` never fails on data it read), and
whatever is accepted reads back equal. Ids are non-empty ``str`` of at most 512 characters with no NUL and no
lone surrogate; JSON values nest at most 256 levels, hold only JSON types (a tuple would read back as a list)
and finite floats, and their strings carry no NUL and no lone surrogate; token counts are non-negative ints;
limits and depths are ints within 1..2**31-1, versions within 0..2**31-1. Anything else is a
:class:`ValidationError` (a :class:`WrongTypeError` for a value of the wrong type) naming the field, raised
before the database is touched.

Arguments reach the checks through one layer: the generated adapters (``planflow/infra/facades``) check every
argument of every public method by its type (``planflow.arguments`` names the rule of each argument type), once,
on the way in; the rules of a record's fields are applied by the code that encodes the record for its store, as
it encodes it. Nothing is checked twice on the way down.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Iterable, Mapping
from datetime import UTC, datetime, timedelta
from enum import Enum
from typing import TypeVar, cast

from planflow.errors import ValidationError, WrongTypeError
from planflow.models import JsonObject, TaskStatus, UsageEntry, UsageSummary

T = TypeVar("T")
E = TypeVar("E", bound=Enum)

MAX_ID_LENGTH = 512
MAX_JSON_DEPTH = 256
MAX_INT32 = 2**31 - 1
MAX_TOKENS = 2**63 - 1

#: ``\u0000`` in JSON text, not preceded by an escaped backslash (which would make it the six characters).
_ESCAPED_NUL = re.compile(r"(?<!\\)(?:\\\\)*\\u0000")


def _unicode_problem(text: str) -> str | None:
    """Why ``text`` cannot be stored as text by every engine, or ``None``."""
    if "\x00" in text:
        return "contains a NUL character"
    if not text.isascii():
        try:
            text.encode("utf-8")
        except UnicodeEncodeError as exc:
            return f"is not valid Unicode ({exc.reason} at index {exc.start})"
    return None


def wrong_type(field: str, expected: str, value: object) -> WrongTypeError:
    """The error for ``value`` given where ``expected`` was asked for."""
    return WrongTypeError(f"{field} must be {expected}, received {type(value).__name__}")


def check_id(value: object, field: str) -> str:
    """An id: a non-empty str of at most 512 characters, without NUL or lone surrogates."""
    if type(value) is str and 0 < len(value) <= MAX_ID_LENGTH and value.isascii() and "\x00" not in value:
        return value  # the common case, decided without a function call
    if not isinstance(value, str):
        raise wrong_type(field, "a string", value)
    if not value or len(value) > MAX_ID_LENGTH:
        raise ValidationError(f"{field} must be 1 to {MAX_ID_LENGTH} characters long, got {len(value)}")
    problem = _unicode_problem(value)
    if problem is not None:
        raise ValidationError(f"{field} {problem}")
    return str(value)


def check_optional_id(value: object, field: str) -> str | None:
    """``None`` or an id."""
    return None if value is None else check_id(value, field)


def check_text(value: object, field: str, *, max_length: int | None = None) -> str:
    """Free text (which may be empty): a str without NUL or lone surrogates."""
    if not isinstance(value, str):
        raise wrong_type(field, "a string", value)
    if max_length is not None and len(value) > max_length:
        raise ValidationError(f"{field} must be at most {max_length} characters long, got {len(value)}")
    problem = _unicode_problem(value)
    if problem is not None:
        raise ValidationError(f"{field} {problem}")
    return str(value)


def check_int(value: object, field: str, low: int, high: int) -> int:
    """An int (not a bool) within ``low..high``."""
    if type(value) is not int:
        if not isinstance(value, int) or isinstance(value, bool):
            raise wrong_type(field, "an integer", value)
        value = int(value)
    if not low <= value <= high:
        raise ValidationError(f"{field} must be within {low}..{high}, got {value}")
    return value


def check_limit(value: object, field: str = "limit") -> int:
    """A page size, batch size or depth: an int within 1..2**31-1."""
    return check_int(value, field, 1, MAX_INT32)


def check_version(value: object, field: str = "expected_version") -> int:
    """A version: an int within 0..2**31-1."""
    return check_int(value, field, 0, MAX_INT32)


def check_history_id(value: object, field: str = "after") -> int:
    """A history record's id (``HistoryRecord.history_id``), or 0 for before the first: an int within 0..2**63-1."""
    return check_int(value, field, 0, 2**63 - 1)


def check_priority(value: object, field: str = "priority") -> int:
    """A priority: an int within -2**31..2**31-1 (higher first)."""
    return check_int(value, field, -MAX_INT32 - 1, MAX_INT32)


def check_optional_count(value: object, field: str) -> int | None:
    """``None`` (unlimited) or a count within 1..2**31-1 (``max_attempts``)."""
    return None if value is None else check_limit(value, field)


def check_tokens(value: object, field: str) -> int:
    """A token count: a non-negative int."""
    return check_int(value, field, 0, MAX_TOKENS)


def check_aware(value: object, field: str) -> datetime:
    """A timezone-aware datetime."""
    if not isinstance(value, datetime):
        raise wrong_type(field, "a datetime", value)
    if value.tzinfo is None or value.utcoffset() is None:
        raise ValidationError(f"{field} must be timezone-aware, got the naive {value.isoformat()}")
    try:
        value.astimezone(UTC)  # stored and compared in UTC: the first and last hours of years 1..9999 are not
    except OverflowError:
        raise ValidationError(
            f"{field} {value.isoformat()} lies outside the years 1 to 9999 in UTC"
        ) from None
    return value


def check_seconds(value: object, field: str) -> float:
    """A positive, finite number of seconds (a ``timedelta`` or a number)."""
    seconds = value.total_seconds() if isinstance(value, timedelta) else value
    if isinstance(seconds, bool) or not isinstance(seconds, int | float):
        raise wrong_type(field, "a number of seconds or a timedelta", value)
    try:
        number = float(seconds)
    except OverflowError:  # an int beyond any float
        number = math.inf
    if not math.isfinite(number) or number <= 0:
        raise ValidationError(f"{field} must be a positive, finite number of seconds, got {seconds!r}")
    return number


#: Longest lease a claim or heartbeat takes (a year): a lease is a promise to report back, not a reservation.
MAX_LEASE_SECONDS = 365 * 24 * 3600


def check_lease(value: object, field: str = "lease") -> float:
    """A lease: a positive, finite number of seconds (or a ``timedelta``) of at most a year."""
    seconds = check_seconds(value, field)
    if seconds > MAX_LEASE_SECONDS:
        raise ValidationError(
            f"{field} must be at most {MAX_LEASE_SECONDS} seconds (a year), got {seconds!r}"
        )
    return seconds


def check_enum(kind: type[E], value: object, field: str) -> E:
    """``value`` as a member of ``kind`` (a member or its value)."""
    if isinstance(value, kind):
        return value
    try:
        return kind(value)
    except (ValueError, TypeError):
        accepted = ", ".join(str(m.value) for m in kind)
        raise ValidationError(f"{field} {value!r} is not one of: {accepted}") from None


#: The token counts of a usage entry.
TOKEN_FIELDS = ("prompt_tokens", "completion_tokens", "total_tokens", "cached_tokens", "reasoning_tokens")
#: Longest provider, model or source name of a usage entry.
MAX_USAGE_NAME = 512


def _plain_name(text: object) -> bool:
    return type(text) is str and len(text) <= MAX_USAGE_NAME and text.isascii() and "\x00" not in text


def _plain_count(count: object) -> bool:
    return type(count) is int and 0 <= count <= MAX_TOKENS


def _plain_entry(entry: UsageEntry) -> bool:
    """Whether every field of ``entry`` is plainly valid (ASCII names, int counts); if not, the checks say why."""
    return (
        _plain_name(entry.provider)
        and _plain_name(entry.model)
        and _plain_name(entry.source)
        and _plain_count(entry.prompt_tokens)
        and _plain_count(entry.completion_tokens)
        and _plain_count(entry.total_tokens)
        and _plain_count(entry.cached_tokens)
        and _plain_count(entry.reasoning_tokens)
    )


def check_usage(value: object, field: str = "usage") -> UsageSummary:
    """A UsageSummary of UsageEntry values: names are text of at most 512 characters, counts non-negative ints."""
    summary = check_instance(value, UsageSummary, field)
    for given in summary.entries:
        if type(given) is UsageEntry and _plain_entry(given):
            continue  # the common case, decided without a call per field
        entry = check_instance(given, UsageEntry, f"an entry of {field}")
        check_text(entry.provider, f"{field} provider", max_length=MAX_USAGE_NAME)
        check_text(entry.model, f"{field} model", max_length=MAX_USAGE_NAME)
        check_text(entry.source, f"{field} source", max_length=MAX_USAGE_NAME)
        for name in TOKEN_FIELDS:
            check_tokens(getattr(entry, name), f"{field} {name}")
    return summary


def check_instance(value: object, kind: type[T], field: str) -> T:
    """``value`` if it is a ``kind`` (a subclass included), else a WrongTypeError naming both types."""
    if not isinstance(value, kind):
        raise wrong_type(field, f"a {kind.__name__}", value)
    return value


def dump_json(value: object, field: str) -> str:
    """JSON text of a value that every driver stores and reads back equal.

    Raises:
        ValidationError: something JSON cannot hold the same way on every engine, named in the message.
    """
    _check_json_tree(value, field)
    try:
        text = json.dumps(
            value, ensure_ascii=False, allow_nan=False, separators=(",", ":"), check_circular=False
        )
    except ValueError as exc:  # a non-finite float, or an int too long to print
        raise ValidationError(f"{field} is not storable as JSON: {exc}") from None
    if "\\u0000" in text and _ESCAPED_NUL.search(text):
        # PostgreSQL's jsonb cannot hold NUL; refusing it everywhere keeps every store copyable to every other.
        raise ValidationError(f"{field} contains a NUL character (\\u0000), which cannot be stored")
    if not text.isascii():
        try:
            text.encode("utf-8")
        except UnicodeEncodeError as exc:
            raise ValidationError(f"{field} holds text that is not valid Unicode ({exc.reason})") from None
    return text


def _check_json_tree(value: object, field: str) -> None:
    # An explicit stack: a value nested deeper than Python's recursion limit must be refused, not crash us.
    stack: list[tuple[Iterable[object], int]] = []
    _push_json(stack, value, 0, field)
    while stack:
        children, depth = stack.pop()
        for child in children:
            _push_json(stack, child, depth, field)


def _push_json(stack: list[tuple[Iterable[object], int]], node: object, depth: int, field: str) -> None:
    """Check one node; a container's children go on ``stack`` one level deeper."""
    if node is None or isinstance(node, str | int | float):
        return
    if isinstance(node, dict):
        mapping = cast("dict[object, object]", node)
        for key in mapping:
            if not isinstance(key, str):
                raise wrong_type(f"a key in {field}", "a string", key)
        children: Iterable[object] = mapping.values()
    elif isinstance(node, list):
        children = cast("list[object]", node)
    else:
        raise wrong_type(f"a value in {field}" if depth else field, "a JSON value", node)
    if depth >= MAX_JSON_DEPTH:
        raise ValidationError(f"{field} nests deeper than {MAX_JSON_DEPTH} levels")
    stack.append((children, depth + 1))


def dump_json_object(value: object, field: str) -> str | None:
    """JSON text of a JSON object field (``None`` stays NULL)."""
    if value is None:
        return None
    if not isinstance(value, dict):
        raise wrong_type(field, "a JSON object (dict) or None", value)
    return dump_json(cast("dict[str, object]", value), field)


# Checks of arguments, by their types (the generated adapters call them; see tools/generate_adapters.py) ----


def check_email(value: object, field: str) -> str:
    """An email address: text of at most 320 characters with an ``@``, no surrounding spaces."""
    text = check_text(value, field, max_length=320)
    if "@" not in text or text != text.strip():
        raise ValidationError(f"{field} {text!r} is not an email address")
    return text


def check_cursor(value: object, field: str) -> str:
    """A page cursor (its content is checked where it is decoded; here only that it can be one)."""
    if not isinstance(value, str):
        raise wrong_type(field, "a cursor string from a previous page", value)
    return value


def check_ids(value: object, field: str) -> list[str]:
    """A sequence of ids (not a single string), as a list."""
    if isinstance(value, str | bytes) or not isinstance(value, Iterable):
        raise wrong_type(field, "a sequence of ids", value)
    ids = list(cast("Iterable[object]", value))
    for item in ids:
        check_id(item, f"an id in {field}")
    return cast("list[str]", ids)


def check_iterable(value: Iterable[T], field: str) -> Iterable[T]:
    """An iterable of records (not a string or a mapping): its items are checked one by one as they are written,
    since it may be a generator of millions."""
    given = cast(object, value)  # the caller may pass anything at all
    if isinstance(given, str | bytes | Mapping) or not isinstance(given, Iterable):
        raise wrong_type(field, "an iterable", value)
    return value


def check_callable(value: T, field: str) -> T:
    """Something to call."""
    if not callable(value):
        raise wrong_type(field, "a callable", value)
    return value


def check_choice(value: T, choices: tuple[object, ...], field: str) -> T:
    """One of ``choices`` (the values of a ``Literal``)."""
    if value not in choices:
        raise ValidationError(f"{field} must be {' or '.join(repr(c) for c in choices)}, got {value!r}")
    return value


def check_exact(value: object, kind: type[T], field: str) -> T:
    """``value`` if it is exactly a ``kind`` (a filter: no look-alike whose field names reach SQL)."""
    if type(value) is not kind:
        raise wrong_type(field, f"a {kind.__name__}", value)
    return cast(T, value)


def check_bool(value: object, field: str) -> bool:
    """True or False (not a truthy value)."""
    if not isinstance(value, bool):
        raise wrong_type(field, "True or False", value)
    return value


def check_past(value: object, field: str) -> datetime:
    """An aware datetime that is not in the future."""
    moment = check_aware(value, field)
    if moment > datetime.now(moment.tzinfo):
        raise ValidationError(f"{field} must not be in the future, got {moment.isoformat()}")
    return moment


def check_statuses(value: object, field: str = "statuses") -> frozenset[TaskStatus]:
    """A non-empty collection of statuses (``TaskStatus`` members or their values), as a frozenset of members."""
    if isinstance(value, str | bytes | Mapping) or not isinstance(value, Iterable):
        raise wrong_type(field, "a collection of TaskStatus", cast(object, value))
    found = frozenset(
        check_enum(TaskStatus, item, f"a status in {field}") for item in cast("Iterable[object]", value)
    )
    if not found:
        raise ValidationError(f"{field} must name at least one status")
    return found


def check_timeout(value: object, field: str) -> float:
    """Zero, or a positive, finite number of seconds."""
    if value == 0 and not isinstance(value, bool):
        return 0.0
    return check_seconds(value, field)


def check_delay(value: object, field: str) -> float:
    """A delay: zero, or a positive, finite number of seconds (or a ``timedelta``) of at most a year."""
    if isinstance(value, timedelta) and value == timedelta(0):
        return 0.0
    if value == 0 and not isinstance(value, bool):
        return 0.0
    return check_lease(value, field)


def check_json_object(value: object, field: str) -> JsonObject:
    """A JSON object (a ``dict`` whose values are JSON values, as a stored JSON field takes)."""
    if not isinstance(value, dict):
        raise wrong_type(field, "a JSON object (dict)", value)
    dump_json(cast("dict[str, object]", value), field)
    return cast("JsonObject", value)


def check_size(value: object, field: str) -> int:
    """A bound that may be zero: an int within 0..2**31-1 (a concurrency limit; 0 pauses the key)."""
    return check_int(value, field, 0, MAX_INT32)


def check_rate(value: object, field: str) -> tuple[int, float]:
    """A rate: ``(count, per_seconds)``, ``count`` within 0..2**31-1 and ``per_seconds`` a positive, finite
    number of seconds of at most a year."""
    pair = tuple(cast("tuple[object, ...]", value)) if isinstance(value, tuple | list) else ()
    if len(pair) != 2:
        raise WrongTypeError(
            f"{field} must be a (count, per_seconds) pair, received {type(cast(object, value)).__name__}"
        )
    count, per = pair
    return (check_size(count, f"{field} count"), check_lease(per, f"{field} per_seconds"))
