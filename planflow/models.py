"""Models of workflow and task execution state, users and API keys.

Models are frozen, slotted dataclasses: a changed state is a new value (``dataclasses.replace`` or
:meth:`TaskState.evolve`). Timestamps are timezone-aware UTC datetimes set by the repository; ``version`` is
0 for a state that was never stored, 1 after the first write and one more after every later write.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Collection, Iterable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from enum import Enum, StrEnum
from typing import Generic, Literal, Self, TypeAlias, TypeVar

JsonValue: TypeAlias = "str | int | float | bool | list[JsonValue] | dict[str, JsonValue] | None"
JsonObject: TypeAlias = "dict[str, JsonValue]"

T = TypeVar("T")
S = TypeVar("S")


class _Keep(Enum):
    """The default of ``evolve``'s parameters: keep the field as it is."""

    KEEP = "KEEP"


KEEP = _Keep.KEEP

#: The enum of each enum field, by field name: ``evolve`` turns values given as plain strings into members.
_ENUM_FIELDS: dict[str, type[Enum]] = {}


def _normalised(state: S) -> S:
    """``state`` with enum fields given as their values (``"SUCCESS"``) turned into members.

    A value that is no member's is left as it is: the repository refuses it, naming the field.
    """
    for name, kind in _ENUM_FIELDS.items():
        value = getattr(state, name, None)
        if isinstance(value, str) and not isinstance(value, kind):
            try:
                member = kind(value)
            except ValueError:
                continue
            object.__setattr__(state, name, member)
    return state


class TaskStatus(StrEnum):
    """Status of a task or workflow execution."""

    PENDING = "PENDING"
    RUNNING = "RUNNING"
    SUCCESS = "SUCCESS"
    FAILED = "FAILED"
    TIMED_OUT = "TIMED_OUT"
    CANCELED = "CANCELED"
    WAITING = "WAITING"
    PAUSED = "PAUSED"


#: Statuses that count as "running" in progress info (started, not finished).
RUNNING_STATUSES = frozenset({TaskStatus.RUNNING, TaskStatus.WAITING, TaskStatus.PAUSED})
#: Statuses from which a task does not move on.
TERMINAL_STATUSES = frozenset(
    {TaskStatus.SUCCESS, TaskStatus.FAILED, TaskStatus.CANCELED, TaskStatus.TIMED_OUT}
)
#: Terminal statuses that are not a success.
FAILURE_STATUSES = frozenset({TaskStatus.FAILED, TaskStatus.TIMED_OUT, TaskStatus.CANCELED})


class ExecutionType(StrEnum):
    """How a task executes."""

    BASIC = "basic"
    ROUTER = "router"
    PARALLEL = "parallel"
    COLLECTION = "collection"
    COMPOSITE = "composite"
    WAIT = "wait"
    SIGNAL = "signal"
    AGGREGATE = "aggregate"
    MEMORY = "memory"


#: Execution types of composite parents (their children do the work): ``tasks.claim`` hands them out only to a
#: filter that names their type (``execution_type`` or ``execution_types``).
COMPOSITE_TYPES = frozenset({ExecutionType.PARALLEL, ExecutionType.COLLECTION, ExecutionType.COMPOSITE})


class ComponentType(StrEnum):
    """Which kind of component produced a state."""

    WORKFLOW = "workflow"
    TASK = "task"
    AGENT = "agent"
    TOOL = "tool"
    LOG = "log"


class Role(StrEnum):
    """Role of a user."""

    ADMIN = "admin"
    USER = "user"


class ParallelStrategy(StrEnum):
    """How the overall status of a parent is derived from its children."""

    WAIT_ALL = "wait_all"
    FAIL_FAST = "fail_fast"
    BEST_EFFORT = "best_effort"
    RACE = "race"


_ENUM_FIELDS.update(status=TaskStatus, component=ComponentType, execution_type=ExecutionType)


@dataclass(frozen=True, slots=True)
class UsageEntry:
    """Token usage of one provider, model and source.

    Entries are keyed by ``(provider, model, source)`` compared case-insensitively.
    """

    provider: str
    model: str
    source: str = "task"
    prompt_tokens: int = 0
    completion_tokens: int = 0
    total_tokens: int = 0
    #: Prompt tokens served from the provider's cache (a part of ``prompt_tokens``, as providers report it).
    cached_tokens: int = 0
    #: Completion tokens spent on reasoning (a part of ``completion_tokens``, as providers report it).
    reasoning_tokens: int = 0

    @property
    def key(self) -> tuple[str, str, str]:
        """The case-insensitive merge key."""
        return (self.provider.casefold(), self.model.casefold(), self.source.casefold())

    def __add__(self, other: UsageEntry) -> UsageEntry:
        return dataclasses.replace(
            self,
            prompt_tokens=self.prompt_tokens + other.prompt_tokens,
            completion_tokens=self.completion_tokens + other.completion_tokens,
            total_tokens=self.total_tokens + other.total_tokens,
            cached_tokens=self.cached_tokens + other.cached_tokens,
            reasoning_tokens=self.reasoning_tokens + other.reasoning_tokens,
        )


