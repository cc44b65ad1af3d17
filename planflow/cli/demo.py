"""The demo: one realistic workflow execution, run by worker threads against any store that serves tasks.

The plan is an order-fulfilment workflow::

    fetch-orders                      basic, an LLM agent
    enrich            parallel        many LLM calls, best effort (a few fail)
    collect-reports   collection      one report per order, best effort (a few fail)
    fulfilment        composite       sequential steps, each waits for the one before
        validate                      basic, an LLM agent
        ship          parallel        one carrier call per parcel, all must succeed
        notify        composite       one channel after another
        archive                       basic
    summarize                         basic, an LLM agent, once the three above finished

Worker threads claim pending leaves with the optimistic lock (``update_state(state, expected_version)``); when
two claim the same task one gets a ``ConflictError`` and moves on. After each move a worker recomputes the
parents' statuses from ``get_progress_info(...).overall_status(strategy)``, reading the parent's version before
its children, so a parent written in between makes the update conflict and be recomputed. LLM usage is merged
into the task, every ancestor and the workflow with ``merge_usage`` (concurrent merges must lose nothing: the run
checks). A step after a failed one is canceled with its subtree. The workflow ends with ``complete_workflow``.

The structure, the failures, the token counts and the simulated work times depend only on the seed; the
interleaving of the workers (and so the number of conflicts) does not.
"""

from __future__ import annotations

import random
import secrets
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

from planflow.errors import ConflictError, PlanflowError
from planflow.infra.provider import Repositories
from planflow.models import (
    TERMINAL_STATUSES,
    ExecutionType,
    JsonObject,
    ParallelStrategy,
    ProgressInfo,
    TaskState,
    TaskStatus,
    UsageEntry,
    UsageSummary,
    WorkflowState,
)

DEFAULT_TASKS = 500
DEFAULT_WORKERS = 8
DEFAULT_SEED = 42
DEFAULT_FAILURE_RATE = 0.05
#: Nine named steps and at least two children in each of the four groups.
MIN_TASKS = 17
WORKFLOW_ID = "order-fulfilment"
#: A worker picks among the first few ready tasks, so workers often race for the same one.
RACE_WINDOW = 3
#: Recomputations of one parent's status before giving up (each retry means another worker wrote it).
MAX_PARENT_ATTEMPTS = 1000
#: Most channels in the sequential ``notify`` step.
MAX_SEQUENTIAL = 8
MODELS = (("openai", "gpt-4o-mini"), ("anthropic", "claude-3-5-haiku"), ("mistral", "mistral-small"))
CHANNELS = ("email", "sms", "webhook", "push", "slack")


@dataclass(eq=False)
class Step:
    """One task of the plan: what it is, where it sits, and what running it will do."""

    task_id: str
    exec_id: str
    execution_type: ExecutionType = ExecutionType.BASIC
    parent: Step | None = None
    children: list[Step] = field(default_factory=list["Step"])
    after: list[Step] = field(default_factory=list["Step"])
    strategy: ParallelStrategy = ParallelStrategy.WAIT_ALL
    fails: bool = False
    work: float = 0.0
    usage: UsageSummary | None = None
    agent_id: str | None = None
    tool_id: str | None = None

    @property
    def is_leaf(self) -> bool:
        """True for a task that runs itself rather than through children."""
        return not self.children

    def walk(self) -> Iterator[Step]:
        """This step and its descendants, parents first."""
        yield self
        for child in self.children:
            yield from child.walk()

    def ancestors(self) -> Iterator[Step]:
        """The parent, its parent, and so on."""
        node = self.parent
        while node is not None:
            yield node
            node = node.parent


