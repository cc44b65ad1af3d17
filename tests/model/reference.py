"""The reference model: a plain in-memory account of what a planflow store must hold, and what each call returns.

The state machines (``tests/model/machine.py``) call a real provider and this model side by side, and after every
step compare the whole store with it. The model holds the values the store returned when they were written
(timestamps, versions, lease ends come from the store), and decides everything else itself: which calls succeed,
which raise what, what each read returns, in what order. Nothing here imports a driver.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Generic, TypeVar

from planflow import (
    ConflictError,
    NotFoundError,
    PlanflowError,
    ProgressInfo,
    TaskFilter,
    TaskState,
    TaskStatus,
    TaskTreeNode,
    UsageSummary,
    ValidationError,
    WorkflowFilter,
    WorkflowNotReadyError,
    WorkflowState,
)
from planflow.models import COMPOSITE_TYPES, TERMINAL_STATUSES

#: Statuses that keep a workflow from completing when a top-level task has one.
UNFINISHED = frozenset({TaskStatus.PENDING, TaskStatus.RUNNING, TaskStatus.WAITING, TaskStatus.PAUSED})
FAILED_LIKE = frozenset({TaskStatus.FAILED, TaskStatus.TIMED_OUT, TaskStatus.CANCELED})


@dataclass(frozen=True)
class Expect:
    """What a call must do: return ``value`` (checked by ``check`` when given), or raise ``error``."""

    value: object = None
    error: type[PlanflowError] | None = None
    check: Callable[[object], bool] | None = None

    @classmethod
    def raises(cls, error: type[PlanflowError]) -> Expect:
        return cls(error=error)


def _age(state: TaskState) -> tuple[datetime, str]:
    assert state.created_at is not None
    return (state.created_at, state.task_exec_id)


def _claim_order(state: TaskState) -> tuple[int, datetime, str]:
    """Claims take higher priority first, then the task due longest (``run_after``, or ``created_at``)."""
    due = state.run_after or state.created_at
    assert due is not None
    return (-state.priority, due, state.task_exec_id)


def _exhausted(state: TaskState) -> bool:
    return state.max_attempts is not None and state.attempt >= state.max_attempts


def _workflow_age(state: WorkflowState) -> tuple[datetime, str]:
    assert state.created_at is not None
    return (state.created_at, state.workflow_exec_id)


#: What the model predicts of a history record: entity, id, workflow, from, to, worker, attempt, version.
Recorded = tuple[str, str, str, TaskStatus | None, TaskStatus, str | None, int | None, int]
#: The records of each entity, by (entity, id), oldest first.
History = dict[tuple[str, str], list[Recorded]]
E = TypeVar("E", TaskState, WorkflowState)


def _json(value: object) -> str:
    return json.dumps(value, sort_keys=True)


def recorded_change(before: E | None, after: E) -> Recorded | None:
    """The record the store appends when an entity goes from ``before`` (None: it did not exist) to ``after``:
    one for a change of status, holder, attempt or error (``last_error`` too for a task), else none."""
    if isinstance(after, TaskState):
        old = before if isinstance(before, TaskState) else None
        if old is not None and (
            old.status is after.status
            and old.claimed_by == after.claimed_by
            and old.attempt == after.attempt
            and _json(old.error) == _json(after.error)
            and _json(old.last_error) == _json(after.last_error)
        ):
            return None
        worker = after.claimed_by or (None if old is None else old.claimed_by)
        return (
            "task",
            after.task_exec_id,
            after.workflow_exec_id,
            None if old is None else old.status,
            after.status,
            worker,
            after.attempt,
            after.version,
        )
    assert isinstance(after, WorkflowState)
    if before is not None and before.status is after.status and _json(before.error) == _json(after.error):
        return None
    return (
        "workflow",
        after.workflow_exec_id,
        after.workflow_exec_id,
        None if before is None else before.status,
        after.status,
        None,
        None,
        after.version,
    )


class Tracked(dict[str, E], Generic[E]):
    """The tasks or workflows of the model: storing an entity appends the history record the store's triggers
    append for that change (so every rule that changes the model predicts the history with no more code)."""

    def __init__(self, history: History, items: Iterable[tuple[str, E]] = ()) -> None:
        super().__init__(items)
        self.history = history

    def __setitem__(self, key: str, value: E) -> None:
        record = recorded_change(self.get(key), value)
        if record is not None:
            self.history.setdefault((record[0], key), []).append(record)
        super().__setitem__(key, value)


def _new_history() -> History:
    return {}


@dataclass
class Model:
    """Everything a store holds, as the public API shows it, and the history it recorded."""

    history: History = field(default_factory=_new_history)
    workflows: dict[str, WorkflowState] = field(default_factory=dict[str, WorkflowState])
    tasks: dict[str, TaskState] = field(default_factory=dict[str, TaskState])
    #: Task ids whose lease has certainly lapsed (a short lease followed by a pause); the others hold theirs.
    lapsed: set[str] = field(default_factory=set[str])
    #: Concurrency limits by key (``tasks.set_limit``; rates are left to the contract tests, being timed).
    limits: dict[str, int] = field(default_factory=dict[str, int])
    #: Idempotency key -> (request, outcome): the first outcome a repeat returns.
    keys: dict[str, tuple[str, object]] = field(default_factory=dict[str, tuple[str, object]])

    def __post_init__(self) -> None:
        self.workflows = Tracked(self.history, self.workflows.items())
        self.tasks = Tracked(self.history, self.tasks.items())

    def copy(self) -> Model:
        return dataclasses.replace(
            self,
            history={key: list(records) for key, records in self.history.items()},
            workflows=dict(self.workflows),
            tasks=dict(self.tasks),
            lapsed=set(self.lapsed),
            keys=dict(self.keys),
        )

    def history_of_workflow(self, workflow_exec_id: str) -> dict[tuple[str, str], list[Recorded]]:
        """The records of a workflow and of its tasks, by entity (a task deleted alone keeps its records)."""
        found: dict[tuple[str, str], list[Recorded]] = {}
        for key, records in self.history.items():
            mine = [r for r in records if r[2] == workflow_exec_id]
            if mine:
                found[key] = mine
        return found

    # Tasks ------------------------------------------------------------------------------------------------

    def task_write_error(self, state: TaskState) -> type[PlanflowError] | None:
        """Why an upsert or update of ``state`` must be refused (references), or ``None``."""
        if state.parent_state_id == state.task_exec_id:
            return ValidationError
        if state.workflow_exec_id not in self.workflows:
            return ValidationError
        if state.parent_state_id is not None and state.parent_state_id not in self.tasks:
            return ValidationError
        return None

    def stored_task(self, given: TaskState, returned: TaskState) -> TaskState:
        """What the store keeps of an upsert or update of ``given`` that returned ``returned``: the caller's
        fields, the store's version and times, the claim fields as they were."""
        before = self.tasks.get(given.task_exec_id)
        return given.evolve(
            version=returned.version,
            created_at=returned.created_at if before is None else before.created_at,
            updated_at=returned.updated_at,
            claimed_by=None if before is None else before.claimed_by,
            lease_expires_at=None if before is None else before.lease_expires_at,
            attempt=0 if before is None else before.attempt,
        )

    def children(self, parent: str) -> list[TaskState]:
        return sorted((t for t in self.tasks.values() if t.parent_state_id == parent), key=_age)

    def subtree(self, root: str) -> set[str]:
        """``root`` and every task below it (what deleting it deletes)."""
        found = {root}
        frontier = [root]
        while frontier:
            current = frontier.pop()
            for task in self.tasks.values():
                if task.parent_state_id == current and task.task_exec_id not in found:
                    found.add(task.task_exec_id)
                    frontier.append(task.task_exec_id)
        return found

    def delete_tasks(self, ids: Iterable[str]) -> None:
        for task_exec_id in ids:
            self.tasks.pop(task_exec_id, None)
            self.lapsed.discard(task_exec_id)

    def delete_workflow(self, workflow_exec_id: str) -> None:
        """The workflow, its tasks, and every task below one of them, of whatever workflow (a parent may be a task
        of another workflow: deleting the parent deletes its subtree)."""
        del self.workflows[workflow_exec_id]
        for key in list(self.history):  # its records and its tasks' go with it
            kept = [r for r in self.history[key] if r[2] != workflow_exec_id]
            if kept:
                self.history[key] = kept
            else:
                del self.history[key]
        doomed: set[str] = set()
        for task in [t for t in self.tasks.values() if t.workflow_exec_id == workflow_exec_id]:
            doomed |= self.subtree(task.task_exec_id)
        self.delete_tasks(doomed)

    def task_matches(self, task: TaskState, flt: TaskFilter | None) -> bool:
        if flt is None:
            return True
        for name in (
            "status",
            "workflow_id",
            "workflow_exec_id",
            "task_id",
            "task_exec_id",
            "parent_state_id",
            "agent_id",
            "action_id",
            "tool_id",
            "execution_type",
        ):
            wanted = getattr(flt, name)
            if wanted is not None and getattr(task, name) != wanted:
                return False
        if flt.statuses is not None and task.status not in set(flt.statuses):
            return False
        return _within(task.created_at, task.updated_at, flt)

    def tasks_matching(self, flt: TaskFilter | None, order: str = "asc") -> list[TaskState]:
        found = sorted((t for t in self.tasks.values() if self.task_matches(t, flt)), key=_age)
        return found[::-1] if order == "desc" else found

    def latest_per_task_id(self, tasks: Iterable[TaskState]) -> dict[str, TaskState]:
        latest: dict[str, TaskState] = {}
        for task in sorted(tasks, key=_age):
            latest[task.task_id] = task
        return dict(sorted(latest.items(), key=lambda item: _age(item[1])))

    def tree(self, root: str, max_depth: int) -> list[TaskTreeNode]:
        if root not in self.tasks:
            return []
        nodes: list[TaskTreeNode] = []

        def walk(task: TaskState, depth: int) -> None:
            nodes.append(TaskTreeNode(task, depth))
            if depth >= max_depth:
                return
            for child in self.children(task.task_exec_id):
                if child.task_exec_id != root:
                    walk(child, depth + 1)

        walk(self.tasks[root], 0)
        return nodes

    def progress(self, parent: str) -> ProgressInfo:
        counts: dict[TaskStatus, int] = {}
        for child in self.children(parent):
            counts[child.status] = counts.get(child.status, 0) + 1
        return ProgressInfo(total=sum(counts.values()), status_counts=counts)

    def children_outputs(self, parent: str) -> dict[str, object]:
        return {c.task_id: c.output for c in self.children(parent) if c.output is not None}

    # Claims -----------------------------------------------------------------------------------------------

    def claim_eligible(self, task: TaskState, flt: TaskFilter | None) -> bool:
        """Whether a claim with ``flt`` may take ``task`` by its kind: composite parents only when named."""
        named = flt is not None and (flt.execution_type is not None or flt.execution_types is not None)
        return named or task.execution_type not in COMPOSITE_TYPES

    def due(self, task: TaskState) -> bool:
        return task.run_after is None or task.run_after <= datetime.now(task.run_after.tzinfo)

    def claimable(self, flt: TaskFilter | None) -> list[TaskState]:
        """Every claimable task matching ``flt`` (pending and due, or running with a lapsed lease), oldest first."""
        return [
            t
            for t in self.tasks_matching(flt)
            if self.claim_eligible(t, flt)
            and (
                (t.status is TaskStatus.PENDING and self.due(t))
                or (t.status is TaskStatus.RUNNING and t.task_exec_id in self.lapsed)
            )
        ]

    def running_of(self, key: str) -> int:
        return sum(
            1 for t in self.tasks.values() if t.status is TaskStatus.RUNNING and t.concurrency_key == key
        )

    def claimed_by_a_claim(
        self, flt: TaskFilter | None, limit: int
    ) -> tuple[list[TaskState], list[TaskState]]:
        """What ``claim(flt, limit=limit)`` hands out and what it ends FAILED (attempts used up), in claim order.

        Of the ``limit`` first pending due tasks (priority, then due; keys at their limit left out) and the
        ``limit`` whose leases lapsed first, the ``limit`` first; then each key's allowance (a lapsed task taken
        over is RUNNING already) passes over what exceeds it.
        """
        saturated = {key for key, bound in self.limits.items() if self.running_of(key) >= bound}
        pending = sorted(
            (
                t
                for t in self.tasks_matching(flt)
                if t.status is TaskStatus.PENDING
                and self.claim_eligible(t, flt)
                and self.due(t)
                and t.concurrency_key not in saturated
            ),
            key=_claim_order,
        )[:limit]
        lapsed = [t for t in self.lapsed_matching(flt) if self.claim_eligible(t, flt)][:limit]
        candidates = sorted([*pending, *lapsed], key=_claim_order)[:limit]
        left = {key: bound - self.running_of(key) for key, bound in self.limits.items()}
        handed: list[TaskState] = []
        ended: list[TaskState] = []
        for t in candidates:
            if _exhausted(t):
                ended.append(t)
                continue
            key = t.concurrency_key
            if key in left and t.status is TaskStatus.PENDING:
                if left[key] <= 0:
                    continue
                left[key] -= 1
            handed.append(t)
        return handed, ended

    def lapsed_matching(self, flt: TaskFilter | None) -> list[TaskState]:
        found = [
            t
            for t in self.tasks_matching(flt)
            if t.status is TaskStatus.RUNNING and t.task_exec_id in self.lapsed
        ]
        return sorted(found, key=lambda t: (t.lease_expires_at, t.task_exec_id))

    def held_by(self, ids: Sequence[str], worker: str) -> list[str]:
        wanted = list(dict.fromkeys(ids))
        return [
            i
            for i in wanted
            if i in self.tasks
            and self.tasks[i].status is TaskStatus.RUNNING
            and self.tasks[i].claimed_by == worker
        ]

    # Workflows --------------------------------------------------------------------------------------------

    def workflow_matches(self, wf: WorkflowState, flt: WorkflowFilter | None) -> bool:
        if flt is None:
            return True
        for name in ("status", "workflow_id", "workflow_exec_id"):
            wanted = getattr(flt, name)
            if wanted is not None and getattr(wf, name) != wanted:
                return False
        if flt.statuses is not None and wf.status not in set(flt.statuses):
            return False
        return _within(wf.created_at, wf.updated_at, flt)

    def workflows_matching(self, flt: WorkflowFilter | None, order: str = "asc") -> list[WorkflowState]:
        found = sorted(
            (w for w in self.workflows.values() if self.workflow_matches(w, flt)), key=_workflow_age
        )
        return found[::-1] if order == "desc" else found

    def with_tasks(self, wf: WorkflowState) -> WorkflowState:
        mine = [t for t in self.tasks.values() if t.workflow_exec_id == wf.workflow_exec_id]
        return wf.evolve(tasks=self.latest_per_task_id(mine))

    def newest_workflow(
        self, workflow_id: str, having: Callable[[TaskState], bool] | None = None
    ) -> WorkflowState | None:
        candidates = [
            w
            for w in self.workflows.values()
            if w.workflow_id == workflow_id
            and (
                having is None
                or any(having(t) for t in self.tasks.values() if t.workflow_exec_id == w.workflow_exec_id)
            )
        ]
        if not candidates:
            return None
        return max(candidates, key=_workflow_age)

    def usage_total(self, workflow_exec_id: str) -> UsageSummary:
        entries = list(
            self.workflows[workflow_exec_id].usage.entries if self.workflows[workflow_exec_id].usage else ()
        )
        for task in sorted(
            (
                t
                for t in self.tasks.values()
                if t.workflow_exec_id == workflow_exec_id and t.usage is not None
            ),
            key=_age,
        ):
            assert task.usage is not None
            entries.extend(task.usage.entries)
        return UsageSummary.of(entries)

    def completion(
        self, workflow_exec_id: str
    ) -> tuple[TaskStatus, dict[str, object], dict[str, object] | None] | type[PlanflowError]:
        """The status, default output and error ``complete_workflow`` gives, or the error it raises: decided from
        the newest top-level task of each task id."""
        wf = self.workflows.get(workflow_exec_id)
        if wf is None:
            return NotFoundError
        top = self.latest_per_task_id(
            t
            for t in self.tasks.values()
            if t.workflow_exec_id == workflow_exec_id and t.parent_state_id is None
        )
        if any(t.status in UNFINISHED for t in top.values()):
            return WorkflowNotReadyError
        failed = sorted(task_id for task_id, t in top.items() if t.status in FAILED_LIKE)
        status = TaskStatus.FAILED if failed else TaskStatus.SUCCESS
        error = (
            {"code": "TASKS_FAILED", "message": f"top-level tasks did not succeed: {', '.join(failed)}"}
            if failed
            else None
        )
        return status, {task_id: t.output for task_id, t in top.items()}, error

    def purgeable(self, finished_before: datetime, statuses: frozenset[TaskStatus]) -> list[str]:
        return [
            w.workflow_exec_id
            for w in self.workflows.values()
            if w.status in statuses and w.updated_at is not None and w.updated_at < finished_before
        ]

    # Idempotency keys -------------------------------------------------------------------------------------

    def keyed(self, key: str, request: str) -> Expect | None:
        """What a keyed write must do when its key was used (a replay, or a conflict); ``None`` when it applies."""
        found = self.keys.get(key)
        if found is None:
            return None
        if found[0] != request:
            return Expect.raises(ConflictError)
        return Expect(value=found[1])


def _within(created: datetime | None, updated: datetime | None, flt: TaskFilter | WorkflowFilter) -> bool:
    assert created is not None and updated is not None
    if flt.created_after is not None and not created > flt.created_after:
        return False
    if flt.created_before is not None and not created < flt.created_before:
        return False
    if flt.updated_after is not None and not updated > flt.updated_after:
        return False
    return not (flt.updated_before is not None and not updated < flt.updated_before)


def terminal(status: TaskStatus) -> bool:
    return status in TERMINAL_STATUSES
