"""Native parking lots for ``AsyncPool``: the one primitive its hot path needs.

anyio gives the pool its structure (a task group owns the workers, cancel scopes carry
timeouts and cancellation, threads run sync callables), but anyio's events and streams
cost tens of microseconds per hand-off. A task that waits for work, for room in the
queue or for a result parks in a ``Lot`` instead: on asyncio a bare future, on trio
``wait_task_rescheduled``. Parking and unparking cost about a microsecond.

A lot is FIFO. ``waiters`` is exposed so that a hot loop can test ``if lot.waiters``
(a C-level truth test) before paying for a method call.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections import deque
from typing import Any, Protocol

from .._core.aio import TRIO, require_library

__all__ = ["NO_LOT", "Lot", "lot_type", "no_lot"]


class Lot(Protocol):
    """Tasks parked until another task unparks them (FIFO)."""

    waiters: deque[Any]

    async def park(self) -> None:
        """Wait until unparked. Cancellable: a cancelled task leaves the lot, and a
        task cancelled just after being unparked passes its turn to the next one."""

    def unpark(self) -> bool:
        """Wake the longest-parked task; False if none was parked."""

    def unpark_all(self) -> None:
        """Wake every parked task."""


class AsyncioLot:
    """A ``Lot`` of asyncio futures."""

    __slots__ = ("_loop", "waiters")

    def __init__(self) -> None:
        self.waiters: deque[asyncio.Future[None]] = deque()
        self._loop = asyncio.get_running_loop()

    async def park(self) -> None:
        future = self._loop.create_future()
        self.waiters.append(future)
        try:
            await future
        except BaseException:
            if future.done() and not future.cancelled():
                self.unpark()  # we were woken, then cancelled: the wake-up is not lost
            else:
                future.cancel()
                with contextlib.suppress(ValueError):
                    self.waiters.remove(future)
            raise

    def unpark(self) -> bool:
        waiters = self.waiters
        while waiters:
            future = waiters.popleft()
            if not future.done():
                future.set_result(None)
                return True
        return False

    def unpark_all(self) -> None:
        while self.unpark():
            pass


class TrioLot:
    """A ``Lot`` of trio tasks, rescheduled directly."""

    __slots__ = ("_abort", "_current", "_reschedule", "_wait", "waiters")

    def __init__(self) -> None:
        import trio

        self.waiters: deque[Any] = deque()
        self._current = trio.lowlevel.current_task
        self._wait = trio.lowlevel.wait_task_rescheduled
        self._reschedule = trio.lowlevel.reschedule
        self._abort = trio.lowlevel.Abort.SUCCEEDED

    async def park(self) -> None:
        task = self._current()
        self.waiters.append(task)

        def abort(_: Any) -> Any:
            self.waiters.remove(task)  # still parked: trio never aborts a woken task
            return self._abort

        await self._wait(abort)

    def unpark(self) -> bool:
        if self.waiters:
            self._reschedule(self.waiters.popleft())
            return True
        return False

    def unpark_all(self) -> None:
        while self.unpark():
            pass


def lot_type() -> type[AsyncioLot] | type[TrioLot]:
    """The lot class for the async library running the calling task.

    Raises:
        RuntimeError: no asyncio loop or trio run is active in this thread.
    """
    if require_library(_NO_LOOP) == TRIO:
        return TrioLot
    return AsyncioLot


class _NoLot:
    """Stands in for a pool's lots until the pool starts inside an event loop."""

    def __init__(self) -> None:
        self.waiters: deque[Any] = deque()

    async def park(self) -> None:  # pragma: no cover - nothing parks before the start
        raise RuntimeError(_NOT_RUNNING)

    def unpark(self) -> bool:
        return False

    def unpark_all(self) -> None:
        pass


_NO_LOOP = "AsyncPool must be used inside an asyncio or trio event loop"
_NOT_RUNNING = "AsyncPool is not running: use 'async with AsyncPool(...)'"
NO_LOT: Lot = _NoLot()


def no_lot() -> Lot:
    """The lot factory of a pool that has not started: it refuses."""
    raise RuntimeError(_NOT_RUNNING)
