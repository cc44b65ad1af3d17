"""The demo of the add-on's store: task definitions, their occurrences and executions, written from timer threads.

This is what the PlanFlow screen-reader add-on does with the TinyDB driver (and what runs when ``planflow demo``
is pointed at a store that serves only ``executions``): the user's tasks (reminders, some recurring, each with
preferred time slots and a retry policy) are stored, their occurrences over two simulated days are planned, and
a scheduler fires each occurrence on one of several timer threads when its (compressed) time comes. A fired
occurrence is either completed, or missed and rescheduled while its retries last, or finally missed; a few are
cancelled by the user before they fire. Every step is one ``add_execution`` from a timer thread, racing the
others for the store.

The tasks, the occurrences and every outcome depend only on the seed; the order in which the threads write
does not. At the end the run reads every execution back and checks its history against the plan, so a write
lost between threads would show.
"""

from __future__ import annotations

import heapq
import random
import secrets
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta

from planflow.cli.defaults import DEFAULT_ADDON_TASKS
from planflow.errors import PlanflowError
from planflow.executions import (
    ExecutionStateName,
    Priority,
    RetryPolicy,
    TaskDefinition,
    TaskEvent,
    TaskExecution,
    TaskOccurrence,
)
from planflow.protocols import ExecutionRepository

#: The simulated span of the plan.
HORIZON = timedelta(days=2)
#: Real seconds per occurrence the scheduler spreads the firings over (so larger plans take longer).
SECONDS_PER_OCCURRENCE = 0.015
SLOTS = {"morning": 8, "noon": 12, "afternoon": 15, "evening": 19, "night": 22}
CHORES: tuple[tuple[str, Priority], ...] = (
    ("Morning pills", "high"),
    ("Water plants", "low"),
    ("Stretch", "medium"),
    ("Check mailbox", "low"),
    ("Call pharmacy", "high"),
    ("Back up laptop", "medium"),
    ("News digest", "low"),
    ("Charge display", "medium"),
    ("Plan tomorrow", "medium"),
    ("Evening pills", "high"),
)
#: Chance that one attempt of an occurrence is missed; that the user cancels an occurrence before it fires.
MISS_RATE = 0.25
CANCEL_RATE = 0.04
START = datetime(2026, 3, 2, 0, 0, tzinfo=UTC)


@dataclass(frozen=True)
class PlannedOccurrence:
    """One occurrence and what will happen to it: ``attempts`` outcomes (``True`` completed), or cancelled."""

    occurrence: TaskOccurrence
    max_retries: int
    attempts: tuple[bool, ...]
    cancelled: bool

    def expected(self) -> TaskExecution:
        """The execution the scheduler must have stored for this occurrence when it is done."""
        if self.cancelled:
            return TaskExecution(self.occurrence.id, "cancelled", self.max_retries, [])
        events: list[TaskEvent] = []
        retries = self.max_retries
        state: ExecutionStateName = "missed"
        for number, completed in enumerate(self.attempts):
            at = _attempt_time(self.occurrence.scheduled_for, number)
            events.append(TaskEvent("triggered", at))
            if completed:
                events.append(TaskEvent("completed", at + timedelta(minutes=2)))
                state = "done"
                break
            events.append(TaskEvent("missed", at + timedelta(minutes=15)))
            if retries > 0:
                retries -= 1
                events.append(TaskEvent("rescheduled", at + timedelta(minutes=15)))
        return TaskExecution(self.occurrence.id, state, retries, events)


def _attempt_time(scheduled_for: datetime, number: int) -> datetime:
    # A rescheduled occurrence comes back half an hour later.
    return scheduled_for + timedelta(minutes=30 * number)


@dataclass(frozen=True)
class AddonPlan:
    """The tasks and occurrences of one demo run, and what will happen to each occurrence."""

    run_id: str
    seed: int
    tasks: list[TaskDefinition]
    occurrences: list[PlannedOccurrence]


