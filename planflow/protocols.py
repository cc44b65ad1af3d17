"""The repository Protocols: all a caller ever sees of a driver (the asynchronous ones: planflow.async_protocols)."""

from __future__ import annotations

from collections.abc import Callable, Collection, Iterable, Iterator, Sequence
from contextlib import AbstractContextManager
from datetime import datetime
from typing import Protocol

from planflow.arguments import (
    Count,
    Cursor,
    Delay,
    Email,
    ErrorObject,
    HistoryId,
    Id,
    Lease,
    Past,
    Rate,
    Size,
    Text,
    Timeout,
    Usage,
    Version,
)
from planflow.executions import TaskDefinition, TaskExecution, TaskOccurrence
from planflow.models import (
    TERMINAL_STATUSES,
    APIKey,
    CreatedAPIKey,
    Heartbeat,
    HistoryRecord,
    JsonObject,
    Order,
    Page,
    ProgressInfo,
    QueueStats,
    RetryBackoff,
    Role,
    TaskFilter,
    TaskState,
    TaskStatus,
    TaskTreeNode,
    UsageSummary,
    User,
    WorkflowFilter,
    WorkflowState,
)

#: Turns a finished workflow (with its tasks) into its output; raising marks the workflow FAILED.
OutputTransformer = Callable[[WorkflowState], JsonObject]
#: Told, after each batch of ``workflows.purge``, how many workflows that batch deleted.
PurgeProgress = Callable[[int], object]


