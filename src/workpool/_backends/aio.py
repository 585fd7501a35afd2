"""The one parking primitive of workpool's async side: ``Lot``, on asyncio and trio.

anyio gives the pools their structure (a task group owns the workers, cancel scopes
carry timeouts and cancellation, threads run sync callables), but anyio's events and
streams cost tens of microseconds per hand-off. Every async wait of workpool parks in a
``Lot`` instead: ``AsyncPool``'s idle workers, blocked submitters and result waiters,
``AsyncSemaphore``'s waiters, and a pipeline's async channel ends and stage slots. On
asyncio a waiter is a bare future, on trio a task rescheduled directly
(``wait_task_rescheduled``): parking and unparking cost about a microsecond.

A lot is FIFO, and each waiter carries a *weight* (1 unless it says otherwise):
``unpark_within(budget)`` wakes waiters from the head while their weights fit, which is
how a weighted semaphore serves its line. ``waiters`` is exposed so that a hot loop can test
``if lot.waiters`` (a C-level truth test) before paying for a method call.

Cancellation never loses a wake-up: a waiter cancelled while still parked leaves the
line; one cancelled after it was unparked (asyncio can deliver both in the same turn)
hands its wake-up on, to the next waiter by default, or to the lot's ``on_lost(weight)``
(a semaphore puts the tokens it was handed back). On trio a task once rescheduled is
never cancelled out of the park, so nothing is ever lost there.

Imports ``_core.aio`` (which library runs) and nothing else of workpool.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
from collections import deque
from collections.abc import Callable
from typing import Any, Final, Protocol

from .._core.aio import TRIO, require_library

__all__ = ["NO_LOT", "AsyncioLot", "Lot", "TrioLot", "call_soon_threadsafe", "lot_type",
           "new_lot", "no_lot"]

OnLost = Callable[[int], object]


class Lot(Protocol):
    """Tasks parked until another task unparks them (FIFO). See the module docstring."""

    waiters: deque[Any]

    async def park(self, weight: int = 1) -> None:
        """Wait until unparked. Cancellable: a cancelled task leaves the lot, and a
        task cancelled just after being unparked hands its wake-up on."""

    def unpark(self) -> bool:
        """Wake the longest-parked task; False if none was parked."""

    def unpark_within(self, budget: int) -> int:
        """Wake the longest-parked tasks while their weights fit in *budget* together
        (strictly in order: a heavy head holds back lighter tasks behind it); return
        the weight woken."""

    def unpark_all(self) -> None:
        """Wake every parked task."""

    def unpark_soon(self) -> None:
        """``unpark()`` from any thread: at once on the lot's own event-loop thread,
        else soon, by the loop; nothing once the loop has ended. Never blocks."""


class AsyncioLot:
    """A ``Lot`` of asyncio futures: ``waiters`` holds ``(weight, future)``."""

    __slots__ = ("_loop", "_on_lost", "_thread", "waiters")

    def __init__(self, on_lost: OnLost | None = None) -> None:
        self.waiters: deque[tuple[int, asyncio.Future[None]]] = deque()
        self._loop = asyncio.get_running_loop()
        self._thread = threading.get_ident()
        self._on_lost = on_lost

    async def park(self, weight: int = 1) -> None:
        future = self.join(weight)
        try:
            await future
        except BaseException:
            self.quit(weight, future)
            raise

    def join(self, weight: int) -> asyncio.Future[None]:
        """``park``, taken apart for a hot path that awaits in its own frame (no
        coroutine of the lot's): the future to await, unparked in line. A wait on it
        that ends by an exception must call ``quit``."""
        future = self._loop.create_future()
        self.waiters.append((weight, future))
        return future

    def quit(self, weight: int, future: asyncio.Future[None]) -> None:
        """A wait on *future* (from ``join(weight)``) ended by an exception: it leaves
        the line, or, woken already, hands its wake-up on."""
        if future.done() and not future.cancelled():  # woken, then cancelled
            if self._on_lost is None:
                self.unpark()
            else:
                self._on_lost(weight)
        else:
            future.cancel()
            with contextlib.suppress(ValueError):
                self.waiters.remove((weight, future))

    def unpark(self) -> bool:
        waiters = self.waiters
        while waiters:
            future = waiters.popleft()[1]
            if not future.done():  # done: cancelled, its task leaves on its own
                future.set_result(None)
                return True
        return False

    def unpark_within(self, budget: int) -> int:
        waiters = self.waiters
        left = budget
        while waiters:
            weight, future = waiters[0]
            if future.done():  # cancelled, its task leaves on its own
                waiters.popleft()
                continue
            if weight > left:
                break
            waiters.popleft()
            future.set_result(None)
            left -= weight
        return budget - left

    def unpark_all(self) -> None:
        while self.unpark():
            pass

    def unpark_soon(self) -> None:
        if threading.get_ident() == self._thread:
            self.unpark()
            return
        with contextlib.suppress(RuntimeError):  # the loop is closed: nobody to wake
            self._loop.call_soon_threadsafe(self.unpark)


class TrioLot:
    """A ``Lot`` of trio tasks, rescheduled directly: ``waiters`` holds
    ``(weight, task)``."""

    __slots__ = ("_abort", "_current", "_reschedule", "_thread", "_token", "_wait",
                 "waiters")

    def __init__(self, on_lost: OnLost | None = None) -> None:
        import trio

        del on_lost  # trio never cancels a task it rescheduled: no wake-up is lost
        self.waiters: deque[tuple[int, Any]] = deque()
        self._current = trio.lowlevel.current_task
        self._wait = trio.lowlevel.wait_task_rescheduled
        self._reschedule = trio.lowlevel.reschedule
        self._abort = trio.lowlevel.Abort.SUCCEEDED
        self._thread = threading.get_ident()
        self._token = trio.lowlevel.current_trio_token()

    async def park(self, weight: int = 1) -> None:
        entry = (weight, self._current())
        self.waiters.append(entry)

        def abort(_: Any) -> Any:
            self.waiters.remove(entry)  # still parked: trio never aborts a woken task
            return self._abort

        await self._wait(abort)

    def unpark(self) -> bool:
        if self.waiters:
            self._reschedule(self.waiters.popleft()[1])
            return True
        return False

    def unpark_within(self, budget: int) -> int:
        waiters = self.waiters
        left = budget
        while waiters and waiters[0][0] <= left:
            left -= waiters[0][0]
            self._reschedule(waiters.popleft()[1])
        return budget - left

    def unpark_all(self) -> None:
        while self.unpark():
            pass

    def unpark_soon(self) -> None:
        if threading.get_ident() == self._thread:
            self.unpark()
            return
        import trio

        with contextlib.suppress(trio.RunFinishedError):  # nobody left to wake
            self._token.run_sync_soon(self.unpark)


def lot_type(message: str | None = None) -> type[AsyncioLot] | type[TrioLot]:
    """The lot class for the async library running the calling task.

    Raises:
        RuntimeError: (with *message*, if given) no asyncio loop or trio run is active
            in this thread.
    """
    if require_library(message or _NO_LOOP) == TRIO:
        return TrioLot
    return AsyncioLot


def new_lot(on_lost: OnLost | None = None, message: str | None = None) -> Lot:
    """A lot for the calling task's event loop, *on_lost* its owner's hook (see the
    module docstring) and *message* the error where no loop runs (see ``lot_type``)."""
    return lot_type(message)(on_lost)


def call_soon_threadsafe(message: str | None = None) -> Callable[[Callable[[], object]], None]:
    """A function that runs a callback soon in the calling task's event loop: callable
    from any thread, never blocking, doing nothing once the loop has ended.

    Raises:
        RuntimeError: (with *message*, if given) no asyncio loop or trio run is active.
    """
    if require_library(message or _NO_LOOP) == TRIO:
        import trio

        token = trio.lowlevel.current_trio_token()

        def trio_soon(fn: Callable[[], object]) -> None:
            with contextlib.suppress(trio.RunFinishedError):
                token.run_sync_soon(fn)

        return trio_soon
    loop = asyncio.get_running_loop()

    def asyncio_soon(fn: Callable[[], object]) -> None:
        with contextlib.suppress(RuntimeError):  # the loop is closed: nobody to wake
            loop.call_soon_threadsafe(fn)

    return asyncio_soon


class _NoLot:
    """Stands in for a pool's lots until the pool starts inside an event loop."""

    def __init__(self) -> None:
        self.waiters: deque[Any] = deque()

    async def park(self, weight: int = 1) -> None:  # pragma: no cover - never called
        raise RuntimeError(_NOT_RUNNING)

    def unpark(self) -> bool:
        return False

    def unpark_within(self, budget: int) -> int:
        return 0

    def unpark_all(self) -> None:
        pass

    def unpark_soon(self) -> None:
        pass


_NO_LOOP: Final = "AsyncPool must be used inside an asyncio or trio event loop"
_NOT_RUNNING: Final = "AsyncPool is not running: use 'async with AsyncPool(...)'"
NO_LOT: Final[Lot] = _NoLot()


def no_lot(on_lost: OnLost | None = None) -> Lot:
    """The lot factory of a pool that has not started: it refuses."""
    raise RuntimeError(_NOT_RUNNING)
