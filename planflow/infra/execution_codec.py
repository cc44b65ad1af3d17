"""The JSON documents every driver stores for the add-on's models, and the checks that guard them.

:func:`task_to_doc`, :func:`occurrence_to_doc` and :func:`execution_to_doc` turn a model into the document
stored (datetimes as ``isoformat()`` strings, naive stays naive and aware stays aware; a timedelta as
seconds; the retry policy and the history as nested JSON); :func:`task_from_doc` and its siblings read one
back. Encoding applies the input rules of the design, the same on every driver: ids are non-empty strings
of at most 512 characters without NUL or a lone surrogate, text carries neither, counts are 64-bit integers,
and a datetime or timedelta is accepted only when its stored form reads back equal. Decoding checks the shape
of what it reads and names the record and field of anything wrong.

Wrong types raise :class:`~planflow.errors.WrongTypeError` when the value is not the model (or the argument)
asked for, and :class:`~planflow.errors.ValidationError` when a field of a model breaks a rule; the former is
also a ``TypeError``.
"""

from __future__ import annotations

import math
import reprlib
from collections.abc import Mapping
from datetime import UTC, datetime, timedelta
from typing import TypeVar, cast

from planflow.errors import ValidationError
from planflow.executions import (
    EVENT_KINDS,
    EXECUTION_STATES,
    PRIORITIES,
    EventKind,
    ExecutionStateName,
    Priority,
    RetryPolicy,
    TaskDefinition,
    TaskEvent,
    TaskExecution,
    TaskOccurrence,
)
from planflow.infra.inputs import check_id, check_text, wrong_type
from planflow.models import JsonValue

T = TypeVar("T")
L = TypeVar("L", bound=str)

#: Stored counts (retries) fit a signed 64-bit integer, which every driver's JSON reads back exactly.
MIN_COUNT, MAX_COUNT = -(2**63), 2**63 - 1


def require(value: object, expected: type[T], what: str = "value") -> T:
    """Return ``value`` if it is an instance of ``expected``.

    Args:
        value: What the caller passed.
        expected: The only accepted type (subclasses included).
        what: How to name ``value`` in the message, e.g. ``"add_task(task)"``.

    Raises:
        WrongTypeError: ``value`` is of another type; the message names the expected and the received type.
    """
    if not isinstance(value, expected):
        raise wrong_type(what, f"a {expected.__name__}", value)
    return value


# --- documents ---


def scheduled_before(occ: TaskOccurrence, before: datetime) -> bool:
    """Whether ``occ`` is scheduled before the aware ``before``: what ``executions.purge`` removes.

    A naive ``scheduled_for`` is the add-on's local time, read in this machine's time zone (as UTC where the
    platform cannot place it, far outside the years it knows).
    """
    moment = occ.scheduled_for
    if moment.utcoffset() is None:
        try:
            moment = moment.astimezone()
        except (OverflowError, OSError, ValueError):
            moment = moment.replace(tzinfo=UTC)
    return moment < before


def task_to_doc(task: TaskDefinition) -> dict[str, JsonValue]:
    """The JSON document stored for ``task``.

    Raises:
        WrongTypeError: ``task`` is not a :class:`TaskDefinition`, or its retry policy not a :class:`RetryPolicy`.
        ValidationError: A field breaks the input rules (named in the message).
    """
    task = require(task, TaskDefinition, "task")
    where = _Where(f"task {reprlib.repr(task.id)}")
    policy = require(task.retry_policy, RetryPolicy, where("retry_policy"))
    return {
        "id": check_id(task.id, where("id")),
        "title": check_text(task.title, where("title")),
        "description": _optional_text(task.description, where("description")),
        "link": _optional_text(task.link, where("link")),
        "created_at": _iso(task.created_at, where("created_at")),
        "recurrence": _optional_seconds(task.recurrence, where("recurrence")),
        "priority": _choice(task.priority, PRIORITIES, where("priority")),
        "preferred_slots": [
            check_text(slot, where("preferred_slots"))
            for slot in _list(task.preferred_slots, where("preferred_slots"))
        ],
        "retry_policy": {
            "max_retries": _count(policy.max_retries, where.inside("retry_policy")("max_retries"))
        },
        "pinned_time": _optional_iso(task.pinned_time, where("pinned_time")),
    }


