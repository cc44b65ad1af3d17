"""The task repository, written once for every SQL driver and both APIs (SQL text from the driver's Dialect)."""

from __future__ import annotations

import random
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Sequence
from datetime import datetime, timedelta
from typing import cast

from planflow.errors import (
    ConflictError,
    DuplicateError,
    NotFoundError,
    TaskCanceledError,
    TransactionRequiredError,
    ValidationError,
)
from planflow.infra.inputs import check_aware, check_optional_id, check_version, dump_json
from planflow.infra.sql import queue
from planflow.infra.sql.codec import loads, now, stored_meta
from planflow.infra.sql.database import Connection, Database, ForeignKeyViolation, Row
from planflow.infra.sql.dialect import Dialect
from planflow.infra.sql.history import HistoryReader
from planflow.infra.sql.idempotency import IdempotencyKeys
from planflow.infra.sql.queue import RETURNING_ALL, claim_params, claim_sql
from planflow.infra.sql.statements import (
    batches,
    delete_one,
    every_item,
    listing,
    missing_or_conflict,
    page,
    where_clause,
    write_idempotent,
)
from planflow.infra.sql.tables import TASK_STATES
from planflow.infra.sql.usage import UsageMerger
from planflow.models import (
    Heartbeat,
    HistoryRecord,
    JsonObject,
    KeyStats,
    Order,
    Page,
    ProgressInfo,
    QueueStats,
    RetryBackoff,
    TaskFilter,
    TaskState,
    TaskStatus,
    TaskTreeNode,
    UsageSummary,
)

TABLE = TASK_STATES
ORDER = "ORDER BY created_at, task_exec_id"
WRITTEN = TABLE.written
_SET = ", ".join(f"{c} = excluded.{c}" for c in WRITTEN[1:])

UPSERT = (
    f"INSERT INTO task_states ({', '.join(WRITTEN)}, version, created_at, updated_at) "
    f"VALUES ({', '.join('?' for _ in WRITTEN)}, 1, ?, ?) "
    f"ON CONFLICT (task_exec_id) DO UPDATE SET {_SET}, version = task_states.version + 1, "
    "updated_at = excluded.updated_at"
)
#: What a write returns besides the caller's values: what the repository and the claims keep.
STORED = "version, created_at, claimed_by, lease_expires_at, attempt"
UPSERT_RETURNING = UPSERT + f" RETURNING {STORED}"
IMPORT = (
    f"INSERT INTO task_states ({TABLE.select_list}) VALUES ({', '.join('?' for _ in TABLE.names)}) "
    f"ON CONFLICT (task_exec_id) DO UPDATE SET {', '.join(f'{c} = excluded.{c}' for c in TABLE.names[1:])}"
)
UPDATE_VERSIONED = (
    f"UPDATE task_states SET {', '.join(f'{c} = ?' for c in WRITTEN[1:])}, "
    f"version = version + 1, updated_at = ? WHERE task_exec_id = ? AND version = ? RETURNING {STORED}"
)
#: Indexed columns that a task keeps through almost every write. SQLite rewrites the index entries of every
#: column in an UPDATE's SET list, changed or not; so there (``Dialect.split_update``) an optimistic update
#: first sets only the other columns, matching these in its WHERE clause, and runs the full
#: ``UPDATE_VERSIONED`` only when that matched no row (one of these changed, or the version is stale).
#: Measured on SQLite: 10 000 ``update_state`` calls 2.3x faster, writing a quarter of the WAL.
STABLE_COLUMNS = (
    "task_id",
    "workflow_exec_id",
    "workflow_id",
    "execution_type",
    "parent_state_id",
    "agent_id",
    "action_id",
    "tool_id",
)
_STABLE_AT = [WRITTEN.index(c) for c in STABLE_COLUMNS]
_CHANGING_AT = [i for i, c in enumerate(WRITTEN) if i > 0 and c not in STABLE_COLUMNS]


def update_in_place_sql(dialect: Dialect) -> str:
    """The optimistic UPDATE that leaves ``STABLE_COLUMNS`` and their indexes alone (see ``in_place_params``)."""
    return (
        f"UPDATE task_states SET {', '.join(f'{WRITTEN[i]} = ?' for i in _CHANGING_AT)}, "
        "version = version + 1, updated_at = ? WHERE task_exec_id = ? AND version = ? AND "
        f"{' AND '.join(dialect.same(c) for c in STABLE_COLUMNS)} RETURNING {STORED}"
    )


def in_place_params(values: Sequence[object], updated_at: object, expected_version: int) -> list[object]:
    """The parameters of :func:`update_in_place_sql`, from a state's written values (``WRITTEN`` order)."""
    return [
        *(values[i] for i in _CHANGING_AT),
        updated_at,
        values[0],
        expected_version,
        *(values[i] for i in _STABLE_AT),
    ]


def versioned_params(values: Sequence[object], updated_at: object, expected_version: int) -> list[object]:
    """The parameters of ``UPDATE_VERSIONED``, from a state's written values (``WRITTEN`` order)."""
    return [*values[1:], updated_at, values[0], expected_version]


