"""The future of the sync pools' tasks: a ``concurrent.futures.Future`` that costs less.

Owns ``LeanFuture``. Imports nothing of workpool.

A stdlib ``Future`` makes a ``threading.Condition`` when it is made (0.44 us of the
1.7 us that making, starting and settling one costs, CPython 3.11), and every call
takes that condition through its Python-level ``__enter__`` and ``__exit__``. Most
futures of a pool are never waited on while they run: ``Group.go``'s, those of a
``submit`` whose results are read once all ended, a ``map`` chunk's. A ``LeanFuture``
holds the condition's lock from the start and makes the condition itself on first
use; the calls a pool makes per task, and reading a result that is there, take the
lock directly. About 1.0 us a future in all.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from concurrent.futures import Future, InvalidStateError
from concurrent.futures._base import (
    CANCELLED,
    CANCELLED_AND_NOTIFIED,
    FINISHED,
    PENDING,
    RUNNING,
)
from typing import Any, Final, TypeVar

__all__ = ["LeanFuture"]

T = TypeVar("T")

_RLock: Final = threading.RLock().__class__  # the C lock: threading.RLock() wraps it
_SETTLED: Final = frozenset((CANCELLED, CANCELLED_AND_NOTIFIED, FINISHED))


class LeanFuture(Future[T]):
    """A ``concurrent.futures.Future`` (``wait``, ``as_completed`` and
    ``asyncio.wrap_future`` take it) that makes its condition variable only once
    something waits on it. Every method behaves as the stdlib's.

    The condition is made on the future's own lock, so that the methods here, which
    take the lock alone, and the stdlib's, which take the condition, exclude each
    other. A method here that settles the future notifies the condition if it exists:
    one made later finds the future settled before it waits.
    """

    def __init__(self) -> None:  # not Future.__init__: its condition comes on first use
        self._lock = _RLock()
        self._state = PENDING
        self._result: T | None = None
        self._exception: BaseException | None = None
        self._waiters = []
        self._done_callbacks: list[Callable[[Future[T]], object]] = []

    def __getattr__(self, name: str) -> Any:
        # Called for names not set on the instance: "_condition" until it is made.
        # setdefault keeps the first of two made at once.
        if name == "_condition":
            return self.__dict__.setdefault("_condition", threading.Condition(self._lock))
        raise AttributeError(f"{type(self).__name__!r} object has no attribute {name!r}")

    def _notify(self) -> None:
        """Under the lock: wake whoever waits on the condition, if it was made."""
        condition = self.__dict__.get("_condition")
        if condition is not None:
            condition.notify_all()

    def set_running_or_notify_cancel(self) -> bool:
        with self._lock:
            if self._state == PENDING:
                self._state = RUNNING
                return True
        # Cancelled (False, its waiters told) or a misuse (RuntimeError): the stdlib's.
        return super().set_running_or_notify_cancel()

    def set_result(self, result: T) -> None:
        with self._lock:
            if self._state in _SETTLED:
                raise InvalidStateError(f"{self._state}: {self!r}")
            self._result = result
            self._state = FINISHED
            for waiter in self._waiters:
                waiter.add_result(self)
            self._notify()
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
            self._notify()
        if self._done_callbacks:
            self._invoke_callbacks()

    def done(self) -> bool:
        with self._lock:
            return self._state in _SETTLED

    def running(self) -> bool:
        with self._lock:
            return self._state == RUNNING

    def cancelled(self) -> bool:
        with self._lock:
            return self._state in (CANCELLED, CANCELLED_AND_NOTIFIED)

    def add_done_callback(self, fn: Any) -> None:
        with self._lock:
            if self._state not in _SETTLED:
                self._done_callbacks.append(fn)
                return
        super().add_done_callback(fn)  # settled: called now, as the stdlib does

    def result(self, timeout: float | None = None) -> T:
        with self._lock:
            if self._state == FINISHED and self._exception is None:
                return self._result  # type: ignore[return-value]  # T, set by set_result
        return super().result(timeout)  # waits, or raises as the stdlib does

    def exception(self, timeout: float | None = None) -> BaseException | None:
        with self._lock:
            if self._state == FINISHED:
                return self._exception
        return super().exception(timeout)
