"""Work-queue SQL of the task repository: the claiming statements, limits, fail, cancel, statistics.

Written once for every SQL driver; what differs is in the :class:`Dialect`. ``planflow.infra.sql.tasks`` calls
these builders; ``cancel_sql`` is meant to be reused by whatever else cancels tasks (a workflow's cancel).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta

from planflow.infra.sql.dialect import Dialect
from planflow.infra.sql.tables import TASK_STATES
from planflow.models import COMPOSITE_TYPES, TERMINAL_STATUSES, TaskFilter, TaskStatus

RETURNING_ALL = f" RETURNING {TASK_STATES.select_list}"
#: Statuses a task moves on from, in SQL (the dedup index and cancel use the same list).
LIVE = "('PENDING', 'RUNNING', 'WAITING', 'PAUSED')"
assert {s.value for s in TaskStatus} - {s.value for s in TERMINAL_STATUSES} == {
    "PENDING",
    "RUNNING",
    "WAITING",
    "PAUSED",
}
#: When a pending task became (or becomes) due: the second column of the claim's order and of its index.
DUE = "coalesce(run_after, created_at)"
#: A task that has used up its attempts: a claim ends it FAILED instead of handing it out.
EXHAUSTED = "max_attempts IS NOT NULL AND attempt >= max_attempts"
#: Composite parents, excluded from claims whose filter names no execution type.
NOT_COMPOSITE = f" AND execution_type NOT IN ({', '.join(repr(t.value) for t in sorted(COMPOSITE_TYPES))})"
#: What a claim reads of each candidate: enough to order them and to apply limits.
_CANDIDATE = f"task_exec_id, priority, {DUE} AS due, concurrency_key, status, {EXHAUSTED} AS exhausted"


def names_execution_type(filter: TaskFilter | None) -> bool:
    """Whether ``filter`` names execution types (then composite parents are claimable if it names theirs)."""
    return filter is not None and (filter.execution_type is not None or filter.execution_types is not None)


#: The condition of a filter that names one workflow execution (``TaskFilter.workflow_exec_id``).
ONE_WORKFLOW = "workflow_exec_id = ?"


def names_one_workflow(where: str) -> bool:
    """Whether a claim's conditions name one workflow execution (its pending tasks have an index of their own)."""
    return ONE_WORKFLOW in where


def pending_where(where: str, dialect: Dialect) -> str:
    """A claim's conditions on its pending tasks: ``where``, its workflow condition as the dialect writes it."""
    return where.replace(ONE_WORKFLOW, dialect.one_workflow, 1) if names_one_workflow(where) else where


def pending_order(where: str) -> str:
    """The ORDER BY of a claim's pending tasks. For one workflow it leads with ``workflow_exec_id``: the same
    order (one workflow), but one that only ``task_states_workflow_claim`` yields without a sort, so that a plan
    cannot trust stale statistics into reading the table-wide claim index and passing over other workflows'
    tasks (PostgreSQL: 16 010 rows read for one, tests/postgres/test_query_plans.py; see ``Dialect.one_workflow``)."""
    lead = "workflow_exec_id, " if names_one_workflow(where) else ""
    return f"ORDER BY {lead}priority DESC, {DUE}, task_exec_id"


def due(dialect: Dialect) -> str:
    """A pending task is due: no ``run_after``, or one that passed by the database's clock."""
    return f"(run_after IS NULL OR run_after <= {dialect.at()})"


def candidates_sql(where: str, dialect: Dialect, *, limited: bool) -> str:
    """The CTEs ``expired``, ``pending`` and ``candidates``: up to ``?`` claimable tasks matching ``where``, in
    claim order (priority, then due), each side read in the order of its index and locked (``SKIP LOCKED``).

    ``limited`` leaves out pending tasks of keys already at a limit (by this statement's snapshot: the claim
    counts again, exactly, after locking the keys), so that a saturated key does not fill the candidates.

    Parameters: the filter's, limit; the filter's, limit; limit.
    """
    skip = dialect.skip_locked
    saturated = f" AND (concurrency_key IS NULL OR concurrency_key NOT IN ({saturated_sql(dialect)}))"
    return (
        f"WITH expired AS (SELECT {_CANDIDATE} FROM {dialect.by_lease} WHERE {any_lapsed(dialect)}"
        f" AND status = 'RUNNING' AND lease_expires_at < {dialect.at()}{where}"
        f" ORDER BY lease_expires_at, task_exec_id LIMIT ?{skip}),"
        f" pending AS (SELECT {_CANDIDATE} FROM {dialect.by_claim_order(where)} WHERE status = 'PENDING'"
        f" AND {due(dialect)}{pending_where(where, dialect)}"
        f"{saturated if limited else ''} {pending_order(where)} LIMIT ?{skip}),"
        " candidates AS (SELECT * FROM (SELECT * FROM expired UNION ALL SELECT * FROM pending) c"
        " ORDER BY priority DESC, due, task_exec_id LIMIT ?)"
    )


