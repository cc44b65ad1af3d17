"""Row mapping and input validation shared by the SQL drivers: one place for every model's columns."""

from __future__ import annotations

import base64
import binascii
import dataclasses
import gc
import json
import re
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from json.scanner import make_scanner
from typing import Any, TypeVar

from planflow.errors import ValidationError
from planflow.models import (
    APIKey,
    ComponentType,
    ExecutionType,
    JsonObject,
    JsonValue,
    Role,
    TaskFilter,
    TaskState,
    TaskStatus,
    UsageEntry,
    UsageSummary,
    User,
    WorkflowFilter,
    WorkflowState,
)

E = TypeVar("E", TaskStatus, ExecutionType, ComponentType, Role)
R = TypeVar("R")

TASK_COLUMNS = (
    "task_exec_id, task_id, workflow_exec_id, workflow_id, component, status, execution_type, "
    "parent_state_id, agent_id, action_id, tool_id, input, output, error, usage, version, created_at, updated_at"
)
WORKFLOW_COLUMNS = (
    "workflow_exec_id, workflow_id, status, usage, input, output, error, version, created_at, updated_at"
)
USER_COLUMNS = "id, email, role, created_at, updated_at"
API_KEY_COLUMNS = "id, user_id, fingerprint, prefix, created_at, last_used"

#: ``\u0000`` in JSON text, not preceded by an escaped backslash (which would make it the six characters).
_ESCAPED_NUL = re.compile(r"(?<!\\)(?:\\\\)*\\u0000")
_STATUS = {s.value: s for s in TaskStatus}
_EXEC_TYPE = {e.value: e for e in ExecutionType}
_COMPONENT = {c.value: c for c in ComponentType}


def now() -> datetime:
    """The current time as an aware UTC datetime (the repositories' clock)."""
    return datetime.now(UTC)


def enum_value(kind: type[E], value: object, field: str) -> E:
    """``value`` as a member of ``kind``.

    Raises:
        ValidationError: naming ``field``, the value and the accepted ones.
    """
    try:
        return kind(value)
    except ValueError:
        accepted = ", ".join(m.value for m in kind)
        raise ValidationError(f"{field} {value!r} is not one of: {accepted}") from None


def require_id(value: object, field: str) -> str:
    """Check that an id is a non-empty string."""
    if not isinstance(value, str) or not value:
        raise ValidationError(f"{field} must be a non-empty string, got {value!r}")
    return value


def dump_json(value: JsonValue, field: str, *, owner: str) -> str | None:
    """Serialise a JSON object field; ``None`` stays NULL.

    Raises:
        ValidationError: ``value`` is not a dict, or holds something JSON cannot represent (named in the message).
    """
    if value is None:
        return None
    if not isinstance(value, dict):
        raise ValidationError(
            f"{field} of {owner} must be a JSON object (dict) or None, got {type(value).__name__}"
        )
    try:
        text = json.dumps(value, ensure_ascii=False, allow_nan=False, separators=(",", ":"))
    except (TypeError, ValueError) as exc:
        raise ValidationError(f"{field} of {owner} is not JSON-serialisable: {exc}") from exc
    if "\\u0000" in text and _ESCAPED_NUL.search(text):
        # PostgreSQL's jsonb cannot hold NUL; refusing it everywhere keeps every store copyable to every other.
        raise ValidationError(
            f"{field} of {owner} contains a NUL character (\\u0000), which cannot be stored"
        )
    return text


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


def load_json(text: object) -> JsonObject | None:
    """Parse a JSON column (``None`` for NULL)."""
    if text is None:
        return None
    loaded: JsonObject = loads(text)  # pyright: ignore[reportArgumentType]
    return loaded


def dump_usage(usage: UsageSummary | None, owner: str) -> str | None:
    """Serialise a usage summary as a JSON list of entries."""
    if usage is None:
        return None
    if not isinstance(usage, UsageSummary):  # pyright: ignore[reportUnnecessaryIsInstance]
        raise ValidationError(f"usage of {owner} must be a UsageSummary or None, got {type(usage).__name__}")
    entries: list[dict[str, object]] = []
    for entry in usage.entries:
        if not isinstance(entry, UsageEntry):  # pyright: ignore[reportUnnecessaryIsInstance]
            raise ValidationError(f"usage of {owner} holds {type(entry).__name__}, not UsageEntry")
        entries.append(
            {
                "provider": entry.provider,
                "model": entry.model,
                "source": entry.source,
                "prompt_tokens": entry.prompt_tokens,
                "completion_tokens": entry.completion_tokens,
                "total_tokens": entry.total_tokens,
            }
        )
    return json.dumps(entries, ensure_ascii=False, separators=(",", ":"))