@dataclass(frozen=True, slots=True)
class UsageSummary:
    """A list of usage entries, at most one per merge key."""

    entries: tuple[UsageEntry, ...] = ()

    @classmethod
    def of(cls, entries: Iterable[UsageEntry]) -> UsageSummary:
        """Build a summary, summing entries that share a key (first spelling kept)."""
        return cls().merge(cls(tuple(entries)))

    def merge(self, other: UsageSummary) -> UsageSummary:
        """Return the sum of this summary and ``other``; order: this one's keys, then new keys of ``other``."""
        merged: dict[tuple[str, str, str], UsageEntry] = {}
        for entry in (*self.entries, *other.entries):
            present = merged.get(entry.key)
            merged[entry.key] = entry if present is None else present + entry
        return UsageSummary(tuple(merged.values()))

    @property
    def total_tokens(self) -> int:
        """Sum of ``total_tokens`` over all entries."""
        return sum(entry.total_tokens for entry in self.entries)


@dataclass(frozen=True, slots=True)
class TaskState:
    """The stored state of one task execution."""

    task_exec_id: str
    task_id: str
    workflow_exec_id: str
    workflow_id: str
    component: ComponentType = ComponentType.TASK
    status: TaskStatus = TaskStatus.PENDING
    execution_type: ExecutionType = ExecutionType.BASIC
    parent_state_id: str | None = None
    agent_id: str | None = None
    action_id: str | None = None
    tool_id: str | None = None
    input: JsonObject | None = None
    output: JsonObject | None = None
    error: JsonObject | None = None
    usage: UsageSummary | None = None
    version: int = 0
    created_at: datetime | None = None
    updated_at: datetime | None = None
    #: The worker that holds (or last held) the task through ``tasks.claim``; ``None`` when never claimed.
    claimed_by: str | None = None
    #: When that worker's claim lapses (it may ``heartbeat`` to extend it); ``None`` when never claimed.
    lease_expires_at: datetime | None = None
    #: Claims go to due tasks of higher priority first (then to those due longest).
    priority: int = 0
    #: Not claimable before this time (by the database's clock); ``None``: due at once. ``tasks.fail`` sets it to
    #: when a retry is due.
    run_after: datetime | None = None
    #: How many times the task was claimed (set by ``tasks.claim``, never by a caller's write).
    attempt: int = 0
    #: The claims a task may have before it ends FAILED (``None``: unlimited); a lease that lapses counts as a
    #: failed attempt.
    max_attempts: int | None = None
    #: The key whose concurrency and rate limits (``tasks.set_limit``) bound the claims of this task.
    concurrency_key: str | None = None
    #: At most one non-terminal task holds a key: upserting a new task with a held key returns the holder.
    dedup_key: str | None = None
    #: Why the last attempt failed (``tasks.fail``'s error, or the lapse of a lease).
    last_error: JsonObject | None = None

    def evolve(
        self,
        *,
        task_exec_id: str | _Keep = KEEP,
        task_id: str | _Keep = KEEP,
        workflow_exec_id: str | _Keep = KEEP,
        workflow_id: str | _Keep = KEEP,
        component: ComponentType | _Keep = KEEP,
        status: TaskStatus | _Keep = KEEP,
        execution_type: ExecutionType | _Keep = KEEP,
        parent_state_id: str | _Keep | None = KEEP,
        agent_id: str | _Keep | None = KEEP,
        action_id: str | _Keep | None = KEEP,
        tool_id: str | _Keep | None = KEEP,
        input: JsonObject | _Keep | None = KEEP,
        output: JsonObject | _Keep | None = KEEP,
        error: JsonObject | _Keep | None = KEEP,
        usage: UsageSummary | _Keep | None = KEEP,
        version: int | _Keep = KEEP,
        created_at: datetime | _Keep | None = KEEP,
        updated_at: datetime | _Keep | None = KEEP,
        claimed_by: str | _Keep | None = KEEP,
        lease_expires_at: datetime | _Keep | None = KEEP,
        priority: int | _Keep = KEEP,
        run_after: datetime | _Keep | None = KEEP,
        attempt: int | _Keep = KEEP,
        max_attempts: int | _Keep | None = KEEP,
        concurrency_key: str | _Keep | None = KEEP,
        dedup_key: str | _Keep | None = KEEP,
        last_error: JsonObject | _Keep | None = KEEP,
    ) -> Self:
        """Return a copy with the given fields changed (each parameter is the field of that name).

        Enum fields given as their values (``"SUCCESS"``) come back as members (``TaskStatus.SUCCESS``).
        """
        changed = {name: value for name, value in locals().items() if value is not KEEP and name != "self"}
        return _normalised(dataclasses.replace(self, **changed))


