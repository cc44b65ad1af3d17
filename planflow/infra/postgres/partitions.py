"""The run history's time partitions on PostgreSQL (schema 12): created ahead, dropped by ``purge``.

``planflow_history`` is range-partitioned by ``recorded_at`` in UTC days or weeks (the ``history_partition``
setting), with a DEFAULT partition that takes any record no range covers, so that no write ever fails for want of
a partition. Partitions are created ahead (the current period and the next ones, up to :data:`AHEAD`) by
``migrate`` and by ``purge``, never by a scheduler and never by a writer: creating one locks the parent table,
which a writer's trigger would do inside the writer's own transaction, queueing every other writer behind it.
A store that runs neither for longer than :data:`AHEAD` keeps working (the records go to the default partition);
the next ``migrate`` or ``purge`` moves them into the partition it creates for them.

``purge`` drops whole partitions that end before its bound, never a record of a workflow that survives:

1. a partition is detached only if none of its records belongs to an existing workflow that the purge will not
   delete (one indexed join, pruned to the partition); otherwise it is left, with a log line, and its records
   go row by row with their workflows, as on SQLite;
2. the workflows are purged row by row as before: their tasks and their records in the attached partitions go
   by cascade, none in the detached ones (their foreign key was dropped with the detach);
3. each detached partition is then dropped if no record of it belongs to a workflow that exists (one resumed
   meanwhile survives the purge); otherwise its records of workflows that are gone are deleted and it is
   attached again. A purge interrupted between 1 and 3 leaves a detached table that the next purge settles.

PostgreSQL refuses ``DETACH PARTITION ... CONCURRENTLY`` on a table with a DEFAULT partition, so the detach is a
plain one: a catalog change that takes ACCESS EXCLUSIVE on the parent for milliseconds. It runs under a
``lock_timeout`` of :data:`LOCK_TIMEOUT_MS`, so that writers never queue behind it for longer; a detach that
cannot get its lock is retried with backoff and, past the retries, left for the next purge.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Collection
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from planflow.config import HistoryPeriod
from planflow.errors import PlanflowError
from planflow.infra.sql.database import Connection, Database
from planflow.infra.sql.workflows import purgeable

logger = logging.getLogger("planflow.postgres")

#: How far past the current period partitions are created ahead.
AHEAD: dict[HistoryPeriod, timedelta] = {"day": timedelta(days=7), "week": timedelta(days=14)}
#: The longest a detach (or a creation) waits for its lock, and so the longest writers queue behind it.
LOCK_TIMEOUT_MS = 40
#: Serialises the creation of partitions between processes (``pg_advisory_xact_lock``).
_ENSURE_LOCK = 0x706C_6670_6172_74  # "plfpart"

_NAME = re.compile(r"^planflow_history_(?:before|(\d{8}))_(\d{8})$")
_EPOCH = datetime(1, 1, 1, tzinfo=UTC)

#: planflow's history tables of the current schema, and whether each is attached.
TABLES = (
    "SELECT c.relname, c.relispartition FROM pg_class c "
    "WHERE c.relnamespace = (SELECT oid FROM pg_namespace WHERE nspname = current_schema()) "
    "AND c.relkind = 'r' AND c.relname LIKE 'planflow\\_history\\_%'"
)
CLOCK = "SELECT clock_timestamp()"
#: Whether the history is partitioned (schema 12 applied): a store not yet migrated has nothing to manage.
PARTITIONED = "SELECT 1 FROM pg_class WHERE oid = to_regclass('planflow_history') AND relkind = 'p'"
SET_LOCK_TIMEOUT = f"SET LOCAL lock_timeout = '{LOCK_TIMEOUT_MS}ms'"
ENSURE_LOCK = f"SELECT pg_advisory_xact_lock({_ENSURE_LOCK})"
ADD = "SELECT planflow_history_add_partition(?, ?, ?)"
DETACH = "SELECT planflow_history_detach(?)"
SETTLE = "SELECT planflow_history_settle(?, ?, ?)"


def survivors_sql(statuses: int) -> str:
    """One workflow that exists, will not be purged (``statuses`` placeholders, then the bound), and has a
    record in ``[?, ?)``: the partition of that range must stay. Read from the workflows' side, a probe of the
    partition's workflow index per surviving workflow, unless the planner finds scanning the partition cheaper;
    the range placeholders come last."""
    return (
        "SELECT w.workflow_exec_id FROM workflow_states w "
        f"WHERE NOT (w.{purgeable(statuses).replace(' AND ', ' AND w.')}) AND EXISTS (SELECT 1 FROM "
        "planflow_history h WHERE h.workflow_exec_id = w.workflow_exec_id AND h.recorded_at >= ? "
        "AND h.recorded_at < ?) LIMIT 1"
    )


@dataclass(frozen=True, slots=True)
class Partition:
    """One range partition by name: ``[lo, hi)``; ``lo`` None for the first one (from MINVALUE)."""

    name: str
    lo: datetime | None
    hi: datetime

    @staticmethod
    def parse(name: str) -> Partition | None:
        """The range of a partition named by planflow, ``None`` for any other name (the default one)."""
        match = _NAME.match(name)
        if match is None:
            return None
        lo = None if match[1] is None else datetime.strptime(match[1], "%Y%m%d").replace(tzinfo=UTC)
        return Partition(name, lo, datetime.strptime(match[2], "%Y%m%d").replace(tzinfo=UTC))

    @staticmethod
    def of(lo: datetime, hi: datetime) -> Partition:
        """The partition ``[lo, hi)`` (midnights UTC) with its name."""
        return Partition(f"planflow_history_{lo:%Y%m%d}_{hi:%Y%m%d}", lo, hi)


def period_start(moment: datetime, period: HistoryPeriod) -> datetime:
    """The UTC midnight (a Monday's, for weeks) that starts the period holding ``moment``."""
    day = moment.astimezone(UTC).replace(hour=0, minute=0, second=0, microsecond=0)
    return day if period == "day" else day - timedelta(days=day.weekday())


def plan_ahead(upper: datetime | None, now: datetime, period: HistoryPeriod) -> list[Partition]:
    """The partitions to create so that ranges run without a gap from ``upper`` (the end of the last one;
    None: no range partition) past ``now + AHEAD``: a first one up to the start of the current period when
    ``upper`` lies further back (one catch-up partition, not one per missed period), then whole periods."""
    step = timedelta(days=1 if period == "day" else 7)
    current = period_start(now, period)
    start = current if upper is None else upper
    planned: list[Partition] = []
    while start < now + AHEAD[period]:
        end = current if start < current else period_start(start, period) + step
        planned.append(Partition.of(start, end))
        start = end
    return planned


class HistoryPartitions:
    """Creates the history's partitions ahead and drops old ones for ``purge`` (see the module)."""

    def __init__(self, database: Database, period: HistoryPeriod) -> None:
        self._db = database
        self._period: HistoryPeriod = period

    @staticmethod
    async def _tables(conn: Connection) -> list[tuple[str, bool]]:
        return [(str(r[0]), bool(r[1])) for r in await conn.fetch_all(TABLES)]

    async def ensure_ahead(self) -> list[str]:
        """Create the partitions missing from the last one to :data:`AHEAD` past now; returns their names.

        Never fails its caller: when the tables stay locked past the retries, or a record written meanwhile into
        the default partition makes PostgreSQL refuse the new range, it logs a warning and creates nothing (the
        records keep going to the default partition, and the next ``migrate`` or ``purge`` tries again).
        """

        async def work(conn: Connection) -> list[str]:
            if await conn.fetch_one(PARTITIONED) is None:
                return []
            await conn.execute(ENSURE_LOCK)
            await conn.execute(SET_LOCK_TIMEOUT)
            ranges = [Partition.parse(name) for name, attached in await self._tables(conn) if attached]
            upper = max((p.hi for p in ranges if p is not None), default=None)
            row = await conn.fetch_one(CLOCK)
            assert row is not None
            created = plan_ahead(upper, row[0], self._period)
            for partition in created:
                await conn.execute(ADD, [partition.name, partition.lo, partition.hi])
            return [p.name for p in created]

        try:
            created = await self._db.run(work, idempotent=True)
        except PlanflowError as exc:
            logger.warning("history partitions not created ahead this time: %s", exc)
            return []
        if created:
            logger.info("created history partitions %s", ", ".join(created))
        return created

    async def detach_older(self, bound: datetime, statuses: Collection[str]) -> list[str]:
        """Detach the partitions that end before ``bound`` (and now) and hold no record of a workflow that the
        purge of ``statuses`` finished before ``bound`` will leave; returns their names with those of any that an
        earlier, interrupted purge left detached, all for :meth:`settle`."""
        if await self._db.fetch_one(PARTITIONED) is None:
            return []
        await self.ensure_ahead()
        rows = [(str(r[0]), bool(r[1])) for r in await self._db.fetch_all(TABLES)]
        now_row = await self._db.fetch_one(CLOCK)
        assert now_row is not None
        limit = min(bound, now_row[0])
        # Left detached by an interrupted purge: settled with the ones detached now.
        detached = [name for name, attached in rows if not attached and Partition.parse(name) is not None]
        survivors = survivors_sql(len(statuses))
        old = sorted(
            (p for p in map(Partition.parse, (name for name, attached in rows if attached)) if p is not None),
            key=lambda p: p.hi,
        )
        for partition in old:
            if partition.hi > limit:
                break
            lo = partition.lo or _EPOCH
            found = await self._db.fetch_one(survivors, [*statuses, bound, lo, partition.hi])
            if found is not None:
                logger.info(
                    "history partition %s kept: it holds history of workflow %r, which this purge leaves; "
                    "its records of purged workflows are deleted row by row",
                    partition.name,
                    found[0],
                )
                continue
            try:
                await self._db.run(lambda conn, p=partition: self._detach(conn, p), idempotent=True)
            except PlanflowError as exc:  # locked past the retries: the purge goes on by rows
                logger.warning(
                    "history partition %s not detached (left for the next purge): %s", partition.name, exc
                )
                continue
            detached.append(partition.name)
        return detached

    @classmethod
    async def _detach(cls, conn: Connection, partition: Partition) -> None:
        await conn.execute(SET_LOCK_TIMEOUT)
        if (partition.name, True) in await cls._tables(conn):  # not yet: a lost COMMIT's rerun finds it done
            await conn.execute(DETACH, [partition.name])

    async def settle(self, detached: list[str]) -> list[str]:
        """Drop each detached partition that holds no record of an existing workflow, attach the others again
        (their records of workflows that are gone deleted); returns the names dropped."""
        dropped: list[str] = []
        for name in detached:
            partition = Partition.parse(name)
            assert partition is not None

            async def work(conn: Connection, p: Partition = partition) -> bool:
                await conn.execute(SET_LOCK_TIMEOUT)
                if (p.name, False) not in await self._tables(conn):
                    return (p.name, True) not in await self._tables(conn)  # a lost COMMIT's rerun: done
                row = await conn.fetch_one(SETTLE, [p.name, p.lo, p.hi])
                return bool(row and row[0])

            try:
                if await self._db.run(work, idempotent=True):
                    dropped.append(name)
                else:
                    logger.info(
                        "history partition %s attached again: it holds history of workflows that still exist",
                        name,
                    )
            except PlanflowError as exc:  # the purge itself is done; the next one settles it
                logger.warning("history partition %s left detached for the next purge: %s", name, exc)
        if dropped:
            logger.info("dropped history partitions %s", ", ".join(dropped))
        return dropped


__all__ = ["AHEAD", "HistoryPartitions", "Partition", "period_start", "plan_ahead"]
