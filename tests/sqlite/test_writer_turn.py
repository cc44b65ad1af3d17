"""This process's turn to write on a SQLite file is handed to its writers in the order they asked."""

from __future__ import annotations

import threading
import time

from planflow.infra.sqlite.database import _TurnLock  # pyright: ignore[reportPrivateUsage]


def test_a_released_turn_goes_to_the_longest_waiter_not_back_to_the_releaser() -> None:
    turn = _TurnLock()
    assert turn.acquire(timeout=1)
    order: list[str] = []

    def waiter(name: str) -> None:
        assert turn.acquire(timeout=10)
        order.append(name)
        turn.release()

    threads = []
    for name in ("first", "second"):
        threads.append(threading.Thread(target=waiter, args=(name,)))
        threads[-1].start()
        time.sleep(0.05)  # queued in this order
    # Release and ask again at once, as a purge does batch after batch: a plain Lock lets this thread win
    # again before the waiters wake; the turn goes behind them.
    turn.release()
    assert turn.acquire(timeout=10)
    order.append("releaser")
    turn.release()
    for thread in threads:
        thread.join(10)
    assert order == ["first", "second", "releaser"]


def test_a_turn_that_does_not_come_in_time_leaves_the_queue() -> None:
    turn = _TurnLock()
    assert turn.acquire(timeout=1)
    started = time.monotonic()
    assert not turn.acquire(timeout=0.05)
    assert time.monotonic() - started >= 0.05
    turn.release()
    # The timed-out waiter is gone: the turn is free, not handed to nobody.
    assert turn.acquire(timeout=0)
    turn.release()
