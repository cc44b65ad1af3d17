"""The stateful, model-based test of the add-on's ExecutionRepository, with the store's metadata beside it.

A hypothesis ``RuleBasedStateMachine`` in the manner of ``tests/model/machine.py``, on one long-lived provider
(``tests/model/drivers.py``): rules for every public method of ``executions`` (``add_*``, ``get_*``,
``list_*``, ``delete_task_and_related``, ``purge`` and ``batch``, nested, abandoned, with refused calls inside)
and of ``metadata`` (from :class:`~tests.model.accounts.MetadataMachine`), with valid and invalid arguments:
ids that were never stored, records of every field at its edges (naive and aware datetimes of every kind of
offset, the first and last microsecond, recurrences to the microsecond and of a billion days, 64-bit counts,
unicode), hostile fields, values that are not the models. On the async API writes and whole batches are
cancelled at random moments. Each call is an :class:`Op`: the call, and what it does to the reference model
(:class:`Addon`) and must return or raise, so a call made alone and one made inside a batch are checked alike.
After every step :meth:`ExecutionMachine.store_matches_the_model` compares ``list_tasks``,
``list_occurrences``, ``list_executions`` and ``metadata.items()`` with the model, field for field and exactly
(a datetime by its ISO text: same wall clock, same offset, naive stays naive).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta, timezone
from typing import Any, ClassVar
from zoneinfo import ZoneInfo

from hypothesis import strategies as st
from hypothesis.stateful import initialize, invariant, precondition

from planflow import (
    PlanflowError,
    RetryPolicy,
    TaskDefinition,
    TaskEvent,
    TaskExecution,
    TaskOccurrence,
    ValidationError,
    WrongTypeError,
)
from tests.model.accounts import BAD_IDS, DELAYS, MetadataMachine, Plan, bad, pick, sometimes
from tests.model.drivers import AsyncDriver, Driver, Outcome
from tests.model.machine import step

TASK_IDS = ["t1", "t2", "T1", "tâche-😀", "t" * 511 + "😀"]
#: Occurrence ids; an execution is keyed by one (or by an id no occurrence has: an orphan).
OCCURRENCE_IDS = ["o1", "o2", "o3", "t1", "o" * 512]
EXECUTION_IDS = [*OCCURRENCE_IDS, "orphan"]

INDIA = timezone(timedelta(hours=5, minutes=30))
PARIS = ZoneInfo("Europe/Paris")
#: Every kind of datetime the add-on may hand over: naive (local time), UTC, fixed offsets down to the second
#: and microsecond, a zone at both sides of its autumn fold and in its spring gap, the first and last microsecond
#: of the calendar.
MOMENTS = [
    datetime(2025, 1, 15, 8, 0, 0, 123456),
    datetime(2025, 3, 30, 2, 30),
    datetime(1, 1, 1),
    datetime(9999, 12, 31, 23, 59, 59, 999999),
    datetime(2025, 3, 30, 1, 59, 59, 999999, tzinfo=UTC),
    datetime(2025, 7, 1, 9, 30, tzinfo=INDIA),
    datetime(2025, 7, 1, 4, 0, tzinfo=UTC),  # the instant of the one above
    datetime(2025, 10, 26, 2, 30, tzinfo=PARIS),
    datetime(2025, 10, 26, 2, 30, fold=1, tzinfo=PARIS),
    datetime(2025, 3, 30, 2, 30, tzinfo=PARIS),  # in the spring gap
    datetime(2025, 1, 1, tzinfo=timezone(timedelta(seconds=1))),
    datetime(2025, 1, 1, tzinfo=timezone(timedelta(hours=23, minutes=59, seconds=59, microseconds=999999))),
    datetime(1, 1, 1, tzinfo=UTC),
    datetime(1, 1, 1, tzinfo=INDIA),  # the year 0 in UTC
    datetime(9999, 12, 31, 23, 59, 59, 999999, tzinfo=UTC),
    datetime(9999, 12, 31, 23, tzinfo=timezone(timedelta(hours=-5))),  # the year 10000 in UTC
]
RECURRENCES = [
    None,
    timedelta(0),
    timedelta(microseconds=1),
    timedelta(days=7, hours=2, microseconds=1),
    timedelta(days=-1, seconds=3600),
    timedelta(days=365 * 100, seconds=59, microseconds=999999),
    timedelta.min,
]
COUNTS = [0, 1, -1, 3, 2**63 - 1, -(2**63)]
TITLES = [
    "",
    "Water the plants",
    "Réunion 日本語 — ñandú 😀 \"quoted\" 'single' back\\slash\nnew line\ttab \u200b",
    "x" * 10_000,
]
TEXTS = [None, "", "https://example.org/plants?x=1&y=2", "早上 😀"]
SLOTS: list[list[str]] = [[], ["morning", "evening"], ["", "早上"], ["morning", "morning"]]
PRIORITIES = ["low", "medium", "high"]
STATES = ["pending", "done", "missed", "cancelled"]
EVENTS = ["triggered", "missed", "rescheduled", "completed"]
#: Purge bounds that are not an aware datetime (or lie outside UTC's years): each a ValidationError.
BAD_BOUNDS: list[object] = [
    datetime(2025, 1, 1),
    "2025-01-01T00:00:00+00:00",
    1577836800,
    None,
    datetime(1, 1, 1, tzinfo=INDIA),
]

#: Bad ids inside a record: a field of the wrong type is a ValidationError (a WrongTypeError is for an argument
#: of the wrong type, a record or an id).
BAD_FIELD_IDS: list[tuple[object, type[PlanflowError]]] = [(value, ValidationError) for value, _ in BAD_IDS]
#: Fields that break a record, by model and field: (value, error). One is put in a record now and then.
BAD_TASK_FIELDS: dict[str, list[tuple[object, type[PlanflowError]]]] = {
    "id": BAD_FIELD_IDS,
    "title": [
        (None, ValidationError),
        ("nul\x00", ValidationError),
        ("\ud800", ValidationError),
        (7, ValidationError),
    ],
    "description": [("nul\x00", ValidationError), (7, ValidationError)],
    "link": [("\udfff", ValidationError)],
    "created_at": [
        ("2025-01-01T00:00:00", ValidationError),
        (None, ValidationError),
        (date(2025, 1, 1), ValidationError),
    ],
    "recurrence": [(3600, ValidationError), (timedelta.max, ValidationError), (1.5, ValidationError)],
    "priority": [("urgent", ValidationError), (None, ValidationError), ("HIGH", ValidationError)],
    "preferred_slots": [
        (("morning",), ValidationError),
        (["ok", 7], ValidationError),
        (["nul\x00"], ValidationError),
        (None, ValidationError),
        ("morning", ValidationError),
    ],
    "retry_policy": [
        ({"max_retries": 3}, WrongTypeError),
        (None, WrongTypeError),
        (RetryPolicy(True), ValidationError),
        (RetryPolicy(2**63), ValidationError),
        (RetryPolicy("3"), ValidationError),  # pyright: ignore[reportArgumentType]
        (RetryPolicy(1.0), ValidationError),  # pyright: ignore[reportArgumentType]
    ],
    "pinned_time": [("x", ValidationError), (5, ValidationError)],
}
BAD_OCCURRENCE_FIELDS: dict[str, list[tuple[object, type[PlanflowError]]]] = {
    "id": BAD_FIELD_IDS,
    "task_id": BAD_FIELD_IDS,
    "scheduled_for": [("2025-01-01", ValidationError), (None, ValidationError)],
    "slot_name": [(7, ValidationError), ("nul\x00", ValidationError)],
    "pinned_time": [("x", ValidationError)],
}
BAD_EXECUTION_FIELDS: dict[str, list[tuple[object, type[PlanflowError]]]] = {
    "occurrence_id": BAD_FIELD_IDS,
    "state": [("running", ValidationError), (None, ValidationError), ("DONE", ValidationError)],
    "retries_remaining": [
        (True, ValidationError),
        (2**63, ValidationError),
        (-(2**63) - 1, ValidationError),
        ("1", ValidationError),
        (1.0, ValidationError),
    ],
    "history": [
        (("tuple",), ValidationError),
        (None, ValidationError),
        ([{"event": "missed", "timestamp": datetime(2025, 1, 1)}], WrongTypeError),
        ([TaskEvent("exploded", datetime(2025, 1, 1))], ValidationError),  # pyright: ignore[reportArgumentType]
        ([TaskEvent("missed", "2025-01-01")], ValidationError),  # pyright: ignore[reportArgumentType]
    ],
}


# The reference model ---------------------------------------------------------------------------------------


@dataclass
class Addon:
    """The add-on's records as the store must hold them; each dict in the order records were first added (an
    upsert keeps a record's place, a delete forgets it)."""

    tasks: dict[str, TaskDefinition] = field(default_factory=dict[str, TaskDefinition])
    occurrences: dict[str, TaskOccurrence] = field(default_factory=dict[str, TaskOccurrence])
    executions: dict[str, TaskExecution] = field(default_factory=dict[str, TaskExecution])

    def copy(self) -> Addon:
        return Addon(dict(self.tasks), dict(self.occurrences), dict(self.executions))

    def delete_task_and_related(self, task_id: str) -> None:
        for occurrence in [o for o in self.occurrences.values() if o.task_id == task_id]:
            self.executions.pop(occurrence.id, None)
            del self.occurrences[occurrence.id]
        self.tasks.pop(task_id, None)

    def purge(self, before: datetime) -> int:
        doomed = [o.id for o in self.occurrences.values() if scheduled_before(o.scheduled_for, before)]
        for occurrence_id in doomed:
            self.executions.pop(occurrence_id, None)
            del self.occurrences[occurrence_id]
        return len(doomed)