def load_usage(text: object) -> UsageSummary | None:
    """Parse a usage column (``None`` for NULL)."""
    if text is None:
        return None
    items: list[dict[str, Any]] = loads(text)  # pyright: ignore[reportArgumentType]
    # Positional arguments: a read maps this per row, and keywords cost 15% more (dump_usage writes all six).
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
                )
                for item in items
            ]
        )
    )


def task_params(state: TaskState, dialect_json: Callable[[str], object]) -> list[object]:
    """Validated parameters of a task state, in ``TASK_COLUMNS`` order up to ``usage`` (15 values).

    Raises:
        ValidationError: a bad id, enum value, JSON field, or a task that is its own parent; nothing is written.
    """
    if not isinstance(state, TaskState):  # pyright: ignore[reportUnnecessaryIsInstance]
        raise ValidationError(f"expected a TaskState, got {type(state).__name__}")
    owner = f"task {state.task_exec_id!r}"
    task_exec_id = require_id(state.task_exec_id, "task_exec_id")
    if state.parent_state_id is not None:
        require_id(state.parent_state_id, "parent_state_id")
        if state.parent_state_id == task_exec_id:
            raise ValidationError(f"{owner} cannot be its own parent")

    def json_or_none(text: str | None) -> object:
        return None if text is None else dialect_json(text)

    return [
        task_exec_id,
        require_id(state.task_id, "task_id"),
        require_id(state.workflow_exec_id, "workflow_exec_id"),
        require_id(state.workflow_id, "workflow_id"),
        enum_value(ComponentType, state.component, "component").value,
        enum_value(TaskStatus, state.status, "status").value,
        enum_value(ExecutionType, state.execution_type, "execution_type").value,
        state.parent_state_id,
        state.agent_id,
        state.action_id,
        state.tool_id,
        json_or_none(dump_json(state.input, "input", owner=owner)),
        json_or_none(dump_json(state.output, "output", owner=owner)),
        json_or_none(dump_json(state.error, "error", owner=owner)),
        json_or_none(dump_usage(state.usage, owner)),
    ]


def stored_meta(
    version: object, created_at: object, updated_at: object, owner: str
) -> tuple[int, datetime, datetime]:
    """Check the version and timestamps of a record imported verbatim.

    Raises:
        ValidationError: a version below 1 or a missing or naive timestamp.
    """
    if isinstance(version, bool) or not isinstance(version, int) or version < 1:
        raise ValidationError(f"{owner} must have a version >= 1 to be imported, got {version!r}")
    for name, stamp in (("created_at", created_at), ("updated_at", updated_at)):
        if not isinstance(stamp, datetime) or stamp.tzinfo is None:
            raise ValidationError(f"{owner} must have a timezone-aware {name} to be imported, got {stamp!r}")
    assert isinstance(created_at, datetime) and isinstance(updated_at, datetime)
    return version, created_at, updated_at


#: Result sets at least this long are mapped with the cyclic garbage collector paused (see map_rows).
GC_PAUSE_ROWS = 2000


def map_rows(rows: Sequence[Sequence[Any]], build: Callable[[Sequence[Any]], R]) -> list[R]:
    """``[build(row) for row in rows]``, pausing the cyclic garbage collector for large result sets.

    Mapping creates many container objects (dicts of JSON, dataclasses) and no reference cycles; the
    collections those allocations trigger find nothing to free but traverse every live object, which makes
    large reads grow faster than their size (measured: a 100 000-task tree 28% slower with it running).
    """
    if len(rows) < GC_PAUSE_ROWS or not gc.isenabled():
        return [build(row) for row in rows]
    gc.disable()
    try:
        return [build(row) for row in rows]
    finally:
        gc.enable()


def task_from_row(row: Sequence[Any], load_ts: Callable[[Any], datetime]) -> TaskState:
    """A TaskState from a row selected as ``TASK_COLUMNS``."""
    return TaskState(
        row[0],
        row[1],
        row[2],
        row[3],
        _COMPONENT[row[4]],
        _STATUS[row[5]],
        _EXEC_TYPE[row[6]],
        row[7],
        row[8],
        row[9],
        row[10],
        None if row[11] is None else loads(row[11]),
        None if row[12] is None else loads(row[12]),
        None if row[13] is None else loads(row[13]),
        None if row[14] is None else load_usage(row[14]),
        row[15],
        load_ts(row[16]),
        load_ts(row[17]),
    )


