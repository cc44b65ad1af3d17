"""Every query the repositories run, with representative parameters, for the query-plan tests of both drivers.

A plan may sort the rows a query found when no index can give them in the order asked (an id list, a tree by
depth, the newest state per task id ordered by time): those are named in ``SORTS_ITS_RESULT``. It may read a
whole table only where the query asks for the whole table (``WHOLE_TABLE``). Anything else must be served by an
index, in index order.
"""

from __future__ import annotations

from datetime import UTC, datetime

from planflow.infra.sql import auth as auth_sql
from planflow.infra.sql import executions as executions_sql
from planflow.infra.sql import history as history_sql
from planflow.infra.sql import queue as queue_sql
from planflow.infra.sql import tasks as tasks_sql
from planflow.infra.sql import workflows as workflows_sql
from planflow.infra.sql.codec import encode_cursor, now
from planflow.infra.sql.dialect import Dialect
from planflow.infra.sql.statements import listing, where_clause
from planflow.models import TERMINAL_STATUSES, ExecutionType, TaskFilter, TaskStatus, WorkflowFilter

SORTS_ITS_RESULT = {
    "tasks.list_by_ids",
    "tasks.get_task_tree",
    "workflow tasks",
    "tasks of many workflows",
    # The workflow's row and its tasks' rows in one statement, ordered by part, time and key.
    "workflows.usage_total",
}
WHOLE_TABLE = {
    "auth.list_users",
    "executions.purge candidates",
    "executions.list_tasks",
    "executions.list_occurrences",
    "executions.list_executions",
}

TASK_FILTERS = {
    "status": TaskFilter(status=TaskStatus.RUNNING),
    "workflow_id": TaskFilter(workflow_id="w"),
    "workflow_exec_id": TaskFilter(workflow_exec_id="wx"),
    "task_id": TaskFilter(task_id="t"),
    "task_exec_id": TaskFilter(task_exec_id="tx"),
    "parent_state_id": TaskFilter(parent_state_id="p"),
    "agent_id": TaskFilter(agent_id="a"),
    "action_id": TaskFilter(action_id="a"),
    "tool_id": TaskFilter(tool_id="t"),
    "execution_type": TaskFilter(execution_type=ExecutionType.PARALLEL),
}
WORKFLOW_FILTERS = {
    "status": WorkflowFilter(status=TaskStatus.RUNNING),
    "workflow_id": WorkflowFilter(workflow_id="w"),
    "workflow_exec_id": WorkflowFilter(workflow_exec_id="wx"),
}


#: Filters of the listings of schema 7 (order and time bounds), listed in both orders, with and without a cursor.
SINCE = datetime(2024, 1, 1, tzinfo=UTC)
UNTIL = datetime(2025, 1, 1, tzinfo=UTC)
RANGE_FILTERS: dict[str, tuple[TaskFilter, WorkflowFilter]] = {
    "statuses": (
        TaskFilter(statuses={TaskStatus.FAILED, TaskStatus.TIMED_OUT}),
        WorkflowFilter(statuses={TaskStatus.FAILED, TaskStatus.TIMED_OUT}),
    ),
    "statuses and created_after": (
        TaskFilter(statuses=TERMINAL_STATUSES, created_after=SINCE),
        WorkflowFilter(statuses=TERMINAL_STATUSES, created_after=SINCE),
    ),
    "one status and a created range": (
        TaskFilter(statuses={TaskStatus.FAILED}, created_after=SINCE, created_before=UNTIL),
        WorkflowFilter(status=TaskStatus.FAILED, created_after=SINCE, created_before=UNTIL),
    ),
    "a created range": (
        TaskFilter(created_after=SINCE, created_before=UNTIL),
        WorkflowFilter(created_after=SINCE, created_before=UNTIL),
    ),
    "an updated range": (
        TaskFilter(updated_after=SINCE, updated_before=UNTIL),
        WorkflowFilter(updated_after=SINCE, updated_before=UNTIL),
    ),
    "a workflow execution and statuses": (
        TaskFilter(workflow_exec_id="wx", statuses={TaskStatus.FAILED, TaskStatus.SUCCESS}),
        WorkflowFilter(workflow_id="w", statuses={TaskStatus.FAILED, TaskStatus.SUCCESS}),
    ),
}


