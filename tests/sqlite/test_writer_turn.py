"""This process's turn to write on a SQLite file is handed to its writers in the order they asked."""

from __future__ import annotations

import threading
import time

import pytest

from planflow import UnsupportedError
from planflow.infra.sql.database import Interrupted
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


def test_a_thread_never_waits_for_a_turn_it_holds_itself() -> None:
    turn = _TurnLock()
    assert turn.acquire(timeout=1)
    with pytest.raises(UnsupportedError, match="open_async_provider"):
        turn.acquire(timeout=10)
    turn.release()
    assert turn.acquire(timeout=0)
    turn.release()


def test_a_waiting_turn_stops_when_asked_and_leaves_the_queue() -> None:
    turn = _TurnLock()
    assert turn.acquire(timeout=1)
    asked = threading.Event()
    outcome: list[object] = []

    def wait() -> None:
        try:
            outcome.append(turn.acquire(timeout=60, stop=asked.is_set))
        except Interrupted as exc:
            outcome.append(exc)

    waiter = threading.Thread(target=wait)
    waiter.start()
    asked.set()
    waiter.join(30)
    assert not waiter.is_alive() and isinstance(outcome[0], Interrupted)
    turn.release()
    assert turn.acquire(timeout=0)
    turn.release()


def test_a_turn_that_does_not_come_in_time_leaves_the_queue() -> None:
    turn = _TurnLock()
    assert turn.acquire(timeout=1)
    late: list[bool] = []
    started = time.monotonic()
    waiter = threading.Thread(target=lambda: late.append(turn.acquire(timeout=0.05)))
    waiter.start()
    waiter.join()
    assert late == [False]
    assert time.monotonic() - started >= 0.05
    turn.release()
    # The timed-out waiter is gone: the turn is free, not handed to nobody.
    assert turn.acquire(timeout=0)
    turn.release()
