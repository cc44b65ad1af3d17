"""The stateful, model-based test of planflow's workflow and task repositories, units of work and keys.

A hypothesis ``RuleBasedStateMachine`` walks long sequences of calls, valid and invalid, against one long-lived
provider (``tests/model/drivers.py``) and the reference model (``tests/model/reference.py``): every public
method of ``tasks``, ``workflows``, ``provider.transaction`` and ``run_in_transaction`` has rules here, with
unknown ids, stale versions, references to nothing, hostile values, wrong workers, keys reused for other
requests, and (on the async API) cancellations at random moments. Each rule checks what the call returned or
raised against the model, and after every step :meth:`TaskMachine.store_matches_the_model` compares the whole
store with it. Ids come from small pools, so calls collide, repeat and meet each other's leftovers.

Repository rules of the other repositories (auth, metadata, executions) are mixed in by their own modules.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from typing import Any, ClassVar

from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, precondition, rule

from planflow import (
    ConflictError,
    DuplicateError,
    ExecutionType,
    Heartbeat,
    HistoryRecord,
    NotFoundError,
    PlanflowError,
    TaskFilter,
    TaskState,
    TaskStatus,
    TransactionRequiredError,
    UsageEntry,
    UsageSummary,
    ValidationError,
    WorkflowFilter,
    WorkflowState,
)
from planflow.models import TERMINAL_STATUSES
from tests.model.drivers import Driver, Outcome
from tests.model.reference import FAILED_LIKE, UNFINISHED, Model, Recorded

WORKFLOWS = ["w1", "w2", "w3"]
DEFINITIONS = ["flow", "other"]
TASKS = [f"t{i}" for i in range(8)]
LOGICAL = ["a", "b", "c"]
AGENTS = ["x", "y"]
TOOLS = ["p", "q"]
WORKERS = ["worker-1", "worker-2"]
#: Concurrency keys of the tasks, and of the limits set on them.
LIMIT_KEYS = ["k1", "k2"]
KEYS = ["k1", "k2", "k3"]
#: A lease that never lapses during a test, and one that has lapsed by the end of the rule that sets it.
LONG_LEASE = 3600.0
SHORT_LEASE = 0.001
#: How long a rule that gives a short lease waits afterwards, so that the lease has certainly lapsed (on the
#: database's clock, which is this machine's).
LAPSE = 0.05

statuses = st.sampled_from(list(TaskStatus))
json_objects = st.none() | st.dictionaries(
    st.sampled_from(["k", "n", "s"]),
    st.none()
    | st.booleans()
    | st.integers(-3, 3)
    | st.text("aé-", max_size=3)
    | st.lists(st.integers(0, 2), max_size=2),
    max_size=2,
)
usage_entries = st.builds(
    UsageEntry,
    st.sampled_from(["openai", "OpenAI", "anthropic"]),
    st.sampled_from(["m1", "m2"]),
    st.sampled_from(["task", "agent"]),
    st.integers(0, 50),
    st.integers(0, 50),
    st.integers(0, 100),
    st.integers(0, 5),
    st.integers(0, 5),
)
usages = st.builds(
    lambda entries: UsageSummary(tuple(entries)), st.lists(usage_entries, min_size=1, max_size=2)
)

#: Values no driver may accept, with the field they go into: each must be a ValidationError, storing nothing.
HOSTILE_IDS = ["", "x" * 513, "nul\x00", "lone\ud800"]
HOSTILE_JSON: list[object] = [
    {"k": math.nan},
    {"k": math.inf},
    {1: "non-string key"},
    {"k": ("a", "tuple")},
    {"k": "nul\x00"},
    {"k": "\udfff"},
    {"k": object()},
    ["not", "an", "object"],
    {"k": 10**5000},  # past Python's int-to-text limit: not storable as JSON text
]


def _nested(depth: int) -> dict[str, object]:
    value: dict[str, object] = {}
    for _ in range(depth):
        value = {"k": value}
    return value


HOSTILE_JSON.append(_nested(300))


def step(**strategies: Any) -> Callable[[Callable[..., None]], Callable[..., None]]:
    """``hypothesis.stateful.rule``, counting each run of the rule in the machine's ``walked`` (by name)."""

    def decorate(function: Callable[..., None]) -> Callable[..., None]:
        @functools.wraps(function)
        def counted(self: Any, **arguments: Any) -> None:
            self.walked[function.__name__] = self.walked.get(function.__name__, 0) + 1
            function(self, **arguments)

        made: Callable[..., None] = rule(**strategies)(counted)
        return made

    return decorate