def saturated_sql(dialect: Dialect) -> str:
    """The keys at their concurrency limit or out of claims in their rate window (a snapshot's count)."""
    return (
        "SELECT l.key FROM planflow_limits l WHERE (l.concurrency IS NOT NULL AND l.concurrency <="
        " (SELECT COUNT(*) FROM task_states r WHERE r.status = 'RUNNING' AND r.concurrency_key = l.key))"
        " OR (l.rate_count IS NOT NULL AND l.rate_count <= (SELECT COUNT(*) FROM planflow_limit_claims c"
        f" WHERE c.key = l.key AND c.claimed_at > {dialect.wall_clock_minus('l.rate_seconds')}))"
    )


def any_lapsed(dialect: Dialect) -> str:
    """Whether any lease has lapsed at all: one probe of the ``task_states_leases`` index (usually false)."""
    return f"EXISTS (SELECT 1 FROM {dialect.by_lease} WHERE status = 'RUNNING' AND lease_expires_at < {dialect.at()})"


def claim_set(dialect: Dialect, lease: str) -> str:
    """The SET list of a claim: RUNNING for ``?`` (the worker) until ``lease``, one more attempt; or FAILED for a
    task that used up its attempts (``last_error`` says so). A lapsed lease taken over is recorded as the
    failed attempt it was. Parameters: the worker, the lease's, ``updated_at``."""
    obj, nested = dialect.json_object, dialect.json_nested
    exhausted_error = (
        f"{obj}('error', 'attempts exhausted', 'attempt', attempt, 'max_attempts', max_attempts,"
        f" 'lapsed_worker', CASE WHEN status = 'RUNNING' THEN claimed_by END, 'previous', {nested('last_error')})"
    )
    lapsed_error = f"{obj}('error', 'lease lapsed', 'worker', claimed_by, 'attempt', attempt)"
    return (
        f"status = CASE WHEN {EXHAUSTED} THEN 'FAILED' ELSE 'RUNNING' END,"
        f" last_error = CASE WHEN {EXHAUSTED} THEN {exhausted_error}"
        f" WHEN status = 'RUNNING' THEN {lapsed_error} ELSE last_error END,"
        f" claimed_by = CASE WHEN {EXHAUSTED} THEN claimed_by ELSE ? END,"
        f" lease_expires_at = CASE WHEN {EXHAUSTED} THEN NULL ELSE {lease} END,"
        f" attempt = CASE WHEN {EXHAUSTED} THEN attempt ELSE attempt + 1 END,"
        " version = version + 1, updated_at = ?"
    )


def claim_sql(where: str, dialect: Dialect) -> str:
    """The claim of a store without limits, one statement: the candidates (see :func:`candidates_sql`) are
    claimed only while ``planflow_limits`` is empty (a guard evaluated once); otherwise it claims nothing and
    the caller runs the limited claim (:func:`limited_candidates_sql`) in a transaction.

    Parameters (see :func:`claim_params`): the filter's, limit; the filter's, limit; limit; worker, lease,
    updated_at.
    """
    return (
        f"{candidates_sql(where, dialect, limited=False)}"
        " UPDATE task_states SET "
        f"{claim_set(dialect, dialect.at(plus_seconds=True))}"
        " WHERE task_exec_id IN (SELECT task_exec_id FROM candidates"
        f" WHERE NOT EXISTS (SELECT 1 FROM planflow_limits)){RETURNING_ALL}"
    )


def claim_params(
    dialect: Dialect,
    filter_params: Sequence[object],
    *,
    limit: int,
    worker: str,
    lease: float,
    stamp: datetime,
) -> list[object]:
    """The parameters of :func:`claim_sql`, ``stamp`` being the caller's clock (``updated_at``)."""
    return [
        *filter_params,
        limit,
        *filter_params,
        limit,
        limit,
        worker,
        *dialect.at_params(lease),
        dialect.ts_param(stamp),
    ]


