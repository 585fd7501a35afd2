"""Weighted, FIFO-fair semaphores: ``Semaphore`` for threads (``AsyncSemaphore``, its
twin for tasks, is in ``_async_sync``).

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

import operator
import threading
from collections import deque
from dataclasses import dataclass
from types import TracebackType
from typing import Final, final

__all__ = ["Semaphore", "SemaphoreStatistics", "WaitTicket", "check_capacity",
           "check_count", "check_weight"]

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


def check_capacity(capacity: int) -> int:
    if isinstance(capacity, bool) or not isinstance(capacity, int):
        raise TypeError(f"capacity must be an int, got {capacity!r}")
    if capacity < 1:
        raise ValueError(f"capacity must be >= 1, got {capacity}")
    return capacity


def check_weight(n: int, capacity: int) -> int:
    """Return *n* as a plain int, or raise the error that states the rule it breaks."""
    n = check_count(n)
    if n > capacity:
        raise ValueError(f"n must be <= capacity ({capacity}), got {n}")
    return n


def check_count(n: int) -> int:
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
        self._capacity = check_capacity(capacity)
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

    def _acquire_slow(self, n: int, timeout: float | None, blocking: bool,
                      ticket: WaitTicket | None = None) -> bool:
        n = check_weight(n, self._capacity)
        with self._lock:
            if ticket is not None and ticket.cancelled:
                return False
            if n <= self._free and not self._waiters:
                self._free -= n
                return True
            if not blocking or (timeout is not None and timeout <= 0):
                return False
            signal = threading.Lock()
            signal.acquire()
            entry = (n, signal)
            if ticket is not None:
                ticket.entry = entry
            self._waiters.append(entry)
        try:
            if timeout is None:
                granted = signal.acquire()
            else:
                granted = signal.acquire(True, min(timeout, _TIMEOUT_MAX))
        except BaseException:  # Ctrl-C while waiting: leave no trace
            self._leave(entry, ticket, give_back=True)
            raise
        if granted:  # served, or woken by _withdraw (which set withdrawn first)
            return ticket is None or not ticket.withdrawn
        return self._leave(entry, ticket, give_back=False)

    def _leave(self, entry: tuple[int, threading.Lock], ticket: WaitTicket | None, *,
               give_back: bool) -> bool:
        """Take a waiter that gave up out of the line; return True if it holds tokens.

        A waker may have served it between its giving up and this lock: then it keeps
        them (a timeout that lost the race still acquired) or, when *give_back*, puts
        them back. One withdrawn meanwhile (``_withdraw``) is out of the line already
        and holds nothing.
        """
        with self._lock:
            if ticket is not None and ticket.withdrawn:
                return False
            try:
                self._waiters.remove(entry)
            except ValueError:  # already served
                if not give_back:
                    return True
                self._free += entry[0]
            self._wake()
        return False

    def _acquire_withdrawable(self, n: int, timeout: float | None,
                              ticket: WaitTicket) -> bool:
        """``acquire(n, timeout)`` for a waiter that another thread may take out of the
        line (``_withdraw(ticket)``): it then returns False at once, holding nothing.
        How a budget is waited for on behalf of an event loop (``LoopBudget``)."""
        return self._acquire_slow(n, timeout, True, ticket)

    def _withdraw(self, ticket: WaitTicket) -> None:
        """Take *ticket*'s waiter out of the line, if it stands in it: its thread
        returns False. One not yet in line never joins it; one served keeps its
        tokens (its owner gives them back)."""
        with self._lock:
            ticket.cancelled = True
            entry = ticket.entry
            if entry is None or entry not in self._waiters:
                return
            self._waiters.remove(entry)
            ticket.withdrawn = True
            self._wake()  # the waiters behind it may fit now
        entry[1].release()

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
        n = check_count(n)
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
        return _Hold(self, check_weight(n, self._capacity))

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
class WaitTicket:
    """A wait that another thread may call off (``Semaphore._withdraw``): ``cancelled``
    once it is; ``withdrawn`` if that took it out of the line; ``entry`` its place in
    line. Written under the semaphore's lock."""

    __slots__ = ("cancelled", "entry", "withdrawn")

    def __init__(self) -> None:
        self.cancelled = False
        self.withdrawn = False
        self.entry: tuple[int, threading.Lock] | None = None


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