@dataclass(frozen=True, slots=True)
class Heartbeat:
    """What ``tasks.heartbeat`` did: the tasks whose leases it extended, to when, and those the worker lost."""

    #: The tasks the worker still holds, their leases extended (in the order asked).
    held: list[str]
    #: The tasks it no longer holds (taken over, finished, released, canceled or missing): stop working on them.
    lost: list[str]
    #: When the extended leases lapse now, by the database's clock; ``None`` when none was held.
    lease_expires_at: datetime | None


@dataclass(frozen=True, slots=True)
class TaskTreeNode:
    """One task of a tree returned by ``get_task_tree`` (depth-first): the state and its depth below the root
    (root = 0)."""

    state: TaskState
    depth: int


@dataclass(frozen=True, slots=True)
class WorkflowState:
    """The stored state of one workflow execution, with its tasks (task_id -> latest state) on reads."""

    workflow_exec_id: str
    workflow_id: str
    status: TaskStatus = TaskStatus.PENDING
    usage: UsageSummary | None = None
    input: JsonObject | None = None
    output: JsonObject | None = None
    error: JsonObject | None = None
    version: int = 0
    created_at: datetime | None = None
    updated_at: datetime | None = None
    #: The workflow execution this one was forked from (``workflows.fork``), else None. Set by fork only:
    #: an upsert keeps the stored value.
    forked_from: str | None = None
    tasks: Mapping[str, TaskState] = field(default_factory=dict[str, TaskState])

    def evolve(
        self,
        *,
        workflow_exec_id: str | _Keep = KEEP,
        workflow_id: str | _Keep = KEEP,
        status: TaskStatus | _Keep = KEEP,
        usage: UsageSummary | _Keep | None = KEEP,
        input: JsonObject | _Keep | None = KEEP,
        output: JsonObject | _Keep | None = KEEP,
        error: JsonObject | _Keep | None = KEEP,
        version: int | _Keep = KEEP,
        created_at: datetime | _Keep | None = KEEP,
        updated_at: datetime | _Keep | None = KEEP,
        forked_from: str | _Keep | None = KEEP,
        tasks: Mapping[str, TaskState] | _Keep = KEEP,
    ) -> Self:
        """Return a copy with the given fields changed (each parameter is the field of that name).

        A status given as its value (``"SUCCESS"``) comes back as a member (``TaskStatus.SUCCESS``).
        """
        changed = {name: value for name, value in locals().items() if value is not KEEP and name != "self"}
        return _normalised(dataclasses.replace(self, **changed))


#: What a history record is about.
HistoryEntity: TypeAlias = Literal["task", "workflow"]


@dataclass(frozen=True, slots=True)
class HistoryRecord:
    """One change of a task's or workflow's status, holder, attempt or error, as recorded in the same
    transaction as the change (``tasks.history``, ``workflows.history``).

    Attributes:
        history_id: The record's place in the store's history: later records of an entity have larger ids.
        entity: ``"task"`` or ``"workflow"``.
        entity_id: The task_exec_id or workflow_exec_id.
        workflow_exec_id: The workflow execution the entity belongs to (its own id for a workflow).
        from_status: The status before the change (None when the entity was created by it).
        to_status: The status after it.
        recorded_at: When it was recorded: the database's clock on PostgreSQL, the state's ``updated_at`` on
            SQLite (one machine's clock).
        worker: The holder of the task's claim after the change, or before it when the change released it;
            None for workflows and unclaimed tasks.
        attempt: The task's attempt count after the change (None for workflows).
        version: The entity's version after the change.
        error: A summary of the error the change set (its ``message``, else its ``code``, at most 500
            characters), or None.
    """

    history_id: int
    entity: HistoryEntity
    entity_id: str
    workflow_exec_id: str
    from_status: TaskStatus | None
    to_status: TaskStatus
    recorded_at: datetime
    worker: str | None
    attempt: int | None
    version: int
    error: str | None


