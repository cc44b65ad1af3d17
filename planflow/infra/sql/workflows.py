"""The workflow repository, written once for every SQL driver."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from itertools import islice

from planflow.errors import ConflictError, NotFoundError, ValidationError, WorkflowNotReadyError
from planflow.infra.sql.codec import (
    TASK_COLUMNS,
    WORKFLOW_COLUMNS,
    check_limit,
    dump_json,
    encode_cursor,
    filter_where,
    map_rows,
    now,
    require_id,
    stored_meta,
    task_from_row,
    workflow_from_row,
    workflow_params,
)
from planflow.infra.sql.database import Connection, Database, Row
from planflow.infra.sql.dialect import Dialect
from planflow.infra.sql.usage import UsageMerger
from planflow.models import (
    FAILURE_STATUSES,
    TERMINAL_STATUSES,
    JsonObject,
    Page,
    TaskState,
    TaskStatus,
    UsageSummary,
    WorkflowFilter,
    WorkflowState,
)
from planflow.protocols import OutputTransformer

ORDER = "ORDER BY created_at, workflow_exec_id"
NEWEST = "ORDER BY created_at DESC, workflow_exec_id DESC LIMIT 1"
_WRITE_COLUMNS = WORKFLOW_COLUMNS.split(", ")[:7]
UPSERT = (
    f"INSERT INTO workflow_states ({', '.join(_WRITE_COLUMNS)}, version, created_at, updated_at) "
    f"VALUES ({', '.join('?' for _ in _WRITE_COLUMNS)}, 1, ?, ?) "
    f"ON CONFLICT (workflow_exec_id) DO UPDATE SET {', '.join(f'{c} = excluded.{c}' for c in _WRITE_COLUMNS[1:])}, "
    "version = workflow_states.version + 1, updated_at = excluded.updated_at RETURNING version, created_at"
)
IMPORT = (
    f"INSERT INTO workflow_states ({WORKFLOW_COLUMNS}) "
    f"VALUES ({', '.join('?' for _ in WORKFLOW_COLUMNS.split(', '))}) ON CONFLICT (workflow_exec_id) DO UPDATE SET "
    f"{', '.join(f'{c} = excluded.{c}' for c in WORKFLOW_COLUMNS.split(', ')[1:])}"
)
IMPORT_BATCH = 1000
SELECT = f"SELECT {WORKFLOW_COLUMNS} FROM workflow_states"
GET = f"{SELECT} WHERE workflow_exec_id = ?"
GET_VERSION = "SELECT version FROM workflow_states WHERE workflow_exec_id = ?"
SET_STATUS = (
    "UPDATE workflow_states SET status = ?, version = version + 1, updated_at = ? WHERE workflow_exec_id = ?"
)
RETURNING = f" RETURNING {WORKFLOW_COLUMNS}"
FINISH = (
    "UPDATE workflow_states SET status = ?, output = ?, error = ?, version = version + 1, updated_at = ? "
    f"WHERE workflow_exec_id = ?{RETURNING}"
)
DELETE = "DELETE FROM workflow_states WHERE workflow_exec_id = ?"
TASKS = f"SELECT {TASK_COLUMNS} FROM task_states WHERE workflow_exec_id = ? ORDER BY created_at, task_exec_id"
TOP_LEVEL_TASKS = (
    f"SELECT {TASK_COLUMNS} FROM task_states WHERE workflow_exec_id = ? AND parent_state_id IS NULL "
    "ORDER BY created_at, task_exec_id"
)
#: Task columns by which a workflow can be found (``get_state_by_<column>``).
TASK_LOOKUPS = ("task_id", "agent_id", "tool_id")


class SqlWorkflowRepository:
    """WorkflowRepository over a :class:`Database` (see ``planflow.protocols.WorkflowRepository``)."""

    def __init__(self, database: Database, dialect: Dialect) -> None:
        self._db = database
        self._d = dialect
        self._lock = GET + dialect.for_update
        self._usage = UsageMerger(database, dialect, "workflow_states", "workflow_exec_id", "workflow")
        self._tasks_of_many = (
            f"SELECT {TASK_COLUMNS} FROM task_states WHERE {dialect.in_ids('workflow_exec_id')} "
            "ORDER BY created_at, task_exec_id"
        )

    def _workflow(self, row: Row, tasks: dict[str, TaskState] | None = None) -> WorkflowState:
        return workflow_from_row(row, self._d.load_ts, tasks)

    def _tasks(self, conn: Connection, workflow_exec_id: str, sql: str = TASKS) -> dict[str, TaskState]:
        load_ts = self._d.load_ts
        return {
            s.task_id: s
            for s in map_rows(conn.fetch_all(sql, [workflow_exec_id]), lambda r: task_from_row(r, load_ts))
        }

    # Writes -----------------------------------------------------------------------------------------------

    def upsert_state(self, state: WorkflowState) -> WorkflowState:
        params = workflow_params(state, self._d.json_param)
        stamp = now()
        params += [self._d.ts_param(stamp), self._d.ts_param(stamp)]

        def work(conn: Connection) -> Row:
            row = conn.fetch_one(UPSERT, params)
            assert row is not None
            return row

        version, created = self._db.run(work, atomic=True)
        return state.evolve(version=version, created_at=self._d.load_ts(created), updated_at=stamp, tasks={})

    def update_status(
        self, workflow_exec_id: str, status: TaskStatus, *, expected_version: int | None = None
    ) -> WorkflowState:
        from planflow.infra.sql.codec import enum_value

        value = enum_value(TaskStatus, status, "status").value
        sql = SET_STATUS + ("" if expected_version is None else " AND version = ?") + RETURNING
        params: list[object] = [value, self._d.ts_param(now()), workflow_exec_id]
        if expected_version is not None:
            params.append(expected_version)

        def work(conn: Connection) -> WorkflowState:
            row = conn.fetch_one(sql, params)
            if row is None:
                found = conn.fetch_one(GET_VERSION, [workflow_exec_id])
                if found is None:
                    raise NotFoundError(f"workflow state {workflow_exec_id!r} not found")
                raise ConflictError(
                    f"workflow state {workflow_exec_id!r} is at version {found[0]}, expected {expected_version}",
                    expected=expected_version,
                    actual=found[0],
                )
            return self._workflow(row)

        return self._db.run(work, atomic=True)

    def import_states(self, states: Iterable[WorkflowState]) -> int:
        """Write workflow states verbatim (version and timestamps as given; ``tasks`` ignored), upserting by id.

        Returns:
            How many states were written.
        """
        written = 0
        ts = self._d.ts_param
        iterator = iter(states)
        while batch := list(islice(iterator, IMPORT_BATCH)):
            rows: list[list[object]] = []
            for state in batch:
                version, created, updated = stored_meta(
                    state.version, state.created_at, state.updated_at, f"workflow {state.workflow_exec_id!r}"
                )
                rows.append([*workflow_params(state, self._d.json_param), version, ts(created), ts(updated)])

            def work(conn: Connection, rows: list[list[object]] = rows) -> None:
                conn.execute_many(IMPORT, rows)

            self._db.run(work)
            written += len(rows)
        return written

    def merge_usage(self, workflow_exec_id: str, usage: UsageSummary) -> UsageSummary:
        return self._usage.merge(workflow_exec_id, usage)

    def delete(self, workflow_exec_id: str) -> None:
        def work(conn: Connection) -> None:
            if conn.execute(DELETE, [workflow_exec_id]) == 0:
                raise NotFoundError(f"workflow state {workflow_exec_id!r} not found")

        self._db.run(work, atomic=True)

    def complete_workflow(
        self, workflow_exec_id: str, transformer: OutputTransformer | None = None
    ) -> WorkflowState:
        require_id(workflow_exec_id, "workflow_exec_id")

        def work(conn: Connection) -> WorkflowState:
            row = conn.fetch_one(self._lock, [workflow_exec_id])
            if row is None:
                raise NotFoundError(f"workflow state {workflow_exec_id!r} not found")
            current = self._workflow(row, self._tasks(conn, workflow_exec_id))
            if current.status in (TaskStatus.SUCCESS, TaskStatus.FAILED):
                return current
            top = self._tasks(conn, workflow_exec_id, TOP_LEVEL_TASKS)
            unfinished = sorted(t for t, s in top.items() if s.status not in TERMINAL_STATUSES)
            if unfinished:
                raise WorkflowNotReadyError(
                    f"workflow {workflow_exec_id!r} has unfinished top-level tasks: {', '.join(unfinished)}"
                )
            failed = sorted(t for t, s in top.items() if s.status in FAILURE_STATUSES)
            status = TaskStatus.FAILED if failed else TaskStatus.SUCCESS
            error: JsonObject | None = (
                {"code": "TASKS_FAILED", "message": f"top-level tasks did not succeed: {', '.join(failed)}"}
                if failed
                else None
            )
            output: JsonObject | None
            try:
                if transformer is None:
                    output = {task_id: state.output for task_id, state in top.items()}
                else:
                    output = transformer(current.evolve(status=status))
                output_text = dump_json(output, "output", owner=f"workflow {workflow_exec_id!r}")
            except Exception as exc:
                status, output_text = TaskStatus.FAILED, None
                error = {"code": "OUTPUT_TRANSFORMATION_FAILED", "message": f"{type(exc).__name__}: {exc}"}
            error_text = dump_json(error, "error", owner=f"workflow {workflow_exec_id!r}")
            finished = conn.fetch_one(
                FINISH,
                [
                    status.value,
                    None if output_text is None else self._d.json_param(output_text),
                    None if error_text is None else self._d.json_param(error_text),
                    self._d.ts_param(now()),
                    workflow_exec_id,
                ],
            )
            assert finished is not None
            return self._workflow(finished, dict(current.tasks))

        return self._db.run(work)

    # Reads ------------------------------------------------------------------------------------------------

    def _read_with_tasks(self, sql: str, params: Sequence[object], missing: str) -> WorkflowState:
        def work(conn: Connection) -> WorkflowState:
            row = conn.fetch_one(sql, params)
            if row is None:
                raise NotFoundError(missing)
            return self._workflow(row, self._tasks(conn, row[0]))

        return self._db.run(work, write=False)

    def get_state(self, workflow_exec_id: str) -> WorkflowState:
        return self._read_with_tasks(
            GET, [workflow_exec_id], f"workflow state {workflow_exec_id!r} not found"
        )

    def get_state_by_workflow_id(self, workflow_id: str) -> WorkflowState:
        return self._read_with_tasks(
            f"{SELECT} WHERE workflow_id = ? {NEWEST}",
            [workflow_id],
            f"no execution of workflow {workflow_id!r}",
        )

    def _by_task_column(self, column: str, workflow_id: str, value: str) -> WorkflowState:
        if column not in TASK_LOOKUPS:
            raise ValidationError(f"cannot look workflows up by {column!r}")
        sql = (
            f"{SELECT} w WHERE w.workflow_id = ? AND EXISTS (SELECT 1 FROM task_states t "
            f"WHERE t.workflow_exec_id = w.workflow_exec_id AND t.{column} = ?) {NEWEST}"
        )
        return self._read_with_tasks(
            sql,
            [workflow_id, value],
            f"no execution of workflow {workflow_id!r} has a task with {column} {value!r}",
        )

    def get_state_by_task_id(self, workflow_id: str, task_id: str) -> WorkflowState:
        return self._by_task_column("task_id", workflow_id, task_id)

    def get_state_by_agent_id(self, workflow_id: str, agent_id: str) -> WorkflowState:
        return self._by_task_column("agent_id", workflow_id, agent_id)

    def get_state_by_tool_id(self, workflow_id: str, tool_id: str) -> WorkflowState:
        return self._by_task_column("tool_id", workflow_id, tool_id)

    def list_states(
        self,
        filter: WorkflowFilter | None = None,
        *,
        limit: int = 100,
        cursor: str | None = None,
        with_tasks: bool = True,
    ) -> Page[WorkflowState]:
        check_limit(limit)
        where, params = filter_where(filter, "workflow_exec_id", cursor, self._d.ts_param)
        sql = f"{SELECT}{where} {ORDER} LIMIT ?"

        def work(conn: Connection) -> Page[WorkflowState]:
            rows = conn.fetch_all(sql, [*params, limit + 1])
            more = len(rows) > limit
            rows = rows[:limit]
            tasks: dict[str, dict[str, TaskState]] = {row[0]: {} for row in rows}
            if rows and with_tasks:
                load_ts = self._d.load_ts
                for task_row in conn.fetch_all(self._tasks_of_many, [self._d.ids_param(list(tasks))]):
                    state = task_from_row(task_row, load_ts)
                    tasks[state.workflow_exec_id][state.task_id] = state
            items = [self._workflow(row, tasks[row[0]]) for row in rows]
            if not more:
                return Page(items)
            last = items[-1]
            assert last.created_at is not None
            return Page(items, encode_cursor(last.created_at, last.workflow_exec_id))

        # With tasks: two queries that must see one snapshot. Without: one query, no transaction needed.
        return self._db.run(work, write=False) if with_tasks else self._db.read(work)

    def count_states(self, filter: WorkflowFilter | None = None) -> int:
        where, params = filter_where(filter, "workflow_exec_id", None, self._d.ts_param)
        row = self._db.fetch_one(f"SELECT COUNT(*) FROM workflow_states{where}", params)
        assert row is not None
        return int(row[0])