class TaskMachine(RuleBasedStateMachine):
    """Tasks, workflows, units of work and keys (see the module docstring). ``driver`` is set per test."""

    driver: ClassVar[Driver]
    #: Steps walked and rules run, by name, over every example of a test (reported at its end).
    walked: ClassVar[dict[str, int]]

    def __init__(self) -> None:
        super().__init__()
        self.model = Model()
        self.fresh_keys = 0
        self.driver.reset()

    # Helpers ----------------------------------------------------------------------------------------------

    def call(self, call: Any) -> Outcome:
        return self.driver.outcome(call)

    def expect_error(self, outcome: Outcome, error: type[PlanflowError], what: str) -> None:
        assert outcome.error is not None, f"{what}: expected {error.__name__}, got {outcome.value!r}"
        assert isinstance(outcome.error, error), f"{what}: expected {error.__name__}, got {outcome.error!r}"

    def expect_value(self, outcome: Outcome, what: str) -> Any:
        assert outcome.error is None, f"{what}: unexpected {outcome.error!r}"
        return outcome.value

    def existing_or_unknown(self, data: st.DataObject, pool: Sequence[str], known: Sequence[str]) -> str:
        """An id of ``pool`` (known or not yet) or, now and then, one the store never had."""
        choices = sorted(set(pool) | set(known))
        return data.draw(st.sampled_from([*choices, "ghost"]))

    def new_task(self, data: st.DataObject, task_exec_id: str | None = None) -> TaskState:
        workflow = data.draw(
            st.sampled_from([*sorted(self.model.workflows), "ghost"])
            if self.model.workflows
            else st.just("ghost")
        )
        parents = [None, None, *sorted(self.model.tasks), "ghost"]
        return TaskState(
            task_exec_id=task_exec_id or data.draw(st.sampled_from(TASKS)),
            task_id=data.draw(st.sampled_from(LOGICAL)),
            workflow_exec_id=workflow,
            workflow_id=data.draw(st.sampled_from(DEFINITIONS)),
            status=data.draw(statuses),
            execution_type=data.draw(st.sampled_from([ExecutionType.BASIC, ExecutionType.PARALLEL])),
            parent_state_id=data.draw(st.sampled_from(parents)),
            agent_id=data.draw(st.sampled_from([None, *AGENTS])),
            tool_id=data.draw(st.sampled_from([None, *TOOLS])),
            input=data.draw(json_objects),
            output=data.draw(json_objects),
            usage=data.draw(st.none() | usages),
            priority=data.draw(st.sampled_from([0, 0, 1, -1])),
            max_attempts=data.draw(st.sampled_from([None, None, 1, 2])),
            concurrency_key=data.draw(st.sampled_from([None, *LIMIT_KEYS])),
        )

    def task_filter(self, data: st.DataObject) -> TaskFilter | None:
        if data.draw(st.booleans()):
            return None
        some = data.draw(
            st.fixed_dictionaries(
                {},
                optional={
                    "status": statuses,
                    "statuses": st.frozensets(statuses, min_size=1, max_size=3),
                    "workflow_exec_id": st.sampled_from([*WORKFLOWS, "ghost"]),
                    "workflow_id": st.sampled_from(DEFINITIONS),
                    "task_id": st.sampled_from(LOGICAL),
                    "parent_state_id": st.sampled_from(TASKS),
                    "agent_id": st.sampled_from(AGENTS),
                    "tool_id": st.sampled_from(TOOLS),
                    "execution_type": st.sampled_from([ExecutionType.BASIC, ExecutionType.PARALLEL]),
                },
            )
        )
        moments = [t.created_at for t in self.model.tasks.values()] + [
            t.updated_at for t in self.model.tasks.values()
        ]
        if moments and data.draw(st.booleans()):
            bound = data.draw(
                st.sampled_from(["created_after", "created_before", "updated_after", "updated_before"])
            )
            some[bound] = data.draw(st.sampled_from(moments))
        return TaskFilter(**some)

    def workflow_filter(self, data: st.DataObject) -> WorkflowFilter | None:
        if data.draw(st.booleans()):
            return None
        some = data.draw(
            st.fixed_dictionaries(
                {},
                optional={
                    "status": statuses,
                    "statuses": st.frozensets(statuses, min_size=1, max_size=3),
                    "workflow_exec_id": st.sampled_from([*WORKFLOWS, "ghost"]),
                    "workflow_id": st.sampled_from(DEFINITIONS),
                },
            )
        )
        moments = [w.created_at for w in self.model.workflows.values()]
        if moments and data.draw(st.booleans()):
            some[data.draw(st.sampled_from(["created_after", "created_before"]))] = data.draw(
                st.sampled_from(moments)
            )
        return WorkflowFilter(**some)

    def record_task(self, given: TaskState, returned: TaskState, *, expected_version: int) -> None:
        assert returned.version == expected_version, (
            f"version {returned.version}, expected {expected_version}"
        )
        stored = self.model.stored_task(given, returned)
        assert returned == stored, f"returned {returned!r}\nexpected {stored!r}"
        self.model.tasks[given.task_exec_id] = stored

    # Invariant: the whole store is what the model says -----------------------------------------------------

    @invariant()
    def store_matches_the_model(self) -> None:
        self.walked["steps"] = self.walked.get("steps", 0) + 1
        tasks = self.driver.collect(lambda p: p.tasks.iter_states(batch_size=3))
        stored = {t.task_exec_id: t for t in self.expect_value(tasks, "iter_states (tasks)")}
        assert stored == self.model.tasks, _difference(stored, self.model.tasks)
        workflows = self.driver.collect(lambda p: p.workflows.iter_states(batch_size=2))
        found = {w.workflow_exec_id: w for w in self.expect_value(workflows, "iter_states (workflows)")}
        assert found == self.model.workflows, _difference(found, self.model.workflows)
        for workflow_exec_id in sorted(self.model.workflows):
            outcome = self.call(
                lambda p, w=workflow_exec_id: p.workflows.history(w, include_tasks=True, limit=100_000)
            )
            records: list[HistoryRecord] = self.expect_value(outcome, "workflows.history")
            by_entity: dict[tuple[str, str], list[Recorded]] = {}
            for record in records:
                by_entity.setdefault((record.entity, record.entity_id), []).append(_recorded(record))
            expected = self.model.history_of_workflow(workflow_exec_id)
            assert by_entity == expected, _difference(
                {str(k): v for k, v in by_entity.items()}, {str(k): v for k, v in expected.items()}
            )

    # Workflows --------------------------------------------------------------------------------------------

    @step(data=st.data())
    def upsert_workflow(self, data: st.DataObject) -> None:
        state = WorkflowState(
            data.draw(st.sampled_from(WORKFLOWS)),
            data.draw(st.sampled_from(DEFINITIONS)),
            status=data.draw(statuses),
            usage=data.draw(st.none() | usages),
            input=data.draw(json_objects),
            output=data.draw(json_objects),
            error=data.draw(json_objects),
        )
        returned = self.expect_value(
            self.call(lambda p: p.workflows.upsert_state(state)), "workflows.upsert_state"
        )
        before = self.model.workflows.get(state.workflow_exec_id)
        assert returned.version == (1 if before is None else before.version + 1)
        expected = state.evolve(
            version=returned.version,
            created_at=returned.created_at if before is None else before.created_at,
            updated_at=returned.updated_at,
            forked_from=None if before is None else before.forked_from,  # the origin outlives upserts
        )
        assert returned == expected, f"{returned!r} != {expected!r}"
        self.model.workflows[state.workflow_exec_id] = expected

    @step(data=st.data())
    def update_workflow_status(self, data: st.DataObject) -> None:
        target = self.existing_or_unknown(data, WORKFLOWS, list(self.model.workflows))
        status = data.draw(statuses)
        current = self.model.workflows.get(target)
        version = data.draw(
            st.sampled_from([None, 0] if current is None else [None, current.version, current.version - 1])
        )
        outcome = self.call(lambda p: p.workflows.update_status(target, status, expected_version=version))
        if current is None:
            self.expect_error(outcome, NotFoundError, "update_status of an unknown workflow")
            return
        if version is not None and version != current.version:
            self.expect_error(outcome, ConflictError, "update_status with a stale version")
            return
        returned = self.expect_value(outcome, "update_status")
        expected = current.evolve(status=status, version=current.version + 1, updated_at=returned.updated_at)
        assert returned == expected, f"{returned!r} != {expected!r}"
        self.model.workflows[target] = expected

    @step(data=st.data())
    def get_workflow(self, data: st.DataObject) -> None:
        target = self.existing_or_unknown(data, WORKFLOWS, list(self.model.workflows))
        outcome = self.call(lambda p: p.workflows.get_state(target))
        if target not in self.model.workflows:
            self.expect_error(outcome, NotFoundError, "workflows.get_state of an unknown workflow")
            return
        assert self.expect_value(outcome, "workflows.get_state") == self.model.with_tasks(
            self.model.workflows[target]
        )

    @step(data=st.data())
    def get_workflow_by(self, data: st.DataObject) -> None:
        workflow_id = data.draw(st.sampled_from(DEFINITIONS))
        how = data.draw(st.sampled_from(["workflow_id", "task_id", "agent_id", "tool_id"]))
        value = data.draw(
            st.sampled_from({"task_id": LOGICAL, "agent_id": AGENTS, "tool_id": TOOLS}.get(how, [""]))
        )
        if how == "workflow_id":
            outcome = self.call(lambda p: p.workflows.get_state_by_workflow_id(workflow_id))
            newest = self.model.newest_workflow(workflow_id)
        else:
            method = f"get_state_by_{how}"
            outcome = self.call(lambda p: getattr(p.workflows, method)(workflow_id, value))
            newest = self.model.newest_workflow(workflow_id, lambda t: getattr(t, how) == value)
        if newest is None:
            self.expect_error(outcome, NotFoundError, f"get_state_by_{how} with no match")
            return
        assert self.expect_value(outcome, f"get_state_by_{how}") == self.model.with_tasks(newest)

    @step(data=st.data())
    def list_workflows(self, data: st.DataObject) -> None:
        flt = self.workflow_filter(data)
        order = data.draw(st.sampled_from(["asc", "desc"]))
        limit = data.draw(st.integers(1, 4))
        with_tasks = data.draw(st.booleans())
        expected = self.model.workflows_matching(flt, order)
        seen: list[WorkflowState] = []
        cursor: str | None = None
        for _ in range(len(expected) + 2):
            page = self.expect_value(
                self.call(
                    lambda p, c=cursor: p.workflows.list_states(
                        flt, limit=limit, cursor=c, with_tasks=with_tasks, order=order
                    )
                ),
                "workflows.list_states",
            )
            assert len(page.items) <= limit
            seen.extend(page.items)
            cursor = page.next_cursor
            if cursor is None:
                break
        wanted = [self.model.with_tasks(w) if with_tasks else w for w in expected]
        assert seen == wanted, (
            f"{[w.workflow_exec_id for w in seen]} != {[w.workflow_exec_id for w in wanted]}"
        )
        count = self.expect_value(
            self.call(lambda p: p.workflows.count_states(flt)), "workflows.count_states"
        )
        assert count == len(expected)

    @step(data=st.data())
    def merge_workflow_usage(self, data: st.DataObject) -> None:
        target = self.existing_or_unknown(data, WORKFLOWS, list(self.model.workflows))
        usage = data.draw(usages)
        key = data.draw(st.none() | st.sampled_from(KEYS))
        outcome = self.call(lambda p: p.workflows.merge_usage(target, usage, idempotency_key=key))
        self.check_merge(outcome, "workflows", target, usage, key)

    def check_merge(
        self, outcome: Outcome, kind: str, target: str, usage: UsageSummary, key: str | None
    ) -> None:
        rows: dict[str, Any] = self.model.tasks if kind == "tasks" else self.model.workflows
        request = f"{kind}.merge_usage({target!r}, {usage!r})"
        if key is not None:
            known = self.model.keyed(key, request)
            if known is not None:
                if known.error is not None:
                    self.expect_error(
                        outcome, known.error, f"{kind}.merge_usage with a key used for another request"
                    )
                else:
                    assert self.expect_value(outcome, f"{kind}.merge_usage repeated") == known.value
                return
        current = rows.get(target)
        if current is None:
            self.expect_error(outcome, NotFoundError, f"{kind}.merge_usage of an unknown state")
            return
        merged = self.expect_value(outcome, f"{kind}.merge_usage")
        assert merged == (current.usage or UsageSummary()).merge(usage)
        stored = self.expect_value(
            self.call(lambda p: getattr(p, kind).get_state(target)), f"{kind}.get_state after merge_usage"
        )
        rows[target] = current.evolve(usage=merged, version=current.version + 1, updated_at=stored.updated_at)
        if key is not None:
            self.model.keys[key] = (request, merged)

    @step(data=st.data())
    def delete_workflow(self, data: st.DataObject) -> None:
        target = self.existing_or_unknown(data, WORKFLOWS, list(self.model.workflows))
        outcome = self.call(lambda p: p.workflows.delete(target))
        if target not in self.model.workflows:
            self.expect_error(outcome, NotFoundError, "workflows.delete of an unknown workflow")
            return
        self.expect_value(outcome, "workflows.delete")
        self.model.delete_workflow(target)

    @step(data=st.data())
    def usage_total(self, data: st.DataObject) -> None:
        target = self.existing_or_unknown(data, WORKFLOWS, list(self.model.workflows))
        outcome = self.call(lambda p: p.workflows.usage_total(target))
        if target not in self.model.workflows:
            self.expect_error(outcome, NotFoundError, "usage_total of an unknown workflow")
            return
        assert self.expect_value(outcome, "usage_total") == self.model.usage_total(target)

    @step(data=st.data())
    def complete_workflow(self, data: st.DataObject) -> None:
        target = self.existing_or_unknown(data, WORKFLOWS, list(self.model.workflows))
        transform = data.draw(st.sampled_from(["default", "raises", "count"]))

        def transformer(wf: WorkflowState) -> dict[str, object]:
            if transform == "raises":
                raise RuntimeError("no output today")
            return {"tasks": len(wf.tasks)}

        outcome = self.call(
            lambda p: p.workflows.complete_workflow(target, None if transform == "default" else transformer)
        )
        current = self.model.workflows.get(target)
        if current is not None and current.status in (TaskStatus.SUCCESS, TaskStatus.FAILED):
            assert self.expect_value(outcome, "complete_workflow of a finished workflow") == current
            return
        decided = self.model.completion(target)
        if not isinstance(decided, tuple):
            self.expect_error(outcome, decided, "complete_workflow")
            return
        assert current is not None
        status, output, error = decided
        returned = self.expect_value(outcome, "complete_workflow")
        if transform == "raises":
            status, output = TaskStatus.FAILED, None
            error = {"code": "OUTPUT_TRANSFORMATION_FAILED", "message": "RuntimeError: no output today"}
        elif transform == "count":
            output = {"tasks": len(self.model.with_tasks(current).tasks)}
        expected = current.evolve(
            status=status,
            output=output,
            error=error,
            version=current.version + 1,
            updated_at=returned.updated_at,
        )
        assert returned == expected, f"{returned!r} != {expected!r}"
        self.model.workflows[target] = expected

    @step(data=st.data())
    def purge(self, data: st.DataObject) -> None:
        wanted = data.draw(
            st.frozensets(statuses, min_size=1, max_size=4) | st.just(frozenset(TERMINAL_STATUSES))
        )
        moments = sorted(w.updated_at for w in self.model.workflows.values() if w.updated_at is not None)
        bound = data.draw(st.sampled_from([*moments, datetime.now(UTC)])) if moments else datetime.now(UTC)
        batch = data.draw(st.integers(1, 4))
        outcome = self.call(
            lambda p: p.workflows.purge(finished_before=bound, statuses=wanted, batch_size=batch)
        )
        gone = self.model.purgeable(bound, wanted)
        assert self.expect_value(outcome, "workflows.purge") == len(gone)
        for workflow_exec_id in gone:
            self.model.delete_workflow(workflow_exec_id)

    # Tasks: writes ----------------------------------------------------------------------------------------

    @step(data=st.data())
    def upsert_task(self, data: st.DataObject) -> None:
        state = self.new_task(data)
        outcome = self.call(lambda p: p.tasks.upsert_state(state))
        refused = self.model.task_write_error(state)
        if refused is not None:
            self.expect_error(outcome, refused, "tasks.upsert_state with a bad reference")
            return
        before = self.model.tasks.get(state.task_exec_id)
        returned = self.expect_value(outcome, "tasks.upsert_state")
        self.record_task(state, returned, expected_version=1 if before is None else before.version + 1)

    @step(data=st.data())
    def update_task(self, data: st.DataObject) -> None:
        target = self.existing_or_unknown(data, TASKS, list(self.model.tasks))
        current = self.model.tasks.get(target)
        if current is None:
            state = self.new_task(data, target)
            version = data.draw(st.integers(0, 3))
        else:
            # A worker's copy: changed output and status, sometimes other fields; the claim fields of the copy
            # (a stale lease, say) must not reach the store.
            state = current.evolve(
                status=data.draw(statuses),
                output=data.draw(json_objects),
                tool_id=data.draw(st.sampled_from([current.tool_id, *TOOLS])),
                parent_state_id=data.draw(
                    st.sampled_from([current.parent_state_id, None, *sorted(self.model.tasks), "ghost"])
                ),
                claimed_by=data.draw(st.sampled_from([current.claimed_by, "forged"])),
                lease_expires_at=data.draw(
                    st.sampled_from([current.lease_expires_at, datetime(2000, 1, 1, tzinfo=UTC)])
                ),
                attempt=data.draw(st.sampled_from([current.attempt, 77])),
                priority=data.draw(st.sampled_from([current.priority, 2])),
            )
            version = data.draw(st.sampled_from([current.version, current.version - 1, current.version + 1]))
        outcome = self.call(lambda p: p.tasks.update_state(state, version))
        if state.parent_state_id == state.task_exec_id:
            self.expect_error(outcome, ValidationError, "update_state naming the task its own parent")
            return
        if current is None:
            self.expect_error(outcome, NotFoundError, "update_state of an unknown task")
            return
        refused = self.model.task_write_error(state)
        if version != current.version:
            # A stale version is refused whatever else is wrong; a bad reference is refused at the current one.
            if (
                outcome.error is not None
                and isinstance(outcome.error, ValidationError)
                and refused is not None
            ):
                return
            self.expect_error(outcome, ConflictError, "update_state with a stale version")
            return
        if refused is not None:
            self.expect_error(outcome, refused, "update_state with a bad reference")
            return
        returned = self.expect_value(outcome, "tasks.update_state")
        self.record_task(state, returned, expected_version=current.version + 1)

    @step(data=st.data())
    def hostile_task_write(self, data: st.DataObject) -> None:
        if not self.model.workflows:
            return
        base = self.new_task(data).evolve(
            workflow_exec_id=data.draw(st.sampled_from(sorted(self.model.workflows))), parent_state_id=None
        )
        field = data.draw(
            st.sampled_from(["task_exec_id", "task_id", "agent_id", "input", "output", "status", "usage"])
        )
        if field in ("task_exec_id", "task_id", "agent_id"):
            bad: object = data.draw(st.sampled_from(HOSTILE_IDS))
        elif field == "status":
            bad = "BOGUS"
        elif field == "usage":
            bad = UsageSummary((UsageEntry("p", "m", "s", -1, 0, 0),))
        else:
            bad = data.draw(st.sampled_from(HOSTILE_JSON))
        state = _with_field(base, field, bad)
        how = data.draw(st.sampled_from(["upsert", "bulk", "update"]))
        if how == "upsert":
            outcome = self.call(lambda p: p.tasks.upsert_state(state))
        elif how == "bulk":
            outcome = self.call(lambda p: p.tasks.bulk_upsert([base, state]))
        else:
            outcome = self.call(lambda p: p.tasks.update_state(state, 1))
        self.expect_error(outcome, ValidationError, f"{how} with a hostile {field}")

    @step(data=st.data())
    def bulk_upsert(self, data: st.DataObject) -> None:
        states = [self.new_task(data) for _ in range(data.draw(st.integers(0, 4)))]
        outcome = self.call(lambda p: p.tasks.bulk_upsert(states))
        # One batch, one transaction: every state stored, or none (a bad reference refuses the batch). A later
        # state may reference an earlier one of the batch as its parent, or write the same task again.
        trial = self.model.copy()
        refused = None
        for state in states:
            refused = refused or trial.task_write_error(state)
            if refused is None:
                trial.tasks[state.task_exec_id] = state
        if refused is not None:
            self.expect_error(outcome, refused, "bulk_upsert with a bad reference")
            return
        assert self.expect_value(outcome, "bulk_upsert") == len(states)
        last = {state.task_exec_id: index for index, state in enumerate(states)}
        stored = {
            task_exec_id: self.expect_value(
                self.call(lambda p, i=task_exec_id: p.tasks.get_state(i)), "get_state"
            )
            for task_exec_id in last
        }
        base = {i: 0 if i not in self.model.tasks else self.model.tasks[i].version for i in last}
        # Every write of the batch in order, an earlier write of a task too: each appends its own history record.
        for index, state in enumerate(states):
            task_exec_id = state.task_exec_id
            base[task_exec_id] += 1
            if index == last[task_exec_id]:
                self.record_task(state, stored[task_exec_id], expected_version=base[task_exec_id])
            else:
                earlier = self.model.stored_task(state, stored[task_exec_id])
                self.model.tasks[task_exec_id] = earlier.evolve(version=base[task_exec_id])

    @step(data=st.data())
    def merge_task_usage(self, data: st.DataObject) -> None:
        target = self.existing_or_unknown(data, TASKS, list(self.model.tasks))
        usage = data.draw(usages)
        key = data.draw(st.none() | st.sampled_from(KEYS))
        outcome = self.call(lambda p: p.tasks.merge_usage(target, usage, idempotency_key=key))
        self.check_merge(outcome, "tasks", target, usage, key)

    @step(data=st.data())
    def delete_task(self, data: st.DataObject) -> None:
        target = self.existing_or_unknown(data, TASKS, list(self.model.tasks))
        outcome = self.call(lambda p: p.tasks.delete_state(target))
        if target not in self.model.tasks:
            self.expect_error(outcome, NotFoundError, "delete_state of an unknown task")
            return
        self.expect_value(outcome, "delete_state")
        self.model.delete_tasks(self.model.subtree(target))

    # Tasks: reads -----------------------------------------------------------------------------------------

    @step(data=st.data())
    def get_task(self, data: st.DataObject) -> None:
        target = self.existing_or_unknown(data, TASKS, list(self.model.tasks))
        outcome = self.call(lambda p: p.tasks.get_state(target))
        if target not in self.model.tasks:
            self.expect_error(outcome, NotFoundError, "tasks.get_state of an unknown task")
        else:
            assert self.expect_value(outcome, "tasks.get_state") == self.model.tasks[target]
        # Outside a transaction, the locking read is refused.
        self.expect_error(
            self.call(lambda p: p.tasks.get_state_for_update(target)),
            TransactionRequiredError,
            "get_state_for_update outside a transaction",
        )

    @step(data=st.data())
    def list_tasks(self, data: st.DataObject) -> None:
        flt = self.task_filter(data)
        order = data.draw(st.sampled_from(["asc", "desc"]))
        limit = data.draw(st.integers(1, 5))
        expected = self.model.tasks_matching(flt, order)
        seen: list[TaskState] = []
        cursor: str | None = None
        for _ in range(len(expected) + 2):
            page = self.expect_value(
                self.call(lambda p, c=cursor: p.tasks.list_states(flt, limit=limit, cursor=c, order=order)),
                "tasks.list_states",
            )
            assert len(page.items) <= limit
            seen.extend(page.items)
            cursor = page.next_cursor
            if cursor is None:
                break
        assert seen == expected, f"{[t.task_exec_id for t in seen]} != {[t.task_exec_id for t in expected]}"
        assert self.expect_value(self.call(lambda p: p.tasks.count_states(flt)), "count_states") == len(
            expected
        )
        iterated = self.driver.collect(lambda p: p.tasks.iter_states(flt, batch_size=limit))
        assert self.expect_value(iterated, "iter_states") == self.model.tasks_matching(flt)

    @step(data=st.data())
    def read_tasks_by(self, data: st.DataObject) -> None:
        how = data.draw(
            st.sampled_from(
                [
                    "ids",
                    "in_workflow",
                    "by_status",
                    "by_agent",
                    "by_tool",
                    "children",
                    "child",
                    "outputs",
                    "progress",
                ]
            )
        )
        workflow = data.draw(st.sampled_from([*WORKFLOWS, "ghost"]))
        parent = data.draw(st.sampled_from([*TASKS, "ghost"]))
        in_workflow = [t for t in self.model.tasks_matching(None) if t.workflow_exec_id == workflow]
        if how == "ids":
            ids = data.draw(st.lists(st.sampled_from([*TASKS, "ghost"]), max_size=6))
            outcome = self.call(lambda p: p.tasks.list_by_ids(ids))
            expected: object = [t for t in self.model.tasks_matching(None) if t.task_exec_id in set(ids)]
        elif how == "in_workflow":
            outcome = self.call(lambda p: p.tasks.list_tasks_in_workflow(workflow))
            expected = self.model.latest_per_task_id(in_workflow)
        elif how == "by_status":
            status = data.draw(statuses)
            outcome = self.call(lambda p: p.tasks.list_tasks_by_status(workflow, status))
            expected = [t for t in in_workflow if t.status is status]
        elif how == "by_agent":
            agent = data.draw(st.sampled_from(AGENTS))
            outcome = self.call(lambda p: p.tasks.list_tasks_by_agent(workflow, agent))
            expected = [t for t in in_workflow if t.agent_id == agent]
        elif how == "by_tool":
            tool = data.draw(st.sampled_from(TOOLS))
            outcome = self.call(lambda p: p.tasks.list_tasks_by_tool(workflow, tool))
            expected = [t for t in in_workflow if t.tool_id == tool]
        elif how == "children":
            outcome = self.call(lambda p: p.tasks.list_children(parent))
            expected = self.model.children(parent)
        elif how == "child":
            task_id = data.draw(st.sampled_from(LOGICAL))
            outcome = self.call(lambda p: p.tasks.get_child_by_task_id(parent, task_id))
            matching = [c for c in self.model.children(parent) if c.task_id == task_id]
            if not matching:
                self.expect_error(outcome, NotFoundError, "get_child_by_task_id without such a child")
                return
            expected = matching[-1]
        elif how == "outputs":
            outcome = self.call(lambda p: p.tasks.list_children_outputs(parent))
            expected = self.model.children_outputs(parent)
        else:
            outcome = self.call(lambda p: p.tasks.get_progress_info(parent))
            expected = self.model.progress(parent)
        assert self.expect_value(outcome, how) == expected

    @step(data=st.data())
    def task_tree(self, data: st.DataObject) -> None:
        root = data.draw(st.sampled_from([*TASKS, "ghost"]))
        depth = data.draw(st.integers(1, 4))
        expected = self.model.tree(root, depth)
        assert (
            self.expect_value(self.call(lambda p: p.tasks.get_task_tree(root, max_depth=depth)), "tree")
            == expected
        )
        streamed = self.driver.collect(lambda p: p.tasks.iter_task_tree(root, max_depth=depth))
        assert self.expect_value(streamed, "iter_task_tree") == expected

    # Claims -----------------------------------------------------------------------------------------------

    @step(data=st.data())
    def claim(self, data: st.DataObject) -> None:
        flt = data.draw(
            st.none() | st.builds(TaskFilter, workflow_exec_id=st.sampled_from([*WORKFLOWS, "ghost"]))
        )
        worker = data.draw(st.sampled_from(WORKERS))
        limit = data.draw(st.integers(1, 3))
        short = data.draw(st.booleans())
        expected, ended = self.model.claimed_by_a_claim(flt, limit)
        claimed = self.expect_value(
            self.call(
                lambda p: p.tasks.claim(
                    flt, worker=worker, limit=limit, lease=SHORT_LEASE if short else LONG_LEASE
                )
            ),
            "claim",
        )
        assert [t.task_exec_id for t in claimed] == [t.task_exec_id for t in expected]
        for got, was in zip(claimed, expected, strict=True):
            assert got.lease_expires_at is not None
            lapsed_error = (
                {"error": "lease lapsed", "worker": was.claimed_by, "attempt": was.attempt}
                if was.status is TaskStatus.RUNNING
                else was.last_error
            )
            assert got == was.evolve(
                status=TaskStatus.RUNNING,
                claimed_by=worker,
                lease_expires_at=got.lease_expires_at,
                version=was.version + 1,
                updated_at=got.updated_at,
                attempt=was.attempt + 1,
                last_error=lapsed_error,
            )
            self.model.tasks[got.task_exec_id] = got
            self.model.lapsed.discard(got.task_exec_id)
        for was in ended:  # poison work: ended FAILED by the claim, not handed out
            dead = self.expect_value(
                self.call(lambda p, i=was.task_exec_id: p.tasks.get_state(i)), "get_state"
            )
            assert dead.last_error is not None and dead.last_error["error"] == "attempts exhausted"
            assert dead == was.evolve(
                status=TaskStatus.FAILED,
                lease_expires_at=None,
                version=was.version + 1,
                updated_at=dead.updated_at,
                last_error=dead.last_error,
            )
            self.model.tasks[was.task_exec_id] = dead
            self.model.lapsed.discard(was.task_exec_id)
        if short and claimed:
            self.lapse([t.task_exec_id for t in claimed])

    def lapse(self, ids: list[str]) -> None:
        """Let short leases lapse (on the database's clock too: it is this machine's)."""
        import time

        time.sleep(LAPSE)
        self.model.lapsed.update(ids)

    @step(data=st.data())
    def heartbeat(self, data: st.DataObject) -> None:
        ids = data.draw(st.lists(st.sampled_from([*TASKS, "ghost"]), max_size=3))
        worker = data.draw(st.sampled_from(WORKERS))
        short = data.draw(st.booleans())
        held = self.model.held_by(ids, worker)
        beat: Heartbeat = self.expect_value(
            self.call(
                lambda p: p.tasks.heartbeat(ids, worker=worker, lease=SHORT_LEASE if short else LONG_LEASE)
            ),
            "heartbeat",
        )
        assert beat.held == held and beat.lost == [i for i in dict.fromkeys(ids) if i not in held]
        assert (beat.lease_expires_at is None) == (not held)
        for task_exec_id in held:
            self.model.tasks[task_exec_id] = self.model.tasks[task_exec_id].evolve(
                lease_expires_at=beat.lease_expires_at
            )
            self.model.lapsed.discard(task_exec_id)
        if short and held:
            self.lapse(held)

    @step(data=st.data())
    def release(self, data: st.DataObject) -> None:
        target = self.existing_or_unknown(data, TASKS, list(self.model.tasks))
        worker = data.draw(st.sampled_from(WORKERS))
        outcome = self.call(lambda p: p.tasks.release(target, worker=worker))
        current = self.model.tasks.get(target)
        if current is None:
            self.expect_error(outcome, NotFoundError, "release of an unknown task")
            return
        if not (current.status is TaskStatus.RUNNING and current.claimed_by == worker):
            self.expect_error(outcome, ConflictError, "release by a worker that does not hold it")
            return
        returned = self.expect_value(outcome, "release")
        expected = current.evolve(
            status=TaskStatus.PENDING,
            claimed_by=None,
            lease_expires_at=None,
            version=current.version + 1,
            updated_at=returned.updated_at,
        )
        assert returned == expected, f"{returned!r} != {expected!r}"
        self.model.tasks[target] = expected
        self.model.lapsed.discard(target)

    @step(data=st.data())
    def fail(self, data: st.DataObject) -> None:
        target = self.existing_or_unknown(data, TASKS, list(self.model.tasks))
        worker = data.draw(st.sampled_from(WORKERS))
        error = data.draw(st.sampled_from([{"why": "boom"}, {"n": [1, 2]}, "not an object"]))
        retry_in = data.draw(st.sampled_from([None, 0, 3600]))
        outcome = self.call(lambda p: p.tasks.fail(target, worker=worker, error=error, retry_in=retry_in))  # pyright: ignore[reportArgumentType]
        current = self.model.tasks.get(target)
        if not isinstance(error, dict):
            self.expect_error(outcome, ValidationError, "fail with an error that is not a JSON object")
            return
        if current is None:
            self.expect_error(outcome, NotFoundError, "fail of an unknown task")
            return
        if not (current.status is TaskStatus.RUNNING and current.claimed_by == worker):
            self.expect_error(outcome, ConflictError, "fail by a worker that does not hold it")
            return
        returned = self.expect_value(outcome, "fail")
        exhausted = current.max_attempts is not None and current.attempt >= current.max_attempts
        if exhausted:
            expected = current.evolve(status=TaskStatus.FAILED, lease_expires_at=None)
        else:
            assert returned.run_after is not None
            expected = current.evolve(
                status=TaskStatus.PENDING,
                claimed_by=None,
                lease_expires_at=None,
                run_after=returned.run_after,
            )
        expected = expected.evolve(
            last_error=error, version=current.version + 1, updated_at=returned.updated_at
        )
        assert returned == expected, f"{returned!r} != {expected!r}"
        self.model.tasks[target] = expected
        self.model.lapsed.discard(target)

    @step(data=st.data())
    def cancel(self, data: st.DataObject) -> None:
        ids = data.draw(st.lists(st.sampled_from([*TASKS, "ghost"]), max_size=3))
        reason = data.draw(st.sampled_from(["user asked", "bad\x00reason"]))
        outcome = self.call(lambda p: p.tasks.cancel(ids, reason=reason))
        if "\x00" in reason:
            self.expect_error(outcome, ValidationError, "cancel with a NUL in its reason")
            return
        returned = self.expect_value(outcome, "cancel")
        live = [
            i
            for i in dict.fromkeys(ids)
            if i in self.model.tasks and self.model.tasks[i].status not in TERMINAL_STATUSES
        ]
        assert [t.task_exec_id for t in returned] == live
        for got in returned:
            current = self.model.tasks[got.task_exec_id]
            expected = current.evolve(
                status=TaskStatus.CANCELED,
                claimed_by=None,
                lease_expires_at=None,
                last_error={"code": "CANCELED", "message": reason},
                version=current.version + 1,
                updated_at=got.updated_at,
            )
            assert got == expected, f"{got!r} != {expected!r}"
            self.model.tasks[got.task_exec_id] = expected
            self.model.lapsed.discard(got.task_exec_id)

    @step(data=st.data())
    def set_limit(self, data: st.DataObject) -> None:
        key = data.draw(st.sampled_from(LIMIT_KEYS))
        concurrency = data.draw(st.sampled_from([None, 0, 1, 2, -1]))
        outcome = self.call(lambda p: p.tasks.set_limit(key, concurrency=concurrency))
        if concurrency is not None and concurrency < 0:
            self.expect_error(outcome, ValidationError, "set_limit with a negative concurrency")
            return
        self.expect_value(outcome, "set_limit")
        if concurrency is None:
            self.model.limits.pop(key, None)
        else:
            self.model.limits[key] = concurrency

    @step(data=st.data())
    def queue_stats(self, data: st.DataObject) -> None:
        flt = data.draw(
            st.none() | st.builds(TaskFilter, workflow_exec_id=st.sampled_from([*WORKFLOWS, "ghost"]))
        )
        stats = self.expect_value(self.call(lambda p: p.tasks.queue_stats(flt)), "queue_stats")
        matching = self.model.tasks_matching(flt)
        counts: dict[TaskStatus, int] = {}
        for t in matching:
            counts[t.status] = counts.get(t.status, 0) + 1
        assert stats.counts == counts
        pending = [t for t in matching if t.status is TaskStatus.PENDING]
        assert stats.due == sum(1 for t in pending if self.model.due(t))
        assert stats.delayed == len(pending) - stats.due
        assert stats.dead == sum(
            1
            for t in matching
            if t.status is TaskStatus.FAILED and t.max_attempts is not None and t.attempt >= t.max_attempts
        )
        if flt is None:  # every key running or limited
            running_keys = {
                t.concurrency_key for t in self.model.tasks.values() if t.status is TaskStatus.RUNNING
            }
            keys = sorted((running_keys - {None}) | set(self.model.limits))
        else:  # the keys of the live tasks the filter selects
            live = (TaskStatus.PENDING, TaskStatus.RUNNING)
            keys = sorted({t.concurrency_key for t in matching if t.status in live} - {None})
        assert [(k.key, k.running, k.concurrency) for k in stats.keys] == [
            (k, self.model.running_of(k), self.model.limits.get(k)) for k in keys
        ]

    @step(data=st.data())
    def look_for_work(self, data: st.DataObject) -> None:
        flt = data.draw(
            st.none() | st.builds(TaskFilter, workflow_exec_id=st.sampled_from([*WORKFLOWS, "ghost"]))
        )
        found = self.expect_value(self.call(lambda p: p.tasks.wait_for_work(flt, timeout=0)), "wait_for_work")
        assert found is bool(self.model.claimable(flt))
        limit = data.draw(st.integers(1, 3))
        lapsed = self.expect_value(self.call(lambda p: p.tasks.list_lapsed(flt, limit=limit)), "list_lapsed")
        assert [t.task_exec_id for t in lapsed] == [
            t.task_exec_id for t in self.model.lapsed_matching(flt)[:limit]
        ]

    # Units of work and keys -------------------------------------------------------------------------------

    @step(data=st.data())
    def transaction(self, data: st.DataObject) -> None:
        """A unit of several writes that commits, or that raises at its end and rolls back."""
        if not self.model.workflows:
            return
        fail = data.draw(st.booleans())
        trial = self.model.copy()
        steps: list[Any] = []
        plans: list[tuple[str, Any]] = []
        for _ in range(data.draw(st.integers(1, 3))):
            kind = data.draw(st.sampled_from(["status", "task", "lock"]))
            if kind == "status":
                target = data.draw(st.sampled_from(sorted(trial.workflows)))
                status = data.draw(statuses)
                steps.append(lambda tx, t=target, s=status: tx.workflows.update_status(t, s))
                plans.append(("status", (target, status)))
            elif kind == "task":
                state = self.new_task(data).evolve(
                    workflow_exec_id=data.draw(st.sampled_from(sorted(trial.workflows))), parent_state_id=None
                )
                steps.append(lambda tx, s=state: tx.tasks.upsert_state(s))
                plans.append(("task", state))
                trial.tasks[state.task_exec_id] = state
            elif trial.tasks:
                target = data.draw(st.sampled_from(sorted(trial.tasks)))
                steps.append(lambda tx, t=target: tx.tasks.get_state_for_update(t))
                plans.append(("lock", target))
        outcomes, error = self.driver.in_transaction(steps, fail=fail)
        assert error is None, f"a unit of valid writes failed: {error!r}"
        if fail:
            return  # rolled back: the invariant proves nothing of it stayed
        for (kind, plan), outcome in zip(plans, outcomes, strict=True):
            if kind == "status":
                target, status = plan
                current = self.model.workflows[target]
                self.model.workflows[target] = current.evolve(
                    status=status, version=current.version + 1, updated_at=outcome.value.updated_at
                )
            elif kind == "task":
                before = self.model.tasks.get(plan.task_exec_id)
                self.record_task(
                    plan, outcome.value, expected_version=1 if before is None else before.version + 1
                )
            else:
                assert outcome.value == self.model.tasks[plan]

    @step(data=st.data())
    def run_in_transaction(self, data: st.DataObject) -> None:
        """``run_in_transaction`` with a key: the unit runs once per key; a repeat returns its result."""
        if not self.model.workflows:
            return
        key = data.draw(st.none() | st.sampled_from(KEYS))
        target = data.draw(st.sampled_from(sorted(self.model.workflows)))
        status = data.draw(statuses)
        outcome = self.driver.run_in_transaction(
            [lambda tx: tx.workflows.update_status(target, status)], key, _version_of
        )
        if key is not None:
            known = self.model.keyed(key, "run_in_transaction")
            if known is not None:
                if known.error is not None:
                    self.expect_error(
                        outcome, known.error, "run_in_transaction with a key of another request"
                    )
                else:
                    assert self.expect_value(outcome, "run_in_transaction repeated") == known.value
                return
        result = self.expect_value(outcome, "run_in_transaction")
        current = self.model.workflows[target]
        assert result == [current.version + 1]
        stored = self.expect_value(self.call(lambda p: p.workflows.get_state(target)), "get_state")
        self.model.workflows[target] = current.evolve(
            status=status, version=current.version + 1, updated_at=stored.updated_at
        )
        if key is not None:
            self.model.keys[key] = ("run_in_transaction", result)

    # The asynchronous API: cancellations ------------------------------------------------------------------

    @precondition(lambda self: self.driver.cancellable)
    @step(data=st.data())
    def cancelled_merge_then_retried_with_its_key(self, data: st.DataObject) -> None:
        """A merge cancelled at a random moment may or may not have committed; retried with its key, it has been
        applied exactly once."""
        if not self.model.tasks:
            return
        target = data.draw(st.sampled_from(sorted(self.model.tasks)))
        usage = data.draw(usages)
        self.fresh_keys += 1
        key = f"cancelled-{self.fresh_keys}"  # a key of its own: the first call with it must apply
        delay = data.draw(st.just(0.0) | st.floats(0, 0.004))
        first = self.driver.cancelled(
            lambda p: p.tasks.merge_usage(target, usage, idempotency_key=key), delay
        )
        if first is not None:
            self.expect_value(first, "merge_usage that finished before its cancellation")
        outcome = self.call(lambda p: p.tasks.merge_usage(target, usage, idempotency_key=key))
        self.check_merge(outcome, "tasks", target, usage, key)

    @precondition(lambda self: self.driver.cancellable)
    @step(data=st.data())
    def cancelled_write(self, data: st.DataObject) -> None:
        """A status update cancelled at a random moment: applied or not, never half; the connection stays
        usable (the invariant reads through it right after)."""
        if not self.model.workflows:
            return
        target = data.draw(st.sampled_from(sorted(self.model.workflows)))
        status = data.draw(statuses)
        delay = data.draw(st.just(0.0) | st.floats(0, 0.004))
        finished = self.driver.cancelled(lambda p: p.workflows.update_status(target, status), delay)
        stored = self.expect_value(
            self.call(lambda p: p.workflows.get_state(target)), "get_state after a cancel"
        )
        current = self.model.workflows[target]
        outcome = (
            "finished"
            if finished is not None
            else "cancelled, applied"
            if stored.version != current.version
            else "cancelled, not applied"
        )
        self.walked[f"cancelled_write ({outcome})"] = self.walked.get(f"cancelled_write ({outcome})", 0) + 1
        if stored.version == current.version:
            assert stored.evolve(tasks={}) == current
        else:
            assert stored.version == current.version + 1
            expected = current.evolve(
                status=status, version=current.version + 1, updated_at=stored.updated_at
            )
            assert stored.evolve(tasks={}) == expected
            self.model.workflows[target] = expected

    # History and workflow control -------------------------------------------------------------------------

    @step(data=st.data())
    def read_history(self, data: st.DataObject) -> None:
        """``tasks.history`` and ``workflows.history`` page by page (``after``), and their refusals."""
        entity = data.draw(st.sampled_from(["task", "workflow"]))
        pool, known = (TASKS, self.model.tasks) if entity == "task" else (WORKFLOWS, self.model.workflows)
        target = self.existing_or_unknown(data, pool, list(known))
        limit = data.draw(st.integers(1, 3))
        if data.draw(st.integers(0, 9)) == 0:
            outcome = self.call(
                lambda p: (p.tasks.history if entity == "task" else p.workflows.history)(target, after=-1)
            )
            self.expect_error(outcome, ValidationError, "history with a negative cursor")
            return
        expected = list(self.model.history.get((entity, target), []))
        if not expected and target not in known:
            outcome = self.call(
                lambda p: (p.tasks.history if entity == "task" else p.workflows.history)(target)
            )
            self.expect_error(outcome, NotFoundError, f"history of an unknown {entity}")
            return
        got: list[Recorded] = []
        after: int | None = None
        while True:
            outcome = self.call(
                lambda p, a=after: (p.tasks.history if entity == "task" else p.workflows.history)(
                    target, after=a, limit=limit
                )
            )
            page: list[HistoryRecord] = self.expect_value(outcome, f"{entity} history")
            assert len(page) <= limit
            if not page:
                break
            got.extend(_recorded(r) for r in page)
            after = page[-1].history_id
        assert got == expected, f"history of {entity} {target!r}:\n  store {got}\n  model {expected}"

    def read_back(self, ids: Sequence[str]) -> dict[str, TaskState]:
        """The stored states of ``ids`` (for the times a control operation stamped them)."""
        found: list[TaskState] = self.expect_value(
            self.call(lambda p: p.tasks.list_by_ids(list(ids))), "list_by_ids"
        )
        return {t.task_exec_id: t for t in found}

    @step(data=st.data())
    def cancel_workflow(self, data: st.DataObject) -> None:
        target = self.existing_or_unknown(data, WORKFLOWS, list(self.model.workflows))
        reason = data.draw(st.sampled_from(["stop", "opérateur", "", "nul\x00"]))
        outcome = self.call(lambda p: p.workflows.cancel(target, reason=reason))
        if "\x00" in reason:
            self.expect_error(outcome, ValidationError, "cancel with a hostile reason")
            return
        current = self.model.workflows.get(target)
        if current is None:
            self.expect_error(outcome, NotFoundError, "cancel of an unknown workflow")
            return
        returned = self.expect_value(outcome, "workflows.cancel")
        error = {"code": "CANCELED", "message": reason}
        doomed = sorted(
            t.task_exec_id
            for t in self.model.tasks.values()
            if t.workflow_exec_id == target and t.status in UNFINISHED
        )
        stored = self.read_back(doomed)
        for task_exec_id in doomed:
            was = self.model.tasks[task_exec_id]
            self.model.tasks[task_exec_id] = was.evolve(
                status=TaskStatus.CANCELED,
                claimed_by=None,
                lease_expires_at=None,
                last_error=error,
                version=was.version + 1,
                updated_at=stored[task_exec_id].updated_at,
            )
            self.model.lapsed.discard(task_exec_id)
        if current.status in UNFINISHED:
            expected = current.evolve(
                status=TaskStatus.CANCELED,
                error=error,
                version=current.version + 1,
                updated_at=returned.updated_at,
            )
        else:
            expected = current
        assert returned == expected, f"{returned!r} != {expected!r}"
        self.model.workflows[target] = expected

    @step(data=st.data())
    def resume_workflow(self, data: st.DataObject) -> None:
        target = self.existing_or_unknown(data, WORKFLOWS, list(self.model.workflows))
        outcome = self.call(lambda p: p.workflows.resume(target))
        current = self.model.workflows.get(target)
        if current is None:
            self.expect_error(outcome, NotFoundError, "resume of an unknown workflow")
            return
        returned = self.expect_value(outcome, "workflows.resume")
        reset = sorted(
            t.task_exec_id
            for t in self.model.tasks.values()
            if t.workflow_exec_id == target and t.status in FAILED_LIKE
        )
        stored = self.read_back(reset)
        for task_exec_id in reset:
            was = self.model.tasks[task_exec_id]
            self.model.tasks[task_exec_id] = was.evolve(
                status=TaskStatus.PENDING,
                error=None,
                claimed_by=None,
                lease_expires_at=None,
                version=was.version + 1,
                updated_at=stored[task_exec_id].updated_at,
            )
        if not reset and current.status not in FAILED_LIKE:
            assert returned == current, f"{returned!r} != {current!r}"
            return
        expected = current.evolve(
            status=TaskStatus.RUNNING,
            output=None,
            error=None,
            version=current.version + 1,
            updated_at=returned.updated_at,
        )
        assert returned == expected, f"{returned!r} != {expected!r}"
        self.model.workflows[target] = expected

    @step(data=st.data())
    def fork_workflow(self, data: st.DataObject) -> None:
        source = self.existing_or_unknown(data, WORKFLOWS, list(self.model.workflows))
        new = data.draw(st.sampled_from(WORKFLOWS))
        mine = sorted(
            (t for t in self.model.tasks.values() if t.workflow_exec_id == source),
            key=lambda t: (t.created_at, t.task_exec_id),
        )
        candidates = [t.task_exec_id for t in mine] + ["ghost"]
        restart = data.draw(st.lists(st.sampled_from(candidates), max_size=2))
        outcome = self.call(
            lambda p: p.workflows.fork(source, new_workflow_exec_id=new, restart_from=restart)
        )
        current = self.model.workflows.get(source)
        if current is None:
            self.expect_error(outcome, NotFoundError, "fork of an unknown workflow")
            return
        existing = self.model.workflows.get(new)
        if existing is not None:
            if existing.forked_from == source:
                returned = self.expect_value(outcome, "fork repeated")
                assert returned == self.model.with_tasks(existing)
                return
            self.expect_error(outcome, DuplicateError, "fork onto a taken workflow id")
            return
        if "ghost" in restart:
            self.expect_error(outcome, ValidationError, "fork from a task of another workflow")
            return
        ids = {t.task_exec_id for t in mine}
        again = _restarted(mine, set(restart))

        def copy_id(task_exec_id: str) -> str:
            rest = task_exec_id.removeprefix(f"{source}/")
            return f"{new}/{rest}"

        if len({copy_id(i) for i in ids}) < len(ids):  # 'w1/x' and 'x' would both be copied to '<new>/x'
            self.expect_error(outcome, ValidationError, "fork whose copies' ids collide")
            return
        if any(copy_id(i) in self.model.tasks for i in ids):
            self.expect_error(outcome, DuplicateError, "fork whose copies take existing task ids")
            return
        returned = self.expect_value(outcome, "workflows.fork")
        stamp = returned.updated_at
        self.model.workflows[new] = WorkflowState(
            new,
            current.workflow_id,
            TaskStatus.PENDING,
            input=current.input,
            version=1,
            created_at=returned.created_at,
            updated_at=stamp,
            forked_from=source,
        )
        for task in mine:
            copy = task.evolve(
                task_exec_id=copy_id(task.task_exec_id),
                workflow_exec_id=new,
                parent_state_id=copy_id(task.parent_state_id)
                if task.parent_state_id in ids and task.parent_state_id is not None
                else task.parent_state_id,
                version=1,
                updated_at=stamp,
                claimed_by=None,
                lease_expires_at=None,
            )
            if task.status is not TaskStatus.SUCCESS or task.task_exec_id in again:
                copy = copy.evolve(
                    status=TaskStatus.PENDING, output=None, error=None, usage=None, attempt=0, last_error=None
                )
            self.model.tasks[copy.task_exec_id] = copy
        assert returned == self.model.with_tasks(self.model.workflows[new])

    @initialize()
    def empty_store(self) -> None:
        """Every example starts from an empty store, on the provider (and connection) of the whole test."""


