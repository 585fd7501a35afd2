"""Bounded channels and slot counters between pipeline stages, for threads and for
event loops.

A ``Channel`` is a bounded FIFO with one writer and one reader. ``close()`` ends it
(the reader drains what is left, then sees the end); ``abort()`` stops it at once:
everyone blocked on it, now or later, gets ``Aborted``. ``Slots`` counts the work a
stage has in flight, and its waits ``abort()`` breaks too. Threads block on conditions;
a task parks in a ``Lot`` (``_backends/aio.py``, the async side's one parking
primitive) after registering a one-shot *waker*, the lot's ``unpark_soon``, that the
other side calls, from whichever thread it runs in, once there is something to do.

A blocked writer is woken only once the reader has taken the channel down to half its
capacity (and a blocked reader as soon as one item arrives): a full channel then
costs one wake-up per half-buffer of items instead of one per item.
"""

from __future__ import annotations

import contextlib
import threading
import time
from collections import deque
from collections.abc import Callable, Iterator
from typing import Any, Final

import anyio

from .._backends.aio import Lot, call_soon_threadsafe, new_lot

__all__ = ["Aborted", "Channel", "LoopScope", "Slots", "aget_many", "aput_many"]

_NOT_RUNNING: Final = "a pipeline's async iterator must run inside an asyncio or trio loop"

Waker = Callable[[], object]


class Aborted(Exception):
    """The pipeline stopped: raised in whoever waits on one of its channels."""


class Channel:
    """A bounded single-writer, single-reader queue. See the module docstring."""

    __slots__ = ("_aborted", "_closed", "_items", "_low", "_not_empty", "_not_full",
                 "_read_wakers", "_readers", "_write_wakers", "_writers", "capacity", "name")

    def __init__(self, capacity: int, name: str = "") -> None:
        self.capacity = capacity
        self.name = name
        self._items: deque[Any] = deque()
        self._low = capacity // 2
        lock = threading.Lock()
        self._not_empty = threading.Condition(lock)
        self._not_full = threading.Condition(lock)
        self._readers = 0
        self._writers = 0
        self._read_wakers: list[Waker] = []
        self._write_wakers: list[Waker] = []
        self._closed = False
        self._aborted = False

    def __len__(self) -> int:
        return len(self._items)

    # -- the writer ---------------------------------------------------------------------

    def put(self, item: Any) -> None:
        """Append *item*, waiting while the channel is full.

        Raises:
            Aborted: the channel was aborted.
        """
        with self._not_full:
            items = self._items
            while len(items) >= self.capacity and not self._aborted:
                self._writers += 1
                try:
                    self._not_full.wait()
                finally:
                    self._writers -= 1
            if self._aborted:
                raise Aborted
            items.append(item)
            self._readable()

    def put_many(self, batch: list[Any]) -> None:
        """Append every item of *batch* in order, waiting for room as needed."""
        start = 0
        while start < len(batch):
            with self._not_full:
                while len(self._items) >= self.capacity and not self._aborted:
                    self._writers += 1
                    try:
                        self._not_full.wait()
                    finally:
                        self._writers -= 1
                start = self._put_some(batch, start)

    def try_put_many(self, batch: list[Any], start: int = 0) -> int:
        """Append what fits of ``batch[start:]`` without waiting; return the index of
        the first item left out (``len(batch)`` once all are in)."""
        with self._not_full:
            return self._put_some(batch, start)

    def _put_some(self, batch: list[Any], start: int) -> int:
        if self._aborted:
            raise Aborted
        room = self.capacity - len(self._items)
        if room <= 0:
            return start
        end = min(len(batch), start + room)
        self._items.extend(batch[start:end] if start or end < len(batch) else batch)
        self._readable()
        return end

    def _readable(self) -> None:
        if self._readers:
            self._not_empty.notify()
        if self._read_wakers:
            wakers, self._read_wakers = self._read_wakers, []
            for wake in wakers:
                wake()

    def close(self) -> None:
        """No more items: the reader sees the end once it took what is left."""
        with self._not_empty:
            self._closed = True
            self._not_empty.notify_all()
            self._wake_all()

    def when_writable(self, wake: Waker) -> bool:
        """Call *wake* (from another thread) once the channel has room or is aborted;
        False, without registering it, if it has room now."""
        with self._not_full:
            if self._aborted or len(self._items) < self.capacity:
                return False
            self._write_wakers.append(wake)
            return True

    # -- the reader -----------------------------------------------------------------------

    def get_many(self, limit: int, timeout: float | None = None) -> list[Any] | None:
        """Take up to *limit* items, waiting for the first one.

        Returns the items, ``[]`` at the end of the channel, or None if *timeout*
        seconds passed with nothing to take.

        Raises:
            Aborted: the channel was aborted.
        """
        with self._not_empty:
            items = self._items
            if not items and not self._closed and not self._aborted:
                deadline = None if timeout is None else time.monotonic() + timeout
                while not items and not self._closed and not self._aborted:
                    remaining = None if deadline is None else deadline - time.monotonic()
                    if remaining is not None and remaining <= 0:
                        return None
                    self._readers += 1
                    try:
                        self._not_empty.wait(remaining)
                    finally:
                        self._readers -= 1
            return self._take(limit)

    def try_get_many(self, limit: int) -> list[Any] | None:
        """Take up to *limit* items without waiting: None if there is none yet, ``[]``
        at the end of the channel.

        Raises:
            Aborted: the channel was aborted.
        """
        with self._not_empty:
            if not self._items and not self._closed and not self._aborted:
                return None
            return self._take(limit)

    def _take(self, limit: int) -> list[Any]:
        if self._aborted:
            raise Aborted
        items = self._items
        if len(items) <= limit:
            got = list(items)
            items.clear()
        else:
            got = [items.popleft() for _ in range(limit)]
        if got and len(items) <= self._low:
            if self._writers:
                self._not_full.notify()
            if self._write_wakers:
                wakers, self._write_wakers = self._write_wakers, []
                for wake in wakers:
                    wake()
        return got

    def when_readable(self, wake: Waker) -> bool:
        """Call *wake* (from another thread) once an item arrives or the channel ends;
        False, without registering it, if there is something to take now."""
        with self._not_empty:
            if self._items or self._closed or self._aborted:
                return False
            self._read_wakers.append(wake)
            return True

    # -- stopping ---------------------------------------------------------------------------

    def abort(self) -> None:
        """Stop the channel: every wait on it, now or later, raises ``Aborted``. The
        items still in it are dropped."""
        with self._not_empty:
            self._aborted = True
            self._items.clear()
            self._not_empty.notify_all()
            self._not_full.notify_all()
            self._wake_all()

    def _wake_all(self) -> None:
        wakers = self._read_wakers + self._write_wakers
        self._read_wakers, self._write_wakers = [], []
        for wake in wakers:
            wake()