def task_from_doc(doc: Mapping[str, object]) -> TaskDefinition:
    """The task stored as ``doc`` (the inverse of :func:`task_to_doc`).

    Raises:
        ValidationError: ``doc`` does not have the shape :func:`task_to_doc` produces; the message names the
            record and the field.
    """
    fast = _task_fast(doc)
    if fast is not None:
        return fast
    read = _Reader.record(doc, "task", "id")
    return TaskDefinition(
        id=read.text("id"),
        title=read.text("title"),
        description=read.optional_text("description"),
        link=read.optional_text("link"),
        created_at=read.moment("created_at"),
        recurrence=read.optional_span("recurrence"),
        priority=read.choice("priority", PRIORITIES),
        preferred_slots=read.texts("preferred_slots"),
        retry_policy=RetryPolicy(max_retries=read.nested("retry_policy").integer("max_retries")),
        pinned_time=read.optional_moment("pinned_time"),
    )


def occurrence_to_doc(occ: TaskOccurrence) -> dict[str, JsonValue]:
    """The JSON document stored for ``occ``.

    Raises:
        WrongTypeError: ``occ`` is not a :class:`TaskOccurrence`.
        ValidationError: A field breaks the input rules (named in the message).
    """
    occ = require(occ, TaskOccurrence, "occurrence")
    where = _Where(f"occurrence {reprlib.repr(occ.id)}")
    return {
        "id": check_id(occ.id, where("id")),
        "task_id": check_id(occ.task_id, where("task_id")),
        "scheduled_for": _iso(occ.scheduled_for, where("scheduled_for")),
        "slot_name": _optional_text(occ.slot_name, where("slot_name")),
        "pinned_time": _optional_iso(occ.pinned_time, where("pinned_time")),
    }


def occurrence_from_doc(doc: Mapping[str, object]) -> TaskOccurrence:
    """The occurrence stored as ``doc`` (the inverse of :func:`occurrence_to_doc`).

    Raises:
        ValidationError: ``doc`` does not have the expected shape; the message names the record and the field.
    """
    fast = _occurrence_fast(doc)
    if fast is not None:
        return fast
    read = _Reader.record(doc, "occurrence", "id")
    return TaskOccurrence(
        id=read.text("id"),
        task_id=read.text("task_id"),
        scheduled_for=read.moment("scheduled_for"),
        slot_name=read.optional_text("slot_name"),
        pinned_time=read.optional_moment("pinned_time"),
    )


def execution_to_doc(execution: TaskExecution) -> dict[str, JsonValue]:
    """The JSON document stored for ``execution``.

    Raises:
        WrongTypeError: ``execution`` is not a :class:`TaskExecution`, or its history holds something other
            than :class:`TaskEvent` values.
        ValidationError: A field breaks the input rules (named in the message).
    """
    execution = require(execution, TaskExecution, "execution")
    where = _Where(f"execution of occurrence {reprlib.repr(execution.occurrence_id)}")
    history: list[JsonValue] = []
    for index, item in enumerate(_list(execution.history, where("history"))):
        event = require(item, TaskEvent, where(f"history[{index}]"))
        inside = where.inside(f"history[{index}]")
        history.append(
            {
                "event": _choice(event.event, EVENT_KINDS, inside("event")),
                "timestamp": _iso(event.timestamp, inside("timestamp")),
            }
        )
    return {
        "occurrence_id": check_id(execution.occurrence_id, where("occurrence_id")),
        "state": _choice(execution.state, EXECUTION_STATES, where("state")),
        "retries_remaining": _count(execution.retries_remaining, where("retries_remaining")),
        "history": history,
    }


