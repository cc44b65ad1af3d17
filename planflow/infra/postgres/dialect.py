"""PostgreSQL's SQL fragments and value adapters."""

from __future__ import annotations

from datetime import UTC, datetime

from psycopg.types.json import Jsonb

from planflow.infra.sql.dialect import Dialect
from planflow.infra.sql.migrations import TABLE, MigrationSql

#: First key of planflow's advisory locks ("planflow" in ASCII, as a signed 32-bit int), so they do not collide
#: with other users of advisory locks in the same database.
LOCK_NAMESPACE = 0x706C616E
MIGRATION_LOCK = 1
BOOTSTRAP_LOCK = 2


def advisory_xact_lock(key: int) -> str:
    """A statement taking a transaction-scoped advisory lock on ``key`` for the current schema.

    Keyed by schema as well, so that stores in different schemas of one database never wait for each other.
    """
    return f"SELECT pg_advisory_xact_lock({LOCK_NAMESPACE + key}, hashtext(coalesce(current_schema(), '')))"


def _passthrough(text: str) -> str:
    return text


def json_param(text: str) -> Jsonb:
    """JSON text, already serialised and validated by the shared layer, bound as ``jsonb`` unchanged."""
    return Jsonb(text, dumps=_passthrough)


def load_ts(value: object) -> datetime:
    """A ``timestamptz`` value (psycopg gives an aware datetime) as an aware UTC datetime."""
    if not isinstance(value, datetime):
        raise TypeError(f"expected a datetime from a timestamptz column, got {type(value).__name__}")
    return value.astimezone(UTC)


def ts_param(moment: datetime) -> datetime:
    """Aware datetimes bind as ``timestamptz`` directly."""
    return moment


def _same(column: str) -> str:
    return f"{column} IS NOT DISTINCT FROM ?"


def _clock_minus(seconds_sql: str) -> str:
    return f"(clock_timestamp() - ({seconds_sql}) * interval '1 second')"


def _in_ids(column: str) -> str:
    # One array parameter: any number of ids, one statement text (so it is prepared once).
    return f"{column} = ANY(?)"


POSTGRES = Dialect(
    name="postgres",
    one_workflow="workflow_exec_id = ANY(ARRAY[?])",
    same=_same,
    in_ids=_in_ids,
    ids_param=list,
    json_param=json_param,
    ts_param=ts_param,
    load_ts=load_ts,
    for_update=" FOR UPDATE",
    bootstrap_lock=advisory_xact_lock(BOOTSTRAP_LOCK),
    defer_foreign_keys="SET CONSTRAINTS ALL DEFERRED",
    skip_locked=" FOR UPDATE SKIP LOCKED",
    limit_union_arms=True,
    clock="now()",
    clock_plus="(now() + ? * interval '1 second')",
    wall_clock="clock_timestamp()",
    wall_clock_minus=_clock_minus,
    json_object="jsonb_build_object",
    # The channel of migration 0006's trigger, which wakes waiters when a task becomes PENDING.
    wake="SELECT pg_notify('planflow_work_' || md5(current_schema()), '')",
)

MIGRATION_SQL = MigrationSql(
    lock=advisory_xact_lock(MIGRATION_LOCK),
    create_table=(
        f"CREATE TABLE IF NOT EXISTS {TABLE} (version INTEGER PRIMARY KEY, name TEXT NOT NULL, "
        "checksum TEXT NOT NULL, applied_at TIMESTAMPTZ NOT NULL)"
    ),
    table_exists=(
        f"SELECT 1 FROM pg_catalog.pg_tables WHERE schemaname = current_schema() AND tablename = '{TABLE}'"
    ),
    some_tables=(
        "SELECT table_name FROM information_schema.tables WHERE table_schema = current_schema() "
        "ORDER BY table_name LIMIT 5"
    ),
    begin="BEGIN",
    now="now()",
)