def limited_candidates_sql(where: str, dialect: Dialect) -> str:
    """The candidates of a claim in a store with limits (parameters as :func:`candidates_sql`'s), in order:
    id, concurrency key, whether its lease lapsed (it counts as RUNNING already), whether it is exhausted."""
    return (
        f"{candidates_sql(where, dialect, limited=True)} SELECT task_exec_id, concurrency_key,"
        " status = 'RUNNING', exhausted FROM candidates ORDER BY priority DESC, due, task_exec_id"
    )


def limits_sql(dialect: Dialect) -> str:
    """Lock the limits of the keys in the id list ``?`` (by key, so that claimers never wait in a circle) and
    read them. SQLite's claim holds the database's write lock already."""
    return (
        "SELECT key, concurrency, rate_count, rate_seconds FROM planflow_limits"
        f" WHERE {dialect.in_ids('key')} ORDER BY key{dialect.for_update}"
    )


RUNNING_OF_KEY = "SELECT COUNT(*) FROM task_states WHERE status = 'RUNNING' AND concurrency_key = ?"
CLAIMS_OF_KEY = "SELECT COUNT(*) FROM planflow_limit_claims WHERE key = ? AND claimed_at > ?"
LOG_CLAIM = "INSERT INTO planflow_limit_claims (key, claimed_at) VALUES (?, ?)"
FORGET_CLAIMS = "DELETE FROM planflow_limit_claims WHERE key = ? AND claimed_at <= ?"
ANY_LIMIT = "SELECT EXISTS (SELECT 1 FROM planflow_limits)"


def limited_claim_sql(dialect: Dialect) -> str:
    """Claim the tasks of the id list ``?`` that are still claimable (parameters: worker, lease end,
    updated_at, ids)."""
    return (
        f"UPDATE task_states SET {claim_set(dialect, '?')} WHERE {dialect.in_ids('task_exec_id')}"
        f" AND (status = 'PENDING' OR (status = 'RUNNING' AND lease_expires_at < {dialect.at()})){RETURNING_ALL}"
    )


@dataclass(frozen=True, slots=True)
class Limit:
    """A key's limits as stored."""

    key: str
    concurrency: int | None
    rate_count: int | None
    rate_seconds: float | None


def choose(
    candidates: Sequence[Sequence[object]],
    limits: dict[str, Limit],
    running: dict[str, int],
    recent: dict[str, int],
) -> list[str]:
    """The candidates (rows of :func:`limited_candidates_sql`, in claim order) that the limits let through.

    A key's allowance is its concurrency less its RUNNING tasks, and its rate count less its claims in the
    window; a lapsed task taken over is RUNNING already (it uses no concurrency, but is a claim); an exhausted
    one is not handed out (it ends FAILED), so it uses neither.
    """
    chosen: list[str] = []
    left_running = {key: (None if lim.concurrency is None else lim.concurrency - running.get(key, 0))
                    for key, lim in limits.items()}  # fmt: skip
    left_rate = {key: (None if lim.rate_count is None else lim.rate_count - recent.get(key, 0))
                 for key, lim in limits.items()}  # fmt: skip
    for row in candidates:
        task_exec_id, key, lapsed, exhausted = str(row[0]), row[1], bool(row[2]), bool(row[3])
        if exhausted or not isinstance(key, str) or key not in limits:
            chosen.append(task_exec_id)
            continue
        conc, rate = left_running[key], left_rate[key]
        if (conc is not None and not lapsed and conc <= 0) or (rate is not None and rate <= 0):
            continue
        if conc is not None and not lapsed:
            left_running[key] = conc - 1
        if rate is not None:
            left_rate[key] = rate - 1
        chosen.append(task_exec_id)
    return chosen


def fail_sql(dialect: Dialect) -> str:
    """Back to PENDING due at now + ``?`` seconds (the database's clock) while attempts remain, else FAILED;
    fenced by the holder. Parameters: the retry delay's, last_error, updated_at, id, worker."""
    return (
        f"UPDATE task_states SET status = CASE WHEN {EXHAUSTED} THEN 'FAILED' ELSE 'PENDING' END,"
        f" run_after = CASE WHEN {EXHAUSTED} THEN run_after ELSE {dialect.at(plus_seconds=True)} END,"
        f" claimed_by = CASE WHEN {EXHAUSTED} THEN claimed_by END, lease_expires_at = NULL,"
        " last_error = ?, version = version + 1, updated_at = ?"
        f" WHERE task_exec_id = ? AND claimed_by = ? AND status = 'RUNNING'{RETURNING_ALL}"
    )


