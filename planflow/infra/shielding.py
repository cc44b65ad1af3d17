"""Cancellation that waits for a write already sent: what a cancelled asyncio caller of a write may rely on.

A COMMIT that has been sent is applied or not by the server whatever the client does next; cancelling the
coroutine that awaits it would only hide the outcome and leave the connection mid-reply. So such an await runs
to its end in a task of its own, and the caller's cancellation is raised once it is done. The caller still does
not learn the outcome (it was cancelled): a cancelled or timed-out write may have committed, and a retry that
must not apply twice passes an ``idempotency_key``.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable
from contextlib import suppress
from typing import Any, TypeVar

T = TypeVar("T")


async def settled(future: asyncio.Future[Any]) -> None:
    """Wait until ``future`` is done, whatever its outcome, however often the waiter is cancelled meanwhile
    (the outcome is marked as retrieved: whoever wanted it has gone)."""
    while not future.done():
        with suppress(asyncio.CancelledError):
            await asyncio.wait({future})
    if not future.cancelled():
        future.exception()


async def finish_then_cancel(work: Awaitable[T]) -> T:
    """Await ``work`` to its end in a task of its own, which a cancellation of the caller does not reach; then
    raise that cancellation, if one came, else return ``work``'s result (or raise its exception)."""
    task = asyncio.ensure_future(work)
    try:
        return await asyncio.shield(task)
    except asyncio.CancelledError:
        if task.done():
            raise  # the work itself was cancelled, not the caller
        await settled(task)
        raise