SELECT = TABLE.select
GET = f"{SELECT} WHERE task_exec_id = ?"
#: What ``missing_or_conflict`` reads after a versioned write matched nothing (the raw benchmarks run it too).
GET_VERSION = "SELECT version FROM task_states WHERE task_exec_id = ?"
STORED_VERSION = f"SELECT {STORED} FROM task_states WHERE task_exec_id = ?"
IN_WORKFLOW = f"{SELECT} WHERE workflow_exec_id = ? {ORDER}"
#: The newest state per task id of a workflow execution, by ``created_at``.
LATEST_IN_WORKFLOW = (
    f"SELECT {TABLE.select_list} FROM (SELECT {TABLE.select_list}, ROW_NUMBER() OVER "
    "(PARTITION BY task_id ORDER BY created_at DESC, task_exec_id DESC) AS planflow_rank "
    "FROM task_states WHERE workflow_exec_id = ?) newest WHERE planflow_rank = 1 ORDER BY created_at, task_exec_id"
)
CHILDREN = f"{SELECT} WHERE parent_state_id = ? {ORDER}"
CHILD_BY_TASK = (
    f"{SELECT} WHERE parent_state_id = ? AND task_id = ? ORDER BY created_at DESC, task_exec_id DESC LIMIT 1"
)
CHILDREN_OUTPUTS = (
    f"SELECT task_id, output FROM task_states WHERE parent_state_id = ? AND output IS NOT NULL {ORDER}"
)
PROGRESS = "SELECT status, COUNT(*) FROM task_states WHERE parent_state_id = ? GROUP BY status"
WORKFLOW_EXISTS = "SELECT 1 FROM workflow_states WHERE workflow_exec_id = ?"
TASK_EXISTS = "SELECT 1 FROM task_states WHERE task_exec_id = ?"
# A task has one parent, so a walk down from the root can only come back to the root itself: excluding the root
# from the recursive step is the whole cycle guard, with no path to carry. The nodes come depth-first (pre-order:
# each task before its children, children by created_at then task_exec_id): the walk down finds the subtree, each
# task is numbered among its siblings, and a second walk builds each task's path of those numbers (11 digits a
# level, so that text order is tree order under any collation) to sort by.
TREE = (
    "WITH RECURSIVE tree(task_exec_id, depth) AS ("
    " SELECT task_exec_id, 0 FROM task_states WHERE task_exec_id = ?"
    " UNION ALL"
    " SELECT c.task_exec_id, tree.depth + 1 FROM task_states c JOIN tree ON c.parent_state_id = tree.task_exec_id"
    " WHERE tree.depth < ? AND c.task_exec_id <> ?"
    "), ranked(task_exec_id, parent_state_id, depth, step) AS ("
    " SELECT t.task_exec_id, t.parent_state_id, tree.depth, CAST(10000000000 + ROW_NUMBER() OVER"
    " (PARTITION BY t.parent_state_id ORDER BY t.created_at, t.task_exec_id) AS TEXT)"
    " FROM tree JOIN task_states t ON t.task_exec_id = tree.task_exec_id"
    "), walk(task_exec_id, depth, path) AS ("
    " SELECT task_exec_id, depth, '' FROM ranked WHERE depth = 0"
    " UNION ALL"
    " SELECT r.task_exec_id, r.depth, walk.path || r.step FROM ranked r"
    " JOIN walk ON r.parent_state_id = walk.task_exec_id AND r.depth = walk.depth + 1"
    f") SELECT {TABLE.prefixed('t')}, walk.depth"
    " FROM walk JOIN task_states t ON t.task_exec_id = walk.task_exec_id"
    " ORDER BY walk.path"
)
_DEPTH_AT = len(TABLE.names)

RELEASE = (
    "UPDATE task_states SET status = 'PENDING', claimed_by = NULL, lease_expires_at = NULL, version = version + 1, "
    f"updated_at = ? WHERE task_exec_id = ? AND claimed_by = ? AND status = 'RUNNING'{RETURNING_ALL}"
)
HOLDER = "SELECT claimed_by, status FROM task_states WHERE task_exec_id = ?"

# Leases are set and compared on the database's clock (``Dialect.at``): every worker of every machine reads the
# same time, whatever its own clock says.


def heartbeat_sql(dialect: Dialect) -> str:
    """Extend the leases ``worker`` holds among an id list to now plus ``?`` seconds.

    Parameters: the lease (``Dialect.at_params``), the ids, the worker.
    """
    return (
        f"UPDATE task_states SET lease_expires_at = {dialect.at(plus_seconds=True)} "
        f"WHERE {dialect.in_ids('task_exec_id')} AND claimed_by = ? AND status = 'RUNNING' "
        "RETURNING task_exec_id, lease_expires_at"
    )


def work_sql(where: str, dialect: Dialect) -> str:
    """Whether work matching ``where`` is claimable now, when the next lease (of any task) lapses or the next
    delayed task matching ``where`` becomes due, and the time now, all by the database's clock (the wait until
    then is the difference of the last two).

    The next lapse is not narrowed to ``where``: one index probe rather than a read of every matching running
    task. A waiter woken by the lapse of a task it cannot claim looks again and waits on.

    Parameters: the filter's, the filter's, the filter's.
    """
    by_lease, at = dialect.by_lease, dialect.at()
    return (
        f"SELECT EXISTS (SELECT 1 FROM task_states WHERE status = 'PENDING' AND {queue.due(dialect)}{where}),"
        f" {queue.any_lapsed(dialect)} AND EXISTS (SELECT 1 FROM {by_lease} WHERE status = 'RUNNING'"
        f" AND lease_expires_at < {at}{where}),"
        f" (SELECT MIN(lease_expires_at) FROM {by_lease} WHERE status = 'RUNNING' AND lease_expires_at >= {at}),"
        f" {at}, (SELECT MIN({queue.DUE}) FROM task_states WHERE status = 'PENDING' AND {queue.DUE} > {at}"
        f" AND run_after > {at}{where})"
    )