#: The direction of a listing by ``(created_at, id)``: oldest first (``"asc"``) or newest first (``"desc"``).
Order: TypeAlias = Literal["asc", "desc"]


@dataclass(frozen=True, slots=True)
class TaskFilter:
    """Filters for ``list_states``; fields left ``None`` do not filter. All given fields must match.

    ``statuses`` matches any of the statuses it holds (ANDed with ``status`` when both are given). The time
    bounds are exclusive and take aware datetimes only: ``created_after`` keeps rows created strictly after it,
    ``updated_before`` rows last written strictly before it, and so on.

    The plural fields (``execution_types``, ``workflow_ids``, ``workflow_exec_ids``, ``task_ids``) match any of
    the values they hold (ANDed with the singular field when both are given; an empty collection matches
    nothing). They are how a worker names the work it takes: planflow has no separate queue name, a queue is
    the set of task kinds (``task_ids``) and/or workflow names (``workflow_ids``) a worker serves, and
    ``concurrency_key`` names tasks sharing a limit. Give them as frozensets or tuples to let the repository
    remember the statement built for the filter.
    """

    status: TaskStatus | None = None
    workflow_id: str | None = None
    workflow_exec_id: str | None = None
    task_id: str | None = None
    task_exec_id: str | None = None
    parent_state_id: str | None = None
    agent_id: str | None = None
    action_id: str | None = None
    tool_id: str | None = None
    execution_type: ExecutionType | None = None
    statuses: Collection[TaskStatus] | None = None
    created_after: datetime | None = None
    created_before: datetime | None = None
    updated_after: datetime | None = None
    updated_before: datetime | None = None
    execution_types: Collection[ExecutionType] | None = None
    workflow_ids: Collection[str] | None = None
    workflow_exec_ids: Collection[str] | None = None
    task_ids: Collection[str] | None = None
    concurrency_key: str | None = None


@dataclass(frozen=True, slots=True)
class RetryBackoff:
    """How long ``tasks.fail`` waits before a failed task is due again: exponential, capped, with jitter.

    The retry after attempt ``n`` (1 for the first claim) waits ``min(max_delay, base_delay * factor**(n-1))``
    seconds, less a random part of up to ``jitter`` of it (``jitter=0.5``: between half and all of it), so
    that tasks failing together do not come back together. (Not ``RetryPolicy``: that name is the PlanFlow
    add-on's, :class:`planflow.executions.RetryPolicy`.)
    """

    base_delay: float = 1.0
    factor: float = 2.0
    max_delay: float = 300.0
    jitter: float = 0.5

    def __post_init__(self) -> None:
        for name in ("base_delay", "factor", "max_delay", "jitter"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int | float) or not 0 <= value < float("inf"):
                raise ValueError(f"RetryBackoff.{name} must be a finite number >= 0, got {value!r}")
        if self.jitter > 1:
            raise ValueError(f"RetryBackoff.jitter must be within 0..1, got {self.jitter!r}")

    def delay(self, attempt: int, draw: float) -> float:
        """Seconds to wait after attempt ``attempt`` failed, ``draw`` a random number in [0, 1)."""
        exponent = max(attempt - 1, 0)
        try:
            raw = self.base_delay * self.factor**exponent
        except OverflowError:
            raw = self.max_delay
        capped = min(self.max_delay, raw)
        return capped * (1 - self.jitter * draw)


@dataclass(frozen=True, slots=True)
class KeyStats:
    """RUNNING tasks of one concurrency key against its limits (``None``: not limited)."""

    key: str
    running: int
    concurrency: int | None
    #: ``(count, per_seconds)``, and the claims of the key within the current window.
    rate: tuple[int, float] | None
    claims_in_window: int


@dataclass(frozen=True, slots=True)
class QueueStats:
    """What ``tasks.queue_stats`` reports about the tasks a filter selects."""

    #: Tasks by status (statuses without tasks are left out).
    counts: Mapping[TaskStatus, int]
    #: PENDING tasks claimable now (no ``run_after``, or one that passed, by the database's clock).
    due: int
    #: PENDING tasks whose ``run_after`` is still ahead.
    delayed: int
    #: Seconds the longest-due PENDING task has been due (``None`` when none is due).
    oldest_due_age: float | None
    #: FAILED tasks that used up their ``max_attempts`` (dead work).
    dead: int
    #: RUNNING tasks per concurrency key (store-wide) with its limits, by key: the keys of the live tasks a
    #: narrowing filter selects, else every key with RUNNING tasks and every limited key (``tasks.set_limit``).
    keys: list[KeyStats]


