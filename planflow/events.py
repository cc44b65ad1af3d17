"""What a provider tells its listeners: one event per repository operation, retry, conflict and pool wait.

Pass listeners when opening a store::

    from planflow import OperationEvent, open_provider

    def slow(event):
        if isinstance(event, OperationEvent) and event.duration_s > 0.1:
            print(f"{event.repository}.{event.method} took {event.duration_s:.3f}s")

    provider = open_provider("sqlite:///state.db", listeners=[slow])

A listener is any callable taking one event. It runs on the thread (or asyncio task) that made the call, right
after the operation, except retry and pool-wait events of the asynchronous SQLite and TinyDB drivers, which
arrive on planflow's worker threads: keep listeners quick and thread-safe. A listener that raises is logged
(WARNING on ``planflow.observe``) and ignored: it never breaks the operation.

Events carry names, counts and durations only: never a bound value, an id, a message or a password (``error``
and ``cause`` are exception class names).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal

Outcome = Literal["ok", "error"]


@dataclass(frozen=True, slots=True)
class OperationEvent:
    """One call of a repository method, after it returned or raised.

    Attributes:
        repository: ``tasks``, ``workflows``, ``auth``, ``executions`` or ``metadata``.
        method: The method's name (``get_state``); an iterator's or a batch's event comes when it ends.
        driver: ``sqlite``, ``postgres`` or ``tinydb``.
        duration_s: Seconds from the call to its result (an iterator: to its end; a batch: the block).
        rows: Records the call returned (an iterator: yielded), or the count a counting method returned
            (``bulk_upsert``, ``count_states``); ``None`` where it returns no records (``None``, a flag).
        outcome: ``ok`` or ``error``.
        error: The class name of the exception it raised (``NotFoundError``), else ``None``.
    """

    repository: str
    method: str
    driver: str
    duration_s: float
    rows: int | None
    outcome: Outcome
    error: str | None


@dataclass(frozen=True, slots=True)
class RetryEvent:
    """A unit of work failed transiently and is about to run again.

    Attributes:
        driver: ``sqlite`` or ``postgres``.
        attempt: The attempt that failed, from 1.
        delay: Seconds slept before the next attempt.
        cause: The class name of the transient failure (``TransientError``, ``ConnectionLostError``).
    """

    driver: str
    attempt: int
    delay: float
    cause: str


@dataclass(frozen=True, slots=True)
class ConflictEvent:
    """A repository call raised :class:`~planflow.ConflictError` (an optimistic-lock check failed).

    Attributes:
        repository: As in :class:`OperationEvent`.
        method: As in :class:`OperationEvent`.
        driver: As in :class:`OperationEvent`.
        expected: The version the caller expected, when known.
        actual: The version stored, when known.
    """

    repository: str
    method: str
    driver: str
    expected: int | None
    actual: int | None


@dataclass(frozen=True, slots=True)
class PoolWaitEvent:
    """A call found no idle pooled connection and waited for one (PostgreSQL).

    Attributes:
        driver: ``postgres``.
        duration: Seconds until a connection was lent (or the wait gave up).
    """

    driver: str
    duration: float


Event = OperationEvent | RetryEvent | ConflictEvent | PoolWaitEvent
#: What ``open_provider(..., listeners=[...])`` accepts: a callable taking each :data:`Event`.
Listener = Callable[[Event], None]

__all__ = ["ConflictEvent", "Event", "Listener", "OperationEvent", "Outcome", "PoolWaitEvent", "RetryEvent"]