# An updated_at range of workflows is read along workflow_states_updated; the rows it found are then
# sorted by (created_at, key): no index orders one column's range by another. Tasks have no updated_at index
# (see migration 0007): their range filters a read along the listing's order.
SORTS_ITS_RESULT |= {
    f"workflows.list_states by an updated range {order}{cursor}"
    for order in ("desc", "asc")
    for cursor in ("", " after a cursor")
}


def range_statements(dialect: Dialect) -> list[tuple[str, str, list[object]]]:
    """The listings of ``RANGE_FILTERS``, as the repositories build them (``listing``)."""
    found: list[tuple[str, str, list[object]]] = []
    for name, (task_filter, workflow_filter) in RANGE_FILTERS.items():
        for order in ("desc", "asc"):
            cursor = encode_cursor(now(), "k", order)
            for with_cursor in (False, True):
                suffix = f" {order}{' after a cursor' if with_cursor else ''}"
                for table, flt in ((tasks_sql.TABLE, task_filter), (workflows_sql.TABLE, workflow_filter)):
                    sql, params = listing(
                        table,
                        flt,
                        cursor=cursor if with_cursor else None,
                        order=order,
                        limit=101,
                        dialect=dialect,
                    )
                    repository = "tasks" if table is tasks_sql.TABLE else "workflows"
                    found.append((f"{repository}.list_states by {name}{suffix}", sql, params))
    return found


