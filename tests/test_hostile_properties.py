"""Property-based tests of every public method of every repository, on every driver, with hostile values.

For each method of each repository Protocol, hypothesis draws arguments from strategies that mix valid values
with hostile ones (text with lone surrogates and NUL, ids of 513 characters, JSON nested past 256 levels,
huge and non-finite numbers, tuples and sets, wrong types, look-alike filters), and calls the method with the
same arguments on every store that serves it: SQLite (file and memory), PostgreSQL and, for the add-on's
executions, TinyDB. Every store receives the same calls in the same order, so they hold the same data; so:

- only ``PlanflowError`` escapes (a raw Python or driver exception fails the test);
- every store gives the same outcome (the same error class, or results equal once timestamps and generated
  ids are set aside): a value one driver accepts, every driver accepts;
- what was accepted reads back equal (a written state, read again, equals what was written).
"""

from __future__ import annotations

import dataclasses
import inspect
import math
from collections import Counter
from collections.abc import Callable, Iterator
from datetime import UTC, timedelta, timezone
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from planflow import (
    APIKey,
    AuthRepository,
    ComponentType,
    ExecutionRepository,
    ExecutionType,
    MetadataRepository,
    PlanflowError,
    Provider,
    RetryBackoff,
    RetryPolicy,
    Role,
    TaskDefinition,
    TaskEvent,
    TaskExecution,
    TaskFilter,
    TaskOccurrence,
    TaskRepository,
    TaskState,
    TaskStatus,
    UsageEntry,
    UsageSummary,
    User,
    WorkflowFilter,
    WorkflowRepository,
    WorkflowState,
    open_provider,
)
from tests.pg import create_schema, drop_schema, with_search_path

EXAMPLES = 25
#: A few ids every store knows, so that many calls find what they ask for.
KNOWN = ["wf-1", "wf-2", "t-1", "t-2", "t-3"]
examples_run: Counter[str] = Counter()


# Strategies ------------------------------------------------------------------------------------------------

any_char = st.characters(min_codepoint=0, max_codepoint=0x10FFFF, blacklist_categories=())
hostile_text = st.one_of(
    st.text(any_char, max_size=12),
    st.sampled_from(["", "\x00", "a\x00b", "half \udc80", "\ud800", "x" * 513, "ok", "Ünïcødé 😀"]),
)
ids = st.one_of(st.sampled_from(KNOWN), st.sampled_from(KNOWN), hostile_text)
not_a_string = st.one_of(st.integers(), st.none(), st.binary(max_size=4), st.floats(), st.just(object()))
id_arg = st.one_of(ids, ids, ids, not_a_string)
optional_id = st.one_of(st.none(), id_arg)
numbers = st.one_of(
    st.integers(-5, 50),
    st.sampled_from([0, -1, 2**31 - 1, 2**31, 2**63, 2**64 + 1, -(2**70)]),
    st.booleans(),
    st.floats(allow_nan=True, allow_infinity=True),
    st.sampled_from(["5", None]),
)


def nested(levels: int) -> dict[str, Any]:
    value: dict[str, Any] = {"leaf": True}
    for _ in range(levels - 1):
        value = {"n": value}
    return value