def scheduled_before(scheduled: datetime, before: datetime) -> bool:
    """Whether ``purge(before=before)`` removes an occurrence scheduled for ``scheduled``: a naive time is this
    machine's local time (UTC where the platform cannot place it)."""
    if scheduled.utcoffset() is None:
        scheduled = _local(scheduled)
    return _instant(scheduled) < _instant(before)


def _instant(moment: datetime) -> timedelta:
    """The instant of an aware ``moment``, as the time since 0001-01-01 UTC (negative before it): ``<`` of two
    datetimes of one tzinfo compares wall clocks, which in a zone's fold is not the order of their instants."""
    offset = moment.utcoffset()
    assert offset is not None
    return moment.replace(tzinfo=None) - datetime.min - offset


def exact(value: object) -> object:
    """``value`` in a form that compares equal only when every field round-tripped exactly: a datetime by its
    ISO text (``==`` ignores the offset and calls naive and aware different without saying which), a
    timedelta by its parts, containers and models by type."""
    if isinstance(value, datetime):
        return ("datetime", value.isoformat(), value.tzinfo is None)
    if isinstance(value, timedelta):
        return ("timedelta", value.days, value.seconds, value.microseconds)
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return (type(value).__name__, *(exact(getattr(value, f.name)) for f in dataclasses.fields(value)))
    if isinstance(value, list | tuple):
        return (type(value).__name__, *(exact(item) for item in value))  # pyright: ignore[reportUnknownVariableType]
    if isinstance(value, dict):
        return ("dict", *((key, exact(item)) for key, item in value.items()))  # pyright: ignore[reportUnknownVariableType]
    return (type(value).__name__, value)