@dataclass(frozen=True)
class DemoPlan:
    """The workflow to run: its ids and its top-level steps."""

    workflow_exec_id: str
    workflow_id: str
    roots: list[Step]
    seed: int

    @property
    def steps(self) -> list[Step]:
        """Every step, parents before children."""
        return [step for root in self.roots for step in root.walk()]

    @property
    def leaves(self) -> list[Step]:
        """The steps the workers run."""
        return [step for step in self.steps if step.is_leaf]

    @property
    def parents(self) -> list[Step]:
        """The steps whose status comes from their children."""
        return [step for step in self.steps if not step.is_leaf]

    def initial_states(self) -> list[TaskState]:
        """Every task, PENDING, parents before children."""
        return [
            TaskState(
                task_exec_id=step.exec_id,
                task_id=step.task_id,
                workflow_exec_id=self.workflow_exec_id,
                workflow_id=self.workflow_id,
                execution_type=step.execution_type,
                parent_state_id=None if step.parent is None else step.parent.exec_id,
                agent_id=step.agent_id,
                tool_id=step.tool_id,
                input=_input(step),
            )
            for step in self.steps
        ]


def _input(step: Step) -> JsonObject:
    if step.is_leaf:
        return {"simulated_ms": round(step.work * 1000, 1)}
    return {"strategy": step.strategy.value, "children": len(step.children)}