json_leaves = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-(2**70), 2**70),
    st.floats(allow_nan=True, allow_infinity=True),
    hostile_text,
    st.sampled_from([(1, 2), frozenset({1}), b"raw"]),
    st.builds(lambda: 10**5000),  # too long to print as JSON (built lazily: hypothesis prints its strategies)
)
json_values = st.recursive(
    json_leaves,
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(hostile_text, inner, max_size=3),
    max_leaves=8,
)
json_objects = st.one_of(
    st.none(),
    st.dictionaries(hostile_text, json_values, max_size=4),
    st.integers(250, 260).map(nested),
    st.sampled_from([[1], "text", 3]),
)
statuses = st.one_of(st.sampled_from(list(TaskStatus)), st.sampled_from(["DONE", "running", 3, None]))
usage_entries = st.builds(UsageEntry, hostile_text, hostile_text, hostile_text, numbers, numbers, numbers)
usages = st.one_of(
    st.none(),
    st.builds(UsageSummary, st.lists(usage_entries, max_size=3).map(tuple)),
    st.builds(
        UsageSummary, st.lists(st.builds(UsageEntry, st.just("p"), st.just("m")), max_size=2).map(tuple)
    ),
    st.sampled_from([{"tokens": 1}, "usage"]),
)
moments = st.one_of(
    st.datetimes(timezones=st.sampled_from([UTC, timezone(timedelta(hours=5, minutes=30))])),
    st.datetimes(),
    st.sampled_from(["2026-01-01", 0]),
)
task_states = st.builds(
    TaskState,
    task_exec_id=ids,
    task_id=ids,
    workflow_exec_id=st.one_of(st.sampled_from(["wf-1", "wf-2"]), ids),
    workflow_id=ids,
    component=st.one_of(st.sampled_from(list(ComponentType)), st.just("robot")),
    status=statuses,
    execution_type=st.one_of(st.sampled_from(list(ExecutionType)), st.just("magic")),
    parent_state_id=st.one_of(st.none(), st.none(), ids),
    agent_id=optional_id,
    input=json_objects,
    output=json_objects,
    error=json_objects,
    usage=usages,
    version=numbers,
    created_at=st.one_of(st.none(), moments),
    updated_at=st.one_of(st.none(), moments),
)
workflow_states = st.builds(
    WorkflowState,
    workflow_exec_id=ids,
    workflow_id=ids,
    status=statuses,
    usage=usages,
    input=json_objects,
    output=json_objects,
    version=numbers,
    created_at=st.one_of(st.none(), moments),
    updated_at=st.one_of(st.none(), moments),
)
task_filters = st.one_of(
    st.none(),
    st.builds(
        TaskFilter, status=st.one_of(st.none(), statuses), workflow_exec_id=st.one_of(st.none(), id_arg)
    ),
    st.builds(
        TaskFilter, task_id=st.one_of(st.none(), id_arg), execution_type=st.sampled_from([None, "basic", 7])
    ),
    st.builds(
        TaskFilter,
        statuses=st.one_of(
            st.none(), st.sets(st.sampled_from(list(TaskStatus)), max_size=3), st.just("FAILED")
        ),
        created_after=st.one_of(st.none(), moments),
        updated_before=st.one_of(st.none(), moments),
    ),
    st.sampled_from([WorkflowFilter(), {"status": "RUNNING"}, object()]),
)
workflow_filters = st.one_of(
    st.none(),
    st.builds(
        WorkflowFilter, status=st.one_of(st.none(), statuses), workflow_id=st.one_of(st.none(), id_arg)
    ),
    st.builds(
        WorkflowFilter,
        statuses=st.one_of(st.none(), st.sets(st.sampled_from(list(TaskStatus)), max_size=3), st.just([7])),
        created_before=st.one_of(st.none(), moments),
        updated_after=st.one_of(st.none(), moments),
    ),
    st.sampled_from([TaskFilter(), object()]),
)
definitions = st.builds(
    TaskDefinition,
    id=id_arg,
    title=hostile_text,
    description=st.one_of(st.none(), hostile_text),
    link=st.none(),
    created_at=moments,
    recurrence=st.one_of(st.none(), st.timedeltas(max_value=timedelta(days=400)), st.just(5)),
    priority=st.sampled_from(["low", "medium", "high", "urgent"]),
    preferred_slots=st.lists(hostile_text, max_size=2),
    retry_policy=st.one_of(st.builds(RetryPolicy, numbers), st.just(3)),
    pinned_time=st.one_of(st.none(), moments),
)
occurrences = st.builds(
    TaskOccurrence,
    id=id_arg,
    task_id=ids,
    scheduled_for=moments,
    slot_name=st.one_of(st.none(), hostile_text),
    pinned_time=st.one_of(st.none(), moments),
)
executions = st.builds(
    TaskExecution,
    occurrence_id=id_arg,
    state=st.sampled_from(["pending", "done", "missed", "cancelled", "lost"]),
    retries_remaining=numbers,
    history=st.lists(
        st.one_of(
            st.builds(
                TaskEvent, st.sampled_from(["triggered", "missed", "rescheduled", "completed"]), moments
            ),
            st.just({"event": "missed"}),
        ),
        max_size=2,
    ),
)
users = st.builds(
    User,
    id=id_arg,
    email=st.one_of(hostile_text, st.just("a@b.c")),
    role=st.just(Role.USER),
    created_at=moments,
    updated_at=moments,
)
api_keys = st.builds(
    APIKey,
    id=id_arg,
    user_id=ids,
    fingerprint=st.just("f" * 64),
    prefix=hostile_text,
    created_at=moments,
    last_used=st.none(),
)


