"""The input rules on the TinyDB executions repository: what is refused, how, and that what is accepted comes back.

Ids are non-empty ``str`` of at most 512 characters without NUL or a lone surrogate; text carries neither;
counts fit 64 bits; datetimes and timedeltas are stored only when they read back equal. Every failure of a
public method is a ``PlanflowError`` (wrong types a ``WrongTypeError``, which is also a ``TypeError``).
"""

from __future__ import annotations

import random
from collections.abc import Callable, Iterator
from dataclasses import replace
from datetime import UTC, datetime, timedelta, timezone, tzinfo
from pathlib import Path

import pytest
from tinydb import TinyDB

from planflow import PlanflowError, ValidationError, WrongTypeError
from planflow.executions import RetryPolicy, TaskDefinition, TaskEvent, TaskExecution, TaskOccurrence
from planflow.infra.tinydb import JournaledStorage, TinyDbExecutionRepository
from tests.contract.helpers import (
    NAIVE,
    a_task,
    an_execution,
    an_occurrence,
    assert_same_execution,
    assert_same_moment,
    assert_same_task,
)

Repo = TinyDbExecutionRepository


@pytest.fixture
def repo(tmp_path: Path) -> Iterator[Repo]:
    with TinyDB(tmp_path / "store.json", storage=JournaledStorage) as db:
        yield TinyDbExecutionRepository(db)


def is_empty(repo: Repo) -> bool:
    return repo.list_tasks() == [] and repo.list_occurrences() == [] and repo.list_executions() == []


BAD_IDS = {
    "empty": "",
    "513-chars": "x" * 513,
    "nul": "a\x00b",
    "lone-surrogate": "a\ud800b",
}
WRONG_TYPES = {"int": 5, "none": None, "bytes": b"o", "list": ["t"], "float": 1.5}

ID_READS: dict[str, Callable[[Repo, object], object]] = {
    "get_task": lambda r, v: r.get_task(v),  # pyright: ignore[reportArgumentType]
    "get_occurrence": lambda r, v: r.get_occurrence(v),  # pyright: ignore[reportArgumentType]
    "get_execution": lambda r, v: r.get_execution(v),  # pyright: ignore[reportArgumentType]
    "list_occurrences": lambda r, v: r.list_occurrences(v),  # pyright: ignore[reportArgumentType]
    "delete_task_and_related": lambda r, v: r.delete_task_and_related(v),  # pyright: ignore[reportArgumentType]
}


@pytest.mark.parametrize("call", ID_READS.values(), ids=ID_READS.keys())
@pytest.mark.parametrize("value", BAD_IDS.values(), ids=BAD_IDS.keys())
def test_a_bad_id_argument_is_a_validation_error_naming_the_argument(
    repo: Repo, call: Callable[[Repo, object], object], value: str
) -> None:
    with pytest.raises(ValidationError, match=r"\(\w+_id\)"):
        call(repo, value)


@pytest.mark.parametrize("call", ID_READS.values(), ids=ID_READS.keys())
@pytest.mark.parametrize(
    "value", [v for k, v in WRONG_TYPES.items() if k != "none"], ids=[k for k in WRONG_TYPES if k != "none"]
)
def test_an_id_argument_of_the_wrong_type_is_a_wrong_type_error(
    repo: Repo, call: Callable[[Repo, object], object], value: object
) -> None:
    with pytest.raises(WrongTypeError, match=r"must be a str") as caught:
        call(repo, value)
    assert isinstance(caught.value, TypeError) and isinstance(caught.value, ValidationError)


def test_an_id_of_512_characters_of_any_script_round_trips(repo: Repo, tmp_path: Path) -> None:
    longest = "é" * 256 + "日" * 255 + "😀"
    repo.add_task(a_task(longest))
    repo.add_occurrence(an_occurrence(longest, task_id=longest))
    repo.add_execution(an_execution(longest))
    assert repo.get_task(longest) == a_task(longest)
    assert repo.list_occurrences(longest) == [an_occurrence(longest, task_id=longest)]
    assert repo.get_execution(longest) == an_execution(longest)


