"""Weighted, FIFO-fair semaphores: ``Semaphore`` for threads, ``AsyncSemaphore`` for tasks.

Both follow Go's ``golang.org/x/sync/semaphore``. Think of a semaphore as a sack of
``capacity`` tokens: ``acquire(n)`` takes *n* of them, ``release(n)`` puts them back.
Waiters queue in arrival order and only the head of the queue may take tokens, so a
large request is never starved by a stream of small ones::

    acquire(n) --> tokens free and nobody queued? --yes--> take n, return at once
                                 | no
                                 v
                waiters: [head n=8] -> [n=1] -> [n=2] ...    (arrival order)
                                 ^
    release(n), or a waiter that  |  wake: while the head fits in what is free,
    times out or is cancelled ----+  hand it its tokens, pop it, look at the next

Tokens are handed over by the waker, under the semaphore's lock, before the woken
waiter runs: nobody can take them in between. A waiter that leaves the queue (timeout,
cancellation, Ctrl-C) leaves the semaphore exactly as before and runs the wake loop
too, so the waiters behind it that now fit are served (the head leaving may unblock
them), and one that was handed its tokens just as it gave up puts them back.
"""

from __future__ import annotations

import asyncio
import contextlib
import operator
import threading
from collections import deque
from dataclasses import dataclass
from types import TracebackType
from typing import Any, Final, final

import anyio

__all__ = ["AsyncSemaphore", "Semaphore", "SemaphoreStatistics"]

_TIMEOUT_MAX: Final = threading.TIMEOUT_MAX


@final
@dataclass(frozen=True, slots=True)
class SemaphoreStatistics:
    """A frozen snapshot of a ``Semaphore`` or ``AsyncSemaphore``.

    Attributes:
        capacity: the tokens the semaphore was built with.
        held: tokens acquired and not yet released (waiters served count too).
        waiters: acquires queued for their turn.
    """

    capacity: int
    held: int
    waiters: int

    @property
    def available(self) -> int:
        """Tokens free now: ``capacity - held``."""
        return self.capacity - self.held


def _check_capacity(capacity: int) -> int:
    if isinstance(capacity, bool) or not isinstance(capacity, int):
        raise TypeError(f"capacity must be an int, got {capacity!r}")
    if capacity < 1:
        raise ValueError(f"capacity must be >= 1, got {capacity}")
    return capacity


def _check_weight(n: int, capacity: int) -> int:
    """Return *n* as a plain int, or raise the error that states the rule it breaks."""
    n = _check_count(n)
    if n > capacity:
        raise ValueError(f"n must be <= capacity ({capacity}), got {n}")
    return n


def _check_count(n: int) -> int:
    # n == 0 is refused, unlike Go: it would hold nothing yet still queue behind the
    # waiters, and a zero-cost task simply needs no budget.
    if isinstance(n, bool):
        # acquire(False) is threading.Semaphore's non-blocking call: say what to use.
        raise TypeError(f"n must be an int, got {n!r} (to try without waiting, "
                        "call try_acquire())")
    try:
        n = operator.index(n)
    except TypeError:
        raise TypeError(f"n must be an int, got {n!r}") from None
    if n < 1:
        raise ValueError(f"n must be >= 1, got {n}")
    return n