def transformer(output: object) -> Callable[[WorkflowState], object]:
    return lambda _: output


#: (parameter name or "*", annotation as written in the Protocol) -> strategy.
STRATEGIES: dict[tuple[str, str], st.SearchStrategy[Any]] = {
    ("*", "Id"): id_arg,
    ("*", "Id | None"): optional_id,
    ("email", "Email"): st.one_of(hostile_text, st.just("someone@example.org")),
    ("email", "Email | None"): st.one_of(st.none(), hostile_text, st.just("other@example.org")),
    ("value", "Text"): hostile_text,
    ("cursor", "Cursor | None"): st.one_of(st.none(), hostile_text, st.integers(), st.just("W10=")),
    ("*", "Count"): numbers,
    ("*", "Version"): numbers,
    ("*", "Version | None"): st.one_of(st.none(), numbers),
    ("*", "Sequence[Id]"): st.one_of(st.lists(id_arg, max_size=5), st.just("t-1"), st.integers()),
    ("*", "Iterable[TaskState]"): st.one_of(st.lists(task_states, max_size=3), st.just("states")),
    ("*", "Iterable[WorkflowState]"): st.one_of(st.lists(workflow_states, max_size=3), st.just(5)),
    ("*", "Iterable[User]"): st.lists(users, max_size=2),
    ("*", "Iterable[APIKey]"): st.lists(api_keys, max_size=2),
    ("*", "TaskState"): st.one_of(task_states, task_states, not_a_string),
    ("*", "WorkflowState"): st.one_of(workflow_states, workflow_states, not_a_string),
    ("*", "Usage"): st.one_of(usages, not_a_string),
    ("*", "TaskFilter | None"): task_filters,
    ("*", "WorkflowFilter | None"): workflow_filters,
    ("*", "TaskStatus"): statuses,
    ("*", "Role"): st.sampled_from([Role.ADMIN, Role.USER, "admin", "root", 1]),
    ("*", "Role | None"): st.sampled_from([None, Role.ADMIN, "user", "god"]),
    ("*", "datetime | None"): st.one_of(st.none(), moments),
    ("*", "datetime"): moments,
    ("*", "Past"): moments,
    ("order", "Order"): st.sampled_from(["asc", "desc", "DESC", "newest", None, 1]),
    ("statuses", "Collection[TaskStatus]"): st.one_of(
        st.sets(st.sampled_from(list(TaskStatus)), max_size=3),
        st.sampled_from([["SUCCESS", "FAILED"], "SUCCESS", ["DONE"], [3], None, {"SUCCESS": 1}]),
    ),
    ("*", "PurgeProgress | None"): st.sampled_from([None, lambda _: None, "nope"]),
    ("*", "OutputTransformer | None"): st.one_of(st.none(), json_objects.map(transformer), st.just("nope")),
    ("*", "bool"): st.sampled_from([True, False, 1, "yes"]),
    ("lease", "Lease"): st.sampled_from(
        [30, 0.5, timedelta(minutes=1), 0, -1, float("nan"), float("inf"), "30", True, timedelta(0)]
    ),
    ("timeout", "Timeout"): st.sampled_from([0, 0.01, -1, float("nan"), float("inf"), "1", None]),
    ("*", "TaskDefinition"): st.one_of(definitions, not_a_string),
    ("*", "TaskOccurrence"): st.one_of(occurrences, not_a_string),
    ("*", "TaskExecution"): st.one_of(executions, not_a_string),
    ("reason", "Text"): hostile_text,
    ("*", "ErrorObject"): st.one_of(json_objects, not_a_string, st.just({"code": "BOOM"})),
    ("*", "Delay | None"): st.sampled_from(
        [None, 0, 0.5, 30, -1, float("nan"), float("inf"), timedelta(seconds=2), timedelta(-1), "1", True]
    ),
    ("*", "RetryBackoff | None"): st.sampled_from(
        [None, RetryBackoff(), RetryBackoff(0, 1, 0, 0), "fast", 3]
    ),
    ("*", "HistoryId | None"): st.one_of(st.none(), numbers, st.just("3")),
    ("*", "Size | None"): st.one_of(st.none(), numbers),
    ("*", "Rate | None"): st.sampled_from(
        [
            None,
            (5, 1.0),
            (0, 1),
            (1, 0),
            (-1, 1),
            (3, float("nan")),
            (2**63, 1),
            (1, 2, 3),
            "5/s",
            5,
            (True, 1),
        ]
    ),
}