def execution_from_doc(doc: Mapping[str, object]) -> TaskExecution:
    """The execution stored as ``doc`` (the inverse of :func:`execution_to_doc`).

    Raises:
        ValidationError: ``doc`` does not have the expected shape; the message names the record and the field.
    """
    fast = _execution_fast(doc)
    if fast is not None:
        return fast
    read = _Reader.record(doc, "execution of occurrence", "occurrence_id")
    history = [
        TaskEvent(event=item.choice("event", EVENT_KINDS), timestamp=item.moment("timestamp"))
        for item in read.nested_items("history")
    ]
    return TaskExecution(
        occurrence_id=read.text("occurrence_id"),
        state=read.choice("state", EXECUTION_STATES),
        retries_remaining=read.integer("retries_remaining"),
        history=history,
    )


# --- fast decoding ---
#
# Reading a store decodes every document, so the common case is decoded without the field-by-field readers:
# plain dicts, lists and exact types only. Anything unusual (a subclass, a missing field, a wrong value)
# returns None, and the checked reader then decides, raising the error that names the record and field. A
# fast result is always the one the checked reader would return.

_PRIORITY: dict[str, Priority] = {option: option for option in PRIORITIES}
_EVENT_KIND: dict[str, EventKind] = {option: option for option in EVENT_KINDS}
_STATE: dict[str, ExecutionStateName] = {option: option for option in EXECUTION_STATES}


def _plain(value: object) -> bool:
    return type(value) is str and (value.isascii() or _encodable(value))


def _plain_or_none(value: object) -> bool:
    return value is None or _plain(value)


def _moment(value: object) -> datetime | None:
    if type(value) is not str or not value.isascii():
        return None
    try:
        return datetime.fromisoformat(value)
    except ValueError:
        return None


def _task_fast(doc: object) -> TaskDefinition | None:
    if type(doc) is not dict:
        return None
    get = cast("dict[str, object]", doc).get
    task_id, title, description, link = get("id"), get("title"), get("description"), get("link")
    slots, policy, recurrence = get("preferred_slots"), get("retry_policy"), get("recurrence")
    priority = _PRIORITY.get(cast("str", get("priority"))) if type(get("priority")) is str else None
    created, pinned = _moment(get("created_at")), get("pinned_time")
    if (
        not (_plain(task_id) and _plain(title) and _plain_or_none(description) and _plain_or_none(link))
        or priority is None
        or created is None
        or type(slots) is not list
        or not all(map(_plain, cast("list[object]", slots)))
        or type(policy) is not dict
    ):
        return None
    retries = cast("dict[str, object]", policy).get("max_retries")
    if type(retries) is not int:
        return None
    if pinned is not None:
        pinned = _moment(pinned)
        if pinned is None:
            return None
    span: timedelta | None = None
    if recurrence is not None:
        if type(recurrence) not in (int, float) or not math.isfinite(cast("float", recurrence)):
            return None
        try:
            span = timedelta(seconds=cast("float", recurrence))
        except OverflowError:
            return None
    return TaskDefinition(
        cast("str", task_id),
        cast("str", title),
        cast("str | None", description),
        cast("str | None", link),
        created,
        span,
        priority,
        list(cast("list[str]", slots)),
        RetryPolicy(retries),
        pinned,
    )


def _occurrence_fast(doc: object) -> TaskOccurrence | None:
    if type(doc) is not dict:
        return None
    get = cast("dict[str, object]", doc).get
    occurrence_id, task_id, slot, pinned = get("id"), get("task_id"), get("slot_name"), get("pinned_time")
    scheduled = _moment(get("scheduled_for"))
    if not (_plain(occurrence_id) and _plain(task_id) and _plain_or_none(slot)) or scheduled is None:
        return None
    if pinned is not None:
        pinned = _moment(pinned)
        if pinned is None:
            return None
    return TaskOccurrence(
        cast("str", occurrence_id), cast("str", task_id), scheduled, cast("str | None", slot), pinned
    )