class TaskRepository(Protocol):
    """Task execution states (table ``task_states``)."""

    def upsert_state(self, state: TaskState) -> TaskState:
        """Insert ``state`` or overwrite every field of the stored one (keeping ``created_at``).

        Deduplication: when ``state`` is new and its ``dedup_key`` is held by a non-terminal task (PENDING,
        RUNNING, WAITING or PAUSED), nothing is written and that task is returned instead; the returned
        ``task_exec_id`` then differs from ``state``'s, which is how a caller tells the two outcomes apart.
        Concurrent enqueues with one key create one task (a unique index; the losers get the winner).

        Returns:
            The stored state, with ``version`` bumped and timestamps set (or the task holding the dedup key).

        Raises:
            ValidationError: bad field, non-JSON value, own parent, unknown workflow or parent.
            ConflictError: an existing task was given a ``dedup_key`` that another non-terminal task holds, or
                (inside ``provider.transaction()`` on PostgreSQL) a concurrent enqueue took the key first.
        """
        ...

    def update_state(self, state: TaskState, expected_version: Version) -> TaskState:
        """Overwrite the stored state only if its version is ``expected_version`` (optimistic lock).

        Raises:
            ConflictError: the stored version differs (both versions named).
            NotFoundError: no such state.
        """
        ...

    def get_state(self, task_exec_id: Id) -> TaskState:
        """The state with ``task_exec_id``; raises ``NotFoundError`` if absent."""
        ...

    def get_state_for_update(self, task_exec_id: Id) -> TaskState:
        """Like ``get_state`` but holds a write lock on the row until the transaction ends.

        Raises:
            TransactionRequiredError: called outside ``provider.transaction()``.
        """
        ...

    def list_states(
        self,
        filter: TaskFilter | None = None,
        *,
        limit: Count = 100,
        cursor: Cursor | None = None,
        order: Order = "asc",
    ) -> Page[TaskState]:
        """States matching every field of ``filter``, ordered by ``created_at`` then ``task_exec_id``.

        Args:
            filter: What the states must match (see :class:`TaskFilter`); ``None`` for every state.
            limit: The page size, 1..2**31-1.
            cursor: ``next_cursor`` of the previous page of the same listing (same filter and order).
            order: ``"asc"`` oldest first, ``"desc"`` newest first. Pages are keyset pages on
                ``(created_at, task_exec_id)``: rows added while paging never shift a page, and every row that
                existed at the start is listed exactly once.

        Raises:
            ValidationError: a bad filter value (a naive datetime, a status that is not one), an ``order``
                other than asc/desc, or a cursor of another listing order.
        """
        ...

    def iter_states(
        self, filter: TaskFilter | None = None, *, batch_size: Count = 1000
    ) -> Iterator[TaskState]:
        """Every state matching ``filter`` in ``list_states`` order, read ``batch_size`` at a time.

        Memory stays at one batch whatever the number of states; each batch is a short read of its own (no
        transaction is held between them), and every state that existed when the iteration began is yielded
        exactly once.
        """
        ...

    def count_states(self, filter: TaskFilter | None = None) -> int:
        """How many states match ``filter`` (all of them without one)."""
        ...

    def list_by_ids(self, task_exec_ids: Sequence[Id]) -> list[TaskState]:
        """States with any of the ids (any number of them), in ``created_at`` order; missing ids are skipped."""
        ...

    def list_tasks_in_workflow(self, workflow_exec_id: Id) -> dict[str, TaskState]:
        """The latest state per ``task_id`` in one workflow execution."""
        ...

    def list_tasks_by_status(self, workflow_exec_id: Id, status: TaskStatus) -> list[TaskState]:
        """States with ``status`` in one workflow execution, in ``created_at`` order."""
        ...

    def list_tasks_by_agent(self, workflow_exec_id: Id, agent_id: Id) -> list[TaskState]:
        """States of ``agent_id`` in one workflow execution, in ``created_at`` order."""
        ...

    def list_tasks_by_tool(self, workflow_exec_id: Id, tool_id: Id) -> list[TaskState]:
        """States of ``tool_id`` in one workflow execution, in ``created_at`` order."""
        ...

    def list_children(self, parent_state_id: Id) -> list[TaskState]:
        """Direct children of a task, in ``created_at`` order."""
        ...

    def get_child_by_task_id(self, parent_state_id: Id, task_id: Id) -> TaskState:
        """The newest direct child with ``task_id``; raises ``NotFoundError`` if none."""
        ...

    def get_task_tree(self, root_state_id: Id, *, max_depth: Count = 100) -> list[TaskTreeNode]:
        """The root (depth 0) and its descendants down to ``max_depth``, depth-first.

        Pre-order: each task comes before its children, and a task's children (each followed by its own
        subtree) in creation order (``created_at``, then ``task_exec_id``). So indenting each node by its
        ``depth`` draws the tree::

            for node in provider.tasks.get_task_tree(root_id):
                print("  " * node.depth + node.state.task_id)

        One recursive query; stops on a parent cycle in stored data; an unknown root gives ``[]``.
        """
        ...

    def iter_task_tree(self, root_state_id: Id, *, max_depth: Count = 100) -> Iterator[TaskTreeNode]:
        """``get_task_tree``'s nodes, in its order, streamed from one snapshot: memory stays flat.

        The query's connection (and, outside a transaction, a read-only transaction of its own) is held until
        the iteration ends: consume it, or close it, promptly.
        """
        ...

    def list_children_outputs(self, parent_state_id: Id) -> dict[str, JsonObject]:
        """``task_id -> output`` of the direct children whose output is not null."""
        ...

    def get_progress_info(self, parent_state_id: Id) -> ProgressInfo:
        """Counts of the direct children by status (see ``ProgressInfo.overall_status`` for strategies)."""
        ...

    def merge_usage(
        self, task_exec_id: Id, usage: Usage, *, idempotency_key: Id | None = None
    ) -> UsageSummary:
        """Add ``usage`` into the stored summary atomically; returns the merged summary.

        Args:
            task_exec_id: The task state to add to.
            usage: What to add: entries of the same provider, model and source (case-insensitive) are summed.
            idempotency_key: Makes a retry safe: a merge already applied with this key (within
                ``idempotency_window``, default a day) is not applied again, and its merged summary, as it was
                then, is returned. A merge that was cancelled or timed out may have committed; retry it with
                the same key.

        Raises:
            NotFoundError: no such task state.
        """
        ...

    def delete_state(self, task_exec_id: Id) -> None:
        """Delete the state and its whole subtree; raises ``NotFoundError`` if absent."""
        ...

    def claim(
        self, filter: TaskFilter | None = None, *, worker: Id, limit: Count = 1, lease: Lease
    ) -> list[TaskState]:
        """Hand up to ``limit`` claimable tasks matching ``filter`` to ``worker``: higher ``priority`` first, then
        those due longest (``run_after``, or ``created_at`` without one).

        Claimable: PENDING and due (``run_after`` unset or past, by the database's clock), or RUNNING with a
        lease that lapsed (its worker died or hung). Each claimed task becomes RUNNING with
        ``claimed_by=worker``, a lease of ``lease`` seconds (a number or a ``timedelta``) and ``attempt`` one
        more; its version is bumped, so a worker whose lease was taken over holds a stale version and its
        ``update_state`` raises ``ConflictError`` (fencing). Two workers never get the same task (PostgreSQL
        ``FOR UPDATE SKIP LOCKED``; SQLite one short write under its lock).

        Poison work ends: a candidate that has used up ``max_attempts`` is not handed out but becomes FAILED,
        its ``last_error`` saying so (a lapsed lease is a failed attempt: ``last_error`` names its worker).
        Composite parents (``COMPOSITE_TYPES``) are handed out only when the filter names their execution type.
        Limits (``set_limit``) hold across every worker of every process: a task whose ``concurrency_key`` has
        as many RUNNING tasks as its concurrency limit, or as many claims within its rate window as the rate
        allows, is passed over (the claim locks the key's limit row and counts in the same transaction). A
        claim may return fewer than ``limit`` tasks while more are claimable (some candidates were passed over
        for a limit, or ended FAILED).

        Leases run on the database's clock on PostgreSQL (its ``now()``), so workers on machines whose clocks
        disagree still agree on when a lease lapses; on SQLite every writer runs on one machine, whose clock
        it is. The claim columns (``claimed_by``, ``lease_expires_at``, ``attempt``) change only through
        ``claim``, ``heartbeat``, ``release``, ``fail`` and ``cancel``: ``update_state`` and ``upsert_state`` of
        a copy keep them as stored.

        Returns:
            The claimed states (``[]`` when nothing is claimable), in claim order, with their lease end.

        Raises:
            ValidationError: ``limit`` below 1, a lease that is not a positive finite number of seconds of at
                most a year, an empty worker name, a filter that is not a TaskFilter.
        """
        ...

    def heartbeat(self, task_exec_ids: Sequence[Id], *, worker: Id, lease: Lease) -> Heartbeat:
        """Extend, to ``lease`` seconds from now (the database's clock), the leases ``worker`` still holds on
        ``task_exec_ids``.

        The version is left alone (the worker's states stay current), and a later ``update_state`` of the
        worker's copy keeps the extended lease.

        Returns:
            The ids still held, now leased until ``lease_expires_at``, and those no longer held (``lost``: taken
            over, finished, released or missing), which the worker must stop working on.
        """
        ...

    def release(self, task_exec_id: Id, *, worker: Id) -> TaskState:
        """Give a task ``worker`` holds back as PENDING (claim and lease cleared, version bumped); returns it.

        Raises:
            ConflictError: ``worker`` does not hold it (another does, or it is not RUNNING).
            NotFoundError: no such task.
        """
        ...

    def wait_for_work(self, filter: TaskFilter | None = None, *, timeout: Timeout) -> bool:
        """Block until a task matching ``filter`` may be claimable, or ``timeout`` seconds pass.

        Returns True at once when work is claimable now (a pending task, or a lapsed lease) and as soon as some
        becomes so (PostgreSQL: a NOTIFY sent by the transaction that made a task PENDING; SQLite: this
        process's commits at once, other processes' within 50 ms; a lease lapsing); False at the timeout. It
        never returns True without work having been claimable, though another worker may claim it first.
        """
        ...

    def list_lapsed(self, filter: TaskFilter | None = None, *, limit: Count = 100) -> list[TaskState]:
        """RUNNING tasks matching ``filter`` whose lease lapsed (stuck: their worker died or hung), longest first.

        Each names who held it (``claimed_by``) and when its lease ended; the next ``claim`` takes it over.
        """
        ...

    def fail(
        self,
        task_exec_id: Id,
        *,
        worker: Id,
        error: ErrorObject,
        retry_in: Delay | None = None,
        backoff: RetryBackoff | None = None,
    ) -> TaskState:
        """Report that ``worker``'s attempt at a task it holds failed with ``error`` (stored as ``last_error``).

        While attempts remain (``attempt < max_attempts``, or no ``max_attempts``) the task goes back to
        PENDING, due ``retry_in`` seconds from now (the database's clock) or, without it, after ``backoff``'s
        delay for this attempt (default ``RetryBackoff()``: exponential from 1 s, capped at 5 minutes, with
        jitter); else it ends FAILED (dead). Either way its lease is revoked and its version bumped.

        Returns:
            The task as stored.

        Raises:
            ConflictError: ``worker`` does not hold it (another does, it was canceled or finished): fenced.
            NotFoundError: no such task.
        """
        ...

    def cancel(self, task_exec_ids: Sequence[Id], *, reason: Text) -> list[TaskState]:
        """Move the non-terminal tasks among ``task_exec_ids`` to CANCELED (``last_error`` gives ``reason``).

        Leases are revoked: a holder is fenced at its next write (its version is stale, ``fail`` and
        ``release`` refuse it) or heartbeat (reported ``lost``). Tasks already finished and unknown ids are
        left alone. Waiters in ``wait_for_work`` look again.

        Returns:
            The tasks it canceled, as stored, in the order asked.
        """
        ...

    def set_limit(self, key: Id, *, concurrency: Size | None = None, rate: Rate | None = None) -> None:
        """Set the limits of concurrency key ``key``, stored in the database for every worker of every process.

        ``concurrency`` bounds the RUNNING tasks whose ``concurrency_key`` is ``key`` (0 pauses the key);
        ``rate`` = ``(count, per_seconds)`` bounds their claims to ``count`` within any window of
        ``per_seconds``. Both ``None`` removes the key's limits. A limit for a whole queue is a key that every
        task of the queue carries. Claims already made are not undone; claims from now on obey.
        """
        ...

    def queue_stats(self, filter: TaskFilter | None = None) -> QueueStats:
        """Counts of the tasks ``filter`` selects: by status, due and delayed PENDING tasks (the database's
        clock), the age of the longest-due one, dead tasks, and RUNNING per concurrency key with its limits.

        The per-key figures are store-wide, as limits are. Which keys are listed follows the filter: a filter
        that narrows the tasks lists the keys its live (PENDING or RUNNING) tasks carry; none (or an empty
        one) lists every key with RUNNING tasks and every limited key.

        A read: it writes nothing.
        """
        ...

    def bulk_upsert(self, states: Iterable[TaskState]) -> int:
        """Upsert many states, one round trip per batch, each batch all or nothing; returns how many."""
        ...

    def import_states(self, states: Iterable[TaskState]) -> int:
        """Write states verbatim (version, created_at, updated_at as given), upserting by ``task_exec_id``.

        For copying between stores. Within a batch a child may precede its parent; across batches parents
        must come first. Returns how many were written.
        """
        ...

    def history(
        self, task_exec_id: Id, *, after: HistoryId | None = None, limit: Count = 100
    ) -> list[HistoryRecord]:
        """The task's history: one record per change of its status, holder, attempt or error, oldest first.

        Each record was written in the same transaction as its change (whatever the method that made it), so
        the history and the state never disagree; a write that changed none of those (an output update, a
        heartbeat) has no record. A task deleted on its own keeps its history until its workflow goes.

        Args:
            task_exec_id: The task.
            after: A keyset cursor: only records with a larger ``history_id`` (pass the last record's id to
                read the next page); ``None`` from the first.
            limit: The page size, 1..2**31-1.

        Raises:
            NotFoundError: no such task and no history of it.
        """
        ...