def statements(dialect: Dialect) -> list[tuple[str, str, list[object]]]:
    """(name, SQL with ``?`` placeholders, parameters) of every read the repositories run."""
    ts = dialect.ts_param
    cursor = encode_cursor(now(), "k")
    found: list[tuple[str, str, list[object]]] = [
        ("tasks.get_state", tasks_sql.GET, ["tx"]),
        ("tasks.list_states", f"{tasks_sql.SELECT} {tasks_sql.ORDER} LIMIT ?", [101]),
        (
            "tasks.list_by_ids",
            f"{tasks_sql.SELECT} WHERE {dialect.in_ids('task_exec_id')} {tasks_sql.ORDER}",
            [dialect.ids_param(["a"])],
        ),
        ("workflow tasks", workflows_sql.TASKS, ["wx"]),
        ("tasks.list_children", tasks_sql.CHILDREN, ["p"]),
        ("tasks.get_child_by_task_id", tasks_sql.CHILD_BY_TASK, ["p", "t"]),
        ("tasks.list_children_outputs", tasks_sql.CHILDREN_OUTPUTS, ["p"]),
        ("tasks.get_progress_info", tasks_sql.PROGRESS, ["p"]),
        ("tasks.get_task_tree", tasks_sql.TREE, ["r", 100, "r"]),
        ("tasks.version after a write", tasks_sql.GET_VERSION, ["tx"]),
        ("workflows.get_state", workflows_sql.GET, ["wx"]),
        (
            "workflows.get_state_by_workflow_id",
            f"{workflows_sql.SELECT} WHERE workflow_id = ? {workflows_sql.NEWEST}",
            ["w"],
        ),
        ("workflows.list_states", f"{workflows_sql.SELECT} {workflows_sql.ORDER} LIMIT ?", [101]),
        ("workflow top-level tasks", workflows_sql.TOP_LEVEL, ["wx"]),
        (
            "tasks of many workflows",
            workflows_sql.latest_tasks(dialect.in_ids("workflow_exec_id"), "workflow_exec_id, task_id"),
            [dialect.ids_param(["a", "b"])],
        ),
        ("auth.get_user", f"{auth_sql.SELECT_USER} WHERE id = ?", ["u"]),
        ("auth.get_user_by_email", f"{auth_sql.SELECT_USER} WHERE email_key = ?", ["a@b"]),
        ("auth.list_users", f"{auth_sql.SELECT_USER} ORDER BY created_at, id", []),
        ("auth.get_api_key_by_fingerprint", f"{auth_sql.SELECT_KEY} WHERE fingerprint = ?", ["f" * 64]),
        ("auth.list_api_keys", f"{auth_sql.SELECT_KEY} WHERE user_id = ? ORDER BY created_at, id", ["u"]),
        ("executions.get_task", "SELECT doc FROM exec_tasks WHERE id = ?", ["t"]),
        ("executions.list_tasks", "SELECT doc FROM exec_tasks ORDER BY seq", []),
        ("executions.list_occurrences", "SELECT doc FROM exec_occurrences ORDER BY seq", []),
        (
            "executions.list_occurrences of a task",
            "SELECT doc FROM exec_occurrences WHERE task_id = ? ORDER BY seq",
            ["t"],
        ),
        ("executions.get_execution", "SELECT doc FROM exec_executions WHERE occurrence_id = ?", ["o"]),
        ("executions.list_executions", "SELECT doc FROM exec_executions ORDER BY seq", []),
        (
            "executions.delete of a task",
            executions_sql.DELETE_EXECUTIONS_OF_TASK.replace("DELETE", "SELECT 1"),
            ["t"],
        ),
    ]
    terminal = sorted(status.value for status in TERMINAL_STATUSES)
    cutoff = [*terminal, ts(now())]
    found += [
        ("workflows.usage_total", workflows_sql.USAGE_PARTS, ["wx", "wx"]),
        ("workflows.purge candidates", workflows_sql.purge_candidates_sql(len(terminal)), [*cutoff, 500]),
        (
            "workflows.purge",
            workflows_sql.purge_sql(dialect, len(terminal)),
            [dialect.ids_param(["a"]), *cutoff],
        ),
        (
            "workflows.purge of a large workflow's tasks",
            workflows_sql.purge_tasks_sql(len(terminal)),
            ["wx", 500, "wx", *cutoff],
        ),
        ("workflows.purge task count", workflows_sql.TASK_COUNT, ["wx"]),
        ("tasks.history", history_sql.OF_ENTITY, ["task", "tx", 0, 101]),
        ("workflows.history", history_sql.OF_ENTITY, ["workflow", "wx", 0, 101]),
        ("workflows.history with tasks", history_sql.OF_WORKFLOW, ["wx", 0, 101]),
        ("history of a deleted task", history_sql.ANY_RECORD, ["task", "tx"]),
        (
            "workflows.cancel of tasks",
            queue_sql.cancel_sql(dialect, "workflow_exec_id = ?"),
            ["why", ts(now()), "wx"],
        ),
        ("workflows.resume of tasks", workflows_sql.RESUME_TASKS, [ts(now()), "wx"]),
        ("workflows.fork reads the tasks", workflows_sql.ALL_TASKS, ["wx"]),
        ("executions.purge candidates", executions_sql.ALL_OCCURRENCES, []),
        (
            "executions.purge of a batch",
            f"SELECT id, doc FROM exec_occurrences WHERE {dialect.in_ids('id')}",
            [dialect.ids_param(["o"])],
        ),
        (
            "executions.purge of a batch's executions",
            f"DELETE FROM exec_executions WHERE {dialect.in_ids('occurrence_id')}",
            [dialect.ids_param(["o"])],
        ),
    ]
    found += range_statements(dialect)
    for column in ("status", "agent_id", "tool_id"):
        found.append(
            (
                f"tasks.list_tasks_by_{column.removesuffix('_id')}",
                f"{tasks_sql.SELECT} WHERE workflow_exec_id = ? AND {column} = ? {tasks_sql.ORDER}",
                ["wx", "RUNNING" if column == "status" else "x"],
            )
        )
    for column in workflows_sql.TASK_LOOKUPS:
        found.append(
            (
                f"workflows.get_state_by_{column}",
                f"{workflows_sql.SELECT} w WHERE w.workflow_id = ? AND EXISTS (SELECT 1 FROM task_states t "
                f"WHERE t.workflow_exec_id = w.workflow_exec_id AND t.{column} = ?) {workflows_sql.NEWEST}",
                ["w", "x"],
            )
        )
    for name, task_filter in TASK_FILTERS.items():
        for with_cursor in (False, True):
            sql, params = listing(
                tasks_sql.TABLE,
                task_filter,
                cursor=cursor if with_cursor else None,
                order="asc",
                limit=101,
                dialect=dialect,
            )
            label = f"tasks.list_states by {name}{' after a cursor' if with_cursor else ''}"
            found.append((label, sql, params))
        where, params = where_clause(tasks_sql.TABLE, task_filter, ts)
        found.append((f"tasks.count_states by {name}", f"SELECT COUNT(*) FROM task_states{where}", params))
    for name, workflow_filter in WORKFLOW_FILTERS.items():
        sql, params = listing(
            workflows_sql.TABLE, workflow_filter, cursor=cursor, order="asc", limit=101, dialect=dialect
        )
        found.append((f"workflows.list_states by {name}", sql, params))
    return found