def build_addon_plan(
    tasks: int = DEFAULT_ADDON_TASKS, seed: int = 42, *, run_id: str | None = None
) -> AddonPlan:
    """The demo's tasks and their occurrences over :data:`HORIZON`; everything but the ids depends on ``seed``.

    Raises:
        ValueError: fewer than one task.
    """
    if tasks < 1:
        raise ValueError(f"the add-on demo needs at least one task, got {tasks}")
    rng = random.Random(seed)
    prefix = f"demo-{seed}-{run_id or secrets.token_hex(4)}"
    definitions: list[TaskDefinition] = []
    planned: list[PlannedOccurrence] = []
    for n in range(tasks):
        title, priority = CHORES[n % len(CHORES)]
        recurrence = rng.choice((timedelta(days=1), timedelta(days=1), timedelta(days=2), None))
        slots = sorted(rng.sample(list(SLOTS), k=rng.randint(1, 2)), key=SLOTS.__getitem__)
        # A one-off task is pinned to its time rather than placed in a slot.
        pinned = START + timedelta(hours=rng.randint(9, 40)) if recurrence is None else None
        task = TaskDefinition(
            id=f"{prefix}/task-{n:04d}",
            title=title if n < len(CHORES) else f"{title} {n // len(CHORES) + 1}",
            description=None if n % 3 else "Planned by the demo of the add-on's store",
            link=None if n % 4 else "https://example.org/planflow",
            created_at=START,
            recurrence=recurrence,
            priority=priority,
            preferred_slots=[] if pinned else slots,
            retry_policy=RetryPolicy(max_retries=rng.randint(0, 3)),
            pinned_time=pinned,
        )
        definitions.append(task)
        for number, (moment, slot) in enumerate(_moments(task)):
            occurrence = TaskOccurrence(
                f"{task.id}/occ-{number:03d}", task.id, moment, slot, task.pinned_time
            )
            retries = task.retry_policy.max_retries
            attempts = tuple(rng.random() >= MISS_RATE for _ in range(retries + 1))
            # Outcomes after the first completion never happen: cut them so the plan says what runs.
            if True in attempts:
                attempts = attempts[: attempts.index(True) + 1]
            planned.append(PlannedOccurrence(occurrence, retries, attempts, rng.random() < CANCEL_RATE))
    planned.sort(key=lambda p: (p.occurrence.scheduled_for, p.occurrence.id))
    return AddonPlan(prefix, seed, definitions, planned)


def _moments(task: TaskDefinition) -> list[tuple[datetime, str | None]]:
    """When the task's occurrences fall within the horizon: its pinned time, or each slot of each period."""
    if task.recurrence is None:
        return [(task.pinned_time or START, None)]
    found: list[tuple[datetime, str | None]] = []
    period = START
    while period < START + HORIZON:
        found += [(period + timedelta(hours=SLOTS[slot]), slot) for slot in task.preferred_slots]
        period += task.recurrence
    return found


@dataclass
class AddonStats:
    """What the timer threads did.

    Attributes:
        writes: ``add_execution`` calls made from timer threads.
        fired: Attempts fired (first firings and retries).
        rescheduled: Missed attempts that were rescheduled.
        settled: Occurrences that reached their final state.
        threads: The names of the timer threads that wrote.
    """

    writes: int = 0
    fired: int = 0
    rescheduled: int = 0
    settled: int = 0
    threads: set[str] = field(default_factory=set[str])


@dataclass(frozen=True)
class AddonResult:
    """A finished add-on demo run.

    Attributes:
        plan: What was run.
        stats: What the timer threads did.
        executions: The stored execution of every planned occurrence, read back at the end.
        elapsed: Seconds from the first firing to the last.
    """

    plan: AddonPlan
    stats: AddonStats
    executions: list[TaskExecution]
    elapsed: float

    @property
    def consistent(self) -> bool:
        """True when every stored execution equals the plan's (no write was lost between threads)."""
        return self.executions == [planned.expected() for planned in self.plan.occurrences]

    def by_state(self) -> dict[str, int]:
        """How many executions ended in each state, in the model's order of states."""
        counts = dict.fromkeys(("done", "missed", "cancelled", "pending"), 0)
        for execution in self.executions:
            counts[execution.state] += 1
        return {state: n for state, n in counts.items() if n}