def _execution_fast(doc: object) -> TaskExecution | None:
    if type(doc) is not dict:
        return None
    get = cast("dict[str, object]", doc).get
    occurrence_id, retries, history = get("occurrence_id"), get("retries_remaining"), get("history", [])
    state = _STATE.get(cast("str", get("state"))) if type(get("state")) is str else None
    if not _plain(occurrence_id) or state is None or type(retries) is not int or type(history) is not list:
        return None
    events: list[TaskEvent] = []
    for item in cast("list[object]", history):
        if type(item) is not dict:
            return None
        fields = cast("dict[str, object]", item)
        name = fields.get("event")
        kind = _EVENT_KIND.get(name) if type(name) is str else None
        moment = _moment(fields.get("timestamp"))
        if kind is None or moment is None:
            return None
        events.append(TaskEvent(kind, moment))
    return TaskExecution(cast("str", occurrence_id), state, retries, events)


# --- field checks, shared by encoding (model values) and decoding (document values) ---


class _Where:
    """Names a field of one record in error messages: ``task 't1' field 'retry_policy.max_retries'``."""

    __slots__ = ("prefix", "record")

    def __init__(self, record: str, prefix: str = "") -> None:
        self.record = record
        self.prefix = prefix

    def __call__(self, name: str) -> str:
        return f"{self.record} field {self.prefix + name!r}"

    def inside(self, name: str) -> _Where:
        """The naming of fields nested in field ``name``."""
        return _Where(self.record, f"{self.prefix}{name}.")


def _invalid(where: str, expected: str, value: object) -> ValidationError:
    return ValidationError(f"{where} must be {expected}, found {type(value).__name__} {reprlib.repr(value)}")


def _encodable(text: str) -> bool:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def _str(value: object, where: str) -> str:
    if not isinstance(value, str):
        raise _invalid(where, "a string", value)
    try:
        value.encode("utf-8")
    except UnicodeEncodeError as exc:
        # A lone surrogate cannot be written as UTF-8 by any driver; refuse it before the store is touched.
        raise ValidationError(
            f"{where} is not valid Unicode text: {exc.reason} at index {exc.start}"
        ) from None
    return value


def _optional_str(value: object, where: str) -> str | None:
    return None if value is None else _str(value, where)


def _optional_text(value: object, where: str) -> str | None:
    return None if value is None else check_text(value, where)


def _count(value: object, where: str) -> int:
    number = _int(value, where)
    if not MIN_COUNT <= number <= MAX_COUNT:
        raise _invalid(where, "an integer within the signed 64-bit range", value)
    return number


def _int(value: object, where: str) -> int:
    # bool is an int subclass; True stored as a retry count would read back as 1 on some drivers.
    if not isinstance(value, int) or isinstance(value, bool):
        raise _invalid(where, "an integer", value)
    return value


def _choice(value: object, allowed: tuple[L, ...], where: str) -> L:
    for option in allowed:
        if value == option:
            return option
    raise _invalid(where, "one of " + ", ".join(allowed), value)


def _list(value: object, where: str) -> list[object]:
    if not isinstance(value, list):
        raise _invalid(where, "a list", value)
    return list(value)  # pyright: ignore[reportUnknownArgumentType]


def _mapping(value: object, where: str) -> Mapping[str, object]:
    if not isinstance(value, Mapping):
        raise _invalid(where, "a JSON object", value)
    # Keys of a JSON object are always strings.
    return cast("Mapping[str, object]", value)


def _iso(value: object, where: str) -> str:
    if not isinstance(value, datetime):
        raise _invalid(where, "a datetime", value)
    # Stored only if the text reads back as the same moment with the same offset: a tzinfo with a
    # sub-second offset, or one that raises, would otherwise come back different or not at all. Wall clock
    # and offset are compared, not the datetimes: an aware time in a zone's fold or gap (02:30 in Paris on
    # the last Sunday of October) is never == one of another tzinfo (PEP 495), though it reads back exactly.
    try:
        text = value.isoformat()
        back = datetime.fromisoformat(text)
        exact = (
            back.replace(tzinfo=None) == value.replace(tzinfo=None) and back.utcoffset() == value.utcoffset()
        )
    except (ValueError, TypeError, OverflowError) as exc:
        raise ValidationError(f"{where} cannot be stored: {exc}") from exc
    if not exact:
        raise ValidationError(f"{where} cannot be stored exactly: {text!r} reads back as another moment")
    return text