class SubSecondOffset(tzinfo):
    def utcoffset(self, dt: datetime | None) -> timedelta:
        return timedelta(microseconds=1)

    def dst(self, dt: datetime | None) -> timedelta | None:
        return None


class BrokenZone(tzinfo):
    def utcoffset(self, dt: datetime | None) -> timedelta:
        raise ValueError("no offset today")


def task_with(**changes: object) -> TaskDefinition:
    return a_task("bad", **changes)


REFUSED_TASKS = {
    "empty-id": (task_with(id=""), "'id' must be 1 to 512 characters long, got 0"),
    "long-id": (task_with(id="x" * 513), "'id' must be 1 to 512 characters long"),
    "nul-id": (task_with(id="a\x00"), "'id' contains a NUL character"),
    "nul-title": (task_with(title="a\x00b"), "'title' contains a NUL character"),
    "surrogate-description": (task_with(description="\udc80"), "'description' is not valid Unicode"),
    "nul-link": (task_with(link="\x00"), "'link' contains a NUL character"),
    "nul-slot": (task_with(preferred_slots=["ok", "\x00"]), "'preferred_slots' contains a NUL character"),
    "huge-retries": (
        task_with(retry_policy=RetryPolicy(2**63)),
        "'retry_policy.max_retries' must be an integer within",
    ),
    "sub-second-offset": (
        task_with(created_at=datetime(2025, 1, 1, tzinfo=SubSecondOffset())),
        "'created_at' cannot be stored exactly",
    ),
    "broken-zone": (
        task_with(pinned_time=datetime(2025, 1, 1, tzinfo=BrokenZone())),
        "'pinned_time' cannot be stored",
    ),
    "too-long-span": (
        task_with(recurrence=timedelta(days=999_999_999, microseconds=1)),
        "'recurrence' cannot be stored exactly",
    ),
}


@pytest.mark.parametrize(("task", "message"), REFUSED_TASKS.values(), ids=REFUSED_TASKS.keys())
def test_a_task_breaking_the_input_rules_is_refused_naming_the_field_and_nothing_is_stored(
    repo: Repo, task: TaskDefinition, message: str
) -> None:
    with pytest.raises(ValidationError, match=message):
        repo.add_task(task)
    assert is_empty(repo)


REFUSED_OCCURRENCES = {
    "nul-task-id": (an_occurrence("o", task_id="t\x00"), "'task_id' contains a NUL character"),
    "empty-task-id": (an_occurrence("o", task_id=""), "'task_id' must be 1 to 512 characters long, got 0"),
    "surrogate-slot": (an_occurrence("o", slot_name="\ud800"), "'slot_name' is not valid Unicode"),
    "long-id": (an_occurrence("o" * 600), "'id' must be 1 to 512 characters long"),
}


@pytest.mark.parametrize(("occ", "message"), REFUSED_OCCURRENCES.values(), ids=REFUSED_OCCURRENCES.keys())
def test_an_occurrence_breaking_the_input_rules_is_refused(
    repo: Repo, occ: TaskOccurrence, message: str
) -> None:
    with pytest.raises(ValidationError, match=message):
        repo.add_occurrence(occ)
    assert is_empty(repo)


REFUSED_EXECUTIONS = {
    "nul-id": (an_execution("o\x00"), "'occurrence_id' contains a NUL character", ValidationError),
    "huge-retries": (
        an_execution("o", retries_remaining=-(2**63) - 1),
        "'retries_remaining' must be",
        ValidationError,
    ),
    "sub-second-event": (
        an_execution("o", history=[TaskEvent("missed", datetime(2025, 1, 1, tzinfo=SubSecondOffset()))]),
        r"'history\[0\].timestamp' cannot be stored exactly",
        ValidationError,
    ),
    "untyped-event": (
        an_execution("o", history=[("missed", NAIVE)]),
        r"history\[0\]' must be a TaskEvent",
        WrongTypeError,
    ),
}


