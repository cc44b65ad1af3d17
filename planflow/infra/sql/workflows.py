"""The workflow repository, written once for every SQL driver and both APIs."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Collection, Iterable, Sequence
from contextlib import suppress
from datetime import datetime

from planflow.errors import (
    DuplicateError,
    NotFoundError,
    PlanflowError,
    ValidationError,
    WorkflowNotReadyError,
)
from planflow.infra.inputs import MAX_ID_LENGTH, MAX_JSON_DEPTH, check_optional_id, dump_json_object
from planflow.infra.sql import tasks as tasks_sql
from planflow.infra.sql.codec import load_usage, loads, now, stored_meta
from planflow.infra.sql.database import Connection, Database, Row
from planflow.infra.sql.dialect import Dialect
from planflow.infra.sql.history import HistoryReader, PartitionedHistory
from planflow.infra.sql.idempotency import IdempotencyKeys
from planflow.infra.sql.queue import LIVE, cancel_sql
from planflow.infra.sql.statements import (
    delete_one,
    every_item,
    listing,
    missing_or_conflict,
    page,
    where_clause,
    write_batches,
)
from planflow.infra.sql.tables import TASK_STATES, WORKFLOW_STATES
from planflow.infra.sql.usage import UsageMerger
from planflow.models import (
    FAILURE_STATUSES,
    TERMINAL_STATUSES,
    HistoryRecord,
    JsonObject,
    Order,
    Page,
    TaskState,
    TaskStatus,
    UsageEntry,
    UsageSummary,
    WorkflowFilter,
    WorkflowState,
)
from planflow.protocols import OutputTransformer, PurgeProgress

TABLE = WORKFLOW_STATES
ORDER = "ORDER BY created_at, workflow_exec_id"
NEWEST = "ORDER BY created_at DESC, workflow_exec_id DESC LIMIT 1"
WRITTEN = TABLE.written
UPSERT = (
    f"INSERT INTO workflow_states ({', '.join(WRITTEN)}, version, created_at, updated_at) "
    f"VALUES ({', '.join('?' for _ in WRITTEN)}, 1, ?, ?) "
    f"ON CONFLICT (workflow_exec_id) DO UPDATE SET {', '.join(f'{c} = excluded.{c}' for c in WRITTEN[1:])}, "
    "version = workflow_states.version + 1, updated_at = excluded.updated_at RETURNING version, created_at, "
    "forked_from"
)
IMPORT = (
    f"INSERT INTO workflow_states ({TABLE.select_list}) "
    f"VALUES ({', '.join('?' for _ in TABLE.names)}) ON CONFLICT (workflow_exec_id) DO UPDATE SET "
    f"{', '.join(f'{c} = excluded.{c}' for c in TABLE.names[1:])}"
)
SELECT = TABLE.select
GET = f"{SELECT} WHERE workflow_exec_id = ?"
SET_STATUS = (
    "UPDATE workflow_states SET status = ?, version = version + 1, updated_at = ? WHERE workflow_exec_id = ?"
)
RETURNING = f" RETURNING {TABLE.select_list}"
FINISH = (
    "UPDATE workflow_states SET status = ?, output = ?, error = ?, version = version + 1, updated_at = ? "
    f"WHERE workflow_exec_id = ?{RETURNING}"
)


def latest_tasks(where: str, partition: str) -> str:
    """The newest state per ``partition`` among the task states matching ``where``, by ``created_at``.

    Chosen in SQL: when task ids repeat (a retried task), decoding every row to keep one per task id costs
    several times as much.
    """
    return (
        f"SELECT {TASK_STATES.select_list} FROM (SELECT {TASK_STATES.select_list}, ROW_NUMBER() OVER "
        f"(PARTITION BY {partition} ORDER BY created_at DESC, task_exec_id DESC) AS planflow_rank "
        f"FROM task_states WHERE {where}) newest WHERE planflow_rank = 1 ORDER BY created_at, task_exec_id"
    )


TASKS = tasks_sql.LATEST_IN_WORKFLOW
#: What completing a workflow decides from: its top-level tasks' ids, statuses and outputs, nothing more.
TOP_LEVEL = (
    "SELECT task_id, status, output FROM task_states WHERE workflow_exec_id = ? AND parent_state_id IS NULL "
    "ORDER BY created_at, task_exec_id"
)
_STATUS = {status.value: status for status in TaskStatus}
_JSON_TEXT = json.JSONEncoder(ensure_ascii=False).encode
#: A JSON text shorter than this nests fewer than 255 levels (each level takes two characters at least).
_SHALLOW = 2 * (MAX_JSON_DEPTH - 1)


def _outputs_text(top: dict[str, tuple[TaskStatus, str | None]], workflow_exec_id: str) -> str:
    """The default output, ``{task_id: output}`` of the top-level tasks, as JSON text.

    Composed from the outputs' stored texts (checked when they were written) rather than decoded and encoded
    again, when every one is too short to nest 255 levels, so that the whole stays within the 256 allowed.
    """
    if all(text is None or len(text) < _SHALLOW for _, text in top.values()):
        return (
            "{"
            + ",".join(f"{json.dumps(t, ensure_ascii=False)}:{o or 'null'}" for t, (_, o) in top.items())
            + "}"
        )
    decoded = {t: None if o is None else loads(o) for t, (_, o) in top.items()}
    text = dump_json_object(decoded, f"output of workflow {workflow_exec_id!r}")
    assert text is not None
    return text


#: The usage of a workflow (part 0) and of each of its tasks that recorded any (part 1), in one statement.
USAGE_PARTS = (
    "SELECT 0, created_at, workflow_exec_id, usage FROM workflow_states WHERE workflow_exec_id = ? "
    "UNION ALL SELECT 1, created_at, task_exec_id, usage FROM task_states "
    "WHERE workflow_exec_id = ? AND usage IS NOT NULL ORDER BY 1, 2, 3"
)


def purgeable(statuses: int) -> str:
    """The condition a workflow must meet to be purged: one of ``statuses`` placeholders, written before ``?``."""
    return f"status IN ({', '.join('?' for _ in range(statuses))}) AND updated_at < ?"


def purge_candidates_sql(statuses: int) -> str:
    """Up to ``?`` purgeable workflows and how many tasks each has (read through ``workflow_states_purge``)."""
    return (
        "SELECT w.workflow_exec_id, (SELECT COUNT(*) FROM task_states t WHERE t.workflow_exec_id = "
        f"w.workflow_exec_id) FROM workflow_states w WHERE w.{purgeable(statuses).replace(' AND ', ' AND w.')} "
        "LIMIT ?"
    )


def purge_sql(dialect: Dialect, statuses: int) -> str:
    """Delete the workflows of an id list that are still purgeable (their tasks go by cascade)."""
    return f"DELETE FROM workflow_states WHERE {dialect.in_ids('workflow_exec_id')} AND {purgeable(statuses)}"


def purge_tasks_sql(statuses: int) -> str:
    """Delete up to ``?`` tasks of one still purgeable workflow, the newest first (children before parents,
    so that a cascade rarely takes more than the chunk)."""
    return (
        "DELETE FROM task_states WHERE task_exec_id IN (SELECT task_exec_id FROM task_states "
        "WHERE workflow_exec_id = ? ORDER BY created_at DESC, task_exec_id DESC LIMIT ?) "
        f"AND EXISTS (SELECT 1 FROM workflow_states WHERE workflow_exec_id = ? AND {purgeable(statuses)})"
    )


def purge_groups(candidates: Sequence[tuple[str, int]], batch_size: int) -> list[list[str]]:
    """Candidates ``(workflow id, its task count)`` in groups of at most ``batch_size`` tasks (a workflow
    without tasks counts as one); a workflow with more tasks than that is a group of its own."""
    groups: list[list[str]] = []
    current: list[str] = []
    rows = 0
    for workflow_exec_id, tasks in candidates:
        size = max(tasks, 1)
        if current and rows + size > batch_size:
            groups.append(current)
            current, rows = [], 0
        current.append(workflow_exec_id)
        rows += size
    if current:
        groups.append(current)
    return groups


TASK_COUNT = "SELECT COUNT(*) FROM task_states WHERE workflow_exec_id = ?"

#: Task columns by which a workflow can be found (``get_state_by_<column>``).
TASK_LOOKUPS = ("task_id", "agent_id", "tool_id")


# Workflow control ----------------------------------------------------------------------------------------

_FAILED = "('FAILED', 'CANCELED', 'TIMED_OUT')"
#: The workflow's side of ``cancel`` (its tasks': ``queue.cancel_sql``).
CANCEL_WORKFLOW = (
    "UPDATE workflow_states SET status = 'CANCELED', error = ?, version = version + 1, updated_at = ? "
    f"WHERE workflow_exec_id = ? AND status IN {LIVE}{RETURNING}"
)
#: Back to PENDING: the tasks that did not succeed, attempts and last_error kept.
RESUME_TASKS = (
    "UPDATE task_states SET status = 'PENDING', error = NULL, claimed_by = NULL, lease_expires_at = NULL, "
    f"version = version + 1, updated_at = ? WHERE workflow_exec_id = ? AND status IN {_FAILED}"
)
RESUME_WORKFLOW = (
    "UPDATE workflow_states SET status = 'RUNNING', output = NULL, error = NULL, version = version + 1, "
    f"updated_at = ? WHERE workflow_exec_id = ?{RETURNING}"
)
ALL_TASKS = f"{TASK_STATES.select} WHERE workflow_exec_id = ? ORDER BY created_at, task_exec_id"
INSERT_WORKFLOW = (
    f"INSERT INTO workflow_states ({TABLE.select_list}) VALUES ({', '.join('?' for _ in TABLE.names)})"
)
INSERT_TASK = f"INSERT INTO task_states ({TASK_STATES.select_list}) VALUES ({', '.join('?' for _ in TASK_STATES.names)})"


def fork_id(task_exec_id: str, source: str, fork: str) -> str:
    """The id of a task's copy in a fork: ``<fork>/<rest>``, ``<rest>`` the source id without its
    ``<source>/`` prefix when it has one (a fork of a fork stays short), else the whole source id."""
    prefix = f"{source}/"
    rest = task_exec_id[len(prefix) :] if task_exec_id.startswith(prefix) else task_exec_id
    return f"{fork}/{rest}"


def restarted(tasks: Sequence[TaskState], restart_from: Collection[str]) -> set[str]:
    """The ids of ``tasks`` (a workflow's, in creation order) that a fork from ``restart_from`` runs again:
    the named tasks, their descendants, the tasks created after the earliest of them, and the ancestors of
    all these."""
    if not restart_from:
        return set()
    first = min(i for i, task in enumerate(tasks) if task.task_exec_id in restart_from)
    chosen = {task.task_exec_id for task in tasks[first:]} | set(restart_from)
    children: dict[str, list[str]] = {}
    parents: dict[str, str] = {}
    for task in tasks:
        if task.parent_state_id is not None:
            children.setdefault(task.parent_state_id, []).append(task.task_exec_id)
            parents[task.task_exec_id] = task.parent_state_id
    todo = list(chosen)
    while todo:  # descendants
        for child in children.get(todo.pop(), ()):
            if child not in chosen:
                chosen.add(child)
                todo.append(child)
    for task_exec_id in list(chosen):  # ancestors
        parent = parents.get(task_exec_id)
        while parent is not None and parent not in chosen:
            chosen.add(parent)
            parent = parents.get(parent)
    return chosen


def fork_copy(
    task: TaskState, source: str, fork: str, *, again: bool, copied: Collection[str], stamp: datetime
) -> TaskState:
    """A task's copy in a fork: as it is when it succeeded and is not run ``again``, else PENDING afresh. Its
    parent is the parent's copy when the parent is among the ``copied`` tasks, else the same task (a parent of
    another workflow)."""
    parent = task.parent_state_id
    copy = task.evolve(
        task_exec_id=fork_id(task.task_exec_id, source, fork),
        workflow_exec_id=fork,
        parent_state_id=fork_id(parent, source, fork) if parent is not None and parent in copied else parent,
        version=1,
        updated_at=stamp,
        claimed_by=None,
        lease_expires_at=None,
    )
    if task.status is TaskStatus.SUCCESS and not again:
        return copy
    return copy.evolve(
        status=TaskStatus.PENDING, output=None, error=None, usage=None, attempt=0, last_error=None
    )


class SqlWorkflowRepository:
    """WorkflowRepository over a :class:`Database` (see ``planflow.protocols.WorkflowRepository``)."""

    def __init__(
        self,
        database: Database,
        dialect: Dialect,
        keys: IdempotencyKeys,
        partitions: PartitionedHistory | None = None,
    ) -> None:
        self._db = database
        self._dialect = dialect
        #: The history's time partitions (PostgreSQL), which ``purge`` drops instead of deleting their rows.
        self._partitions = partitions
        self._lock = GET + dialect.for_update
        self._usage = UsageMerger(
            database, dialect, "workflow_states", "workflow_exec_id", "workflow", keys=keys
        )
        self._tasks_of_many = latest_tasks(dialect.in_ids("workflow_exec_id"), "workflow_exec_id, task_id")
        self._history = HistoryReader(database, dialect)
        #: The tasks' side of ``cancel``: the statement ``tasks.cancel`` runs, on a workflow's unfinished tasks.
        self._cancel_tasks = cancel_sql(dialect, "workflow_exec_id = ?")

    def _workflow(self, row: Row, tasks: dict[str, TaskState] | None = None) -> WorkflowState:
        workflow = TABLE.from_row(row, self._dialect.load_ts)
        return workflow if not tasks else workflow.evolve(tasks=tasks)

    async def _tasks(self, conn: Connection, workflow_exec_id: str) -> dict[str, TaskState]:
        from_row, load_ts = TASK_STATES.from_row, self._dialect.load_ts
        rows = await conn.fetch_all(TASKS, [workflow_exec_id])
        return {state.task_id: state for state in (from_row(row, load_ts) for row in rows)}

    # Writes -----------------------------------------------------------------------------------------------

    async def upsert_state(self, state: WorkflowState) -> WorkflowState:
        values = TABLE.params(state, self._dialect.json_param, self._dialect.ts_param)
        stamp = now()
        ts = self._dialect.ts_param(stamp)
        key = values[0]

        async def reread(conn: Connection) -> Row | None:
            return await conn.fetch_one(
                "SELECT version, created_at, forked_from FROM workflow_states WHERE workflow_exec_id = ?",
                [key],
            )

        row = await self._db.write(UPSERT, [*values, ts, ts], result="one", reread=reread)
        version, created, origin = row
        return state.evolve(
            version=version,
            created_at=self._dialect.load_ts(created),
            updated_at=stamp,
            forked_from=origin,
            tasks={},
        )

    async def update_status(
        self, workflow_exec_id: str, status: TaskStatus, *, expected_version: int | None = None
    ) -> WorkflowState:
        sql = SET_STATUS + ("" if expected_version is None else " AND version = ?") + RETURNING
        params: list[object] = [status.value, self._dialect.ts_param(now()), workflow_exec_id]
        if expected_version is not None:
            params.append(expected_version)

        async def reread(conn: Connection) -> Row | None:
            return await conn.fetch_one(GET, [workflow_exec_id])

        row = await self._db.write(sql, params, result="one", reread=reread)
        if row is None:

            async def explain(conn: Connection) -> Exception:
                return await missing_or_conflict(
                    conn, TABLE, workflow_exec_id, expected_version, "workflow state"
                )

            raise await self._db.read(explain)
        return self._workflow(row)

    async def import_states(self, states: Iterable[WorkflowState]) -> int:
        """Write workflow states verbatim (version and timestamps as given; ``tasks`` ignored), upserting by id.

        Returns:
            How many states were written.
        """
        ts = self._dialect.ts_param

        def row(state: WorkflowState) -> list[object]:
            values = TABLE.params(state, self._dialect.json_param, ts)
            version, created, updated = stored_meta(
                state.version, state.created_at, state.updated_at, f"workflow {state.workflow_exec_id!r}"
            )
            return [
                *values,
                version,
                ts(created),
                ts(updated),
                check_optional_id(state.forked_from, "forked_from"),
            ]

        return await write_batches(self._db, states, row, IMPORT)

    async def merge_usage(
        self, workflow_exec_id: str, usage: UsageSummary, *, idempotency_key: str | None = None
    ) -> UsageSummary:
        return await self._usage.merge(workflow_exec_id, usage, idempotency_key)

    async def delete(self, workflow_exec_id: str) -> None:
        await delete_one(self._db, TABLE, workflow_exec_id, "workflow state")

    async def usage_total(self, workflow_exec_id: str) -> UsageSummary:
        rows = await self._db.fetch_all(USAGE_PARTS, [workflow_exec_id, workflow_exec_id])
        if not rows or rows[0][0] != 0:
            raise NotFoundError(f"workflow state {workflow_exec_id!r} not found")
        entries: list[UsageEntry] = []
        for row in rows:
            part = load_usage(row[3])
            if part is not None:
                entries.extend(part.entries)
        return UsageSummary.of(entries)

    async def purge(
        self,
        *,
        finished_before: datetime,
        statuses: Collection[TaskStatus] = TERMINAL_STATUSES,
        batch_size: int = 500,
        progress: PurgeProgress | None = None,
    ) -> int:
        """Delete finished workflows with their tasks in short transactions (see the Protocol).

        Each round reads up to ``batch_size`` candidates with their task counts (no transaction), then deletes
        them in groups of at most ``batch_size`` tasks, each group one transaction whose DELETE re-checks the
        status and time, so that nothing changed meanwhile is lost. Rounds end when no candidate is left.

        Where the history is partitioned by time (PostgreSQL) and the purge runs outside a transaction, the
        partitions that end before ``finished_before`` and hold no record of a workflow the purge leaves are
        detached first and dropped after (see ``planflow.infra.postgres.partitions``), so that the cascade does
        not delete their records row by row; a partition that turns out to hold a survivor's is attached again.
        """
        wanted = sorted(status.value for status in statuses)
        partitions = None if self._db.in_transaction else self._partitions
        if partitions is None:
            return await self._purge_rows(wanted, finished_before, batch_size, progress)
        detached = await partitions.detach_older(finished_before, wanted)
        try:
            purged = await self._purge_rows(wanted, finished_before, batch_size, progress)
        except Exception:
            # Settled now if the database answers, else by the next purge; the purge's own error is raised.
            with suppress(PlanflowError):
                await partitions.settle(detached)
            raise
        await partitions.settle(detached)
        return purged

    async def _purge_rows(
        self, wanted: list[str], finished_before: datetime, batch_size: int, progress: PurgeProgress | None
    ) -> int:
        """The row-by-row purge of :meth:`purge`."""
        condition = [*wanted, self._dialect.ts_param(finished_before)]
        candidates_sql = purge_candidates_sql(len(wanted))
        delete_sql = purge_sql(self._dialect, len(wanted))
        tasks_sql_text = purge_tasks_sql(len(wanted))
        purged = 0
        while True:
            rows = await self._db.fetch_all(candidates_sql, [*condition, batch_size])
            if not rows:
                return purged
            counts = {row[0]: int(row[1]) for row in rows}
            for group in purge_groups(list(counts.items()), batch_size):
                if counts[group[0]] > batch_size:
                    await self._purge_tasks_of(group[0], tasks_sql_text, condition, batch_size, progress)
                ids = self._dialect.ids_param(group)

                async def work(conn: Connection, ids: object = ids) -> int:
                    return await conn.execute(delete_sql, [ids, *condition])

                deleted = await self._db.run(work, idempotent=True)
                purged += deleted
                if progress is not None:
                    progress(deleted)

    async def _purge_tasks_of(
        self,
        workflow_exec_id: str,
        sql: str,
        condition: list[object],
        batch_size: int,
        progress: PurgeProgress | None,
    ) -> None:
        """Delete the tasks of one purgeable workflow ``batch_size`` at a time, while it stays purgeable, until
        at most ``batch_size`` are left for the transaction that deletes the workflow itself."""
        params = [workflow_exec_id, batch_size, workflow_exec_id, *condition]
        still_purgeable = self._still_purgeable(len(condition) - 1)
        while True:
            row = await self._db.fetch_one(TASK_COUNT, [workflow_exec_id])
            if row is None or int(row[0]) <= batch_size:
                return

            async def work(conn: Connection) -> int:
                # The workflow's row first, locked: a transaction reopening it meanwhile is waited for, and the
                # batch then sees it no longer purgeable (the DELETE's own check reads its snapshot, which a
                # reopening committed during the statement would not change).
                if await conn.fetch_one(still_purgeable, [workflow_exec_id, *condition]) is None:
                    return 0
                return await conn.execute(sql, params)

            if await self._db.run(work, idempotent=True) == 0:
                return  # no longer purgeable: its own DELETE will match nothing either
            if progress is not None:
                progress(0)

    def _still_purgeable(self, statuses: int) -> str:
        """Lock the row of a workflow that is still purgeable (none: it was reopened or rewritten)."""
        return (
            f"SELECT 1 FROM workflow_states WHERE workflow_exec_id = ? AND {purgeable(statuses)}"
            f"{self._dialect.for_update}"
        )

    async def complete_workflow(
        self, workflow_exec_id: str, transformer: OutputTransformer | None = None
    ) -> WorkflowState:
        """Finish the workflow from its top-level tasks' statuses (see the Protocol); returns it without tasks.

        The decision reads only the top-level rows' ids, statuses and outputs, so the workflow's row lock is
        held for a few milliseconds whatever the size of the workflow; every task is read only to hand the
        workflow to a ``transformer``.
        """

        async def work(conn: Connection) -> WorkflowState:
            row = await conn.fetch_one(self._lock, [workflow_exec_id])
            if row is None:
                raise NotFoundError(f"workflow state {workflow_exec_id!r} not found")
            current = self._workflow(row)
            if current.status in (TaskStatus.SUCCESS, TaskStatus.FAILED):
                return current
            top: dict[str, tuple[TaskStatus, str | None]] = {
                task_id: (_STATUS[status], output)
                for task_id, status, output in await conn.fetch_all(TOP_LEVEL, [workflow_exec_id])
            }
            unfinished = sorted(t for t, (s, _) in top.items() if s not in TERMINAL_STATUSES)
            if unfinished:
                raise WorkflowNotReadyError(
                    f"workflow {workflow_exec_id!r} has unfinished top-level tasks: {', '.join(unfinished)}"
                )
            failed = sorted(t for t, (s, _) in top.items() if s in FAILURE_STATUSES)
            status = TaskStatus.FAILED if failed else TaskStatus.SUCCESS
            error: JsonObject | None = (
                {"code": "TASKS_FAILED", "message": f"top-level tasks did not succeed: {', '.join(failed)}"}
                if failed
                else None
            )
            output_text: str | None
            try:
                if transformer is None:
                    output_text = _outputs_text(top, workflow_exec_id)
                else:
                    tasks = await self._tasks(conn, workflow_exec_id)
                    output = transformer(current.evolve(status=status, tasks=tasks))
                    output_text = dump_json_object(output, f"output of workflow {workflow_exec_id!r}")
            except Exception as exc:
                status, output_text = TaskStatus.FAILED, None
                error = {"code": "OUTPUT_TRANSFORMATION_FAILED", "message": f"{type(exc).__name__}: {exc}"}
            error_text = dump_json_object(error, "error")
            json_param = self._dialect.json_param
            finished = await conn.fetch_one(
                FINISH,
                [
                    status.value,
                    None if output_text is None else json_param(output_text),
                    None if error_text is None else json_param(error_text),
                    self._dialect.ts_param(now()),
                    workflow_exec_id,
                ],
            )
            assert finished is not None
            return self._workflow(finished)

        return await self._db.run(work)

    # Workflow control -------------------------------------------------------------------------------------

    async def _locked(self, conn: Connection, workflow_exec_id: str) -> WorkflowState:
        row = await conn.fetch_one(self._lock, [workflow_exec_id])
        if row is None:
            raise NotFoundError(f"workflow state {workflow_exec_id!r} not found")
        return self._workflow(row)

    async def cancel(self, workflow_exec_id: str, *, reason: str) -> WorkflowState:
        error = dump_json_object({"code": "CANCELED", "message": reason}, "reason")
        assert error is not None
        dialect = self._dialect

        async def work(conn: Connection) -> WorkflowState:
            # The workflow's row first, as resume and complete_workflow lock it: the three never interleave.
            current = await self._locked(conn, workflow_exec_id)
            stamp = dialect.ts_param(now())
            canceled = await conn.fetch_all(self._cancel_tasks, [reason, stamp, workflow_exec_id])
            row = await conn.fetch_one(CANCEL_WORKFLOW, [dialect.json_param(error), stamp, workflow_exec_id])
            if canceled and dialect.wake:
                await conn.execute(dialect.wake)
            return current if row is None else self._workflow(row)

        return await self._db.run(work)

    async def resume(self, workflow_exec_id: str) -> WorkflowState:
        dialect = self._dialect

        async def work(conn: Connection) -> WorkflowState:
            current = await self._locked(conn, workflow_exec_id)
            stamp = dialect.ts_param(now())
            reset = await conn.execute(RESUME_TASKS, [stamp, workflow_exec_id])
            if not reset and current.status not in FAILURE_STATUSES:
                return current
            row = await conn.fetch_one(RESUME_WORKFLOW, [stamp, workflow_exec_id])
            assert row is not None
            return self._workflow(row)

        # Idempotent: run again after a lost COMMIT, it finds nothing left to reset.
        return await self._db.run(work)

    async def fork(
        self, workflow_exec_id: str, *, new_workflow_exec_id: str, restart_from: Sequence[str] = ()
    ) -> WorkflowState:
        dialect = self._dialect
        wanted = list(dict.fromkeys(restart_from))

        async def work(conn: Connection) -> WorkflowState:
            source_row = await conn.fetch_one(GET, [workflow_exec_id])
            if source_row is None:
                raise NotFoundError(f"workflow state {workflow_exec_id!r} not found")
            source = self._workflow(source_row)
            existing = await conn.fetch_one(GET, [new_workflow_exec_id])
            if existing is not None:
                made = self._workflow(existing)
                if made.forked_from == workflow_exec_id:  # forked before (a retry): that fork
                    return made.evolve(tasks=await self._tasks(conn, new_workflow_exec_id))
                raise DuplicateError(f"workflow state {new_workflow_exec_id!r} already exists")
            from_row, load_ts = TASK_STATES.from_row, dialect.load_ts
            tasks = [from_row(row, load_ts) for row in await conn.fetch_all(ALL_TASKS, [workflow_exec_id])]
            known = {task.task_exec_id for task in tasks}
            unknown = [task_exec_id for task_exec_id in wanted if task_exec_id not in known]
            if unknown:
                raise ValidationError(
                    f"restart_from names tasks that are not of workflow {workflow_exec_id!r}: {', '.join(unknown)}"
                )
            again = restarted(tasks, set(wanted))
            stamp = now()
            copies = [
                fork_copy(
                    task,
                    workflow_exec_id,
                    new_workflow_exec_id,
                    again=task.task_exec_id in again,
                    copied=known,
                    stamp=stamp,
                )
                for task in tasks
            ]
            for copy in copies:
                if len(copy.task_exec_id) > MAX_ID_LENGTH:
                    raise ValidationError(
                        f"the fork's copy of a task would have an id of {len(copy.task_exec_id)} characters "
                        f"(at most {MAX_ID_LENGTH}): {copy.task_exec_id[:60]}..."
                    )
            if len({copy.task_exec_id for copy in copies}) != len(copies):
                raise ValidationError(
                    f"the tasks of workflow {workflow_exec_id!r} cannot be forked: copy ids collide"
                )
            ts = dialect.ts_param(stamp)
            fork = WorkflowState(
                new_workflow_exec_id, source.workflow_id, TaskStatus.PENDING, input=source.input
            )
            values = TABLE.params(fork, dialect.json_param, dialect.ts_param)
            await conn.execute(INSERT_WORKFLOW, [*values, 1, ts, ts, workflow_exec_id])
            if copies:
                if dialect.defer_foreign_keys:  # a child may have been created before its parent
                    await conn.execute(dialect.defer_foreign_keys)
                await conn.execute_many(INSERT_TASK, [tasks_sql.verbatim_params(c, dialect) for c in copies])
            row = await conn.fetch_one(GET, [new_workflow_exec_id])
            assert row is not None
            return self._workflow(row, await self._tasks(conn, new_workflow_exec_id))

        return await self._db.run(work)

    async def history(
        self,
        workflow_exec_id: str,
        *,
        include_tasks: bool = False,
        after: int | None = None,
        limit: int = 100,
    ) -> list[HistoryRecord]:
        if include_tasks:
            return await self._history.of_workflow(workflow_exec_id, after=after, limit=limit)
        return await self._history.of_entity("workflow", workflow_exec_id, after=after, limit=limit)

    # Reads ------------------------------------------------------------------------------------------------

    async def _read_with_tasks(self, sql: str, params: Sequence[object], missing: str) -> WorkflowState:
        async def work(conn: Connection) -> WorkflowState:
            row = await conn.fetch_one(sql, params)
            if row is None:
                raise NotFoundError(missing)
            return self._workflow(row, await self._tasks(conn, row[0]))

        return await self._db.run(work, write=False)

    async def get_state(self, workflow_exec_id: str) -> WorkflowState:
        return await self._read_with_tasks(
            GET, [workflow_exec_id], f"workflow state {workflow_exec_id!r} not found"
        )

    async def get_state_by_workflow_id(self, workflow_id: str) -> WorkflowState:
        return await self._read_with_tasks(
            f"{SELECT} WHERE workflow_id = ? {NEWEST}",
            [workflow_id],
            f"no execution of workflow {workflow_id!r}",
        )

    async def _by_task_column(self, column: str, workflow_id: str, value: str) -> WorkflowState:
        assert column in TASK_LOOKUPS
        sql = (
            f"{SELECT} w WHERE w.workflow_id = ? AND EXISTS (SELECT 1 FROM task_states t "
            f"WHERE t.workflow_exec_id = w.workflow_exec_id AND t.{column} = ?) {NEWEST}"
        )
        return await self._read_with_tasks(
            sql,
            [workflow_id, value],
            f"no execution of workflow {workflow_id!r} has a task with {column} {value!r}",
        )

    async def get_state_by_task_id(self, workflow_id: str, task_id: str) -> WorkflowState:
        return await self._by_task_column("task_id", workflow_id, task_id)

    async def get_state_by_agent_id(self, workflow_id: str, agent_id: str) -> WorkflowState:
        return await self._by_task_column("agent_id", workflow_id, agent_id)

    async def get_state_by_tool_id(self, workflow_id: str, tool_id: str) -> WorkflowState:
        return await self._by_task_column("tool_id", workflow_id, tool_id)

    async def list_states(
        self,
        filter: WorkflowFilter | None = None,
        *,
        limit: int = 100,
        cursor: str | None = None,
        with_tasks: bool = True,
        order: Order = "asc",
    ) -> Page[WorkflowState]:
        return await self._page(filter, limit, cursor, with_tasks, order)

    async def _page(
        self,
        filter: WorkflowFilter | None,
        limit: int,
        cursor: str | None,
        with_tasks: bool,
        order: Order = "asc",
    ) -> Page[WorkflowState]:
        sql, params = listing(
            TABLE, filter, cursor=cursor, order=order, limit=limit + 1, dialect=self._dialect
        )

        async def work(conn: Connection) -> Page[WorkflowState]:
            rows = await conn.fetch_all(sql, params)
            tasks: dict[str, dict[str, TaskState]] = {row[0]: {} for row in rows[:limit]}
            if tasks and with_tasks:
                from_row, load_ts = TASK_STATES.from_row, self._dialect.load_ts
                ids = self._dialect.ids_param(list(tasks))
                for task_row in await conn.fetch_all(self._tasks_of_many, [ids]):
                    state = from_row(task_row, load_ts)
                    tasks[state.workflow_exec_id][state.task_id] = state
            items = [self._workflow(row, tasks.get(row[0])) for row in rows]
            return page(items, limit, lambda w: w.created_at, lambda w: w.workflow_exec_id, order)

        # With tasks: two queries that must see one snapshot. Without: one query, no transaction needed.
        return await (self._db.run(work, write=False) if with_tasks else self._db.read(work))

    async def iter_states(
        self, filter: WorkflowFilter | None = None, *, batch_size: int = 1000
    ) -> AsyncIterator[WorkflowState]:
        # Without tasks: a scan that needs them reads them as it goes.
        async for state in every_item(
            lambda cursor: self._page(filter, batch_size, cursor, with_tasks=False)
        ):
            yield state

    async def count_states(self, filter: WorkflowFilter | None = None) -> int:
        where, params = where_clause(TABLE, filter, self._dialect.ts_param)
        row = await self._db.fetch_one(f"SELECT COUNT(*) FROM workflow_states{where}", params)
        assert row is not None
        return int(row[0])