def _copy(record: Any) -> Any:
    """A copy of a record that shares no list with it (the model keeps what was added, not the caller's object)."""
    if isinstance(record, TaskDefinition):
        return dataclasses.replace(record, preferred_slots=list(record.preferred_slots))
    if isinstance(record, TaskExecution):
        return dataclasses.replace(record, history=list(record.history))
    return record


def _mutate(value: object) -> None:
    """Change the lists a read returned: the store must not see it (the invariant reads again)."""
    records = value if isinstance(value, list) else [value]
    for record in records:  # pyright: ignore[reportUnknownVariableType]
        if isinstance(record, TaskDefinition):
            record.preferred_slots.append("changed by a reader")
        elif isinstance(record, TaskExecution):
            record.history.append(TaskEvent("completed", datetime(2000, 1, 1)))


# Calls and batches -----------------------------------------------------------------------------------------


Expect = tuple[object, type[PlanflowError] | None]


@dataclass
class Op:
    """One call of the execution repository and what it must do.

    ``call(repository)`` makes it (on ``provider.executions``, or whatever a batch hands its block; sync or
    async alike). ``apply(model)`` changes ``model`` as the call must change the store and returns what the
    call must return, or the error it must raise (then ``model`` is unchanged).
    """

    what: str
    call: Callable[[Any], Any]
    apply: Callable[[Addon], Expect]
    #: The record an add stores (a caller may change its lists afterwards).
    record: object = None