def strategy(name: str, annotation: str) -> st.SearchStrategy[Any]:
    for key in ((name, annotation), ("*", annotation)):
        if key in STRATEGIES:
            return STRATEGIES[key]
    raise LookupError(f"no strategy for {name}: {annotation}")


def methods(protocol: type) -> list[str]:
    return sorted(
        name
        for name, member in vars(protocol).items()
        if inspect.isfunction(member) and not name.startswith("_")
    )


# Outcomes --------------------------------------------------------------------------------------------------

#: Clock readings and sequence numbers (a sequence value is spent by a rolled-back insert on PostgreSQL only).
VOLATILE = {
    "created_at",
    "updated_at",
    "last_used",
    "lease_expires_at",
    "recorded_at",
    "run_after",
    "oldest_due_age",
    "history_id",
}
GENERATED = {"id", "fingerprint", "prefix", "plaintext", "user_id"}


def normalized(value: object, *, generated_ids: bool) -> object:
    """``value`` with what legitimately differs between stores (timestamps, generated ids) left out."""
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        skip = VOLATILE | (GENERATED if generated_ids else set())
        return (
            type(value).__name__,
            {
                f.name: normalized(getattr(value, f.name), generated_ids=generated_ids)
                for f in dataclasses.fields(value)
                if f.name not in skip and f.name != "next_cursor"
            },
            getattr(value, "next_cursor", None) is not None,
        )
    if isinstance(value, dict):
        return {k: normalized(v, generated_ids=generated_ids) for k, v in value.items()}  # pyright: ignore[reportUnknownVariableType]
    if isinstance(value, list | tuple):
        return [normalized(v, generated_ids=generated_ids) for v in value]  # pyright: ignore[reportUnknownVariableType]
    if isinstance(value, float) and math.isnan(value):
        return "nan"
    return value


def outcome(call: Callable[[], object], *, generated_ids: bool) -> tuple[str, object]:
    try:
        result = call()
        if inspect.isgenerator(result) or (hasattr(result, "__next__") and not isinstance(result, str)):
            result = list(result)  # pyright: ignore[reportArgumentType]
    except PlanflowError as exc:
        return ("error", type(exc).__name__)
    return ("ok", normalized(result, generated_ids=generated_ids))


# Stores ----------------------------------------------------------------------------------------------------


def seeded(provider: Provider) -> Provider:
    for wf in ("wf-1", "wf-2"):
        provider.workflows.upsert_state(WorkflowState(wf, "w"))
    provider.tasks.upsert_state(TaskState("t-1", "t", "wf-1", "w", input={"n": 1}))
    provider.tasks.upsert_state(TaskState("t-2", "t", "wf-1", "w", parent_state_id="t-1"))
    return provider


@pytest.fixture(scope="module")
def sql_stores(
    tmp_path_factory: pytest.TempPathFactory, postgres_server_url: str
) -> Iterator[dict[str, Provider]]:
    base = postgres_server_url
    schema = create_schema(base)
    path: Path = tmp_path_factory.mktemp("hostile") / "hostile.db"
    stores = {
        "sqlite-file": seeded(open_provider(f"sqlite:///{path}")),
        "sqlite-memory": seeded(open_provider("sqlite://:memory:")),
        "postgres": seeded(open_provider(with_search_path(base, schema))),
    }
    yield stores
    for provider in stores.values():
        provider.close()
    drop_schema(base, schema)