def workflow_params(state: WorkflowState, dialect_json: Callable[[str], object]) -> list[object]:
    """Validated parameters of a workflow state in ``WORKFLOW_COLUMNS`` order up to ``error`` (7 values)."""
    if not isinstance(state, WorkflowState):  # pyright: ignore[reportUnnecessaryIsInstance]
        raise ValidationError(f"expected a WorkflowState, got {type(state).__name__}")
    owner = f"workflow {state.workflow_exec_id!r}"

    def json_or_none(text: str | None) -> object:
        return None if text is None else dialect_json(text)

    return [
        require_id(state.workflow_exec_id, "workflow_exec_id"),
        require_id(state.workflow_id, "workflow_id"),
        enum_value(TaskStatus, state.status, "status").value,
        json_or_none(dump_usage(state.usage, owner)),
        json_or_none(dump_json(state.input, "input", owner=owner)),
        json_or_none(dump_json(state.output, "output", owner=owner)),
        json_or_none(dump_json(state.error, "error", owner=owner)),
    ]


def workflow_from_row(
    row: Sequence[Any], load_ts: Callable[[Any], datetime], tasks: dict[str, TaskState] | None = None
) -> WorkflowState:
    """A WorkflowState from a row selected as ``WORKFLOW_COLUMNS``."""
    return WorkflowState(
        workflow_exec_id=row[0],
        workflow_id=row[1],
        status=_STATUS[row[2]],
        usage=load_usage(row[3]),
        input=load_json(row[4]),
        output=load_json(row[5]),
        error=load_json(row[6]),
        version=row[7],
        created_at=load_ts(row[8]),
        updated_at=load_ts(row[9]),
        tasks={} if tasks is None else tasks,
    )


def user_from_row(row: Sequence[Any], load_ts: Callable[[Any], datetime]) -> User:
    """A User from a row selected as ``USER_COLUMNS``."""
    return User(row[0], row[1], Role(row[2]), load_ts(row[3]), load_ts(row[4]))


def api_key_from_row(row: Sequence[Any], load_ts: Callable[[Any], datetime]) -> APIKey:
    """An APIKey from a row selected as ``API_KEY_COLUMNS``."""
    return APIKey(
        row[0], row[1], row[2], row[3], load_ts(row[4]), None if row[5] is None else load_ts(row[5])
    )


def encode_cursor(created_at: datetime, key: str) -> str:
    """An opaque page cursor for the keyset ``(created_at, key)``."""
    raw = json.dumps([created_at.isoformat(), key], ensure_ascii=False).encode()
    return base64.urlsafe_b64encode(raw).decode("ascii")


def decode_cursor(cursor: str) -> tuple[datetime, str]:
    """The keyset of a cursor made by :func:`encode_cursor`.

    Raises:
        ValidationError: the cursor was not made by planflow.
    """
    try:
        stamp, key = json.loads(base64.urlsafe_b64decode(cursor.encode("ascii")))
        moment = datetime.fromisoformat(stamp)
        if not isinstance(key, str) or moment.tzinfo is None:
            raise ValueError("bad cursor payload")
    except (ValueError, TypeError, binascii.Error, UnicodeError) as exc:
        raise ValidationError(f"invalid page cursor {cursor!r}") from exc
    return moment, key


def filter_where(
    filter: TaskFilter | WorkflowFilter | None,
    key: str,
    cursor: str | None,
    ts_param: Callable[[datetime], object],
) -> tuple[str, list[object]]:
    """The WHERE clause (``''`` or starting with a space) and parameters of a listing.

    Every non-``None`` field of ``filter`` is an equality on the column of the same name (the filter classes'
    field names are the only column names that get here), ANDed with the keyset ``(created_at, key) > cursor``.
    """
    conditions: list[str] = []
    params: list[object] = []
    if filter is not None:
        for field in dataclasses.fields(filter):
            value = getattr(filter, field.name)
            if value is not None:
                conditions.append(f"{field.name} = ?")
                params.append(str(value))
    if cursor is not None:
        created, last_key = decode_cursor(cursor)
        conditions.append(f"(created_at, {key}) > (?, ?)")
        params += [ts_param(created), last_key]
    return (f" WHERE {' AND '.join(conditions)}" if conditions else ""), params


def check_limit(limit: int) -> int:
    """A page size must be a positive int."""
    if isinstance(limit, bool) or not isinstance(limit, int) or limit < 1:  # pyright: ignore[reportUnnecessaryIsInstance]
        raise ValidationError(f"limit must be a positive integer, got {limit!r}")
    return limit