def _optional_iso(value: object, where: str) -> str | None:
    return None if value is None else _iso(value, where)


def _optional_seconds(value: object, where: str) -> float | None:
    if value is None:
        return None
    if not isinstance(value, timedelta):
        raise _invalid(where, "a timedelta or None", value)
    # Exact to the microsecond for spans below about 285 years (53 bits of microseconds); a longer span is
    # refused rather than stored rounded.
    seconds = value.total_seconds()
    try:
        exact = timedelta(seconds=seconds) == value
    except OverflowError:
        exact = False
    if not exact:
        raise ValidationError(f"{where} cannot be stored exactly in seconds: {value!r} is too long")
    return seconds


def _parse_datetime(value: object, where: str) -> datetime:
    text = _str(value, where)
    try:
        return datetime.fromisoformat(text)
    except ValueError:
        raise _invalid(where, "an ISO datetime string", value) from None


def _parse_seconds(value: object, where: str) -> timedelta:
    if not isinstance(value, int | float) or isinstance(value, bool) or not math.isfinite(value):
        raise _invalid(where, "a number of seconds", value)
    try:
        return timedelta(seconds=value)
    except OverflowError:
        raise _invalid(where, "a number of seconds within timedelta's range", value) from None


class _Reader:
    """Reads the fields of one stored document, raising ValidationError naming the record and field."""

    __slots__ = ("doc", "where")

    def __init__(self, doc: Mapping[str, object], where: _Where) -> None:
        self.doc = doc
        self.where = where

    @classmethod
    def record(cls, doc: object, kind: str, id_field: str) -> _Reader:
        """A reader of a top-level document, named in messages by its kind and id."""
        mapping = _mapping(doc, f"stored {kind}")
        return cls(mapping, _Where(f"stored {kind} {mapping.get(id_field)!r}"))

    def _required(self, name: str) -> object:
        try:
            return self.doc[name]
        except KeyError:
            raise ValidationError(f"{self.where(name)} is missing") from None

    def text(self, name: str) -> str:
        return _str(self._required(name), self.where(name))

    def optional_text(self, name: str) -> str | None:
        return _optional_str(self.doc.get(name), self.where(name))

    def integer(self, name: str) -> int:
        return _int(self._required(name), self.where(name))

    def choice(self, name: str, allowed: tuple[L, ...]) -> L:
        return _choice(self._required(name), allowed, self.where(name))

    def moment(self, name: str) -> datetime:
        return _parse_datetime(self._required(name), self.where(name))

    def optional_moment(self, name: str) -> datetime | None:
        value = self.doc.get(name)
        return None if value is None else _parse_datetime(value, self.where(name))

    def optional_span(self, name: str) -> timedelta | None:
        value = self.doc.get(name)
        return None if value is None else _parse_seconds(value, self.where(name))

    def texts(self, name: str) -> list[str]:
        return [_str(item, self.where(name)) for item in _list(self._required(name), self.where(name))]

    def nested(self, name: str) -> _Reader:
        return _Reader(_mapping(self._required(name), self.where(name)), self.where.inside(name))

    def nested_items(self, name: str) -> list[_Reader]:
        # A missing history reads as an empty one: it is the one list field with a default.
        items = _list(self.doc.get(name, []), self.where(name))
        return [
            _Reader(_mapping(item, self.where(f"{name}[{index}]")), self.where.inside(f"{name}[{index}]"))
            for index, item in enumerate(items)
        ]


__all__ = [
    "execution_from_doc",
    "execution_to_doc",
    "occurrence_from_doc",
    "occurrence_to_doc",
    "require",
    "task_from_doc",
    "task_to_doc",
]