class WorkflowRepository(Protocol):
    """Workflow execution states (table ``workflow_states``)."""

    def upsert_state(self, state: WorkflowState) -> WorkflowState:
        """Insert or overwrite a workflow state (keeping ``created_at``); returns it stored, without tasks."""
        ...

    def update_status(
        self, workflow_exec_id: Id, status: TaskStatus, *, expected_version: Version | None = None
    ) -> WorkflowState:
        """Set the status; with ``expected_version``, only if the stored version matches.

        Raises:
            NotFoundError: no such workflow.
            ConflictError: the stored version differs from ``expected_version``.
        """
        ...

    def get_state(self, workflow_exec_id: Id) -> WorkflowState:
        """The workflow with its tasks, read consistently; raises ``NotFoundError`` if absent."""
        ...

    def get_state_by_workflow_id(self, workflow_id: Id) -> WorkflowState:
        """The newest execution of ``workflow_id``, with its tasks."""
        ...

    def get_state_by_task_id(self, workflow_id: Id, task_id: Id) -> WorkflowState:
        """The newest execution of ``workflow_id`` that has a task ``task_id``."""
        ...

    def get_state_by_agent_id(self, workflow_id: Id, agent_id: Id) -> WorkflowState:
        """The newest execution of ``workflow_id`` that has a task run by ``agent_id``."""
        ...

    def get_state_by_tool_id(self, workflow_id: Id, tool_id: Id) -> WorkflowState:
        """The newest execution of ``workflow_id`` that has a task using ``tool_id``."""
        ...

    def list_states(
        self,
        filter: WorkflowFilter | None = None,
        *,
        limit: Count = 100,
        cursor: Cursor | None = None,
        with_tasks: bool = True,
        order: Order = "asc",
    ) -> Page[WorkflowState]:
        """Workflows matching ``filter``, by ``created_at``; with their tasks in one more query (fixed count).

        ``with_tasks=False`` leaves ``tasks`` empty: one query, for scans that do not need them. ``order`` and
        ``cursor`` as for ``TaskRepository.list_states`` (newest first with ``order="desc"``).
        """
        ...

    def iter_states(
        self, filter: WorkflowFilter | None = None, *, batch_size: Count = 1000
    ) -> Iterator[WorkflowState]:
        """Every workflow matching ``filter`` in ``list_states`` order, without tasks, ``batch_size`` at a time.

        Memory stays at one batch; each batch is a short read of its own, and every workflow that existed when
        the iteration began is yielded exactly once.
        """
        ...

    def count_states(self, filter: WorkflowFilter | None = None) -> int:
        """How many workflows match ``filter`` (all of them without one)."""
        ...

    def import_states(self, states: Iterable[WorkflowState]) -> int:
        """Write workflow states verbatim (version and timestamps as given; ``tasks`` ignored); returns how many."""
        ...

    def merge_usage(
        self, workflow_exec_id: Id, usage: Usage, *, idempotency_key: Id | None = None
    ) -> UsageSummary:
        """Add ``usage`` into the stored summary atomically; returns the merged summary.

        Args:
            workflow_exec_id: The workflow state to add to.
            usage: What to add: entries of the same provider, model and source (case-insensitive) are summed.
            idempotency_key: Makes a retry safe: a merge already applied with this key (within
                ``idempotency_window``, default a day) is not applied again, and its merged summary, as it was
                then, is returned. A merge that was cancelled or timed out may have committed; retry it with
                the same key.

        Raises:
            NotFoundError: no such workflow state.
        """
        ...

    def delete(self, workflow_exec_id: Id) -> None:
        """Delete the workflow and all its tasks; raises ``NotFoundError`` if absent."""
        ...

    def usage_total(self, workflow_exec_id: Id) -> UsageSummary:
        """The workflow's own usage plus that of all its tasks, read in one query and summed by merge key.

        Returns:
            The summed summary (no entries when nothing recorded usage).

        Raises:
            NotFoundError: no such workflow.
        """
        ...

    def purge(
        self,
        *,
        finished_before: Past,
        statuses: Collection[TaskStatus] = TERMINAL_STATUSES,
        batch_size: Count = 500,
        progress: PurgeProgress | None = None,
    ) -> int:
        """Delete the workflows in ``statuses`` last written before ``finished_before``, with all their tasks.

        Works in batches, each its own short transaction deleting workflows with at most ``batch_size`` tasks
        in all (and at most ``batch_size`` workflows); a workflow with more tasks than that loses them over
        several transactions before its row goes. Writers of other workflows wait for one batch at most. Each deletion re-checks its
        workflow's status and time inside its transaction: a workflow that is running, or was written after
        ``finished_before``, is never touched, even when it changed while the purge ran.

        Args:
            finished_before: An aware datetime, not in the future; compared with ``updated_at``.
            statuses: Which statuses may go (default: the terminal ones); not empty.
            batch_size: Tasks (or workflows without tasks) per transaction, 1..2**31-1.
            progress: Called after each batch with the number of workflows it deleted.

        Returns:
            How many workflows were deleted (their tasks with them).

        Raises:
            ValidationError: a naive or future ``finished_before``, a status that is not one, a bad batch size.
        """
        ...

    def complete_workflow(
        self, workflow_exec_id: Id, transformer: OutputTransformer | None = None
    ) -> WorkflowState:
        """Finish a workflow from its top-level tasks, in one transaction.

        Already SUCCESS or FAILED: returned unchanged. Any top-level task PENDING, RUNNING, WAITING or PAUSED:
        ``WorkflowNotReadyError``. Any FAILED, TIMED_OUT or CANCELED: FAILED. Otherwise SUCCESS. The output
        comes from ``transformer`` (default: ``{task_id: output}`` of the top-level tasks); a transformer that
        raises marks the workflow FAILED with error code ``OUTPUT_TRANSFORMATION_FAILED``.
        """
        ...

    def history(
        self,
        workflow_exec_id: Id,
        *,
        include_tasks: bool = False,
        after: HistoryId | None = None,
        limit: Count = 100,
    ) -> list[HistoryRecord]:
        """The workflow's history (with its tasks' when ``include_tasks``), oldest first, keyset-paged.

        Args:
            workflow_exec_id: The workflow.
            include_tasks: Also the records of its tasks, interleaved in the order they were recorded.
            after: Only records with a larger ``history_id`` (the last record's of the previous page).
            limit: The page size, 1..2**31-1.

        Raises:
            NotFoundError: no such workflow.
        """
        ...

    def cancel(self, workflow_exec_id: Id, *, reason: Text) -> WorkflowState:
        """Cancel a workflow: it and every task of it not yet finished become CANCELED, in one transaction.

        Held claims are revoked (``claimed_by`` and the lease cleared): the holder's next ``update_state``
        raises ``TaskCanceledError`` (a ``ConflictError``), its next heartbeat reports the task lost and its
        ``release`` a conflict naming the CANCELED status. ``reason`` is recorded as the workflow's ``error``
        and the tasks' ``last_error`` (``{"code": "CANCELED", "message": reason}``), and in their history.
        Idempotent: cancelling a canceled workflow changes nothing. A workflow that already finished (SUCCESS,
        FAILED, TIMED_OUT) keeps its status; its unfinished tasks, if any, are canceled.

        Returns:
            The workflow as stored, without tasks.

        Raises:
            NotFoundError: no such workflow.
        """
        ...

    def resume(self, workflow_exec_id: Id) -> WorkflowState:
        """Resume a workflow: its FAILED, CANCELED and TIMED_OUT tasks go back to PENDING, in one transaction.

        The reset tasks keep their attempt counts and ``last_error``, lose ``error``, claim and lease; SUCCESS
        tasks keep their outputs; running ones are not touched. The workflow becomes RUNNING (output and error
        cleared) when it had finished without success or any task was reset; otherwise nothing changes
        (resuming twice is resuming once). Workers waiting for work are woken.

        Returns:
            The workflow as stored, without tasks.

        Raises:
            NotFoundError: no such workflow.
        """
        ...

    def fork(
        self, workflow_exec_id: Id, *, new_workflow_exec_id: Id, restart_from: Sequence[Id] = ()
    ) -> WorkflowState:
        """A new execution of the same workflow, copied from this one, to run again from ``restart_from`` on.

        Every task is copied in one transaction. SUCCESS tasks keep their outputs and usage, unless they are
        restarted: the tasks named in ``restart_from``, their descendants, the tasks created after the
        earliest of them, and the ancestors of all these (a parent cannot be finished before its children).
        Restarted tasks and tasks that did not succeed are copied PENDING, without output, error, usage, claim
        or attempts. A copy's ``task_exec_id`` is ``<new_workflow_exec_id>/<rest>``, ``<rest>`` being the source
        id without its ``<workflow_exec_id>/`` prefix when it has one (so a fork of a fork stays short), else
        the whole source id; parent links point at the copies (a parent of another workflow stays the parent); ``created_at`` is the source's, so the copies
        keep their order. The new workflow is PENDING with the source's ``workflow_id`` and input, and
        ``forked_from`` naming the source. The source is not changed.

        Forking again to the same ``new_workflow_exec_id`` from the same source returns the fork made before.

        Returns:
            The new workflow with its tasks.

        Raises:
            NotFoundError: no such workflow.
            ValidationError: a ``restart_from`` id that is not a task of the workflow, or a copy's id too long.
            DuplicateError: ``new_workflow_exec_id`` (or a copy's task id) is already taken by another record.
        """
        ...