class AddonRun:
    """Runs an :class:`AddonPlan` against an ExecutionRepository with timer threads; use :meth:`run`."""

    def __init__(
        self,
        executions: ExecutionRepository,
        plan: AddonPlan,
        *,
        threads: int = 8,
        on_progress: Callable[[int, int], None] | None = None,
    ) -> None:
        if threads < 1:
            raise ValueError(f"the demo needs at least one timer thread, got {threads}")
        self._repo = executions
        self._plan = plan
        self._threads = threads
        self._on_progress: Callable[[int, int], None] = on_progress or _ignore_progress
        self._spread = SECONDS_PER_OCCURRENCE * len(plan.occurrences)
        self._cond = threading.Condition()
        #: (due in real seconds from the start, sequence, occurrence index, attempt number)
        self._due: list[tuple[float, int, int, int]] = []
        self._sequence = 0
        self._error: BaseException | None = None
        self.stats = AddonStats()

    def run(self) -> AddonResult:
        """Store the tasks, occurrences and pending executions, fire every occurrence, and read them back.

        Raises:
            PlanflowError: any repository failure (the first one a timer thread met).
        """
        plan, repo = self._plan, self._repo
        with repo.batch():  # the add-on plans its day in one write
            for task in plan.tasks:
                repo.add_task(task)
            for planned in plan.occurrences:
                repo.add_occurrence(planned.occurrence)
                repo.add_execution(TaskExecution(planned.occurrence.id, "pending", planned.max_retries, []))
        started = time.perf_counter()
        for index in range(len(plan.occurrences)):
            self._schedule(index, 0)
        workers = [
            threading.Thread(target=self._work, args=(started,), name=f"timer-{n}", daemon=True)
            for n in range(self._threads)
        ]
        for worker in workers:
            worker.start()
        for worker in workers:
            worker.join()
        if self._error is not None:
            raise self._error
        elapsed = time.perf_counter() - started
        stored = [repo.get_execution(planned.occurrence.id) for planned in plan.occurrences]
        missing = [p.occurrence.id for p, e in zip(plan.occurrences, stored, strict=True) if e is None]
        if missing:
            raise PlanflowError(f"{len(missing)} executions vanished from the store, e.g. {missing[0]!r}")
        return AddonResult(plan, self.stats, [e for e in stored if e is not None], elapsed)

    def _schedule(self, index: int, attempt: int) -> None:
        """Queue attempt ``attempt`` of occurrence ``index`` for when its simulated time comes."""
        planned = self._plan.occurrences[index]
        at = _attempt_time(planned.occurrence.scheduled_for, attempt)
        due = (at - START) / HORIZON * self._spread
        with self._cond:
            self._sequence += 1
            heapq.heappush(self._due, (due, self._sequence, index, attempt))
            self._cond.notify()

    def _work(self, started: float) -> None:
        try:
            while True:
                with self._cond:
                    while True:
                        if self._error is not None or self.stats.settled == len(self._plan.occurrences):
                            return
                        wait = self._due[0][0] - (time.perf_counter() - started) if self._due else 0.5
                        if self._due and wait <= 0:
                            _, _, index, attempt = heapq.heappop(self._due)
                            break
                        self._cond.wait(min(wait, 0.5))
                self._fire(index, attempt)
        except BaseException as exc:
            with self._cond:
                self._error = self._error or exc
                self._cond.notify_all()

    def _fire(self, index: int, attempt: int) -> None:
        """Run one attempt: write its events, then settle the occurrence or queue its retry."""
        planned = self._plan.occurrences[index]
        with self._cond:
            self.stats.fired += 1
        stored = self._repo.get_execution(planned.occurrence.id)
        if stored is None:
            raise PlanflowError(f"the execution of {planned.occurrence.id!r} vanished from the store")
        if planned.cancelled:
            self._write(replace(stored, state="cancelled"))
            self._settle()
            return
        at = _attempt_time(planned.occurrence.scheduled_for, attempt)
        history = [*stored.history, TaskEvent("triggered", at)]
        self._write(replace(stored, history=history))
        if planned.attempts[attempt]:
            completed = TaskEvent("completed", at + timedelta(minutes=2))
            self._write(replace(stored, state="done", history=[*history, completed]))
            self._settle()
            return
        missed = [*history, TaskEvent("missed", at + timedelta(minutes=15))]
        if stored.retries_remaining > 0:
            rescheduled = [*missed, TaskEvent("rescheduled", at + timedelta(minutes=15))]
            self._write(
                replace(
                    stored,
                    state="pending",
                    retries_remaining=stored.retries_remaining - 1,
                    history=rescheduled,
                )
            )
            with self._cond:
                self.stats.rescheduled += 1
            self._schedule(index, attempt + 1)
            return
        self._write(replace(stored, state="missed", history=missed))
        self._settle()

    def _write(self, execution: TaskExecution) -> None:
        self._repo.add_execution(execution)
        with self._cond:
            self.stats.writes += 1
            self.stats.threads.add(threading.current_thread().name)

    def _settle(self) -> None:
        with self._cond:
            self.stats.settled += 1
            done = self.stats.settled
            self._cond.notify_all()
        self._on_progress(done, len(self._plan.occurrences))


def _ignore_progress(done: int, total: int) -> None:
    pass


__all__ = [
    "DEFAULT_ADDON_TASKS",
    "AddonPlan",
    "AddonResult",
    "AddonRun",
    "AddonStats",
    "PlannedOccurrence",
    "build_addon_plan",
]