#: Longest single wait of ``wait_for_work`` (it loops until its deadline): bounded, so that a huge timeout
#: never reaches a blocking call that cannot take it.
MAX_WAIT_SLICE = 3600.0


def _seconds(lease: float | timedelta) -> float:
    return lease.total_seconds() if isinstance(lease, timedelta) else float(lease)


def _claim_order(state: TaskState) -> tuple[int, object, str]:
    return (-state.priority, state.run_after or state.created_at, state.task_exec_id)


#: Attempts of an enqueue whose dedup key's holder keeps finishing under it.
_DEDUP_TRIES = 5
#: The backoff of ``fail`` when the caller gives none.
DEFAULT_BACKOFF = RetryBackoff()
_KEY_AT = TABLE.names.index("concurrency_key")
_STATUS_AT = TABLE.names.index("status")


def own_parent(values: Sequence[object]) -> None:
    """Refuse a task that names itself as its parent (its written values, ``WRITTEN`` order)."""
    if values[WRITTEN.index("parent_state_id")] == values[0]:
        raise ValidationError(f"task {values[0]!r} cannot be its own parent")


def verbatim_params(state: TaskState, dialect: Dialect) -> list[object]:
    """Every column of ``state`` as given (version, timestamps and claim included), in ``TABLE.names`` order:
    what an import or a fork writes."""
    values = TABLE.params(state, dialect.json_param, dialect.ts_param)
    own_parent(values)
    version, created, updated = stored_meta(
        state.version, state.created_at, state.updated_at, f"task {state.task_exec_id!r}"
    )
    ts = dialect.ts_param
    lease = state.lease_expires_at
    by_name = dict(zip(WRITTEN, values, strict=True))
    by_name |= {
        "version": version,
        "created_at": ts(created),
        "updated_at": ts(updated),
        "claimed_by": check_optional_id(state.claimed_by, "claimed_by"),
        "lease_expires_at": None if lease is None else ts(check_aware(lease, "lease_expires_at")),
        "attempt": check_version(state.attempt, "attempt"),
    }
    return [by_name[name] for name in TABLE.names]


CANCELED_REASON = "SELECT status, last_error FROM task_states WHERE task_exec_id = ?"


async def canceled_or(conn: Connection, task_exec_id: str, error: Exception) -> Exception:
    """``error`` (a write's version conflict), or a :class:`TaskCanceledError` when the task was canceled since:
    what a holder fenced by ``workflows.cancel`` learns at its next write."""
    if not isinstance(error, ConflictError):
        return error
    row = await conn.fetch_one(CANCELED_REASON, [task_exec_id])
    if row is None or row[0] != TaskStatus.CANCELED.value:
        return error
    why: object = loads(row[1]) if row[1] is not None else None
    reason = cast("dict[str, object]", why).get("message") if isinstance(why, dict) else None
    return TaskCanceledError(
        f"task state {task_exec_id!r} was canceled{f' ({reason})' if reason else ''}: {error}",
        expected=error.expected,
        actual=error.actual,
    )