class AuthRepository(Protocol):
    """Users and API keys (tables ``users`` and ``api_keys``)."""

    def create_user(self, email: Email, role: Role = Role.USER) -> User:
        """Create a user; raises ``DuplicateError`` if the email (case-insensitive) exists."""
        ...

    def get_user(self, user_id: Id) -> User:
        """The user with ``user_id``; ``NotFoundError`` if absent."""
        ...

    def get_user_by_email(self, email: Email) -> User:
        """The user with ``email`` (case-insensitive); ``NotFoundError`` if absent."""
        ...

    def list_users(self) -> list[User]:
        """All users, oldest first."""
        ...

    def update_user(self, user_id: Id, *, email: Email | None = None, role: Role | None = None) -> User:
        """Change a user's email and/or role; ``DuplicateError`` if the new email is taken."""
        ...

    def delete_user(self, user_id: Id) -> None:
        """Delete a user and its API keys; ``NotFoundError`` if absent."""
        ...

    def create_initial_admin(self, email: Email) -> User:
        """Create the first admin, atomically; ``AlreadyBootstrappedError`` if an admin exists."""
        ...

    def create_api_key(self, user_id: Id) -> CreatedAPIKey:
        """Create a key for ``user_id``; the plaintext is in the result and nowhere else, ever."""
        ...

    def get_api_key(self, key_id: Id) -> APIKey:
        """The key with ``key_id``; ``NotFoundError`` if absent."""
        ...

    def get_api_key_by_fingerprint(self, fingerprint: Id) -> APIKey:
        """The key whose SHA-256 fingerprint is ``fingerprint`` (compared in constant time)."""
        ...

    def list_api_keys(self, user_id: Id) -> list[APIKey]:
        """Keys of ``user_id``, oldest first."""
        ...

    def touch_api_key(self, key_id: Id, at: datetime | None = None) -> APIKey:
        """Record a use at ``at`` (default now); ``last_used`` never moves backwards."""
        ...

    def import_users(self, users: Iterable[User]) -> int:
        """Write users verbatim (ids and timestamps as given), upserting by id; returns how many."""
        ...

    def import_api_keys(self, keys: Iterable[APIKey]) -> int:
        """Write API keys verbatim, upserting by id; ``NotFoundError`` if a key's user is missing."""
        ...

    def delete_api_key(self, key_id: Id) -> None:
        """Delete a key; ``NotFoundError`` if absent."""
        ...