@pytest.mark.parametrize(
    ("execution", "message", "error"), REFUSED_EXECUTIONS.values(), ids=REFUSED_EXECUTIONS.keys()
)
def test_an_execution_breaking_the_input_rules_is_refused(
    repo: Repo, execution: TaskExecution, message: str, error: type[Exception]
) -> None:
    with pytest.raises(error, match=message):
        repo.add_execution(execution)
    assert is_empty(repo)


def test_a_task_with_a_retry_policy_of_the_wrong_type_is_a_wrong_type_error(repo: Repo) -> None:
    with pytest.raises(WrongTypeError, match="'retry_policy' must be a RetryPolicy"):
        repo.add_task(task_with(retry_policy={"max_retries": 1}))


def test_the_repository_refuses_anything_but_a_tinydb_with_a_wrong_type_error() -> None:
    with pytest.raises(WrongTypeError, match=r"TinyDB, received str"):
        TinyDbExecutionRepository("planflow.json")  # pyright: ignore[reportArgumentType]


# Random values ---------------------------------------------------------------------------------------------

# Any code point but NUL and the surrogates, weighted towards the awkward ones.
AWKWARD = [
    "\u2028",
    "\u2029",
    "\u200b",
    "\u202e",
    "\ufeff",
    "\U0001f600",
    "\u0301",
    "\\",
    '"',
    "\n",
    "\t",
    "\x7f",
]


def random_text(rng: random.Random, *, empty: bool = True) -> str:
    length = rng.randint(0 if empty else 1, 24)
    chars: list[str] = []
    for _ in range(length):
        pick = rng.random()
        if pick < 0.3:
            chars.append(rng.choice(AWKWARD))
        elif pick < 0.5:
            chars.append(chr(rng.randint(0x10000, 0x10FFFF)))
        else:
            code = rng.randint(1, 0xFFFF)
            chars.append(chr(code) if not 0xD800 <= code <= 0xDFFF else "x")
    return "".join(chars)


def random_moment(rng: random.Random) -> datetime:
    moment = datetime(1, 1, 1) + timedelta(
        seconds=rng.randint(0, 315_000_000_000), microseconds=rng.randint(0, 999_999)
    )
    kind = rng.random()
    if kind < 0.3:
        return moment
    if kind < 0.6:
        return moment.replace(tzinfo=UTC)
    offset = timedelta(seconds=rng.randint(-86_399, 86_399))
    return moment.replace(tzinfo=timezone(offset))


def random_span(rng: random.Random) -> timedelta | None:
    if rng.random() < 0.2:
        return None
    return timedelta(days=rng.randint(-100_000, 100_000), microseconds=rng.randint(0, 86_400 * 10**6 - 1))


def random_records(
    seed: int, count: int
) -> tuple[list[TaskDefinition], list[TaskOccurrence], list[TaskExecution]]:
    rng = random.Random(seed)
    tasks = [
        TaskDefinition(
            id=random_text(rng, empty=False) + f"#{n}",
            title=random_text(rng),
            description=random_text(rng) if rng.random() < 0.7 else None,
            link=random_text(rng) if rng.random() < 0.5 else None,
            created_at=random_moment(rng),
            recurrence=random_span(rng),
            priority=rng.choice(["low", "medium", "high"]),
            preferred_slots=[random_text(rng) for _ in range(rng.randint(0, 3))],
            retry_policy=RetryPolicy(rng.randint(-(2**63), 2**63 - 1)),
            pinned_time=random_moment(rng) if rng.random() < 0.5 else None,
        )
        for n in range(count)
    ]
    occurrences = [
        TaskOccurrence(
            id=random_text(rng, empty=False) + f"#{n}",
            task_id=rng.choice(tasks).id,
            scheduled_for=random_moment(rng),
            slot_name=random_text(rng) if rng.random() < 0.5 else None,
            pinned_time=random_moment(rng) if rng.random() < 0.5 else None,
        )
        for n in range(count)
    ]
    executions = [
        TaskExecution(
            occurrence_id=occ.id,
            state=rng.choice(["pending", "done", "missed", "cancelled"]),
            retries_remaining=rng.randint(-1000, 1000),
            history=[
                TaskEvent(rng.choice(["triggered", "missed", "rescheduled", "completed"]), random_moment(rng))
                for _ in range(rng.randint(0, 4))
            ],
        )
        for occ in occurrences
    ]
    return tasks, occurrences, executions