def build_plan(
    tasks: int = DEFAULT_TASKS,
    seed: int = DEFAULT_SEED,
    *,
    failure_rate: float = DEFAULT_FAILURE_RATE,
    run_id: str | None = None,
) -> DemoPlan:
    """The demo's workflow with about ``tasks`` tasks; everything but the exec ids depends only on ``seed``.

    Args:
        tasks: Total number of task states (at least :data:`MIN_TASKS`).
        seed: Seeds sizes, failures, token counts and work times.
        failure_rate: Chance that one item of the best-effort fan-outs fails.
        run_id: Makes the exec ids unique in the store (default: random).

    Raises:
        ValueError: ``tasks`` below :data:`MIN_TASKS` or a failure rate outside [0, 1].
    """
    if tasks < MIN_TASKS:
        raise ValueError(f"the demo needs at least {MIN_TASKS} tasks, got {tasks}")
    if not 0.0 <= failure_rate <= 1.0:
        raise ValueError(f"the failure rate must be between 0 and 1, got {failure_rate}")
    rng = random.Random(seed)
    workflow_exec_id = f"demo-{seed}-{run_id or secrets.token_hex(4)}"
    rest = tasks - 9
    collect_n, ship_n = (max(2, int(rest * share * rng.uniform(0.9, 1.1))) for share in (0.25, 0.15))
    # notify runs one channel after another: kept short so that it never dominates the run.
    notify_n = max(2, min(MAX_SEQUENTIAL, rest // 20))
    enrich_n = rest - collect_n - ship_n - notify_n

    def step(
        path: str,
        parent: Step | None = None,
        *,
        execution_type: ExecutionType = ExecutionType.BASIC,
        strategy: ParallelStrategy = ParallelStrategy.WAIT_ALL,
        after: list[Step] | None = None,
        agent_id: str | None = None,
        tool_id: str | None = None,
        usage: UsageSummary | None = None,
        fails: bool = False,
    ) -> Step:
        made = Step(
            task_id=path.rsplit("/", 1)[-1],
            exec_id=f"{workflow_exec_id}/{path}",
            execution_type=execution_type,
            parent=parent,
            after=list(after or []),
            strategy=strategy,
            fails=fails,
            work=rng.uniform(0.002, 0.012),
            usage=usage,
            agent_id=agent_id,
            tool_id=tool_id,
        )
        if parent is not None:
            parent.children.append(made)
        return made

    def llm() -> UsageSummary:
        provider, model = rng.choice(MODELS)
        prompt, completion = rng.randint(200, 2000), rng.randint(20, 600)
        return UsageSummary((UsageEntry(provider, model, "task", prompt, completion, prompt + completion),))

    fetch = step("fetch-orders", agent_id="planner", usage=llm())
    enrich = step(
        "enrich", execution_type=ExecutionType.PARALLEL, strategy=ParallelStrategy.BEST_EFFORT, after=[fetch]
    )
    for i in range(enrich_n):
        step(
            f"enrich/enrich-{i:04d}",
            enrich,
            agent_id="enricher",
            usage=llm(),
            fails=rng.random() < failure_rate,
        )
    collect = step(
        "collect-reports",
        execution_type=ExecutionType.COLLECTION,
        strategy=ParallelStrategy.BEST_EFFORT,
        after=[fetch],
    )
    for i in range(collect_n):
        step(
            f"collect-reports/report-{i:04d}",
            collect,
            tool_id="pdf-renderer",
            fails=rng.random() < failure_rate,
        )
    fulfilment = step("fulfilment", execution_type=ExecutionType.COMPOSITE, after=[fetch])
    validate = step("fulfilment/validate", fulfilment, agent_id="validator", usage=llm())
    ship = step("fulfilment/ship", fulfilment, execution_type=ExecutionType.PARALLEL)
    for i in range(ship_n):
        step(f"fulfilment/ship/parcel-{i:04d}", ship, tool_id="carrier-api")
    notify = step("fulfilment/notify", fulfilment, execution_type=ExecutionType.COMPOSITE)
    for i in range(notify_n):
        step(f"fulfilment/notify/{CHANNELS[i % len(CHANNELS)]}-{i:04d}", notify, tool_id="notifier")
    archive = step("fulfilment/archive", fulfilment, tool_id="archiver")
    summarize = step("summarize", agent_id="summarizer", usage=llm(), after=[enrich, collect, fulfilment])
    for composite in (fulfilment, notify):
        for before, later in zip(composite.children, composite.children[1:], strict=False):
            later.after.append(before)
    del validate, archive
    return DemoPlan(workflow_exec_id, WORKFLOW_ID, [fetch, enrich, collect, fulfilment, summarize], seed)


@dataclass
class DemoStats:
    """What happened while the workers ran.

    Attributes:
        claims_lost: Claims of a pending task that lost the race to another worker (``ConflictError``).
        parent_retries: Parent status updates that met a newer version and were recomputed (``ConflictError``).
        finished: Leaves that reached a terminal status.
        canceled: Tasks canceled because a step before them failed.
    """

    claims_lost: int = 0
    parent_retries: int = 0
    finished: int = 0
    canceled: int = 0

    @property
    def conflicts(self) -> int:
        """Every optimistic-lock conflict met and resolved."""
        return self.claims_lost + self.parent_retries


@dataclass(frozen=True)
class DemoResult:
    """A finished demo run.

    Attributes:
        plan: What was run.
        workflow: The completed workflow, with its tasks.
        stats: Conflicts and counts.
        elapsed: Seconds from the first claim to the completed workflow.
        merged_usage: The sum of the usage of every LLM call that ran (the workflow's merged total must equal it).
    """

    plan: DemoPlan
    workflow: WorkflowState
    stats: DemoStats
    elapsed: float
    merged_usage: UsageSummary

    @property
    def usage_consistent(self) -> bool:
        """True when the workflow's merged usage equals the sum of every call's (no merge was lost)."""
        stored = self.workflow.usage or UsageSummary()
        return _usage_key(stored) == _usage_key(self.merged_usage)


def _usage_key(usage: UsageSummary) -> list[tuple[tuple[str, str, str], int, int, int]]:
    return sorted((e.key, e.prompt_tokens, e.completion_tokens, e.total_tokens) for e in usage.entries)


class DemoRun:
    """Runs a plan against a store with worker threads; use :meth:`run`."""

    def __init__(
        self,
        repos: Repositories,
        plan: DemoPlan,
        *,
        workers: int = DEFAULT_WORKERS,
        on_progress: Callable[[int, int], None] | None = None,
    ) -> None:
        if workers < 1:
            raise ValueError(f"the demo needs at least one worker, got {workers}")
        self._repos = repos
        self._plan = plan
        self._workers = workers
        self._on_progress: Callable[[int, int], None] = on_progress or _ignore_progress
        self._total = len(plan.leaves)
        self._cond = threading.Condition()
        self._ready: list[Step] = []
        self._released: set[str] = set()
        self._terminal: dict[str, TaskStatus] = {}
        self._dependents: dict[str, list[Step]] = {}
        for step in plan.steps:
            for before in step.after:
                self._dependents.setdefault(before.exec_id, []).append(step)
        self._error: BaseException | None = None
        self._merged = UsageSummary()
        self.stats = DemoStats()

    def run(self) -> DemoResult:
        """Store the workflow and its tasks, run every leaf, complete the workflow and return the result.

        Raises:
            PlanflowError: any repository failure (the first one a worker met).
        """
        plan, repos = self._plan, self._repos
        repos.workflows.upsert_state(
            WorkflowState(
                plan.workflow_exec_id, plan.workflow_id, input={"seed": plan.seed, "tasks": len(plan.steps)}
            )
        )
        repos.tasks.bulk_upsert(plan.initial_states())
        repos.workflows.update_status(plan.workflow_exec_id, TaskStatus.RUNNING)
        started = time.perf_counter()
        for root in plan.roots:
            if not root.after:
                self._release(root)
        threads = [
            threading.Thread(target=self._work, name=f"demo-worker-{n}", daemon=True)
            for n in range(self._workers)
        ]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        if self._error is not None:
            raise self._error
        repos.workflows.complete_workflow(plan.workflow_exec_id)
        elapsed = time.perf_counter() - started
        workflow = repos.workflows.get_state(plan.workflow_exec_id)
        return DemoResult(plan, workflow, self.stats, elapsed, self._merged)

    # Workers ----------------------------------------------------------------------------------------------

    def _work(self) -> None:
        chooser = random.Random()
        try:
            while True:
                with self._cond:
                    while not self._ready and self.stats.finished < self._total and self._error is None:
                        self._cond.wait(0.5)
                    if self._error is not None or self.stats.finished >= self._total:
                        return
                    step = chooser.choice(self._ready[:RACE_WINDOW])
                self._attempt(step)
        except BaseException as exc:
            with self._cond:
                self._error = self._error or exc
                self._cond.notify_all()

    def _attempt(self, step: Step) -> None:
        tasks = self._repos.tasks
        state = tasks.get_state(step.exec_id)
        if state.status != TaskStatus.PENDING:
            self._forget(step)
            return
        try:
            running = tasks.update_state(state.evolve(status=TaskStatus.RUNNING), state.version)
        except ConflictError:
            with self._cond:
                self.stats.claims_lost += 1
            return
        self._forget(step)
        self._propagate(step.parent)
        time.sleep(step.work)
        if step.fails:
            status, output = TaskStatus.FAILED, None
            error: JsonObject | None = {
                "code": "UPSTREAM_ERROR",
                "message": f"{step.task_id}: upstream returned 503",
            }
        else:
            status, output, error = (
                TaskStatus.SUCCESS,
                {"ok": True, "worker": threading.current_thread().name},
                None,
            )
        # The claim made this worker the leaf's only writer, so its version cannot have moved.
        tasks.update_state(running.evolve(status=status, output=output, error=error), running.version)
        if step.usage is not None:
            tasks.merge_usage(step.exec_id, step.usage)
            for ancestor in step.ancestors():
                tasks.merge_usage(ancestor.exec_id, step.usage)
            self._repos.workflows.merge_usage(self._plan.workflow_exec_id, step.usage)
            with self._cond:
                self._merged = self._merged.merge(step.usage)
        self._finished(step, status)

    def _forget(self, step: Step) -> None:
        with self._cond:
            if step in self._ready:
                self._ready.remove(step)

    def _finished(self, leaf: Step, status: TaskStatus) -> None:
        with self._cond:
            self.stats.finished += 1
            done = self.stats.finished
            self._cond.notify_all()
        self._on_progress(done, self._total)
        self._settled(leaf, status)
        self._propagate(leaf.parent)

    # Parents ----------------------------------------------------------------------------------------------

    def _propagate(self, step: Step | None) -> None:
        """Recompute the statuses of ``step`` and its ancestors, stopping at the first that does not change."""
        while step is not None:
            status = self._recompute(step)
            if status is None:
                return
            if status in TERMINAL_STATUSES:
                self._settled(step, status)
            step = step.parent

    def _recompute(self, step: Step) -> TaskStatus | None:
        """Write the parent's status from its children's; ``None`` when it already had it."""
        tasks = self._repos.tasks
        for _ in range(MAX_PARENT_ATTEMPTS):
            # The version is read before the children: a parent written after this read makes the update
            # conflict, so a stale count of the children is never written.
            state = tasks.get_state(step.exec_id)
            info = tasks.get_progress_info(step.exec_id)
            status = info.overall_status(step.strategy)
            if status == state.status or state.status in TERMINAL_STATUSES:
                return None
            finished = _parent_result(info, status)
            try:
                tasks.update_state(state.evolve(status=status, **finished), state.version)
            except ConflictError:
                with self._cond:
                    self.stats.parent_retries += 1
                continue
            return status
        raise PlanflowError(
            f"gave up recomputing the status of {step.exec_id!r} after {MAX_PARENT_ATTEMPTS} conflicts"
        )

    # Scheduling -------------------------------------------------------------------------------------------

    def _settled(self, step: Step, status: TaskStatus) -> None:
        """Record a terminal step and release the steps that were waiting for it."""
        with self._cond:
            self._terminal[step.exec_id] = status
            due = [
                later
                for later in self._dependents.get(step.exec_id, [])
                if later.exec_id not in self._released
                and all(b.exec_id in self._terminal for b in later.after)
            ]
            self._released.update(later.exec_id for later in due)
        for later in due:
            self._release(later, checked=True)

    def _release(self, step: Step, *, checked: bool = False) -> None:
        """Make ``step`` runnable: its leaves go to the ready list (a composite's first child only)."""
        if not checked:
            with self._cond:
                self._released.add(step.exec_id)
        if any(self._terminal[before.exec_id] != TaskStatus.SUCCESS for before in step.after):
            self._cancel(step)
        elif step.is_leaf:
            with self._cond:
                self._ready.append(step)
                self._cond.notify_all()
        elif step.execution_type is ExecutionType.COMPOSITE:
            self._release(step.children[0])
        else:
            for child in step.children:
                self._release(child)

    def _cancel(self, step: Step) -> None:
        """Cancel ``step`` and its whole subtree (a step before it failed)."""
        tasks = self._repos.tasks
        subtree = list(step.walk())
        for node in subtree:
            state = tasks.get_state(node.exec_id)
            tasks.update_state(state.evolve(status=TaskStatus.CANCELED), state.version)
        leaves = [node for node in subtree if node.is_leaf]
        with self._cond:
            self.stats.canceled += len(subtree)
            for node in subtree:
                self._terminal[node.exec_id] = TaskStatus.CANCELED
                self._released.add(node.exec_id)
            self.stats.finished += len(leaves)
            done = self.stats.finished
            self._cond.notify_all()
        self._on_progress(done, self._total)
        self._settled(step, TaskStatus.CANCELED)
        self._propagate(step.parent)


def _ignore_progress(done: int, total: int) -> None:
    pass


def _parent_result(info: ProgressInfo, status: TaskStatus) -> dict[str, object]:
    if status not in TERMINAL_STATUSES:
        return {}
    output: JsonObject = {"total": info.total, "succeeded": info.success, "failed": info.failed}
    if status is TaskStatus.SUCCESS:
        return {"output": output}
    return {
        "output": output,
        "error": {"code": "CHILDREN_FAILED", "message": f"{info.failed} of {info.total} failed"},
    }


__all__ = [
    "DEFAULT_FAILURE_RATE",
    "DEFAULT_SEED",
    "DEFAULT_TASKS",
    "DEFAULT_WORKERS",
    "MIN_TASKS",
    "DemoPlan",
    "DemoResult",
    "DemoRun",
    "DemoStats",
    "Step",
    "build_plan",
]
