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

A leaf waits (WAITING) until the steps before it finished; it is then made PENDING, and worker threads take
it with ``tasks.claim`` (a lease of ``lease`` seconds), never racing for it: a claim hands each task to one
worker. A worker on a long step (the planner, validator and summarizer agents) keeps its lease with
``tasks.heartbeat``. Midway one worker dies holding its claims, as a killed process would: once their leases
lapse the others claim them again (``wait_for_work`` wakes them) and finish them, and the dead worker's late
write, with the version its claim gave it, is refused (``ConflictError``): no task is ever completed twice.
After each move a worker recomputes the parents' statuses from ``get_progress_info(...).overall_status(strategy)``,
reading the parent's version before its children, so a parent written in between makes the update conflict and
be recomputed. LLM usage is merged into the task that made the call with ``merge_usage``; the workflow's total
is ``workflows.usage_total``, one query over the workflow and all its tasks (it must equal the sum of every
call: the run checks). A step after a failed one is canceled with its subtree.
The workflow ends with ``complete_workflow``.

The structure, the failures, the token counts and the simulated work times depend only on the seed; the
interleaving of the workers (and so which tasks the dead worker held, and the parent conflicts) does not.
"""

from __future__ import annotations

import random
import secrets
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from planflow.cli.defaults import (
    DEFAULT_FAILURE_RATE,
    DEFAULT_LEASE,
    DEFAULT_SEED,
    DEFAULT_TASKS,
    DEFAULT_WORKERS,
    MIN_TASKS,
)
from planflow.errors import ConflictError, PlanflowError
from planflow.models import (
    TERMINAL_STATUSES,
    ExecutionType,
    JsonObject,
    ParallelStrategy,
    ProgressInfo,
    RetryBackoff,
    TaskFilter,
    TaskState,
    TaskStatus,
    UsageEntry,
    UsageSummary,
    WorkflowState,
)

if TYPE_CHECKING:
    from planflow.infra.provider import Repositories

WORKFLOW_ID = "order-fulfilment"
#: Simulated seconds of the long agent steps, which outlive a heartbeat interval (a third of the lease).
AGENT_WORK = 0.25
AGENTS_AT_LENGTH = frozenset({"planner", "validator", "summarizer"})
#: How many claims the worker that dies takes with it.
ABANDONED = 3
#: Recomputations of one parent's status before giving up (each retry means another worker wrote it).
MAX_PARENT_ATTEMPTS = 1000
#: Most channels in the sequential ``notify`` step.
MAX_SEQUENTIAL = 8
MODELS = (("openai", "gpt-4o-mini"), ("anthropic", "claude-3-5-haiku"), ("mistral", "mistral-small"))
CHANNELS = ("email", "sms", "webhook", "push", "slack")
#: Attempts of a step that fails (or crashes its worker) before it ends FAILED.
MAX_ATTEMPTS = 2
#: How many parcels the carrier API takes at once (``tasks.set_limit``).
CARRIER_KEY, CARRIER_LIMIT = "carrier-api", 2
#: The backoff of a failed attempt's retry: short, so that the demo shows it without waiting long.
RETRY_BACKOFF = RetryBackoff(base_delay=0.05, factor=2.0, max_delay=0.2)


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
    #: Claims take higher priorities first (the reports go before the enrichments).
    priority: int = 0
    #: Tasks sharing a concurrency key run at most ``CARRIER_LIMIT`` at a time (the carrier API's parcels).
    concurrency_key: str | None = None
    #: Crashes its worker every time (the worker drops it without a word): it ends FAILED after its attempts.
    poison: bool = False

    @property
    def max_attempts(self) -> int | None:
        """Failing and poison steps get two attempts (a failure is retried once, after a backoff)."""
        return MAX_ATTEMPTS if self.fails or self.poison else None

    @property
    def is_leaf(self) -> bool:
        """True for a task that runs itself rather than through children."""
        return not self.children

    def walk(self) -> Iterator[Step]:
        """This step and its descendants, parents first."""
        yield self
        for child in self.children:
            yield from child.walk()


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
        """Every task, parents before children: the parents PENDING, the leaves WAITING for their turn."""
        return [
            TaskState(
                task_exec_id=step.exec_id,
                task_id=step.task_id,
                workflow_exec_id=self.workflow_exec_id,
                workflow_id=self.workflow_id,
                status=TaskStatus.WAITING if step.is_leaf else TaskStatus.PENDING,
                execution_type=step.execution_type,
                parent_state_id=None if step.parent is None else step.parent.exec_id,
                agent_id=step.agent_id,
                tool_id=step.tool_id,
                input=_input(step),
                priority=step.priority,
                max_attempts=step.max_attempts,
                concurrency_key=step.concurrency_key,
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
        priority: int = 0,
        concurrency_key: str | None = None,
    ) -> Step:
        made = Step(
            task_id=path.rsplit("/", 1)[-1],
            exec_id=f"{workflow_exec_id}/{path}",
            execution_type=execution_type,
            parent=parent,
            after=list(after or []),
            strategy=strategy,
            fails=fails,
            work=AGENT_WORK if agent_id in AGENTS_AT_LENGTH else rng.uniform(0.002, 0.012),
            usage=usage,
            agent_id=agent_id,
            tool_id=tool_id,
            priority=priority,
            concurrency_key=concurrency_key,
        )
        if parent is not None:
            parent.children.append(made)
        return made

    def llm() -> UsageSummary:
        provider, model = rng.choice(MODELS)
        prompt, completion = rng.randint(200, 2000), rng.randint(20, 600)
        # A share of the prompt served from the provider's cache, of the completion spent reasoning (derived,
        # not drawn, so that a seed still gives the structure it gave before these counts existed).
        return UsageSummary(
            (
                UsageEntry(
                    provider,
                    model,
                    "task",
                    prompt,
                    completion,
                    prompt + completion,
                    prompt // 4,
                    completion // 3,
                ),
            )
        )

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
            priority=1,
        )
    fulfilment = step("fulfilment", execution_type=ExecutionType.COMPOSITE, after=[fetch])
    validate = step("fulfilment/validate", fulfilment, agent_id="validator", usage=llm())
    ship = step("fulfilment/ship", fulfilment, execution_type=ExecutionType.PARALLEL)
    for i in range(ship_n):
        step(f"fulfilment/ship/parcel-{i:04d}", ship, tool_id="carrier-api", concurrency_key=CARRIER_KEY)
    notify = step("fulfilment/notify", fulfilment, execution_type=ExecutionType.COMPOSITE)
    for i in range(notify_n):
        step(f"fulfilment/notify/{CHANNELS[i % len(CHANNELS)]}-{i:04d}", notify, tool_id="notifier")
    archive = step("fulfilment/archive", fulfilment, tool_id="archiver")
    summarize = step("summarize", agent_id="summarizer", usage=llm(), after=[enrich, collect, fulfilment])
    for composite in (fulfilment, notify):
        for before, later in zip(composite.children, composite.children[1:], strict=False):
            later.after.append(before)
    del validate, archive
    # One enrichment crashes whichever worker runs it (poison work): claimed twice, then ended FAILED.
    poisoned = next((s for s in reversed(enrich.children) if not s.fails), None)
    if poisoned is not None:  # (with a failure rate of 1 every step fails already)
        poisoned.poison = True
    return DemoPlan(workflow_exec_id, WORKFLOW_ID, [fetch, enrich, collect, fulfilment, summarize], seed)


@dataclass
class DemoStats:
    """What happened while the workers ran.

    Attributes:
        claims: Tasks handed to a worker by ``tasks.claim`` (a task claimed again counts again).
        reclaimed: Claims of a task whose earlier claim lapsed (its holder died, or was too slow).
        heartbeats: Leases extended by a worker on a long step.
        leases_lost: Steps whose worker found, at a heartbeat or at its final write, that its lease had lapsed
            and another worker held the task (it stopped; the other finished the step).
        completions: Leaves completed (a terminal status written by their holder), per exec id.
        parent_retries: Parent status updates that met a newer version and were recomputed (``ConflictError``).
        finished: Leaves that reached a terminal status.
        canceled: Tasks canceled because a step before them failed.
        killed_worker: The worker that died midway holding claims (``None``: nobody was killed).
        abandoned: The claims it died with: exec id -> the version its claim returned.
        zombie_fenced: Whether the dead worker's late write was refused (``None``: nobody was killed).
        released: Claims handed back as PENDING when the run was interrupted.
        retries: Failed attempts retried after a backoff; poison_crashes: times the poison step killed its
            worker; carrier_peak: most parcels of the limited carrier key held at once.
    """

    claims: int = 0
    reclaimed: int = 0
    heartbeats: int = 0
    leases_lost: int = 0
    completions: Counter[str] = field(default_factory=Counter[str], repr=False)
    parent_retries: int = 0
    finished: int = 0
    canceled: int = 0
    killed_worker: str | None = None
    abandoned: dict[str, int] = field(default_factory=dict[str, int])
    zombie_fenced: bool | None = None
    released: int = 0
    #: Failed attempts sent back as PENDING with a delayed retry (``tasks.fail``).
    retries: int = 0
    #: Times the poison step crashed its worker (it then ended FAILED: attempts used up).
    poison_crashes: int = 0
    #: The most carrier-API parcels held at once (at most ``CARRIER_LIMIT``).
    carrier_peak: int = 0

    @property
    def double_completions(self) -> int:
        """Leaves completed more than once (what claims and fencing rule out: always 0)."""
        return sum(1 for n in self.completions.values() if n > 1)


@dataclass(frozen=True)
class DemoResult:
    """A finished demo run.

    Attributes:
        plan: What was run.
        workflow: The completed workflow, with its tasks.
        stats: Claims, recoveries, conflicts and counts.
        elapsed: Seconds from the first claim to the completed workflow.
        merged_usage: The sum of the usage of every LLM call that ran (the workflow's total must equal it).
        usage_total: ``workflows.usage_total`` of the workflow: its own usage and all its tasks', summed.
    """

    plan: DemoPlan
    workflow: WorkflowState
    stats: DemoStats
    elapsed: float
    merged_usage: UsageSummary
    usage_total: UsageSummary

    @property
    def usage_consistent(self) -> bool:
        """True when the workflow's usage total equals the sum of every call's (no merge was lost)."""
        return _usage_key(self.usage_total) == _usage_key(self.merged_usage)


def _usage_key(usage: UsageSummary) -> list[tuple[tuple[str, str, str], int, int, int, int, int]]:
    return sorted(
        (e.key, e.prompt_tokens, e.completion_tokens, e.total_tokens, e.cached_tokens, e.reasoning_tokens)
        for e in usage.entries
    )


class DemoRun:
    """Runs a plan against a store with worker threads; use :meth:`run`."""

    def __init__(
        self,
        repos: Repositories,
        plan: DemoPlan,
        *,
        workers: int = DEFAULT_WORKERS,
        lease: float = DEFAULT_LEASE,
        kill_worker: bool = True,
        on_progress: Callable[[int, int], None] | None = None,
    ) -> None:
        if workers < 1:
            raise ValueError(f"the demo needs at least one worker, got {workers}")
        if not lease > 0:
            raise ValueError(f"the lease must be a positive number of seconds, got {lease}")
        self._repos = repos
        self._plan = plan
        self._workers = workers
        self._lease = lease
        self._on_progress: Callable[[int, int], None] = on_progress or _ignore_progress
        self._total = len(plan.leaves)
        #: A worker dies once half the leaves finished, when another is left to take over its claims.
        self._kill_at = self._total // 2 if kill_worker and workers > 1 else None
        self._steps = {step.exec_id: step for step in plan.steps}
        self._claimable = TaskFilter(
            workflow_exec_id=plan.workflow_exec_id, execution_type=ExecutionType.BASIC
        )
        self._cond = threading.Condition()
        self._stop = threading.Event()
        self._released: set[str] = set()
        self._claimed: set[str] = set()
        self._terminal: dict[str, TaskStatus] = {}
        self._dependents: dict[str, list[Step]] = {}
        for step in plan.steps:
            for before in step.after:
                self._dependents.setdefault(before.exec_id, []).append(step)
        self._error: BaseException | None = None
        self._exhausted: set[str] = set()
        self._requeued: set[str] = set()
        self._carrier_held = 0
        self._merged = UsageSummary()
        self.stats = DemoStats()

    def run(self) -> DemoResult:
        """Store the workflow and its tasks, run every leaf, complete the workflow and return the result.

        On ``KeyboardInterrupt`` the workers hand their claims back (PENDING) before it propagates.

        Raises:
            PlanflowError: any repository failure (the first one a worker met), or a dead worker's write that
                was not refused.
        """
        plan, repos = self._plan, self._repos
        repos.workflows.upsert_state(
            WorkflowState(
                plan.workflow_exec_id, plan.workflow_id, input={"seed": plan.seed, "tasks": len(plan.steps)}
            )
        )
        repos.tasks.set_limit(CARRIER_KEY, concurrency=CARRIER_LIMIT)
        repos.tasks.bulk_upsert(plan.initial_states())
        repos.workflows.update_status(plan.workflow_exec_id, TaskStatus.RUNNING)
        started = time.perf_counter()
        for root in plan.roots:
            if not root.after:
                self._release(root)
        threads = [
            threading.Thread(
                target=self._work, args=(f"demo-worker-{n}",), name=f"demo-worker-{n}", daemon=True
            )
            for n in range(self._workers)
        ]
        for thread in threads:
            thread.start()
        try:
            for thread in threads:
                thread.join()
        except KeyboardInterrupt:
            self._stop.set()
            for thread in threads:
                thread.join(self._lease + 5)
            raise
        if self._error is not None:
            raise self._error
        self._zombie_writes()
        repos.workflows.complete_workflow(plan.workflow_exec_id)
        elapsed = time.perf_counter() - started
        workflow = repos.workflows.get_state(plan.workflow_exec_id)
        total = repos.workflows.usage_total(plan.workflow_exec_id)
        return DemoResult(plan, workflow, self.stats, elapsed, self._merged, total)

    # Workers ----------------------------------------------------------------------------------------------

    def _work(self, worker: str) -> None:
        tasks = self._repos.tasks
        try:
            while not self._stop.is_set():
                with self._cond:
                    if self._error is not None or self.stats.finished >= self._total:
                        return
                    kill_at, killed = self._kill_at, self.stats.killed_worker
                    dies = kill_at is not None and killed is None and self.stats.finished >= kill_at
                    if dies:
                        self.stats.killed_worker = worker
                claimed = tasks.claim(
                    self._claimable, worker=worker, limit=ABANDONED if dies else 1, lease=self._lease
                )
                if dies:
                    # Dies holding what it claimed, as a killed process would: nothing run, nothing handed back.
                    with self._cond:
                        self.stats.abandoned = {state.task_exec_id: state.version for state in claimed}
                        self._count_claims(claimed)
                    return
                if not claimed:
                    self._settle_exhausted()
                    tasks.wait_for_work(self._claimable, timeout=0.1)
                    continue
                with self._cond:
                    self._count_claims(claimed)
                for state in claimed:
                    self._run(worker, state)
        except BaseException as exc:
            with self._cond:
                self._error = self._error or exc
                self._cond.notify_all()

    def _count_claims(self, claimed: list[TaskState]) -> None:
        for state in claimed:
            self.stats.claims += 1
            if state.task_exec_id in self._requeued:  # retried after a failed attempt
                self._requeued.discard(state.task_exec_id)
            elif state.task_exec_id in self._claimed:  # its earlier claim lapsed
                self.stats.reclaimed += 1
            self._claimed.add(state.task_exec_id)

    def _settle_exhausted(self) -> None:
        """Finish the steps a claim ended FAILED, their attempts used up (the poison step; a failing step whose
        last attempt died with the killed worker): nobody was handed them, so nobody else reports them."""
        with self._cond:
            open_ = [
                step.exec_id
                for step in self._plan.leaves
                if step.max_attempts is not None
                and step.exec_id in self._claimed
                and step.exec_id not in self._terminal
                and step.exec_id not in self._exhausted
            ]
        if not open_:
            return
        for state in self._repos.tasks.list_by_ids(open_):
            if state.status is TaskStatus.FAILED:
                self._ended_failed(self._steps[state.task_exec_id])

    def _ended_failed(self, step: Step) -> None:
        """Finish a step that ended FAILED with its attempts, once (its worker and an idle one may both see it)."""
        with self._cond:
            if step.exec_id in self._exhausted:
                return
            self._exhausted.add(step.exec_id)
            self.stats.completions[step.exec_id] += 1
        self._finished(step, TaskStatus.FAILED)

    def _run(self, worker: str, state: TaskState) -> None:
        tasks = self._repos.tasks
        step = self._steps[state.task_exec_id]
        self._propagate(step.parent)
        if step.poison:  # the worker crashes: no write, no release; its lease lapses
            with self._cond:
                self.stats.poison_crashes += 1
            return
        carrier = step.concurrency_key == CARRIER_KEY
        if carrier:
            with self._cond:
                self._carrier_held += 1
                self.stats.carrier_peak = max(self.stats.carrier_peak, self._carrier_held)
        try:
            simulated = self._simulate(worker, step)
        finally:
            if carrier:
                with self._cond:
                    self._carrier_held -= 1
        if not simulated:
            return
        output: JsonObject | None = None
        error: JsonObject | None = None
        if step.fails:
            error = {"code": "UPSTREAM_ERROR", "message": f"{step.task_id}: upstream returned 503"}
            try:
                failed = tasks.fail(step.exec_id, worker=worker, error=error, backoff=RETRY_BACKOFF)
            except ConflictError:
                with self._cond:
                    self.stats.leases_lost += 1
                return
            if failed.status is TaskStatus.PENDING:  # retried after the backoff (run_after)
                with self._cond:
                    self.stats.retries += 1
                    self._requeued.add(step.exec_id)
                return
            self._ended_failed(step)
            return
        status = TaskStatus.SUCCESS
        output = {"ok": True, "worker": worker}
        try:
            # The claim's version fences the write: had the lease lapsed and another worker claimed the
            # task, this raises and the other worker's run is the one that counts.
            tasks.update_state(state.evolve(status=status, output=output, error=error), state.version)
        except ConflictError:
            with self._cond:
                self.stats.leases_lost += 1
            return
        with self._cond:
            self.stats.completions[step.exec_id] += 1
        if step.usage is not None:
            tasks.merge_usage(step.exec_id, step.usage)
            with self._cond:
                self._merged = self._merged.merge(step.usage)
        self._finished(step, status)

    def _simulate(self, worker: str, step: Step) -> bool:
        """Do the step's work, keeping its lease; False when the lease was lost or the run stopped."""
        tasks = self._repos.tasks
        beat = self._lease / 3
        remaining = step.work
        while remaining > 0:
            piece = min(remaining, beat)
            time.sleep(piece)
            remaining -= piece
            if self._stop.is_set():
                tasks.release(step.exec_id, worker=worker)
                with self._cond:
                    self.stats.released += 1
                return False
            if remaining > 0:
                lost = tasks.heartbeat([step.exec_id], worker=worker, lease=self._lease).lost
                with self._cond:
                    self.stats.heartbeats += 1
                    self.stats.leases_lost += len(lost)
                if lost:
                    return False
        return True

    def _zombie_writes(self) -> None:
        """The dead worker wakes up and writes what it held with its claims' versions: each must be refused."""
        if self.stats.killed_worker is None:
            return
        tasks = self._repos.tasks
        for exec_id, version in self.stats.abandoned.items():
            current = tasks.get_state(exec_id)
            try:
                tasks.update_state(current.evolve(status=TaskStatus.FAILED, output={"zombie": True}), version)
            except ConflictError:
                continue
            raise PlanflowError(f"a dead worker's write to {exec_id!r} with its lapsed claim was applied")
        self.stats.zombie_fenced = True

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
            try:
                tasks.update_state(_parent_result(state, info, status), state.version)
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
        """Make ``step`` runnable: its leaves become PENDING, claimable (a composite's first child only)."""
        if not checked:
            with self._cond:
                self._released.add(step.exec_id)
        if any(self._terminal[before.exec_id] != TaskStatus.SUCCESS for before in step.after):
            self._cancel(step)
            return
        leaves: list[Step] = []
        self._runnable(step, leaves)
        tasks = self._repos.tasks
        # One read and one batched write for a whole fan-out; only this thread writes a WAITING leaf.
        waiting = [
            s for s in tasks.list_by_ids([leaf.exec_id for leaf in leaves]) if s.status is TaskStatus.WAITING
        ]
        tasks.bulk_upsert(state.evolve(status=TaskStatus.PENDING) for state in waiting)

    def _runnable(self, step: Step, into: list[Step]) -> None:
        if step.is_leaf:
            into.append(step)
        elif step.execution_type is ExecutionType.COMPOSITE:
            with self._cond:
                self._released.add(step.children[0].exec_id)
            self._runnable(step.children[0], into)
        else:
            with self._cond:
                self._released.update(child.exec_id for child in step.children)
            for child in step.children:
                self._runnable(child, into)

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


def _parent_result(state: TaskState, info: ProgressInfo, status: TaskStatus) -> TaskState:
    """The parent ``state`` in ``status``, with what its children add up to once it finished."""
    if status not in TERMINAL_STATUSES:
        return state.evolve(status=status)
    output: JsonObject = {"total": info.total, "succeeded": info.success, "failed": info.failed}
    if status is TaskStatus.SUCCESS:
        return state.evolve(status=status, output=output)
    error: JsonObject = {"code": "CHILDREN_FAILED", "message": f"{info.failed} of {info.total} failed"}
    return state.evolve(status=status, output=output, error=error)


__all__ = [
    "DEFAULT_FAILURE_RATE",
    "DEFAULT_LEASE",
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