@pytest.mark.parametrize("seed", range(3))
def test_random_records_read_back_equal_from_memory_and_after_reopening(tmp_path: Path, seed: int) -> None:
    tasks, occurrences, executions = random_records(seed, 150)
    path = tmp_path / "store.json"
    with TinyDB(path, storage=JournaledStorage) as db:
        repo = TinyDbExecutionRepository(db)
        for task, occ, execution in zip(tasks, occurrences, executions, strict=True):
            repo.add_task(task)
            repo.add_occurrence(occ)
            repo.add_execution(execution)
        in_memory = (repo.list_tasks(), repo.list_occurrences(), repo.list_executions())
    with TinyDB(path, storage=JournaledStorage) as db:
        repo = TinyDbExecutionRepository(db)
        reopened = (repo.list_tasks(), repo.list_occurrences(), repo.list_executions())
        for task in tasks:
            assert_same_task(repo.get_task(task.id), task)
        for occ in occurrences:
            stored = repo.get_occurrence(occ.id)
            assert stored == occ and stored is not None
            assert_same_moment(stored.scheduled_for, occ.scheduled_for)
        for execution in executions:
            assert_same_execution(repo.get_execution(execution.occurrence_id), execution)
    assert in_memory == reopened == (tasks, occurrences, executions)


HOSTILE: list[object] = [
    "",
    "x" * 513,
    "\x00",
    "\ud800",
    None,
    0,
    -1,
    2**64,
    True,
    1.5,
    float("nan"),
    float("inf"),
    b"bytes",
    [],
    {},
    object(),
    datetime(2025, 1, 1, tzinfo=BrokenZone()),
    timedelta.max,
    [TaskEvent("missed", NAIVE), "not an event"],
    RetryPolicy(True),  # pyright: ignore[reportArgumentType]
    "ok",
]


def hostile_variants(rng: random.Random) -> Iterator[object]:
    """Models with one field replaced by a hostile value, and hostile values in place of models."""
    models: list[object] = [a_task("t"), an_occurrence("o"), an_execution("o")]
    for _ in range(400):
        model = rng.choice(models)
        field = rng.choice(list(model.__dataclass_fields__))  # pyright: ignore[reportAttributeAccessIssue]
        yield replace(model, **{field: rng.choice(HOSTILE)})  # pyright: ignore[reportArgumentType]
    yield from HOSTILE


def test_hostile_values_in_every_method_raise_only_planflow_errors_and_what_is_accepted_reads_back(
    repo: Repo,
) -> None:
    rng = random.Random(13)
    accepted = 0
    calls: list[Callable[[object], object]] = [
        repo.add_task,  # pyright: ignore[reportAssignmentType]
        repo.add_occurrence,  # pyright: ignore[reportAssignmentType]
        repo.add_execution,  # pyright: ignore[reportAssignmentType]
        repo.get_task,  # pyright: ignore[reportAssignmentType]
        repo.get_occurrence,  # pyright: ignore[reportAssignmentType]
        repo.get_execution,  # pyright: ignore[reportAssignmentType]
        repo.list_occurrences,  # pyright: ignore[reportAssignmentType]
        repo.delete_task_and_related,  # pyright: ignore[reportAssignmentType]
    ]
    for value in hostile_variants(rng):
        for call in calls:
            try:
                call(value)
            except PlanflowError:
                continue
            if isinstance(value, TaskDefinition | TaskOccurrence | TaskExecution):
                accepted += 1
    assert accepted > 0
    for task in repo.list_tasks():
        assert repo.get_task(task.id) == task
    for occ in repo.list_occurrences():
        assert repo.get_occurrence(occ.id) == occ
    for execution in repo.list_executions():
        assert repo.get_execution(execution.occurrence_id) == execution
