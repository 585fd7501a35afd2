"""``AsyncSemaphore``: the async twin of ``Semaphore`` (see ``_sync`` for the rules
they share), on asyncio or trio.

Its waiters park in a ``Lot`` (``_backends/aio.py``, the async side's one parking
primitive), each weighted by the tokens it asks for; the lot is made at the first
wait, in the event loop that waits. Imports the lot and ``Semaphore``'s checks.
"""

from __future__ import annotations

from types import TracebackType
from typing import Final, final

import anyio

from .._backends.aio import NO_LOT, AsyncioLot, Lot, new_lot
from .semaphore import SemaphoreStatistics, check_capacity, check_count, check_weight

__all__ = ["AsyncSemaphore"]

_NO_LOOP: Final = "AsyncSemaphore must be used inside an asyncio or trio event loop"


@final
class AsyncSemaphore:
    """A weighted, FIFO-fair semaphore for async tasks, on asyncio or trio (via anyio).

    The twin of ``Semaphore``, with the same rules: waiters are served strictly in
    arrival order, a small request never overtakes an earlier large one, and when
    tokens come back every waiter at the head of the line that now fits is woken.
    ``acquire`` is cancellable: a cancelled (or timed out) acquire leaves the semaphore
    exactly as before and wakes the waiters behind it that can now proceed.

    Use it from one event loop: it is not thread-safe (from a worker thread, release
    with ``anyio.from_thread.run_sync(sem.release, n)``). It may be created outside the
    loop, e.g. at import time.

    Like ``asyncio.Semaphore``, an acquire that succeeds at once neither yields to the
    event loop nor checks for cancellation: the uncontended path costs no more than
    ``asyncio.Semaphore``'s (about 0.6 of it). A loop that only ever acquires free tokens should
    ``await anyio.lowlevel.checkpoint()`` itself. An acquire that waits is a checkpoint.

    Args:
        capacity: the tokens in all (>= 1).

    Raises:
        ValueError: *capacity* is < 1.
        TypeError: *capacity* is not an int.

    Example::

        sem = wp.AsyncSemaphore(10)
        async with sem.hold(len(batch)):
            await send(batch)
    """

    __slots__ = ("__weakref__", "_capacity", "_free", "_lot", "_waiters")

    def __init__(self, capacity: int) -> None:
        self._capacity = check_capacity(capacity)
        self._free = self._capacity
        # The lot is made by a wait that finds the line empty, in the loop that waits
        # (so one semaphore may serve one loop after another); `_waiters` is its line,
        # for the fast paths' truth test. A waiter is woken holding its tokens.
        self._lot: Lot = NO_LOT
        self._waiters = NO_LOT.waiters

    @property
    def capacity(self) -> int:
        """The tokens in all, as given to the constructor."""
        return self._capacity

    async def acquire(self, n: int = 1, timeout: float | None = None) -> bool:
        """Take *n* tokens, waiting for them and for the waiters ahead to be served.

        Args:
            n: tokens to take (1 <= n <= capacity).
            timeout: give up after this many seconds (<= 0: do not wait); None waits
                for as long as it takes.

        Returns:
            True once the tokens are held; False if they could not be had in time, and
            then the semaphore is exactly as before.

        Raises:
            ValueError: *n* is < 1 or > capacity (it could never be served).
            TypeError: *n* is not an int.

        Example::

            await sem.acquire(4)
            try:
                await work()
            finally:
                sem.release(4)
        """
        if n.__class__ is int and 0 < n <= self._free and not self._waiters:
            self._free -= n
            return True
        if timeout is None and self._waiters and n.__class__ is int \
                and 0 < n <= self._capacity:
            # Joining a line without a deadline, inline: no second coroutine, and on
            # asyncio none of the lot's either (a contended acquire costs as much as
            # asyncio.Semaphore's).
            lot = self._lot
            if isinstance(lot, AsyncioLot):
                future = lot.join(n)
                try:
                    await future
                except BaseException:  # cancelled: the lot gave back what it was handed
                    lot.quit(n, future)
                    self._wake()
                    raise
                return True
            try:
                await lot.park(n)
            except BaseException:
                self._wake()
                raise
            return True
        return await self._acquire_slow(n, timeout)

    async def _acquire_slow(self, n: int, timeout: float | None) -> bool:
        n = check_weight(n, self._capacity)
        if n <= self._free and not self._waiters:
            self._free -= n
            return True
        if timeout is not None and timeout <= 0:
            return False
        lot = self._lot
        if not self._waiters:
            lot = self._lot = new_lot(self._lost, _NO_LOOP)
            self._waiters = lot.waiters
        try:
            if timeout is None:
                await lot.park(n)
                return True
            with anyio.move_on_after(timeout):
                await lot.park(n)
                return True
        except BaseException:  # cancelled: the lot gave back what it was handed
            self._wake()
            raise
        self._wake()  # timed out: the waiters behind it may fit now
        return False

    def _lost(self, n: int) -> None:
        """A waiter cancelled just after it was served: its tokens come back."""
        self._free += n
        self._wake()

    def try_acquire(self, n: int = 1) -> bool:
        """Take *n* tokens if they are free and nobody is waiting; never wait.

        Returns:
            True if the tokens are now held, False otherwise.

        Raises:
            ValueError: *n* is < 1 or > capacity.
            TypeError: *n* is not an int.
        """
        n = check_weight(n, self._capacity)
        if n <= self._free and not self._waiters:
            self._free -= n
            return True
        return False

    def release(self, n: int = 1) -> None:
        """Put *n* tokens back and wake the waiters at the head of the line that fit.

        Call it from the semaphore's event loop (it does not block).

        Raises:
            ValueError: *n* is < 1, or more than is held ("released more than held").
            TypeError: *n* is not an int.
        """
        if n.__class__ is int and 0 < n <= self._capacity - self._free:
            self._free += n
            if self._waiters:
                self._wake()
            return
        n = check_count(n)
        held = self._capacity - self._free
        if n > held:
            raise ValueError(f"released more than held (held {held}, released {n})")
        self._free += n  # an int subclass, such as numpy's
        self._wake()

    def _wake(self) -> None:
        self._free -= self._lot.unpark_within(self._free)

    def hold(self, n: int = 1) -> _AsyncHold:
        """An async context manager that acquires *n* tokens on entry, releases on exit.

        Raises:
            ValueError: *n* is < 1 or > capacity (raised here, not on entry).
            TypeError: *n* is not an int.

        Example::

            async with sem.hold(3):
                await work()
        """
        return _AsyncHold(self, check_weight(n, self._capacity))

    def statistics(self) -> SemaphoreStatistics:
        """A frozen snapshot: capacity, tokens held, waiters queued."""
        return SemaphoreStatistics(self._capacity, self._capacity - self._free,
                                   len(self._waiters))

    async def __aenter__(self) -> None:
        if self._free and not self._waiters:
            self._free -= 1
            return
        await self._acquire_slow(1, None)

    async def __aexit__(self, exc_type: type[BaseException] | None,
                        exc: BaseException | None, tb: TracebackType | None) -> None:
        self.release()

    def __repr__(self) -> str:
        s = self.statistics()
        return f"<AsyncSemaphore capacity={s.capacity} held={s.held} waiters={s.waiters}>"


@final
class _AsyncHold:
    """What ``AsyncSemaphore.hold(n)`` returns: acquires *n* on entry, releases on exit."""

    __slots__ = ("_n", "_sem")

    def __init__(self, sem: AsyncSemaphore, n: int) -> None:
        self._sem = sem
        self._n = n

    async def __aenter__(self) -> None:
        await self._sem.acquire(self._n)

    async def __aexit__(self, exc_type: type[BaseException] | None,
                        exc: BaseException | None, tb: TracebackType | None) -> None:
        self._sem.release(self._n)