class MetadataRepository(Protocol):
    """Small facts about the store itself (table ``planflow_metadata``), such as an unfinished copy into it.

    Keys are non-empty ``str`` of at most 512 characters, values any ``str``; neither holds a NUL or a lone
    surrogate. Anything else raises ``ValidationError`` before the store is touched.
    """

    def get(self, key: Id) -> str | None:
        """The value stored under ``key``, or ``None`` when there is none."""
        ...

    def set(self, key: Id, value: Text) -> None:
        """Store ``value`` under ``key``, replacing any value there."""
        ...

    def delete(self, key: Id) -> None:
        """Remove ``key``; removing a key that is not stored is no error."""
        ...

    def items(self) -> dict[str, str]:
        """Every key with its value, by key in code point order."""
        ...


class ExecutionRepository(Protocol):
    """Storage of the add-on's task definitions, occurrences and executions.

    Adds are idempotent upserts by id (executions by ``occurrence_id``): adding a record whose id is stored
    overwrites it and keeps its place; lists return records in the order they were first added. Every field
    round-trips exactly. Only the typed models are accepted: anything else raises :class:`WrongTypeError` (a
    ``ValidationError`` that is also a ``TypeError``). Implementations are safe to call from several threads.
    """

    def add_task(self, task: TaskDefinition) -> None:
        """Store ``task``, overwriting a stored task with the same id.

        Args:
            task: The task definition to store.

        Raises:
            WrongTypeError: ``task`` is not a :class:`TaskDefinition`; nothing is stored.
            ValidationError: A field breaks the input rules (wrong type, an id empty, longer than 512
                characters or holding NUL, text with NUL or a lone surrogate); nothing is stored.
        """
        ...

    def get_task(self, task_id: Id) -> TaskDefinition | None:
        """Return the task with id ``task_id``, or ``None`` when it is not stored."""
        ...

    def list_tasks(self) -> list[TaskDefinition]:
        """Return every stored task, in the order the tasks were first added."""
        ...

    def add_occurrence(self, occ: TaskOccurrence) -> None:
        """Store ``occ``, overwriting a stored occurrence with the same id.

        Args:
            occ: The occurrence to store. Its task need not be stored: the repository holds no logic.

        Raises:
            WrongTypeError: ``occ`` is not a :class:`TaskOccurrence`; nothing is stored.
            ValidationError: A field breaks the input rules (wrong type, an id empty, longer than 512
                characters or holding NUL, text with NUL or a lone surrogate); nothing is stored.
        """
        ...

    def get_occurrence(self, occurrence_id: Id) -> TaskOccurrence | None:
        """Return the occurrence with id ``occurrence_id``, or ``None`` when it is not stored."""
        ...

    def list_occurrences(self, task_id: Id | None = None) -> list[TaskOccurrence]:
        """Return the stored occurrences, in the order they were first added.

        Args:
            task_id: When given, only the occurrences of this task.
        """
        ...

    def add_execution(self, execution: TaskExecution) -> None:
        """Store ``execution``, overwriting a stored execution of the same ``occurrence_id``.

        Args:
            execution: The execution to store, with its whole history.

        Raises:
            WrongTypeError: ``execution`` is not a :class:`TaskExecution` (or its history holds something
                other than :class:`TaskEvent` values); nothing is stored.
            ValidationError: A field breaks the input rules (wrong type, an id empty, longer than 512
                characters or holding NUL, text with NUL or a lone surrogate); nothing is stored.
        """
        ...

    def get_execution(self, occurrence_id: Id) -> TaskExecution | None:
        """Return the execution of occurrence ``occurrence_id``, or ``None`` when it is not stored."""
        ...

    def list_executions(self) -> list[TaskExecution]:
        """Return every stored execution, in the order the executions were first added."""
        ...

    def delete_task_and_related(self, task_id: Id) -> None:
        """Remove a task, its occurrences and their executions, in one durable write.

        Records of other tasks are not touched. Deleting a task that is not stored removes whatever
        occurrences (and their executions) still name it, and is otherwise a no-op.
        """
        ...

    def purge(self, *, before: datetime) -> int:
        """Remove the occurrences scheduled before ``before``, with their executions; task definitions stay.

        A naive ``scheduled_for`` (the add-on's local time) is read in this machine's local time zone.

        Args:
            before: An aware datetime.

        Returns:
            How many occurrences were removed.

        Raises:
            ValidationError: ``before`` is not an aware datetime.
        """
        ...

    def batch(self) -> AbstractContextManager[None]:
        """Group the writes made inside the ``with`` block into one durable write.

        On SQL drivers the block is one transaction. Reads inside the block see its writes. When the block
        raises, none of its writes are stored. A batch entered inside another is a savepoint: its writes are
        stored with the outer batch's, and when it raises only its own writes are undone.
        """
        ...


# The asynchronous twins of these Protocols are generated from them (tools/generate_adapters.py) into
# planflow.async_protocols, and exported by planflow like these.