@dataclass(frozen=True, slots=True)
class WorkflowFilter:
    """Filters for workflow ``list_states``, read as :class:`TaskFilter`'s are."""

    status: TaskStatus | None = None
    workflow_id: str | None = None
    workflow_exec_id: str | None = None
    statuses: Collection[TaskStatus] | None = None
    created_after: datetime | None = None
    created_before: datetime | None = None
    updated_after: datetime | None = None
    updated_before: datetime | None = None


@dataclass(frozen=True, slots=True)
class Page(Generic[T]):
    """One page of a listing; pass ``next_cursor`` back to get the next page (``None`` on the last page)."""

    items: list[T]
    next_cursor: str | None = None


@dataclass(frozen=True, slots=True)
class ProgressInfo:
    """Counts of a parent's direct children by status, and what they add up to."""

    total: int
    status_counts: Mapping[TaskStatus, int]

    def count(self, *statuses: TaskStatus) -> int:
        """Number of children in any of ``statuses``."""
        return sum(self.status_counts.get(status, 0) for status in statuses)

    @property
    def pending(self) -> int:
        """Children not started yet."""
        return self.count(TaskStatus.PENDING)

    @property
    def running(self) -> int:
        """Children started and not finished: RUNNING, WAITING or PAUSED."""
        return self.count(*RUNNING_STATUSES)

    @property
    def success(self) -> int:
        """Children that succeeded."""
        return self.count(TaskStatus.SUCCESS)

    @property
    def failed(self) -> int:
        """Children that FAILED or TIMED_OUT."""
        return self.count(TaskStatus.FAILED, TaskStatus.TIMED_OUT)

    @property
    def canceled(self) -> int:
        """Children that were CANCELED."""
        return self.count(TaskStatus.CANCELED)

    @property
    def terminal(self) -> int:
        """Children that finished: SUCCESS, FAILED, CANCELED or TIMED_OUT."""
        return self.count(*TERMINAL_STATUSES)

    @property
    def completion_rate(self) -> float:
        """success / total (0.0 without children)."""
        return self.success / self.total if self.total else 0.0

    @property
    def failure_rate(self) -> float:
        """(failed + timed out) / total (0.0 without children)."""
        return self.failed / self.total if self.total else 0.0

    @property
    def all_terminal(self) -> bool:
        """True when every child finished (and there is at least one)."""
        return self.total > 0 and self.terminal == self.total

    def overall_status(self, strategy: ParallelStrategy = ParallelStrategy.WAIT_ALL) -> TaskStatus:
        """The parent's status under ``strategy``.

        - wait_all: when all finished, FAILED if any did not succeed, else SUCCESS.
        - fail_fast: FAILED as soon as one child FAILED, TIMED_OUT or was CANCELED; SUCCESS when all succeeded.
        - best_effort: when all finished, SUCCESS if at least one succeeded, else FAILED.
        - race: SUCCESS as soon as one child succeeded; FAILED when all finished without a success.

        Until then the parent is RUNNING once a child started or finished, else PENDING (also without children).
        """
        failures = self.count(*FAILURE_STATUSES)
        match strategy:
            case ParallelStrategy.WAIT_ALL:
                if self.all_terminal:
                    return TaskStatus.FAILED if failures else TaskStatus.SUCCESS
            case ParallelStrategy.FAIL_FAST:
                if failures:
                    return TaskStatus.FAILED
                if self.all_terminal:
                    return TaskStatus.SUCCESS
            case ParallelStrategy.BEST_EFFORT:
                if self.all_terminal:
                    return TaskStatus.SUCCESS if self.success else TaskStatus.FAILED
            case ParallelStrategy.RACE:
                if self.success:
                    return TaskStatus.SUCCESS
                if self.all_terminal:
                    return TaskStatus.FAILED
        return TaskStatus.RUNNING if self.running or self.terminal else TaskStatus.PENDING


@dataclass(frozen=True, slots=True)
class User:
    """A user; ``email`` is unique, compared case-insensitively."""

    id: str
    email: str
    role: Role
    created_at: datetime
    updated_at: datetime


@dataclass(frozen=True, slots=True)
class APIKey:
    """A stored API key: only its SHA-256 fingerprint and a short display prefix, never the key itself."""

    id: str
    user_id: str
    fingerprint: str
    prefix: str
    created_at: datetime
    last_used: datetime | None = None


@dataclass(frozen=True, slots=True)
class CreatedAPIKey:
    """The result of creating a key: the stored record and the plaintext, which is returned this once only."""

    key: APIKey
    plaintext: str = field(repr=False)