class Slots:
    """A counter of work in flight, at most *limit*, whose waits ``abort()`` breaks.

    Threads take a slot with ``acquire``, tasks with ``aacquire`` (all of one event
    loop); ``release`` may come from any thread."""

    __slots__ = ("_aborted", "_cond", "_lot", "_parked", "limit", "used")

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.used = 0
        self._aborted = False
        self._cond = threading.Condition(threading.Lock())
        self._lot: Lot | None = None
        self._parked = 0  # tasks parked, or about to park, in the lot

    def acquire(self) -> None:
        """Take a slot, waiting for one. Raises ``Aborted`` once aborted."""
        with self._cond:
            while self.used >= self.limit and not self._aborted:
                self._cond.wait()
            if self._aborted:
                raise Aborted
            self.used += 1

    async def aacquire(self) -> None:
        """``acquire`` for a task: park until a slot is free. Raises ``Aborted`` once
        aborted."""
        while True:
            with self._cond:
                if self._aborted:
                    raise Aborted
                if self.used < self.limit:
                    self.used += 1
                    return
                lot = self._lot
                if lot is None:
                    lot = self._lot = new_lot(message=_NOT_RUNNING)
                self._parked += 1
            try:
                await lot.park()
            finally:
                with self._cond:
                    self._parked -= 1

    def free(self) -> int:
        """Slots free now."""
        return self.limit - self.used

    def release(self) -> None:
        """Give a slot back."""
        with self._cond:
            self.used -= 1
            self._cond.notify()
            if self._parked:
                assert self._lot is not None
                self._lot.unpark_soon()

    def abort(self) -> None:
        """Make every wait, now or later, raise ``Aborted``."""
        with self._cond:
            self._aborted = True
            self._cond.notify_all()
            for _ in range(self._parked):
                assert self._lot is not None
                self._lot.unpark_soon()


# -- async endpoints ---------------------------------------------------------------------

async def aget_many(channel: Channel, limit: int) -> list[Any]:
    """``get_many`` for async code: wait without blocking the event loop."""
    lot: Lot | None = None
    while True:
        got = channel.try_get_many(limit)
        if got is not None:
            return got
        if lot is None:
            lot = new_lot(message=_NOT_RUNNING)
        if channel.when_readable(lot.unpark_soon):
            await lot.park()


async def aput_many(channel: Channel, batch: list[Any]) -> None:
    """``put_many`` for async code: wait for room without blocking the event loop."""
    start = 0
    lot: Lot | None = None
    while True:
        start = channel.try_put_many(batch, start)
        if start >= len(batch):
            return
        if lot is None:
            lot = new_lot(message=_NOT_RUNNING)
        if channel.when_writable(lot.unpark_soon):
            await lot.park()


class LoopScope:
    """A cancel scope on an event loop that any thread may cancel, before it opens
    too: ``cancel()`` is remembered, and cancels the scope as soon as it opens.

    Example::

        scope = LoopScope()            # cancel() from any thread, any time
        async def main():
            with scope.open() as cs:   # in the loop's task
                await work()
            if cs.cancelled_caught: ...
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._cancel: Callable[[], None] | None = None
        self._cancelled = False

    @contextlib.contextmanager
    def open(self) -> Iterator[anyio.CancelScope]:
        """Enter the scope in the running loop's current task."""
        soon = call_soon_threadsafe(_NOT_RUNNING)
        with anyio.CancelScope() as scope:
            with self._lock:
                self._cancel = lambda: soon(scope.cancel)
                if self._cancelled:
                    scope.cancel()
            try:
                yield scope
            finally:
                with self._lock:
                    self._cancel = None

    def cancel(self) -> None:
        """Cancel the scope: now if it is open, else as soon as it opens."""
        with self._lock:
            self._cancelled = True
            cancel = self._cancel
        if cancel is not None:
            cancel()