def _recorded(record: HistoryRecord) -> Recorded:
    return (
        record.entity,
        record.entity_id,
        record.workflow_exec_id,
        record.from_status,
        record.to_status,
        record.worker,
        record.attempt,
        record.version,
    )


def _restarted(tasks: list[TaskState], named: set[str]) -> set[str]:
    """What a fork from ``named`` runs again (the reference's own reading of the rule): the named tasks, every
    task created after the first of them, every task below one of those, every task above one of those."""
    if not named:
        return set()
    order = [t.task_exec_id for t in tasks]
    chosen = set(order[min(order.index(n) for n in named) :])
    parent_of = {t.task_exec_id: t.parent_state_id for t in tasks}
    changed = True
    while changed:
        changed = False
        for task_exec_id, parent in parent_of.items():
            if parent in chosen and task_exec_id not in chosen:  # below
                chosen.add(task_exec_id)
                changed = True
            if task_exec_id in chosen and parent in parent_of and parent not in chosen:  # above
                chosen.add(parent)
                changed = True
    return chosen


def _version_of(state: Any) -> int:
    version: int = state.version
    return version


def _with_field(state: TaskState, field: str, value: object) -> TaskState:
    """``state`` with ``field`` set to ``value`` past the type checker (a hostile value is the point)."""
    import dataclasses

    return dataclasses.replace(state, **{field: value})  # pyright: ignore[reportArgumentType]


def _difference(found: dict[str, Any], expected: dict[str, Any]) -> str:
    lines = []
    for key in sorted(set(found) | set(expected)):
        if found.get(key) != expected.get(key):
            lines.append(f"{key}:\n  store {found.get(key)!r}\n  model {expected.get(key)!r}")
    return "the store differs from the model:\n" + "\n".join(lines)