#: The attempt of a task a worker holds (``fail`` computes its backoff from it).
HELD_ATTEMPT = (
    "SELECT attempt FROM task_states WHERE task_exec_id = ? AND claimed_by = ? AND status = 'RUNNING'"
)


def cancel_sql(dialect: Dialect, where: str) -> str:
    """CANCEL the non-terminal tasks matching ``where`` (SQL with its own parameters, e.g.
    ``dialect.in_ids('task_exec_id')`` for ``tasks.cancel``, ``workflow_exec_id = ?`` for ``workflows.cancel``):
    claims revoked (the holder's heartbeats report the task lost, its version is stale, and its next write
    learns that the task was canceled), ``last_error`` ``{"code": "CANCELED", "message": reason}``.
    Parameters: the reason, updated_at, then ``where``'s."""
    return (
        "UPDATE task_states SET status = 'CANCELED', claimed_by = NULL, lease_expires_at = NULL,"
        f" last_error = {dialect.json_object}('code', 'CANCELED', 'message', CAST(? AS TEXT)),"
        f" version = version + 1, updated_at = ? WHERE {where} AND status IN {LIVE}{RETURNING_ALL}"
    )


SET_LIMIT = (
    "INSERT INTO planflow_limits (key, concurrency, rate_count, rate_seconds, updated_at) VALUES (?, ?, ?, ?, ?)"
    " ON CONFLICT (key) DO UPDATE SET concurrency = excluded.concurrency, rate_count = excluded.rate_count,"
    " rate_seconds = excluded.rate_seconds, updated_at = excluded.updated_at"
)
DROP_LIMIT = "DELETE FROM planflow_limits WHERE key = ?"

#: The holder of a dedup key (at most one, by the unique index).
DEDUP_HOLDER = f"{TASK_STATES.select} WHERE dedup_key = ? AND status IN {LIVE}"


def stats_sql(where: str, dialect: Dialect) -> list[str]:
    """The statements of ``queue_stats`` (parameters: the filter's each, the first and last none more):
    counts by status; due, delayed and the oldest due time with the clock; dead."""
    at = dialect.at()
    pending = f"status = 'PENDING'{where}"
    return [
        f"SELECT status, COUNT(*) FROM task_states WHERE 1 = 1{where} GROUP BY status",
        f"SELECT (SELECT COUNT(*) FROM task_states WHERE {pending} AND {due(dialect)}),"
        f" (SELECT COUNT(*) FROM task_states WHERE {pending} AND run_after > {at}),"
        f" (SELECT MIN({DUE}) FROM task_states WHERE {pending} AND {due(dialect)}), {at}",
        f"SELECT COUNT(*) FROM task_states WHERE status = 'FAILED' AND attempt >= max_attempts{where}",
    ]


def keys_sql(dialect: Dialect, where: str = "") -> str:
    """RUNNING tasks per concurrency key, with each key's limits and its claims within its rate window (the
    wall clock's). The figures are store-wide, as limits are; which keys are listed follows the filter:
    without one (``where`` empty), every key with RUNNING tasks and every limited key; with one, the keys of
    the live (PENDING or RUNNING) tasks it selects. Parameters: the filter's."""
    if where:
        keys = (
            "SELECT DISTINCT concurrency_key AS key FROM task_states WHERE status IN ('PENDING', 'RUNNING')"
            f" AND concurrency_key IS NOT NULL{where}"
        )
    else:
        keys = (
            "SELECT DISTINCT concurrency_key AS key FROM task_states WHERE status = 'RUNNING'"
            " AND concurrency_key IS NOT NULL UNION SELECT key FROM planflow_limits"
        )
    return (
        "SELECT k.key, (SELECT COUNT(*) FROM task_states r WHERE r.status = 'RUNNING' AND r.concurrency_key = k.key),"
        " l.concurrency, l.rate_count, l.rate_seconds, (SELECT COUNT(*) FROM planflow_limit_claims c"
        f" WHERE c.key = k.key AND c.claimed_at > {dialect.wall_clock_minus('l.rate_seconds')}) FROM"
        f" ({keys}) k LEFT JOIN planflow_limits l ON l.key = k.key ORDER BY k.key"
    )


def seconds(value: float | timedelta) -> float:
    """A number of seconds given as a number or a ``timedelta``."""
    return value.total_seconds() if isinstance(value, timedelta) else float(value)
