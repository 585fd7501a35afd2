"""LeanFuture behaves as concurrent.futures.Future, call for call, and makes its
condition only once something waits on it."""

from __future__ import annotations

import concurrent.futures as cf
import threading
from typing import Any, cast

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from workpool._core.future import LeanFuture

from .pool_suite import wait_until

WAIT = 10.0

# What a pool, a caller and a waiter do to a future; each step's answer is compared.
STEPS = ["cancel", "start", "result", "error", "done", "running", "cancelled",
         "read_result", "read_exception", "callback"]


def _apply(future: cf.Future[Any], step: str, seen: list[str]) -> Any:
    try:
        if step == "cancel":
            return future.cancel()
        if step == "start":
            return future.set_running_or_notify_cancel()
        if step == "result":
            return future.set_result(7)
        if step == "error":
            return future.set_exception(ValueError("boom"))
        if step == "done":
            return future.done()
        if step == "running":
            return future.running()
        if step == "cancelled":
            return future.cancelled()
        if step == "read_result":
            return future.result(timeout=0)
        if step == "read_exception":
            error = future.exception(timeout=0)
            return None if error is None else (type(error), str(error))
        if step == "callback":
            return future.add_done_callback(lambda f: seen.append(f"called {f.done()}"))
    except BaseException as exc:  # the same error type and message, from both
        return ("raised", type(exc), str(exc).replace("LeanFuture", "Future"))
    raise AssertionError(step)


@settings(max_examples=300, deadline=None)
@given(st.lists(st.sampled_from(STEPS), max_size=8))
def test_every_sequence_of_calls_answers_as_the_stdlib_future(steps: list[str]) -> None:
    stdlib: cf.Future[Any] = cf.Future()
    lean: LeanFuture[Any] = LeanFuture()
    seen_stdlib: list[str] = []
    seen_lean: list[str] = []
    for step in steps:
        expected = _apply(stdlib, step, seen_stdlib)
        got = _apply(lean, step, seen_lean)
        if isinstance(expected, tuple) and expected[:2] == ("raised", cf.InvalidStateError):
            # the message names the future: its repr differs in the address alone
            assert isinstance(got, tuple)
            assert got[:2] == expected[:2]
        else:
            assert got == expected, step
        assert seen_lean == seen_stdlib
        assert lean._state == stdlib._state


def test_its_condition_is_its_lock_and_a_waiting_thread_sleeps_on_a_lock_of_its_own() -> None:
    future: LeanFuture[int] = LeanFuture()
    assert cast(object, future._condition) is future._lock
    with pytest.raises(TimeoutError):
        future.result(timeout=0.01)
    assert future._sleepers == []  # the timed-out wait took its lock back out
    assert future.set_running_or_notify_cancel()
    future.set_result(3)
    assert (future.done(), future.result(), future.exception()) == (True, 3, None)


def test_a_thread_waiting_for_the_result_is_woken() -> None:
    future: LeanFuture[int] = LeanFuture()
    got: list[Any] = []
    thread = threading.Thread(target=lambda: got.append(future.result(WAIT)))
    thread.start()
    # waiting in result(): the set_result below must wake it
    wait_until(lambda: bool(future._sleepers), "the thread to wait on the future")
    future.set_running_or_notify_cancel()
    future.set_result(42)
    thread.join(WAIT)
    assert got == [42]


def test_wait_and_as_completed_see_lean_futures_end() -> None:
    futures = [LeanFuture[int]() for _ in range(3)]
    futures[0].set_running_or_notify_cancel()
    futures[0].set_result(0)
    started = threading.Event()

    def settle() -> None:
        started.wait(WAIT)
        futures[1].set_running_or_notify_cancel()
        futures[1].set_exception(KeyError("k"))
        futures[2].cancel()
        futures[2].set_running_or_notify_cancel()

    thread = threading.Thread(target=settle)
    thread.start()
    started.set()
    done, not_done = cf.wait(futures, timeout=WAIT)
    assert (done, not_done) == (set(futures), set())
    assert set(cf.as_completed(futures, timeout=WAIT)) == set(futures)
    thread.join(WAIT)
    assert isinstance(futures[1].exception(), KeyError)
    assert futures[2].cancelled()


def test_a_cancelled_future_never_starts_and_tells_its_waiters() -> None:
    future: LeanFuture[int] = LeanFuture()
    waiter = threading.Thread(target=lambda: cf.wait([future], timeout=WAIT))
    waiter.start()
    wait_until(lambda: bool(future._waiters), "wait() to install its waiter")
    assert future.cancel()
    assert not future.set_running_or_notify_cancel()
    waiter.join(WAIT)
    assert not waiter.is_alive()
    with pytest.raises(cf.CancelledError):
        future.result(0)
