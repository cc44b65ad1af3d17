"""How a state machine reaches a store: one long-lived provider, called through the sync or the async API.

A rule hands a *call* (``lambda provider: provider.tasks.get_state("t1")``) to :meth:`Driver.outcome`; the sync
driver calls it, the async driver awaits what it returns on the driver's own event loop. Either way the result
is an :class:`Outcome`: the value, or the ``PlanflowError`` raised. Any other exception escapes the rule and fails
the test: no public method may let a raw Python or driver exception out.

The provider is opened once per test (``pool_max_size=1``, so every call of every example reuses the one
connection, errors and cancellations between them) and emptied, not reopened, between the examples hypothesis
runs (:meth:`Driver.reset`).
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

from planflow import AsyncProvider, PlanflowError, Provider

Call = Callable[[Any], Any]


@dataclass(frozen=True)
class Outcome:
    """What a call did: returned ``value``, or raised ``error`` (a PlanflowError)."""

    value: Any = None
    error: PlanflowError | None = None


class Driver:
    """One provider and the way to call it (see the module docstring)."""

    name = "driver"
    #: Whether calls can be cancelled part way (the async API): the machine then has its cancellation rules.
    cancellable = False

    def __init__(self, provider: Any, reset: Callable[[], None]) -> None:
        self.provider = provider
        self._reset = reset

    def reset(self) -> None:
        """Empty the store for a new example (the provider and its connection stay)."""
        self._reset()

    def outcome(self, call: Call) -> Outcome:
        """Call ``call(provider)``; its value or its PlanflowError."""
        raise NotImplementedError

    def collect(self, call: Call) -> Outcome:
        """Call ``call(provider)``, an iterator (sync) or async iterator; all its items as a list."""
        raise NotImplementedError

    def in_transaction(
        self, steps: Sequence[Call], *, fail: bool
    ) -> tuple[list[Outcome], PlanflowError | None]:
        """Run ``steps`` (each called with the transaction's repositories) inside ``provider.transaction()``; with
        ``fail``, raise at the end so that it rolls back. The steps' outcomes, and the error the block ended with
        (a PlanflowError of a step ends the block, which rolls back)."""
        raise NotImplementedError

    def run_in_transaction(
        self, steps: Sequence[Call], key: str | None, shape: Callable[[Any], Any]
    ) -> Outcome:
        """``provider.run_in_transaction`` of a unit that runs ``steps`` and returns ``shape(result)`` of each (a
        JSON value), with ``idempotency_key=key``."""
        raise NotImplementedError

    def cancelled(self, call: Call, delay: float) -> Outcome | None:
        """Start ``call`` and cancel it after ``delay`` seconds; its outcome if it finished first, else None."""
        raise NotImplementedError

    def close(self) -> None:
        raise NotImplementedError


class SyncDriver(Driver):
    """The synchronous API."""

    name = "sync"

    def __init__(self, provider: Provider, reset: Callable[[], None]) -> None:
        super().__init__(provider, reset)

    def outcome(self, call: Call) -> Outcome:
        try:
            return Outcome(call(self.provider))
        except PlanflowError as exc:
            return Outcome(error=exc)

    def collect(self, call: Call) -> Outcome:
        try:
            items: Iterator[Any] = call(self.provider)
            return Outcome(list(items))
        except PlanflowError as exc:
            return Outcome(error=exc)

    def in_transaction(
        self, steps: Sequence[Call], *, fail: bool
    ) -> tuple[list[Outcome], PlanflowError | None]:
        outcomes: list[Outcome] = []
        try:
            with self.provider.transaction() as tx:
                for step in steps:
                    outcomes.append(Outcome(step(tx)))
                if fail:
                    raise _RollBack
        except _RollBack:
            return outcomes, None
        except PlanflowError as exc:
            outcomes.append(Outcome(error=exc))
            return outcomes, exc
        return outcomes, None

    def run_in_transaction(
        self, steps: Sequence[Call], key: str | None, shape: Callable[[Any], Any]
    ) -> Outcome:
        def unit(tx: Any) -> list[Any]:
            return [shape(step(tx)) for step in steps]

        try:
            return Outcome(self.provider.run_in_transaction(unit, idempotency_key=key))
        except PlanflowError as exc:
            return Outcome(error=exc)

    def close(self) -> None:
        self.provider.close()


class _RollBack(Exception):  # noqa: N818 - a signal, not an error
    """Raised by a test at the end of a transaction block to roll it back."""


class AsyncDriver(Driver):
    """The asynchronous API, every call awaited on this driver's event loop (one loop for the whole test)."""

    name = "async"
    cancellable = True

    def __init__(
        self, loop: asyncio.AbstractEventLoop, provider: AsyncProvider, reset: Callable[[], None]
    ) -> None:
        super().__init__(provider, reset)
        self.loop = loop

    def _run(self, awaitable: Awaitable[Any]) -> Any:
        return self.loop.run_until_complete(_awaited(awaitable))

    def outcome(self, call: Call) -> Outcome:
        try:
            return Outcome(self._run(call(self.provider)))
        except PlanflowError as exc:
            return Outcome(error=exc)

    def collect(self, call: Call) -> Outcome:
        async def gather() -> list[Any]:
            items: AsyncIterator[Any] = call(self.provider)
            return [item async for item in items]

        try:
            return Outcome(self._run(gather()))
        except PlanflowError as exc:
            return Outcome(error=exc)

    def in_transaction(
        self, steps: Sequence[Call], *, fail: bool
    ) -> tuple[list[Outcome], PlanflowError | None]:
        outcomes: list[Outcome] = []

        async def block() -> None:
            async with self.provider.transaction() as tx:
                for step in steps:
                    outcomes.append(Outcome(await step(tx)))
                if fail:
                    raise _RollBack

        try:
            self._run(block())
        except _RollBack:
            return outcomes, None
        except PlanflowError as exc:
            outcomes.append(Outcome(error=exc))
            return outcomes, exc
        return outcomes, None

    def run_in_transaction(
        self, steps: Sequence[Call], key: str | None, shape: Callable[[Any], Any]
    ) -> Outcome:
        async def unit(tx: Any) -> list[Any]:
            return [shape(await step(tx)) for step in steps]

        try:
            return Outcome(self._run(self.provider.run_in_transaction(unit, idempotency_key=key)))
        except PlanflowError as exc:
            return Outcome(error=exc)

    def cancelled(self, call: Call, delay: float) -> Outcome | None:
        async def cancel_after() -> Outcome | None:
            task = asyncio.ensure_future(call(self.provider))
            if delay <= 0:
                task.cancel()  # before it even starts
            else:
                done, _ = await asyncio.wait({task}, timeout=delay)
                if not done:
                    task.cancel()
            try:
                return Outcome(await task)
            except asyncio.CancelledError:
                return None
            except PlanflowError as exc:
                return Outcome(error=exc)

        outcome: Outcome | None = self.loop.run_until_complete(cancel_after())
        return outcome

    def close(self) -> None:
        self.loop.run_until_complete(self.provider.aclose())
        self.loop.close()


async def _awaited(awaitable: Awaitable[Any]) -> Any:
    return await awaitable