class SqlTaskRepository:
    """TaskRepository over a :class:`Database` (see ``planflow.protocols.TaskRepository`` for the contract)."""

    def __init__(self, database: Database, dialect: Dialect, keys: IdempotencyKeys) -> None:
        self._db = database
        self._dialect = dialect
        self._by_ids = f"{SELECT} WHERE {dialect.in_ids('task_exec_id')} {ORDER}"
        self._get_for_update = GET + dialect.for_update
        self._update_in_place = update_in_place_sql(dialect) if dialect.split_update else None
        self._heartbeat = heartbeat_sql(dialect)
        self._usage = UsageMerger(database, dialect, "task_states", "task_exec_id", "task", keys=keys)
        #: Claiming statements by filter clause (a handful: one per combination of filter fields in use).
        self._claims: dict[str, str] = {}
        self._limited_claims: dict[str, str] = {}
        self._limits_sql = queue.limits_sql(dialect)
        self._limited_claim = queue.limited_claim_sql(dialect)
        self._fail = queue.fail_sql(dialect)
        self._cancel = queue.cancel_sql(dialect, dialect.in_ids("task_exec_id"))
        #: Whether the last claim found limits in the store: claims then go straight to the limited claim.
        self._limited = False
        self._filters: dict[TaskFilter | None, tuple[str, tuple[object, ...]]] = {}
        self._history = HistoryReader(database, dialect)

    # Writes -----------------------------------------------------------------------------------------------

    def _values(self, state: TaskState) -> list[object]:
        """The checked values of the columns a caller writes (``WRITTEN`` order)."""
        values = TABLE.params(state, self._dialect.json_param, self._dialect.ts_param)
        own_parent(values)
        return values

    async def upsert_state(self, state: TaskState) -> TaskState:
        values = self._values(state)
        stamp = self._dialect.ts_param(now())
        # A new task whose dedup_key a live task holds collides on the unique index: the holder is returned.
        # Should the holder finish between the collision and the read, the write is tried again.
        for _ in range(_DEDUP_TRIES):
            try:
                row = await self._db.write(
                    UPSERT_RETURNING, [*values, stamp, stamp], result="one", reread=self._stored(values[0])
                )
            except ForeignKeyViolation as exc:
                raise await self._missing_reference([state]) from exc
            except DuplicateError as exc:
                holder = await self._dedup_holder(state, exc)
                if holder is not None:
                    return holder
                continue
            return self._as_stored(state, row, stamp)
        raise ConflictError(f"task {state.task_exec_id!r}: dedup_key {state.dedup_key!r} is contended")

    async def _dedup_holder(self, state: TaskState, exc: DuplicateError) -> TaskState | None:
        """The live task holding ``state``'s dedup key, after ``state``'s write collided with it; ``None`` if
        none holds it any more. A stored task given a held key cannot take it (``ConflictError``)."""
        key = state.dedup_key
        if key is None:
            raise ConflictError(f"task {state.task_exec_id!r}: {exc}") from exc

        async def work(conn: Connection) -> tuple[Row | None, Row | None]:
            return (
                await conn.fetch_one(queue.DEDUP_HOLDER, [key]),
                await conn.fetch_one(TASK_EXISTS, [state.task_exec_id]),
            )

        holder, exists = await self._db.read(work)
        if holder is not None and exists is not None:
            raise ConflictError(
                f"task {state.task_exec_id!r}: dedup_key {key!r} is held by the live task {holder[0]!r}"
            ) from exc
        return None if holder is None else TABLE.from_row(holder, self._dialect.load_ts)

    async def update_state(self, state: TaskState, expected_version: int) -> TaskState:
        values = self._values(state)
        stamp = self._dialect.ts_param(now())
        in_place = self._update_in_place
        try:
            if in_place is None:
                row = await self._db.write(
                    UPDATE_VERSIONED,
                    versioned_params(values, stamp, expected_version),
                    result="one",
                    reread=self._stored(values[0]),
                )
            else:

                async def work(conn: Connection) -> Row | None:
                    row = await conn.fetch_one(in_place, in_place_params(values, stamp, expected_version))
                    if row is None:
                        # A stable column changed, or the state is stale or missing: the full statement writes in
                        # the first case, and the version read after it tells the others apart.
                        row = await conn.fetch_one(
                            UPDATE_VERSIONED, versioned_params(values, stamp, expected_version)
                        )
                    return row

                row = await self._db.run(work, single_statement=True)
        except ForeignKeyViolation as exc:
            raise await self._missing_reference([state]) from exc
        except DuplicateError as exc:
            if await self._dedup_holder(state, exc) is None:
                raise ConflictError(f"task {state.task_exec_id!r}: {exc}") from exc
            raise  # pragma: no cover - _dedup_holder raised for a stored task
        if row is None:

            async def explain(conn: Connection) -> Exception:
                found = await missing_or_conflict(
                    conn, TABLE, state.task_exec_id, expected_version, "task state"
                )
                return await canceled_or(conn, state.task_exec_id, found)

            raise await self._db.read(explain)
        return self._as_stored(state, row, stamp)

    def _stored(self, task_exec_id: object) -> Callable[[Connection], Awaitable[Row | None]]:
        """Reads ``STORED`` as stored: what a write returns when its reply was lost."""

        async def reread(conn: Connection) -> Row | None:
            return await conn.fetch_one(STORED_VERSION, [task_exec_id])

        return reread

    def _as_stored(self, state: TaskState, row: Row | None, stamp: object) -> TaskState:
        assert row is not None
        version, created, holder, lease, attempt = row
        load_ts = self._dialect.load_ts
        return state.evolve(
            version=version,
            created_at=load_ts(created),
            updated_at=load_ts(stamp),
            claimed_by=holder,
            lease_expires_at=None if lease is None else load_ts(lease),
            attempt=attempt,
        )

    async def bulk_upsert(self, states: Iterable[TaskState]) -> int:
        def to_params(state: TaskState) -> list[object]:
            stamp = self._dialect.ts_param(now())
            return [*self._values(state), stamp, stamp]

        return await self._write_batches(states, to_params, UPSERT, defer_foreign_keys=False)

    async def import_states(self, states: Iterable[TaskState]) -> int:
        """Write states verbatim (version and timestamps as given), upserting by ``task_exec_id``.

        For copying between stores: within a batch a child may come before its parent (foreign keys are
        checked at the end of the batch's transaction); across batches parents must come first.

        Returns:
            How many states were written.

        Raises:
            ValidationError: bad fields, a version below 1, naive or missing timestamps, unknown references.
        """
        return await self._write_batches(states, self._verbatim_params, IMPORT, defer_foreign_keys=True)

    def _verbatim_params(self, state: TaskState) -> list[object]:
        return verbatim_params(state, self._dialect)

    async def _write_batches(
        self,
        states: Iterable[TaskState],
        to_params: Callable[[TaskState], list[object]],
        sql: str,
        *,
        defer_foreign_keys: bool,
    ) -> int:
        """Write ``states`` with ``sql``, one transaction and one ``execute_many`` per batch.

        Where the database streams parameters (Postgres), each state is checked and serialised as the pipeline
        asks for it, overlapping the server's work on the rows already sent (10 000 states 24% faster); a state
        that fails its checks then stops its batch, whose transaction is rolled back. Elsewhere (SQLite) the
        batch's parameters are built before its transaction begins, which is faster in process and holds the
        write lock for less time. Either way nothing of a batch with an invalid state is stored.
        """
        written = 0
        stream = self._db.streams_parameters
        defer = self._dialect.defer_foreign_keys if defer_foreign_keys else ""
        for batch in batches(states):
            built = None if stream else [to_params(state) for state in batch]

            async def work(
                conn: Connection, batch: list[TaskState] = batch, built: list[list[object]] | None = built
            ) -> None:
                if defer:
                    await conn.execute(defer)
                await conn.execute_many(sql, map(to_params, batch) if built is None else built)

            try:
                await self._db.run(work)
            except ForeignKeyViolation as exc:
                raise await self._missing_reference(batch) from exc
            written += len(batch)
        return written

    async def _missing_reference(self, batch: list[TaskState]) -> ValidationError:
        """Name the reference a failed write lacked (the engines do not say which).

        Runs after the failed write was rolled back, on a fresh read or the caller's transaction: Postgres
        refuses every statement of a transaction after an error, until it is rolled back.
        """
        ids = {state.task_exec_id for state in batch}

        async def work(conn: Connection) -> ValidationError:
            for state in batch:
                if await conn.fetch_one(WORKFLOW_EXISTS, [state.workflow_exec_id]) is None:
                    return ValidationError(
                        f"task {state.task_exec_id!r} references unknown workflow_exec_id "
                        f"{state.workflow_exec_id!r}"
                    )
                parent = state.parent_state_id
                if (
                    parent is not None
                    and parent not in ids
                    and await conn.fetch_one(TASK_EXISTS, [parent]) is None
                ):
                    return ValidationError(
                        f"task {state.task_exec_id!r} references unknown parent_state_id {parent!r}"
                    )
            return ValidationError("a task of the batch references an unknown workflow or parent")

        return await self._db.read(work)

    async def merge_usage(
        self, task_exec_id: str, usage: UsageSummary, *, idempotency_key: str | None = None
    ) -> UsageSummary:
        return await self._usage.merge(task_exec_id, usage, idempotency_key)

    async def delete_state(self, task_exec_id: str) -> None:
        await delete_one(self._db, TABLE, task_exec_id, "task state")

    # Claims -----------------------------------------------------------------------------------------------

    def _filter_and(self, filter: TaskFilter | None) -> tuple[str, list[object]]:
        """The conditions of ``filter`` (``''`` or ``' AND ...'``) and their parameters, remembered per filter.

        Workers claim with the same filter over and over; a filter is frozen, so its clause is made once.
        """
        try:
            found, remember = self._filters.get(filter), True
        except TypeError:  # statuses given as a list: not hashable, not remembered
            found, remember = None, False
        if found is None:
            where, params = where_clause(TABLE, filter, self._dialect.ts_param)
            found = (where.replace(" WHERE ", " AND ", 1), tuple(params))
            if remember:
                if len(self._filters) >= 256:
                    self._filters.clear()
                self._filters[filter] = found
        return found[0], list(found[1])

    def _claim_and(self, filter: TaskFilter | None) -> tuple[str, list[object]]:
        """The conditions of a claim: the filter's, and no composite parent unless it names execution types."""
        where, params = self._filter_and(filter)
        return (where if queue.names_execution_type(filter) else where + queue.NOT_COMPOSITE), params

    async def claim(
        self, filter: TaskFilter | None = None, *, worker: str, limit: int = 1, lease: float | timedelta
    ) -> list[TaskState]:
        where, params = self._claim_and(filter)
        seconds = _seconds(lease)
        if not self._limited:
            rows = await self._claim_unlimited(where, params, worker=worker, limit=limit, lease=seconds)
            if rows:
                return self._handed_out(rows, worker)
        # Nothing claimed: no work, or limits exist (the one-statement claim then takes nothing).
        rows, self._limited = await self._claim_limited(
            where, params, worker=worker, limit=limit, lease=seconds
        )
        return self._handed_out(rows, worker)

    def _handed_out(self, rows: list[Row], worker: str) -> list[TaskState]:
        """The states a claim's rows hand to ``worker`` (not those it ended FAILED), in claim order."""
        from_row, load_ts = TABLE.from_row, self._dialect.load_ts
        claimed = [from_row(row, load_ts) for row in rows]
        claimed = [s for s in claimed if s.status is TaskStatus.RUNNING and s.claimed_by == worker]
        if len(claimed) > 1:  # RETURNING follows no order
            claimed.sort(key=_claim_order)
        return claimed

    async def _claim_unlimited(
        self, where: str, params: list[object], *, worker: str, limit: int, lease: float
    ) -> list[Row]:
        stamp = now()
        sql = self._claims.get(where)
        if sql is None:
            sql = self._claims[where] = claim_sql(where, self._dialect)
        args = claim_params(self._dialect, params, limit=limit, worker=worker, lease=lease, stamp=stamp)
        return await self._db.write(
            sql, args, result="all", reread=self._claimed(worker, stamp), evident=True
        )

    def _claimed(self, worker: str, stamp: datetime) -> Callable[[Connection], Awaitable[list[Row]]]:
        marked = self._dialect.ts_param(stamp)

        async def reread(conn: Connection) -> list[Row]:
            # The reply was lost after the claim committed: what this claim took carries its worker and the
            # claim's own updated_at (the caller's clock, to the microsecond) exactly.
            return await conn.fetch_all(f"{SELECT} WHERE claimed_by = ? AND updated_at = ?", [worker, marked])

        return reread

    async def _claim_limited(
        self, where: str, params: list[object], *, worker: str, limit: int, lease: float
    ) -> tuple[list[Row], bool]:
        """A claim in one transaction that obeys the limits: candidates (locked), then the limits of their
        keys (locked, so that claimers of a key count one after another), exact counts, the claim, the rate log.

        Returns the claimed rows and whether any limit exists.
        """
        dialect = self._dialect
        candidates_sql = self._limited_claims.get(where)
        if candidates_sql is None:
            candidates_sql = self._limited_claims[where] = queue.limited_candidates_sql(where, dialect)
        stamp = now()
        updated = dialect.ts_param(stamp)

        async def work(conn: Connection) -> tuple[list[Row], bool]:
            found = await conn.fetch_all(candidates_sql, [*params, limit, *params, limit, limit])
            any_limit = await conn.fetch_one(queue.ANY_LIMIT)
            limited = bool(any_limit and any_limit[0])
            if not found:
                return [], limited
            keys = sorted({row[1] for row in found if row[1] is not None})
            limits: dict[str, queue.Limit] = {}
            if keys and limited:
                for key, concurrency, rate_count, rate_seconds in await conn.fetch_all(
                    self._limits_sql, [dialect.ids_param(keys)]
                ):
                    limits[key] = queue.Limit(key, concurrency, rate_count, rate_seconds)
            clock_row = await conn.fetch_one(f"SELECT {dialect.wall_clock}")
            assert clock_row is not None
            clock = dialect.load_ts(clock_row[0])
            running: dict[str, int] = {}
            recent: dict[str, int] = {}
            for key, lim in limits.items():
                if lim.concurrency is not None:
                    counted = await conn.fetch_one(queue.RUNNING_OF_KEY, [key])
                    running[key] = int(counted[0]) if counted else 0
                if lim.rate_seconds is not None:
                    cutoff = dialect.ts_param(clock - timedelta(seconds=lim.rate_seconds))
                    await conn.execute(queue.FORGET_CLAIMS, [key, cutoff])
                    counted = await conn.fetch_one(queue.CLAIMS_OF_KEY, [key, cutoff])
                    recent[key] = int(counted[0]) if counted else 0
            chosen = queue.choose(found, limits, running, recent)
            if not chosen:
                return [], limited
            lease_end = dialect.ts_param(clock + timedelta(seconds=lease))
            rows = await conn.fetch_all(
                self._limited_claim, [worker, lease_end, updated, dialect.ids_param(chosen)]
            )
            logged = [
                [row[_KEY_AT], dialect.ts_param(clock)]
                for row in rows
                if row[_KEY_AT] in limits
                and limits[row[_KEY_AT]].rate_count is not None
                and row[_STATUS_AT] == "RUNNING"
            ]
            if logged:
                await conn.execute_many(queue.LOG_CLAIM, logged)
            return rows, limited

        return await self._db.run(work)

    async def heartbeat(
        self, task_exec_ids: Sequence[str], *, worker: str, lease: float | timedelta
    ) -> Heartbeat:
        if not task_exec_ids:
            return Heartbeat(held=[], lost=[], lease_expires_at=None)
        wanted = list(dict.fromkeys(task_exec_ids)) if len(task_exec_ids) > 1 else list(task_exec_ids)
        dialect = self._dialect
        params = [dialect.seconds_param(_seconds(lease)), dialect.ids_param(wanted), worker]
        # Idempotent: a heartbeat whose reply was lost is sent again, which extends the same leases a little
        # further (from its own now).
        rows = await self._db.write(self._heartbeat, params, result="all", idempotent=True)
        if len(rows) == len(wanted):  # every lease held: the usual case
            return Heartbeat(
                held=wanted, lost=[], lease_expires_at=dialect.load_ts(max(row[1] for row in rows))
            )
        kept = {row[0]: row[1] for row in rows}
        ends = [dialect.load_ts(end) for end in kept.values()]
        return Heartbeat(
            held=[task_exec_id for task_exec_id in wanted if task_exec_id in kept],
            lost=[task_exec_id for task_exec_id in wanted if task_exec_id not in kept],
            lease_expires_at=max(ends) if ends else None,
        )

    async def release(self, task_exec_id: str, *, worker: str) -> TaskState:
        stamp = self._dialect.ts_param(now())

        async def reread(conn: Connection) -> Row | None:
            return await conn.fetch_one(GET, [task_exec_id])

        row = await self._db.write(RELEASE, [stamp, task_exec_id, worker], result="one", reread=reread)
        if row is None:
            raise await self._db.read(self._not_held(task_exec_id, worker))
        return TABLE.from_row(row, self._dialect.load_ts)

    async def fail(
        self,
        task_exec_id: str,
        *,
        worker: str,
        error: JsonObject,
        retry_in: float | timedelta | None = None,
        backoff: RetryBackoff | None = None,
    ) -> TaskState:
        dialect = self._dialect
        last_error = dialect.json_param(dump_json(error, "error"))
        updated = dialect.ts_param(now())
        policy = backoff or DEFAULT_BACKOFF

        async def work(conn: Connection) -> Row | None:
            held = await conn.fetch_one(queue.HELD_ATTEMPT + dialect.for_update, [task_exec_id, worker])
            if held is None:
                return None
            delay = (
                _seconds(retry_in) if retry_in is not None else policy.delay(int(held[0]), random.random())
            )
            return await conn.fetch_one(
                self._fail, [*dialect.at_params(delay), last_error, updated, task_exec_id, worker]
            )

        row = await self._db.run(work)
        if row is None:
            raise await self._db.read(self._not_held(task_exec_id, worker))
        return TABLE.from_row(row, dialect.load_ts)

    def _not_held(self, task_exec_id: str, worker: str) -> Callable[[Connection], Awaitable[Exception]]:
        async def explain(conn: Connection) -> Exception:
            found = await conn.fetch_one(HOLDER, [task_exec_id])
            if found is None:
                return NotFoundError(f"task state {task_exec_id!r} not found")
            holder, status = found
            return ConflictError(
                f"task state {task_exec_id!r} is not held by {worker!r} (status {status}, claimed by {holder!r})"
            )

        return explain

    async def cancel(self, task_exec_ids: Sequence[str], *, reason: str) -> list[TaskState]:
        if not task_exec_ids:
            return []
        wanted = list(dict.fromkeys(task_exec_ids))
        dialect = self._dialect
        marked = dialect.ts_param(now())

        async def work(conn: Connection) -> list[Row]:
            rows = await conn.fetch_all(self._cancel, [reason, marked, dialect.ids_param(wanted)])
            if rows and dialect.wake:
                await conn.execute(dialect.wake)
            return rows

        rows = await self._db.run(work)
        by_id = {
            state.task_exec_id: state for state in (TABLE.from_row(row, dialect.load_ts) for row in rows)
        }
        return [by_id[task_exec_id] for task_exec_id in wanted if task_exec_id in by_id]

    async def set_limit(
        self, key: str, *, concurrency: int | None = None, rate: tuple[int, float] | None = None
    ) -> None:
        if concurrency is None and rate is None:
            await write_idempotent(self._db, queue.DROP_LIMIT, [key])
            return
        count, per = (None, None) if rate is None else rate
        stamp = self._dialect.ts_param(now())
        await write_idempotent(self._db, queue.SET_LIMIT, [key, concurrency, count, per, stamp])

    async def queue_stats(self, filter: TaskFilter | None = None) -> QueueStats:
        where, params = self._filter_and(filter)
        dialect = self._dialect
        by_status, timing, dead = queue.stats_sql(where, dialect)

        async def work(conn: Connection) -> QueueStats:
            counts = {TaskStatus(row[0]): int(row[1]) for row in await conn.fetch_all(by_status, params)}
            found = await conn.fetch_one(timing, [*params, *params, *params])
            assert found is not None
            due, delayed, oldest, clock = found
            dead_row = await conn.fetch_one(dead, params)
            keys = [
                KeyStats(
                    key=row[0],
                    running=int(row[1]),
                    concurrency=row[2],
                    rate=None if row[3] is None else (int(row[3]), float(row[4])),
                    claims_in_window=int(row[5] or 0),
                )
                for row in await conn.fetch_all(queue.keys_sql(dialect, where), params)
            ]
            age = None
            if oldest is not None:
                age = max((dialect.load_ts(clock) - dialect.load_ts(oldest)).total_seconds(), 0.0)
            return QueueStats(
                counts=counts,
                due=int(due),
                delayed=int(delayed),
                oldest_due_age=age,
                dead=int(dead_row[0]) if dead_row else 0,
                keys=keys,
            )

        return await self._db.read(work)

    async def wait_for_work(self, filter: TaskFilter | None = None, *, timeout: float) -> bool:
        where, params = self._claim_and(filter)
        dialect = self._dialect
        sql = work_sql(where, dialect)
        deadline = time.monotonic() + timeout
        async with self._db.watch() as watcher:
            while True:
                # After watching began: work committed from now on wakes the watcher, earlier work is seen here.
                row = await self._db.fetch_one(sql, [*params, *params, *params])
                assert row is not None
                if row[0] or row[1]:
                    return True
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    return False
                for then in (row[2], row[4]):  # a lease lapses, or a delayed task is due: look again then
                    if then is not None:
                        until = (dialect.load_ts(then) - dialect.load_ts(row[3])).total_seconds()
                        remaining = min(remaining, max(until, 0.001))
                await watcher.wait(min(remaining, MAX_WAIT_SLICE))

    async def list_lapsed(self, filter: TaskFilter | None = None, *, limit: int = 100) -> list[TaskState]:
        where, params = self._filter_and(filter)
        dialect = self._dialect
        sql = (
            f"SELECT {TABLE.select_list} FROM {dialect.by_lease} WHERE status = 'RUNNING' "
            f"AND lease_expires_at < {dialect.at()}{where} ORDER BY lease_expires_at, task_exec_id LIMIT ?"
        )
        return await self._all(sql, [*params, limit])

    # Reads ------------------------------------------------------------------------------------------------

    async def _one(self, sql: str, params: Sequence[object]) -> TaskState | None:
        row = await self._db.fetch_one(sql, params)
        return None if row is None else TABLE.from_row(row, self._dialect.load_ts)

    async def _all(self, sql: str, params: Sequence[object]) -> list[TaskState]:
        rows = await self._db.fetch_all(sql, params)
        from_row, load_ts = TABLE.from_row, self._dialect.load_ts
        return [from_row(row, load_ts) for row in rows]

    async def get_state(self, task_exec_id: str) -> TaskState:
        state = await self._one(GET, [task_exec_id])
        if state is None:
            raise NotFoundError(f"task state {task_exec_id!r} not found")
        return state

    async def get_state_for_update(self, task_exec_id: str) -> TaskState:
        if not self._db.in_transaction:
            raise TransactionRequiredError("get_state_for_update must run inside provider.transaction()")
        state = await self._one(self._get_for_update, [task_exec_id])
        if state is None:
            raise NotFoundError(f"task state {task_exec_id!r} not found")
        return state

    async def list_states(
        self,
        filter: TaskFilter | None = None,
        *,
        limit: int = 100,
        cursor: str | None = None,
        order: Order = "asc",
    ) -> Page[TaskState]:
        return await self._page(filter, limit, cursor, order)

    async def _page(
        self, filter: TaskFilter | None, limit: int, cursor: str | None, order: Order = "asc"
    ) -> Page[TaskState]:
        sql, params = listing(
            TABLE, filter, cursor=cursor, order=order, limit=limit + 1, dialect=self._dialect
        )
        items = await self._all(sql, params)
        return page(items, limit, lambda s: s.created_at, lambda s: s.task_exec_id, order)

    async def iter_states(
        self, filter: TaskFilter | None = None, *, batch_size: int = 1000
    ) -> AsyncIterator[TaskState]:
        async for state in every_item(lambda cursor: self._page(filter, batch_size, cursor)):
            yield state

    async def count_states(self, filter: TaskFilter | None = None) -> int:
        where, params = where_clause(TABLE, filter, self._dialect.ts_param)
        row = await self._db.fetch_one(f"SELECT COUNT(*) FROM task_states{where}", params)
        assert row is not None
        return int(row[0])

    async def list_by_ids(self, task_exec_ids: Sequence[str]) -> list[TaskState]:
        if not task_exec_ids:
            return []
        return await self._all(self._by_ids, [self._dialect.ids_param(list(task_exec_ids))])

    async def list_tasks_in_workflow(self, workflow_exec_id: str) -> dict[str, TaskState]:
        # The newest state per task id, chosen in SQL (the index orders each task id's states newest first).
        return {state.task_id: state for state in await self._all(LATEST_IN_WORKFLOW, [workflow_exec_id])}

    async def _in_workflow_where(self, column: str, workflow_exec_id: str, value: str) -> list[TaskState]:
        return await self._all(
            f"{SELECT} WHERE workflow_exec_id = ? AND {column} = ? {ORDER}", [workflow_exec_id, value]
        )

    async def list_tasks_by_status(self, workflow_exec_id: str, status: TaskStatus) -> list[TaskState]:
        return await self._in_workflow_where("status", workflow_exec_id, status.value)

    async def list_tasks_by_agent(self, workflow_exec_id: str, agent_id: str) -> list[TaskState]:
        return await self._in_workflow_where("agent_id", workflow_exec_id, agent_id)

    async def list_tasks_by_tool(self, workflow_exec_id: str, tool_id: str) -> list[TaskState]:
        return await self._in_workflow_where("tool_id", workflow_exec_id, tool_id)

    async def list_children(self, parent_state_id: str) -> list[TaskState]:
        return await self._all(CHILDREN, [parent_state_id])

    async def get_child_by_task_id(self, parent_state_id: str, task_id: str) -> TaskState:
        state = await self._one(CHILD_BY_TASK, [parent_state_id, task_id])
        if state is None:
            raise NotFoundError(f"task {parent_state_id!r} has no child with task_id {task_id!r}")
        return state

    async def get_task_tree(self, root_state_id: str, *, max_depth: int = 100) -> list[TaskTreeNode]:
        rows = await self._db.fetch_all(TREE, [root_state_id, max_depth, root_state_id])
        from_row, load_ts = TABLE.from_row, self._dialect.load_ts
        return [TaskTreeNode(from_row(row, load_ts), row[_DEPTH_AT]) for row in rows]

    async def iter_task_tree(
        self, root_state_id: str, *, max_depth: int = 100
    ) -> AsyncIterator[TaskTreeNode]:
        # The recursive query of get_task_tree, its rows streamed from one snapshot: memory stays at a batch.
        from_row, load_ts = TABLE.from_row, self._dialect.load_ts
        async for rows in self._db.stream(TREE, [root_state_id, max_depth, root_state_id]):
            for row in rows:
                yield TaskTreeNode(from_row(row, load_ts), row[_DEPTH_AT])

    async def list_children_outputs(self, parent_state_id: str) -> dict[str, JsonObject]:
        rows = await self._db.fetch_all(CHILDREN_OUTPUTS, [parent_state_id])
        return {row[0]: loads(row[1]) for row in rows}

    async def get_progress_info(self, parent_state_id: str) -> ProgressInfo:
        rows = await self._db.fetch_all(PROGRESS, [parent_state_id])
        counts = {TaskStatus(row[0]): int(row[1]) for row in rows}
        return ProgressInfo(total=sum(counts.values()), status_counts=counts)

    # History ----------------------------------------------------------------------------------------------

    async def history(
        self, task_exec_id: str, *, after: int | None = None, limit: int = 100
    ) -> list[HistoryRecord]:
        return await self._history.of_entity("task", task_exec_id, after=after, limit=limit)