@dataclass
class Block:
    """The body of an ``executions.batch()``: calls and nested batches, in order; ``fail``: the block raises at
    its end, so that none of its writes may stay."""

    items: list[Op | Block]
    fail: bool

    def describe(self) -> str:
        inner = "; ".join(i.what if isinstance(i, Op) else i.describe() for i in self.items)
        return f"batch({inner}){' raising' if self.fail else ''}"


class _Abandon(Exception):  # noqa: N818 - a signal, not an error
    """Raised at the end of a block to abandon its batch."""


def expect_block(model: Addon, block: Block, expected: list[Expect]) -> Addon:
    """The model after ``block`` (``model`` itself when it is abandoned), appending what each call must do."""
    inner = model.copy()
    for item in block.items:
        if isinstance(item, Block):
            inner = expect_block(inner, item, expected)
        else:
            expected.append(item.apply(inner))
    return model if block.fail else inner


def run_block(repository: Any, block: Block, outcomes: list[Outcome]) -> None:
    """Run ``block`` in ``repository.batch()`` (sync), appending each call's outcome."""
    try:
        with repository.batch():
            for item in block.items:
                if isinstance(item, Block):
                    run_block(repository, item, outcomes)
                    continue
                try:
                    outcomes.append(Outcome(item.call(repository)))
                except PlanflowError as exc:
                    outcomes.append(Outcome(error=exc))
            if block.fail:
                raise _Abandon
    except _Abandon:
        pass


async def run_block_async(repository: Any, block: Block, outcomes: list[Outcome]) -> None:
    """Run ``block`` in ``async with repository.batch()``, appending each call's outcome."""
    try:
        async with repository.batch():
            for item in block.items:
                if isinstance(item, Block):
                    await run_block_async(repository, item, outcomes)
                    continue
                try:
                    outcomes.append(Outcome(await item.call(repository)))
                except PlanflowError as exc:
                    outcomes.append(Outcome(error=exc))
            if block.fail:
                raise _Abandon
    except _Abandon:
        pass


def block_call(driver: Driver, block: Block, outcomes: list[Outcome]) -> Callable[[Any], Any]:
    """A call of ``block`` on a provider, for ``driver.outcome`` or ``driver.cancelled``."""
    if isinstance(driver, AsyncDriver):
        return lambda p: run_block_async(p.executions, block, outcomes)
    return lambda p: run_block(p.executions, block, outcomes)


@dataclass(frozen=True)
class Records:
    """The whole store as the public API lists it, in :func:`exact` form."""

    tasks: object
    occurrences: object
    executions: object
    meta: dict[str, str]


# The machine -----------------------------------------------------------------------------------------------


