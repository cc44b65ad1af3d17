"""The driver's Database behind a provider, with its coroutines driven: raw SQL for the tests of the drivers."""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any, TypeVar

from planflow import Provider
from planflow.infra.drive import drive
from planflow.infra.sql.database import Connection, Database, Params, Row

T = TypeVar("T")


class SyncConnection:
    """A connection of a unit of work whose statements run at once."""

    def __init__(self, inner: Connection) -> None:
        self.inner = inner

    def execute(self, sql: str, params: Params = ()) -> int:
        return drive(self.inner.execute(sql, params))

    def fetch_one(self, sql: str, params: Params = ()) -> Row | None:
        return drive(self.inner.fetch_one(sql, params))

    def fetch_all(self, sql: str, params: Params = ()) -> list[Row]:
        return drive(self.inner.fetch_all(sql, params))


class SyncDatabase:
    """A :class:`Database` of the synchronous API, for tests that run their own SQL."""

    def __init__(self, inner: Database) -> None:
        self.inner = inner

    @contextmanager
    def transaction(self) -> Iterator[SyncConnection]:
        with_block = self.inner.transaction()
        connection = drive(with_block.__aenter__())
        try:
            yield SyncConnection(connection)
        except BaseException as exc:
            drive(with_block.__aexit__(type(exc), exc, exc.__traceback__))
            raise
        drive(with_block.__aexit__(None, None, None))

    def run(self, work: Callable[[SyncConnection], T]) -> T:
        async def unit(connection: Connection) -> T:
            return work(SyncConnection(connection))

        return drive(self.inner.run(unit))

    def fetch_one(self, sql: str, params: Params = ()) -> Row | None:
        return drive(self.inner.fetch_one(sql, params))


def database(provider: Provider) -> SyncDatabase:
    """The SQL database behind ``provider``."""
    inner: Any = provider._backend.core.database  # type: ignore[attr-defined]  # pyright: ignore[reportPrivateUsage]
    return SyncDatabase(inner)


class _Collect(logging.Handler):
    def __init__(self, records: list[logging.LogRecord]) -> None:
        super().__init__(logging.DEBUG)
        self.records = records

    def emit(self, record: logging.LogRecord) -> None:
        if hasattr(record, "planflow_sql"):
            self.records.append(record)


class _Outcomes(logging.Handler):
    def __init__(self, counts: Counter[str]) -> None:
        super().__init__(logging.WARNING)
        self.counts = counts

    def emit(self, record: logging.LogRecord) -> None:
        outcome = getattr(record, "planflow_outcome", None)
        if isinstance(outcome, str):
            self.counts[outcome] += 1


@contextmanager
def resolved_commits() -> Iterator[Counter[str]]:
    """How the PostgreSQL driver resolved the COMMITs that lost their connection inside the block (``committed``,
    ``aborted``): its public WARNING on ``planflow.postgres``, one per COMMIT resolved, says which."""
    counts: Counter[str] = Counter()
    handler = _Outcomes(counts)
    logger = logging.getLogger("planflow.postgres")
    logger.addHandler(handler)
    try:
        yield counts
    finally:
        logger.removeHandler(handler)


def split_standby_checks(records: list[logging.LogRecord]) -> tuple[int, int]:
    """The statements of ``records`` (see :func:`logged_statements`) other than a standby's replay check, and the
    replay checks (``read_url``: a read that follows a write asks the standby what it has replayed, once)."""
    checks = sum(getattr(r, "planflow_sql", "").startswith("SELECT pg_is_in_recovery()") for r in records)
    return len(records) - checks, checks


@contextmanager
def logged_statements() -> Iterator[list[logging.LogRecord]]:
    """The statements (round trips) the SQL drivers log inside the block: their public DEBUG log, one record each."""
    records: list[logging.LogRecord] = []
    handler = _Collect(records)
    loggers = [logging.getLogger(f"planflow.{driver}") for driver in ("sqlite", "postgres")]
    levels = [logger.level for logger in loggers]
    for logger in loggers:
        logger.addHandler(handler)
        logger.setLevel(logging.DEBUG)
    try:
        yield records
    finally:
        for logger, level in zip(loggers, levels, strict=True):
            logger.removeHandler(handler)
            logger.setLevel(level)