@pytest.fixture(scope="module")
def execution_stores(sql_stores: dict[str, Provider]) -> Iterator[dict[str, Provider]]:
    tinydb = open_provider("tinydb://memory")
    yield {**sql_stores, "tinydb": tinydb}
    tinydb.close()


def check_everywhere(
    stores: dict[str, Provider], repository: str, method: str, kwargs: dict[str, Any]
) -> None:
    examples_run[f"{repository}.{method}"] += 1
    outcomes = {
        name: outcome(
            lambda provider=provider: getattr(getattr(provider, repository), method)(**kwargs),
            generated_ids=repository == "auth",
        )
        for name, provider in stores.items()
    }
    distinct = {repr(value) for value in outcomes.values()}
    assert len(distinct) == 1, f"{repository}.{method}({kwargs!r}) differs between drivers: {outcomes}"
    kind, result = next(iter(outcomes.values()))
    if kind == "ok" and repository in ("tasks", "workflows") and method in ("upsert_state", "update_state"):
        state = kwargs.get("state")
        assert isinstance(state, TaskState | WorkflowState)
        for provider in stores.values():
            stored = getattr(provider, repository).get_state(
                getattr(state, "task_exec_id", None) or state.workflow_exec_id
            )  # pyright: ignore[reportAttributeAccessIssue]
            expect = normalized(dataclasses.replace(state, version=stored.version), generated_ids=False)
            got = normalized(
                dataclasses.replace(stored, tasks={}) if repository == "workflows" else stored,
                generated_ids=False,
            )
            if repository == "workflows":
                expect = normalized(
                    dataclasses.replace(state, version=stored.version, tasks={}), generated_ids=False
                )
            assert got == expect, f"{method} accepted {state!r} but it read back as {stored!r}"
    del result


def draw_kwargs(data: st.DataObject, protocol: type, method: str) -> dict[str, Any]:
    signature = inspect.signature(getattr(protocol, method))
    kwargs: dict[str, Any] = {}
    for param in list(signature.parameters.values())[1:]:
        if param.default is not inspect.Parameter.empty and data.draw(st.booleans()):
            continue
        kwargs[param.name] = data.draw(strategy(param.name, str(param.annotation)))
    return kwargs


PROPERTY = settings(
    max_examples=EXAMPLES,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
SKIPPED = {"batch", "get_state_for_update"}  # need a transaction block; covered by the contract suites


@pytest.mark.postgres
@pytest.mark.parametrize(
    ("repository", "protocol", "method"),
    [
        (repository, protocol, method)
        for repository, protocol in (
            ("tasks", TaskRepository),
            ("workflows", WorkflowRepository),
            ("auth", AuthRepository),
            ("metadata", MetadataRepository),
        )
        for method in methods(protocol)
        if method not in SKIPPED
    ],
)
@PROPERTY
@given(data=st.data())
def test_sql_repository_methods_raise_only_planflow_errors_and_agree_across_drivers(
    sql_stores: dict[str, Provider], repository: str, protocol: type, method: str, data: st.DataObject
) -> None:
    check_everywhere(sql_stores, repository, method, draw_kwargs(data, protocol, method))


@pytest.mark.postgres
@pytest.mark.parametrize("method", [m for m in methods(ExecutionRepository) if m not in SKIPPED])
@PROPERTY
@given(data=st.data())
def test_execution_methods_raise_only_planflow_errors_and_agree_on_every_driver_tinydb_included(
    execution_stores: dict[str, Provider], method: str, data: st.DataObject
) -> None:
    check_everywhere(execution_stores, "executions", method, draw_kwargs(data, ExecutionRepository, method))


def test_report_examples_per_method() -> None:
    # Runs last in this module (pytest keeps definition order): the figures for the closing note.
    if examples_run:
        print(
            f"\n[hypothesis] examples per method: min {min(examples_run.values())}, {dict(sorted(examples_run.items()))}"
        )
