"""``AsyncSemaphore``: the async twin of ``Semaphore`` (see ``_sync`` for the rules
they share), on asyncio or trio through anyio.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections import deque
from types import TracebackType
from typing import Any, final

import anyio

from .._core.aio import ASYNCIO, current_library
from .semaphore import SemaphoreStatistics, check_capacity, check_count, check_weight

__all__ = ["AsyncSemaphore"]


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

    __slots__ = ("__weakref__", "_asyncio", "_capacity", "_free", "_waiters")

    def __init__(self, capacity: int) -> None:
        self._capacity = check_capacity(capacity)
        self._free = self._capacity
        # (n, signal): the signal is set by the waker once the tokens are handed over.
        # On asyncio the signal is a bare future (as asyncio.Semaphore's waiters: an
        # anyio.Event costs several times more); on trio, an anyio.Event.
        self._waiters: deque[tuple[int, Any]] = deque()
        self._asyncio: bool | None = None  # learnt at the first wait

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
        if timeout is None and self._asyncio and n.__class__ is int and 0 < n <= self._capacity:
            # Waiting on asyncio without a deadline, inline: no second coroutine.
            signal = asyncio.get_running_loop().create_future()
            entry = (n, signal)
            self._waiters.append(entry)
            try:
                await signal
            except BaseException:  # cancelled: even if served meanwhile, hold nothing
                self._leave(entry)
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
        if self._asyncio is None:
            self._asyncio = current_library() == ASYNCIO
        signal: Any = (asyncio.get_running_loop().create_future() if self._asyncio
                       else anyio.Event())
        entry = (n, signal)
        self._waiters.append(entry)
        try:
            if timeout is None:
                await (signal if self._asyncio else signal.wait())
            else:
                with anyio.move_on_after(timeout):
                    await (signal if self._asyncio else signal.wait())
        except BaseException:  # cancelled: even if served meanwhile, hold nothing
            self._leave(entry)
            raise
        if _served(signal):  # served, perhaps just as the deadline passed: keep it
            return True
        self._leave(entry)
        return False

    def _leave(self, entry: tuple[int, Any]) -> None:
        if _served(entry[1]):  # served after all: put the tokens back
            self._free += entry[0]
        else:
            with contextlib.suppress(ValueError):  # the waker dropped it already
                self._waiters.remove(entry)
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
        waiters = self._waiters
        free = self._free
        on_asyncio = self._asyncio
        while waiters and waiters[0][0] <= free:
            n, signal = waiters.popleft()
            if on_asyncio:
                if signal.done():  # its task was cancelled: it leaves on its own
                    continue
                signal.set_result(None)
            else:
                signal.set()
            free -= n
        self._free = free

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


def _served(signal: Any) -> bool:
    if isinstance(signal, asyncio.Future):
        return signal.done() and not signal.cancelled()
    return bool(signal.is_set())


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
