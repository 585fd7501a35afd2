"""The future of the sync pools' tasks: a ``concurrent.futures.Future`` that costs less.

Owns ``LeanFuture``. Imports nothing of workpool.

A stdlib ``Future`` makes a ``threading.Condition`` when it is made (0.44 us of the
1.7 us that making, starting and settling one costs, CPython 3.11), and every call
goes through that condition's Python-level ``__enter__`` and ``__exit__``. A
``LeanFuture`` has the condition's lock alone, which its calls take directly; a
thread waiting in ``result()`` or ``exception()`` waits on a lock of its own, which
the call that settles the future releases (what ``Condition.wait`` does inside,
without the condition). About 1.0 us a future in all, and a ``result()`` that must
wait starts waiting sooner, which is what a round trip (submit, then wait for it)
costs most.
"""

from __future__ import annotations

import threading
from _thread import LockType, allocate_lock
from collections.abc import Callable
from concurrent.futures import CancelledError, Future, InvalidStateError
from concurrent.futures._base import (
    CANCELLED,
    CANCELLED_AND_NOTIFIED,
    FINISHED,
    LOGGER,
    PENDING,
    RUNNING,
)
from typing import Final, TypeVar, cast

__all__ = ["LeanFuture"]

T = TypeVar("T")

_RLock: Final = threading.RLock().__class__  # the C lock: threading.RLock() wraps it
_SETTLED: Final = frozenset((CANCELLED, CANCELLED_AND_NOTIFIED, FINISHED))
_CANCELLED: Final = frozenset((CANCELLED, CANCELLED_AND_NOTIFIED))


class LeanFuture(Future[T]):
    """A ``concurrent.futures.Future`` (``wait``, ``as_completed`` and
    ``asyncio.wrap_future`` take it) that behaves as the stdlib's, method for method,
    at a lower cost.

    Its ``_condition``, which ``wait()`` and ``as_completed()`` acquire and release
    around reading the future, is its lock: every method here takes that lock, never
    a condition variable. Threads in ``result()``/``exception()`` wait each on a lock
    of its own (``_sleepers``), released when the future is settled or cancelled.
    """

    def __init__(self) -> None:  # not Future.__init__, which makes a Condition
        self._lock = _RLock()
        self._condition = cast(threading.Condition, self._lock)  # see the class docstring
        self._state = PENDING
        self._result: T | None = None
        self._exception: BaseException | None = None
        self._waiters = []
        self._done_callbacks: list[Callable[[Future[T]], object]] = []
        self._sleepers: list[LockType] | None = None

    def _wake(self) -> None:
        """Under the lock: the future is settled or cancelled; wake the threads that
        wait for it in ``result()``/``exception()``."""
        sleepers = self._sleepers
        if sleepers:
            self._sleepers = None
            for sleeper in sleepers:
                sleeper.release()

    def _sleep(self, timeout: float | None) -> None:
        """Wait until the future is settled or cancelled, at most *timeout* seconds
        (None: no limit; 0 or less: not at all), as ``Condition.wait`` would."""
        with self._lock:
            if self._state in _SETTLED:
                return
            sleeper = allocate_lock()
            sleeper.acquire()
            if self._sleepers is None:
                self._sleepers = []
            self._sleepers.append(sleeper)
        woken = False
        try:
            if timeout is None:
                woken = sleeper.acquire()
            elif timeout > 0:
                woken = sleeper.acquire(True, timeout)
            else:
                woken = sleeper.acquire(False)
        finally:
            if not woken:  # out of time, or interrupted: no longer waiting
                with self._lock:
                    if self._sleepers is not None and sleeper in self._sleepers:
                        self._sleepers.remove(sleeper)

    def _invoke_callbacks(self) -> None:
        for callback in self._done_callbacks:
            try:
                callback(self)
            except Exception:
                LOGGER.exception("exception calling callback for %r", self)

    # -- an executor's side -------------------------------------------------------------

    def set_running_or_notify_cancel(self) -> bool:
        with self._lock:
            state = self._state
            if state == PENDING:
                self._state = RUNNING
                return True
            if state == CANCELLED:
                self._state = CANCELLED_AND_NOTIFIED
                for waiter in self._waiters:
                    waiter.add_cancelled(self)
                return False
            LOGGER.critical("Future %s in unexpected state: %s", id(self), state)
            raise RuntimeError("Future in unexpected state")

    def set_result(self, result: T) -> None:
        with self._lock:
            if self._state in _SETTLED:
                raise InvalidStateError(f"{self._state}: {self!r}")
            self._result = result
            self._state = FINISHED
            for waiter in self._waiters:
                waiter.add_result(self)
            self._wake()
        if self._done_callbacks:
            self._invoke_callbacks()

    def set_exception(self, exception: BaseException | None) -> None:
        with self._lock:
            if self._state in _SETTLED:
                raise InvalidStateError(f"{self._state}: {self!r}")
            self._exception = exception
            self._state = FINISHED
            for waiter in self._waiters:
                waiter.add_exception(self)
            self._wake()
        if self._done_callbacks:
            self._invoke_callbacks()

    # -- a caller's side ----------------------------------------------------------------

    def cancel(self) -> bool:
        with self._lock:
            state = self._state
            if state in (RUNNING, FINISHED):
                return False
            if state in _CANCELLED:
                return True
            self._state = CANCELLED
            self._wake()
        self._invoke_callbacks()
        return True

    def cancelled(self) -> bool:
        with self._lock:
            return self._state in _CANCELLED

    def running(self) -> bool:
        with self._lock:
            return self._state == RUNNING

    def done(self) -> bool:
        with self._lock:
            return self._state in _SETTLED

    def add_done_callback(self, fn: Callable[[Future[T]], object]) -> None:
        with self._lock:
            if self._state not in _SETTLED:
                self._done_callbacks.append(fn)
                return
        try:
            fn(self)
        except Exception:
            LOGGER.exception("exception calling callback for %r", self)

    def _wait(self, timeout: float | None) -> None:
        """What ``result()`` and ``exception()`` wait for: return once the future
        finished; raise ``CancelledError`` if it was cancelled, ``TimeoutError`` if it
        is still not done after *timeout* seconds (the stdlib's rules). A finished
        future never changes again: its fields are read without the lock after."""
        if self._state != FINISHED:
            self._sleep(timeout)
        with self._lock:
            state = self._state
        if state in _CANCELLED:
            raise CancelledError()
        if state != FINISHED:
            raise TimeoutError()

    def result(self, timeout: float | None = None) -> T:
        self._wait(timeout)
        error = self._exception
        if not error:  # (the stdlib's test: set_exception(None) returns the result)
            return cast(T, self._result)
        try:
            raise error
        finally:
            del error, self  # no reference cycle through the traceback (as the stdlib)

    def exception(self, timeout: float | None = None) -> BaseException | None:
        self._wait(timeout)
        return self._exception