@final
class Semaphore:
    """A weighted, FIFO-fair semaphore for threads, as Go's ``x/sync/semaphore``.

    ``acquire(n)`` waits until *n* of the ``capacity`` tokens are free and it is first
    in line; waiters are served strictly in arrival order, so a small request never
    overtakes an earlier large one, and a large one is never starved. When tokens come
    back, every waiter at the head of the line that now fits is woken.

    Any thread may release tokens, not only the one that acquired them, so a pool can
    acquire when it schedules a task and release when a worker finishes it. It is a
    drop-in for ``threading.Semaphore`` in ``with sem:``, ``acquire()``,
    ``acquire(timeout=...)``, ``acquire(blocking=False)`` and ``release()``, and is
    bounded: releasing more than is held raises.

    Cost: an uncontended ``acquire(1)`` + ``release(1)`` is one ``threading.Lock`` round
    trip each, about half the time of ``threading.Semaphore``'s; a waiter allocates one
    lock.

    Args:
        capacity: the tokens in all (>= 1).

    Raises:
        ValueError: *capacity* is < 1.
        TypeError: *capacity* is not an int.

    Example::

        memory = wp.Semaphore(8 * 2**30)          # a byte budget
        with memory.hold(len(blob)):
            process(blob)
    """

    __slots__ = ("__weakref__", "_capacity", "_free", "_lock", "_waiters")

    def __init__(self, capacity: int) -> None:
        self._capacity = _check_capacity(capacity)
        self._free = self._capacity
        self._lock = threading.Lock()
        # (n, signal): signal is a lock held until the waker releases it, as in
        # threading.Condition; created only when a thread has to wait.
        self._waiters: deque[tuple[int, threading.Lock]] = deque()

    @property
    def capacity(self) -> int:
        """The tokens in all, as given to the constructor."""
        return self._capacity

    def acquire(self, n: int = 1, timeout: float | None = None, *,
                blocking: bool = True) -> bool:
        """Take *n* tokens, waiting for them and for the waiters ahead to be served.

        Args:
            n: tokens to take (1 <= n <= capacity).
            timeout: give up after this many seconds (<= 0: do not wait); None waits
                for as long as it takes.
            blocking: False returns at once, as ``try_acquire``.

        Returns:
            True once the tokens are held; False if they could not be had in time, and
            then the semaphore is exactly as before.

        Raises:
            ValueError: *n* is < 1 or > capacity (it could never be served), or a
                *timeout* was given with ``blocking=False``.
            TypeError: *n* is not an int.

        Example::

            if sem.acquire(4, timeout=1.0):
                try:
                    work()
                finally:
                    sem.release(4)
        """
        if timeout is not None and not blocking:
            raise ValueError("can't specify timeout for non-blocking acquire")
        # Hot path, kept inline: one lock round trip, no call, no allocation.
        with self._lock:
            if n.__class__ is int and 0 < n <= self._free and not self._waiters:
                self._free -= n
                return True
        return self._acquire_slow(n, timeout, blocking)

    def _acquire_slow(self, n: int, timeout: float | None, blocking: bool) -> bool:
        n = _check_weight(n, self._capacity)
        with self._lock:
            if n <= self._free and not self._waiters:
                self._free -= n
                return True
            if not blocking or (timeout is not None and timeout <= 0):
                return False
            signal = threading.Lock()
            signal.acquire()
            entry = (n, signal)
            self._waiters.append(entry)
        try:
            if timeout is None:
                granted = signal.acquire()
            else:
                granted = signal.acquire(True, min(timeout, _TIMEOUT_MAX))
        except BaseException:  # Ctrl-C while waiting: leave no trace
            self._leave(entry, give_back=True)
            raise
        return granted or self._leave(entry, give_back=False)

    def _leave(self, entry: tuple[int, threading.Lock], *, give_back: bool) -> bool:
        """Take a waiter that gave up out of the line; return True if it holds tokens.

        A waker may have served it between its giving up and this lock: then it keeps
        them (a timeout that lost the race still acquired) or, when *give_back*, puts
        them back.
        """
        with self._lock:
            try:
                self._waiters.remove(entry)
            except ValueError:  # already served
                if not give_back:
                    return True
                self._free += entry[0]
            self._wake()
        return False

    def try_acquire(self, n: int = 1) -> bool:
        """Take *n* tokens if they are free and nobody is waiting; never wait.

        A free token does not let this call overtake a queued waiter, so a large waiter
        is not starved by ``try_acquire`` either.

        Returns:
            True if the tokens are now held, False otherwise.

        Raises:
            ValueError: *n* is < 1 or > capacity.
            TypeError: *n* is not an int.
        """
        return self.acquire(n, blocking=False)

    def release(self, n: int = 1) -> None:
        """Put *n* tokens back and wake the waiters at the head of the line that fit.

        Any thread may release, not only the one that acquired.

        Raises:
            ValueError: *n* is < 1, or more than is held ("released more than held").
            TypeError: *n* is not an int.
        """
        with self._lock:
            if n.__class__ is int and 0 < n <= self._capacity - self._free:
                self._free += n
                if self._waiters:
                    self._wake()
                return
        self._release_slow(n)

    def _release_slow(self, n: int) -> None:
        n = _check_count(n)
        with self._lock:
            held = self._capacity - self._free
            if n > held:
                raise ValueError(f"released more than held (held {held}, released {n})")
            self._free += n
            self._wake()

    def _wake(self) -> None:
        # Caller holds self._lock. Serve the head while it fits; stop at the first that
        # does not, even if a later, smaller one would: that is what makes it fair.
        waiters = self._waiters
        free = self._free
        while waiters and waiters[0][0] <= free:
            n, signal = waiters.popleft()
            free -= n
            signal.release()
        self._free = free

    def hold(self, n: int = 1) -> _Hold:
        """A context manager that acquires *n* tokens on entry and releases them on exit.

        Raises:
            ValueError: *n* is < 1 or > capacity (raised here, not on entry).
            TypeError: *n* is not an int.

        Example::

            with sem.hold(3):
                work()
        """
        return _Hold(self, _check_weight(n, self._capacity))

    def statistics(self) -> SemaphoreStatistics:
        """A frozen snapshot: capacity, tokens held, waiters queued."""
        with self._lock:
            return SemaphoreStatistics(self._capacity, self._capacity - self._free,
                                       len(self._waiters))

    def __enter__(self) -> None:
        with self._lock:  # acquire(1)'s hot path, inline: ``with sem:`` is the common use
            if self._free and not self._waiters:
                self._free -= 1
                return
        self._acquire_slow(1, None, True)

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.release()

    def __repr__(self) -> str:
        s = self.statistics()
        return f"<Semaphore capacity={s.capacity} held={s.held} waiters={s.waiters}>"


@final
class _Hold:
    """What ``Semaphore.hold(n)`` returns: acquires *n* on entry, releases on exit."""

    __slots__ = ("_n", "_sem")

    def __init__(self, sem: Semaphore, n: int) -> None:
        self._sem = sem
        self._n = n

    def __enter__(self) -> None:
        self._sem.acquire(self._n)

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self._sem.release(self._n)


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
        self._capacity = _check_capacity(capacity)
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
        n = _check_weight(n, self._capacity)
        if n <= self._free and not self._waiters:
            self._free -= n
            return True
        if timeout is not None and timeout <= 0:
            return False
        if self._asyncio is None:
            self._asyncio = _on_asyncio()
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
        n = _check_weight(n, self._capacity)
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
        n = _check_count(n)
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
        return _AsyncHold(self, _check_weight(n, self._capacity))

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


def _on_asyncio() -> bool:
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return False
    return True


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