class ExecutionMachine(MetadataMachine):
    """The add-on's records and the store's metadata (see the module docstring). ``driver`` is set per test."""

    #: Closes the driver's provider and opens the store again, for a store that outlives its provider and has
    #: something to do at open and close (a TinyDB file: its journal); ``None``: the provider is never closed.
    reopen: ClassVar[Callable[[Driver], None] | None] = None

    def __init__(self) -> None:
        super().__init__()
        self.model = Addon()

    # Snapshots and the invariant -------------------------------------------------------------------------

    def model_snapshot(self) -> Records:
        model = self.model
        return Records(
            exact(list(model.tasks.values())),
            exact(list(model.occurrences.values())),
            exact(list(model.executions.values())),
            dict(self.meta),
        )

    def store_snapshot(self) -> Records:
        def listed(method: str) -> object:
            return exact(self.expect_value(self.call(lambda p: getattr(p.executions, method)()), method))

        return Records(
            listed("list_tasks"),
            listed("list_occurrences"),
            listed("list_executions"),
            self.metadata_snapshot(),
        )

    @invariant()
    def store_matches_the_model(self) -> None:
        self.count("steps")
        found, expected = self.store_snapshot(), self.model_snapshot()
        for name in ("tasks", "occurrences", "executions", "meta"):
            assert getattr(found, name) == getattr(expected, name), (
                f"{name}: the store differs from the model\nstore {getattr(found, name)!r:.1500}\n"
                f"model {getattr(expected, name)!r:.1500}"
            )
        # Each task's occurrences, in the order they were first added (an occurrence moved to another task by an
        # upsert keeps its place among them).
        for task_id in dict.fromkeys(o.task_id for o in self.model.occurrences.values()):
            listed = self.call(lambda p, t=task_id: p.executions.list_occurrences(t))
            wanted = [o for o in self.model.occurrences.values() if o.task_id == task_id]
            assert exact(self.expect_value(listed, "list_occurrences")) == exact(wanted), (
                f"list_occurrences({task_id!r:.40}): {listed.value!r:.1000}\nmodel {wanted!r:.1000}"
            )

    # Plans -----------------------------------------------------------------------------------------------

    def plan(self, op: Op) -> Plan:
        """The :class:`Plan` of one call made alone."""
        after = self.model.copy()
        value, error = op.apply(after)

        def accept(found: object) -> None:
            assert exact(found) == exact(value), (
                f"{op.what}: returned {found!r:.600}\nexpected {value!r:.600}"
            )
            if found is not value:  # what the store returned, not the model's own records
                _mutate(found)
            self.model = after

        return Plan(op.what, lambda p: op.call(p.executions), error, accept, lambda store: value)

    def block_plan(self, block: Block) -> tuple[Plan, list[Outcome], list[Expect]]:
        """The :class:`Plan` of a batch, the list its calls' outcomes go to, and what each must be."""
        expected: list[Expect] = []
        after = expect_block(self.model, block, expected)
        outcomes: list[Outcome] = []

        def accept(value: object) -> None:
            assert value is None
            self.model = after

        plan = Plan(
            block.describe(), block_call(self.driver, block, outcomes), None, accept, lambda store: None
        )
        return plan, outcomes, expected

    # Drawing calls ---------------------------------------------------------------------------------------

    def spoil(
        self, data: st.DataObject, record: Any, fields: dict[str, list[tuple[object, type[PlanflowError]]]]
    ) -> tuple[Any, type[PlanflowError] | None]:
        """Now and then ``record`` with one field broken (and the error it must raise), or something that is not
        a record at all (a WrongTypeError)."""
        how = data.draw(st.integers(0, 19))
        name = data.draw(st.sampled_from(sorted(fields)))
        value, error = bad(data, fields[name])
        other = pick(data, [{"id": "a dict"}, None, "t1", _other_model(record)])
        if how == 0:
            return other, WrongTypeError
        if how <= 2:
            return dataclasses.replace(record, **{name: value}), error
        return record, None

    def task_op(self, data: st.DataObject) -> Op:
        task = TaskDefinition(
            id=data.draw(st.sampled_from(TASK_IDS)),
            title=data.draw(st.sampled_from(TITLES)),
            description=data.draw(st.sampled_from(TEXTS)),
            link=data.draw(st.sampled_from(TEXTS)),
            created_at=data.draw(st.sampled_from(MOMENTS)),
            recurrence=data.draw(st.sampled_from(RECURRENCES)),
            priority=data.draw(st.sampled_from(PRIORITIES)),  # pyright: ignore[reportArgumentType]
            preferred_slots=list(data.draw(st.sampled_from(SLOTS))),
            retry_policy=RetryPolicy(data.draw(st.sampled_from(COUNTS))),
            pinned_time=data.draw(st.sampled_from([None, *MOMENTS])),
        )
        given, error = self.spoil(data, task, BAD_TASK_FIELDS)
        stored = _copy(given) if error is None else given

        def apply(model: Addon) -> Expect:
            if error is None:
                model.tasks[stored.id] = stored
            return None, error

        return Op(f"add_task({given!r:.300})", lambda r: r.add_task(given), apply, given)

    def occurrence_op(self, data: st.DataObject) -> Op:
        occurrence = TaskOccurrence(
            id=data.draw(st.sampled_from(OCCURRENCE_IDS)),
            task_id=data.draw(st.sampled_from([*TASK_IDS, "ghost"])),
            scheduled_for=data.draw(st.sampled_from(MOMENTS)),
            slot_name=data.draw(st.sampled_from(TEXTS)),
            pinned_time=data.draw(st.sampled_from([None, *MOMENTS])),
        )
        given, error = self.spoil(data, occurrence, BAD_OCCURRENCE_FIELDS)

        def apply(model: Addon) -> Expect:
            if error is None:
                model.occurrences[given.id] = given
            return None, error

        return Op(f"add_occurrence({given!r:.300})", lambda r: r.add_occurrence(given), apply)

    def execution_op(self, data: st.DataObject) -> Op:
        history = [
            TaskEvent(data.draw(st.sampled_from(EVENTS)), data.draw(st.sampled_from(MOMENTS)))  # pyright: ignore[reportArgumentType]
            for _ in range(data.draw(st.integers(0, 3)))
        ]
        execution = TaskExecution(
            occurrence_id=data.draw(st.sampled_from(EXECUTION_IDS)),
            state=data.draw(st.sampled_from(STATES)),  # pyright: ignore[reportArgumentType]
            retries_remaining=data.draw(st.sampled_from(COUNTS)),
            history=history,
        )
        given, error = self.spoil(data, execution, BAD_EXECUTION_FIELDS)
        stored = _copy(given) if error is None else given

        def apply(model: Addon) -> Expect:
            if error is None:
                model.executions[stored.occurrence_id] = stored
            return None, error

        return Op(f"add_execution({given!r:.300})", lambda r: r.add_execution(given), apply, given)

    def some_id(self, data: st.DataObject, pool: Sequence[str]) -> tuple[object, type[PlanflowError] | None]:
        """An id of ``pool`` or one no record has, or now and then a bad value and the error it must raise."""
        kind = data.draw(st.integers(0, 9))
        good = data.draw(st.sampled_from([*pool, "ghost"]))
        wrong = bad(data, BAD_IDS)
        return wrong if kind == 0 else (good, None)

    def delete_op(self, data: st.DataObject) -> Op:
        task_id, error = self.some_id(data, TASK_IDS)

        def apply(model: Addon) -> Expect:
            if error is None:
                model.delete_task_and_related(task_id)  # pyright: ignore[reportArgumentType]
            return None, error

        return Op(
            f"delete_task_and_related({task_id!r:.40})", lambda r: r.delete_task_and_related(task_id), apply
        )

    def purge_op(self, data: st.DataObject) -> Op:
        """A purge up to a stored occurrence's moment (exactly, a microsecond either side), a far bound, or a
        bound that is no aware datetime."""
        moments = [
            o.scheduled_for if o.scheduled_for.utcoffset() is not None else _local(o.scheduled_for)
            for o in self.model.occurrences.values()
        ]
        near = pick(data, moments, datetime(2025, 7, 1, 4, tzinfo=UTC))
        shift = data.draw(
            st.sampled_from([timedelta(0), timedelta(microseconds=1), -timedelta(microseconds=1)])
        )
        kind = data.draw(st.integers(0, 9))
        far = data.draw(
            st.sampled_from(
                [datetime(1, 1, 1, tzinfo=UTC), datetime(9999, 12, 31, 23, 59, 59, 999999, tzinfo=UTC)]
            )
        )
        wrong = data.draw(st.sampled_from(BAD_BOUNDS))
        if kind == 0:
            before: object = wrong
        elif kind == 1:
            before = far
        else:
            try:
                before = near + shift
            except OverflowError:
                before = near

        def apply(model: Addon) -> Expect:
            if kind == 0 or not _in_utc_years(before):
                return None, ValidationError
            assert isinstance(before, datetime)
            return model.purge(before), None

        return Op(f"purge(before={before!r})", lambda r: r.purge(before=before), apply)

    def read_op(self, data: st.DataObject) -> Op:
        how = data.draw(
            st.sampled_from(
                [
                    "get_task",
                    "get_occurrence",
                    "get_execution",
                    "list_tasks",
                    "list_occurrences",
                    "list_executions",
                ]
            )
        )
        pool = {"get_task": TASK_IDS, "get_occurrence": OCCURRENCE_IDS}.get(how, EXECUTION_IDS)
        if how == "list_occurrences":
            pool = TASK_IDS
        wanted, error = self.some_id(data, pool)
        # list_occurrences(None) is every occurrence, as list_occurrences() is.
        every = data.draw(st.booleans()) or (how == "list_occurrences" and wanted is None)

        def apply(model: Addon) -> Expect:
            if how == "list_tasks":
                return list(model.tasks.values()), None
            if how == "list_executions":
                return list(model.executions.values()), None
            if how == "list_occurrences" and every:
                return list(model.occurrences.values()), None
            if error is not None:
                return None, error
            if how == "list_occurrences":
                return [o for o in model.occurrences.values() if o.task_id == wanted], None
            records: dict[str, Any] = {
                "get_task": model.tasks,
                "get_occurrence": model.occurrences,
                "get_execution": model.executions,
            }[how]
            return records.get(wanted), None  # pyright: ignore[reportArgumentType, reportCallIssue]

        if how in ("list_tasks", "list_executions"):
            return Op(f"{how}()", lambda r: getattr(r, how)(), apply)
        if how == "list_occurrences":
            if every and wanted is not None:
                return Op("list_occurrences()", lambda r: r.list_occurrences(), apply)
            return Op(f"list_occurrences({wanted!r:.40})", lambda r: r.list_occurrences(wanted), apply)
        return Op(f"{how}({wanted!r:.40})", lambda r: getattr(r, how)(wanted), apply)

    def write_op(self, data: st.DataObject) -> Op:
        builders = [self.task_op, self.occurrence_op, self.execution_op, self.delete_op, self.purge_op]
        return data.draw(st.sampled_from(builders))(data)

    def block(self, data: st.DataObject, depth: int = 0) -> Block:
        """A batch's body: a few writes and reads, at the top level now and then a nested batch."""
        items: list[Op | Block] = []
        for _ in range(data.draw(st.integers(0, 4))):
            kind = data.draw(st.integers(0, 9))
            if kind == 0 and depth == 0:
                items.append(self.block(data, depth + 1))
            elif kind <= 2:
                items.append(self.read_op(data))
            else:
                items.append(self.write_op(data))
        return Block(items, fail=sometimes(data, 3))

    # Rules -----------------------------------------------------------------------------------------------

    @step(data=st.data())
    def add_task(self, data: st.DataObject) -> None:
        self.execute(self.plan(self.task_op(data)))

    @step(data=st.data())
    def add_occurrence(self, data: st.DataObject) -> None:
        self.execute(self.plan(self.occurrence_op(data)))

    @step(data=st.data())
    def add_execution(self, data: st.DataObject) -> None:
        self.execute(self.plan(self.execution_op(data)))

    @step(data=st.data())
    def add_mutated_after(self, data: st.DataObject) -> None:
        """A record's lists changed by the caller after it was added: the store keeps what was added."""
        op = data.draw(st.sampled_from([self.task_op, self.execution_op]))(data)
        plan = self.plan(op)
        self.execute(plan)
        if plan.error is None:  # a refused record may hold lists of this module's constants
            _mutate(op.record)

    @step(data=st.data())
    def delete_task_and_related(self, data: st.DataObject) -> None:
        self.execute(self.plan(self.delete_op(data)))

    @step(data=st.data())
    def purge(self, data: st.DataObject) -> None:
        self.execute(self.plan(self.purge_op(data)))

    @step(data=st.data())
    def read(self, data: st.DataObject) -> None:
        self.execute(self.plan(self.read_op(data)))

    @step(data=st.data())
    def batch(self, data: st.DataObject) -> None:
        """A batch of writes and reads, nested batches among them, refused calls, abandoned or kept: the reads
        inside see its writes; an abandoned batch (or nested batch) leaves nothing of its own."""
        block = self.block(data)
        plan, outcomes, expected = self.block_plan(block)
        self.execute(plan)
        assert len(outcomes) == len(expected), (
            f"{plan.what}: {len(outcomes)} outcomes of {len(expected)} calls"
        )
        for op, outcome, (value, error) in zip(_ops(block), outcomes, expected, strict=True):
            if error is not None:
                self.expect_error(outcome, error, f"{op.what} in a batch")
            else:
                found = self.expect_value(outcome, f"{op.what} in a batch")
                assert exact(found) == exact(value), (
                    f"{op.what} in a batch: {found!r:.600}\nexpected {value!r:.600}"
                )

    @precondition(lambda self: self.driver.cancellable)
    @step(data=st.data())
    def cancelled_write(self, data: st.DataObject) -> None:
        """A write or a whole batch cancelled at a random moment: applied whole or not at all, and the
        connection (or the store's lane) stays usable: every later step goes through it."""
        kind = data.draw(st.integers(0, 9))
        if kind < 4:
            plan = self.block_plan(self.block(data))[0]
        elif kind < 6:
            plan = self.metadata_plan(data)
        else:
            plan = self.plan(self.write_op(data))
        self.execute_cancelled(plan, data.draw(DELAYS))

    @precondition(lambda self: self.reopen is not None)
    @step()
    def reopen_the_store(self) -> None:
        """Close the store and open it again: everything written reads back (on TinyDB, from the journal the
        close folded into the file, or replayed at open)."""
        assert self.reopen is not None
        self.reopen(self.driver)

    @initialize()
    def empty_store(self) -> None:
        """Every example starts from an empty store, on the provider (and connection) of the whole test."""


