"""SQLite's SQL fragments and value adapters."""

from __future__ import annotations

import json
from collections.abc import Sequence
from datetime import UTC, datetime

from planflow.infra.sql.dialect import Dialect
from planflow.infra.sql.migrations import TABLE, MigrationSql
from planflow.infra.sql.queue import names_one_workflow


def ts_param(moment: datetime) -> str:
    """Fixed-width UTC ISO text, so that timestamps compare and sort correctly as text."""
    return moment.astimezone(UTC).isoformat(timespec="microseconds")


#: Parses what :func:`ts_param` stored: the builtin itself, not a wrapper, as it runs twice for every row read.
load_ts = datetime.fromisoformat


#: SQLite's clock (the machine's, read once per statement) as :func:`ts_param` writes times, to the millisecond.
CLOCK = "(strftime('%Y-%m-%dT%H:%M:%f', 'now') || '000+00:00')"
CLOCK_PLUS = "(strftime('%Y-%m-%dT%H:%M:%f', 'now', ?) || '000+00:00')"


def _clock_minus(seconds_sql: str) -> str:
    return f"(strftime('%Y-%m-%dT%H:%M:%f', 'now', '-' || ({seconds_sql}) || ' seconds') || '000+00:00')"


def _by_claim_order(where: str) -> str:
    # A claim of one workflow execution reads that workflow's pending tasks in order; any other, all of them.
    if names_one_workflow(where):
        return "task_states INDEXED BY task_states_workflow_claim"
    return "task_states INDEXED BY task_states_claim"


def _json_nested(column: str) -> str:
    return f"json({column})"


def _seconds_modifier(seconds: float) -> str:
    return f"{seconds:+.6f} seconds"


def _in_ids(column: str) -> str:
    # One bound variable holding a JSON array: any number of ids stays far below SQLITE_MAX_VARIABLE_NUMBER.
    return f"{column} IN (SELECT value FROM json_each(?))"


def _same(column: str) -> str:
    # IS compares NULLs as equal; IS NOT DISTINCT FROM would need SQLite 3.39, newer than some Pythons bundle.
    return f"{column} IS ?"


def _ids_param(ids: Sequence[str]) -> str:
    # Ids that JSON writes as they are (printable ASCII without quote or backslash: the usual ones) are joined
    # directly; json.dumps costs more than the statement that reads them back for one or two ids.
    joined = '","'.join(ids)
    if (
        joined.isascii()
        and joined.isprintable()
        and "\\" not in joined
        and joined.count('"') == 2 * len(ids) - 2
    ):
        return f'["{joined}"]' if ids else "[]"
    return json.dumps(list(ids), ensure_ascii=False)


def _identity(text: str) -> str:
    return text


SQLITE = Dialect(
    name="sqlite",
    same=_same,
    in_ids=_in_ids,
    ids_param=_ids_param,
    json_param=_identity,
    ts_param=ts_param,
    load_ts=load_ts,
    for_update="",  # BEGIN IMMEDIATE already holds the database's write lock
    bootstrap_lock="",
    defer_foreign_keys="PRAGMA defer_foreign_keys = ON",
    split_update=True,
    by_lease="task_states INDEXED BY task_states_leases",
    by_claim_order=_by_claim_order,
    clock=CLOCK,
    clock_plus=CLOCK_PLUS,
    seconds_param=_seconds_modifier,
    wall_clock=CLOCK,
    wall_clock_minus=_clock_minus,
    json_nested=_json_nested,
)

MIGRATION_SQL = MigrationSql(
    lock="",  # BEGIN IMMEDIATE: one writer at a time, across processes
    create_table=(
        f"CREATE TABLE IF NOT EXISTS {TABLE} (version INTEGER PRIMARY KEY, name TEXT NOT NULL, "
        "checksum TEXT NOT NULL, applied_at TEXT NOT NULL) STRICT;"
    ),
    table_exists=f"SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = '{TABLE}'",
    some_tables=(
        "SELECT name FROM sqlite_master WHERE type IN ('table', 'view') AND name NOT LIKE 'sqlite!_%' ESCAPE '!' "
        "ORDER BY name LIMIT 5"
    ),
    begin="BEGIN IMMEDIATE",
    # The text ts_param writes: microseconds (SQLite gives milliseconds, padded) and an explicit UTC offset.
    now="strftime('%Y-%m-%dT%H:%M:%f000+00:00', 'now')",
)