def _ops(block: Block) -> list[Op]:
    found: list[Op] = []
    for item in block.items:
        found.extend(_ops(item) if isinstance(item, Block) else [item])
    return found


def _in_utc_years(moment: object) -> bool:
    """Whether ``moment`` lies within the years 1 to 9999 in UTC (where purge's bound must lie)."""
    assert isinstance(moment, datetime)
    try:
        moment.astimezone(UTC)
    except OverflowError:
        return False
    return True


def _local(naive: datetime) -> datetime:
    try:
        return naive.astimezone()
    except (OverflowError, OSError, ValueError):
        return naive.replace(tzinfo=UTC)


def _other_model(record: object) -> object:
    """A record of another of the add-on's models, with the same id."""
    if isinstance(record, TaskDefinition):
        return TaskOccurrence(record.id, record.id, datetime(2025, 1, 1), None, None)
    return TaskDefinition("t1", "T", None, None, datetime(2025, 1, 1), None, "low", [], RetryPolicy(0))


# Emptying a TinyDB store between examples ----------------------------------------------------------------


RESET_TASK = "planflow-model-reset"


def empty_through_the_api(driver: Driver) -> None:
    """Empty the store of ``driver`` through the provider itself: a TinyDB store keeps its data parsed in memory,
    so it cannot be emptied behind the provider's back.

    Every occurrence, and an occurrence for every execution (an execution is removed with its occurrence), is
    put under one task, which ``delete_task_and_related`` then removes with them; then the other tasks, then the
    metadata. Checks that the store is empty at the end.
    """

    def value(call: Callable[[Any], Any]) -> Any:
        outcome = driver.outcome(call)
        assert outcome.error is None, f"emptying the store: {outcome.error!r}"
        return outcome.value

    moment = datetime(2000, 1, 1, tzinfo=UTC)
    occurrence_ids = [o.id for o in value(lambda p: p.executions.list_occurrences())]
    occurrence_ids += [e.occurrence_id for e in value(lambda p: p.executions.list_executions())]
    for occurrence_id in dict.fromkeys(occurrence_ids):
        value(
            lambda p, o=occurrence_id: p.executions.add_occurrence(
                TaskOccurrence(o, RESET_TASK, moment, None, None)
            )
        )
    value(lambda p: p.executions.delete_task_and_related(RESET_TASK))
    for task in value(lambda p: p.executions.list_tasks()):
        value(lambda p, t=task.id: p.executions.delete_task_and_related(t))
    for key in value(lambda p: p.metadata.items()):
        value(lambda p, k=key: p.metadata.delete(k))
    assert value(lambda p: p.executions.list_tasks()) == []
    assert value(lambda p: p.executions.list_occurrences()) == []
    assert value(lambda p: p.executions.list_executions()) == []
    assert value(lambda p: p.metadata.items()) == {}
