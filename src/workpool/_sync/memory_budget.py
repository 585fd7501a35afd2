"""``MemoryBudget``: a byte budget for what is in flight, sized from the memory this
process may really use, that also watches the memory actually in use. Imports
``Semaphore`` (its tokens) and ``_core``'s sizing and memory readers.

An admission passes two gates::

    acquire(n bytes) ──▶ tokens: a wp.Semaphore of `capacity` bytes (FIFO-fair, weighted);
                         a request larger than the whole budget takes all of it, so it
                         runs alone, once everything before it has ended
                     ──▶ usage: the bytes in use, looked at no more often than `interval`
                         (cgroup memory.current less inactive_file, or the RSS of this
                         process and its children)
                             above high x capacity: admission stops ("paused")...
                             ...until usage falls below low x capacity
                         while paused, a task is let in only when nothing else of the
                         budget is in flight: it then runs alone, so work never stops
                     ──▶ admitted: run it; release(n) when it ends

The tokens bound what the tasks say they will use (``cost=``); the watermarks catch
what the costs do not say (a wrong estimate, memory held by the caller, other processes
of the container), since tokens alone cannot see it.
"""

from __future__ import annotations

import math
import os
import re
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Any, Final, Literal, TypeAlias, final

from .._core.memory import cgroup_usage, rss_tree
from .._core.sizing import CgroupDir, memory_limit_from, physical_memory
from .semaphore import Semaphore, WaitTicket, check_count

__all__ = ["Budget", "MemoryBudget", "MemoryBudgetStatistics", "cost_bound"]

_PERCENT: Final = re.compile(r"\s*(\d+(?:\.\d*)?|\.\d+)\s*%\s*")
# A size with a unit: "300MB", "1.5 GiB", "512k", "100B" (decimal units, binary with
# "i"). A bare number in a string is refused: "80" is more likely a slip for "80%".
_SIZE: Final = re.compile(r"\s*(\d+(?:\.\d*)?|\.\d+)\s*([kmgt]i?b?|b)\s*", re.IGNORECASE)
_UNITS: Final = {"k": 10**3, "m": 10**6, "g": 10**9, "t": 10**12,
                 "ki": 2**10, "mi": 2**20, "gi": 2**30, "ti": 2**40}
_LIMIT_RULE: Final = ("limit must be bytes (an int), a size such as '300MB' or '2GiB', or a "
                      "percentage of wp.memory_limit() such as '80%'")
_MIN_WAIT: Final = 0.005  # seconds: the shortest a paused waiter sleeps between looks
_ROOT: Final = Path("/")

Usage: TypeAlias = "Literal['auto', 'rss'] | Callable[[], int | None] | None"


@final
@dataclass(frozen=True, slots=True)
class MemoryBudgetStatistics:
    """A frozen snapshot of a ``MemoryBudget``.

    Attributes:
        capacity: the budget, in bytes.
        held: bytes acquired and not yet released (with those of an acquire that
            has its bytes and waits for usage to fall).
        waiters: acquires waiting for bytes or for usage to fall.
        usage: the bytes in use at the last look (None: not watched, or unreadable).
        peak_usage: the most ``usage`` was at a look (None: never read).
        paused: whether usage is above the high watermark (and has not yet fallen
            below the low one): only a task with nothing else in flight is let in.
        pauses: how many times usage crossed the high watermark.
        above_high: tasks let in while paused because nothing else of the budget was
            in flight: each ran alone.
        oversized: tasks larger than the whole budget: each ran alone.
    """

    capacity: int
    held: int
    waiters: int
    usage: int | None
    peak_usage: int | None
    paused: bool
    pauses: int
    above_high: int
    oversized: int

    @property
    def available(self) -> int:
        """Bytes free now: ``capacity - held``."""
        return self.capacity - self.held


@final
class MemoryBudget:
    """A byte budget: tasks hold their size in bytes (``cost=``) while in flight, and
    admission also stops while the memory actually in use is above a high watermark.

    Pass it as ``budget=`` to a ``ThreadPool`` or ``ProcessPool`` (``schedule(...,
    cost=nbytes)``, ``map(..., cost=nbytes or cost=fn(item))``) or to a pipeline stage
    (``.map(fn, budget=b, cost=len)``), or use it directly (``with b.hold(n):``).
    The same budget may be shared by several pools and stages.

    Its capacity comes from ``wp.memory_limit()`` (the cgroup limit in a container,
    else the physical memory) when *limit* is a percentage, or is *limit* bytes. The
    usage it watches (``usage="auto"``) is that cgroup's (``memory.current`` less
    inactive page cache) when the capacity came from a cgroup, else the resident memory
    of this process and its child processes (read from /proc: no psutil needed).

    A task larger than the whole budget is not refused: it waits until nothing else
    holds the budget and runs alone (``oversized`` in the statistics). While paused, a
    task with nothing else in flight is let in too (``above_high``): admission slows to
    one task at a time, never stops.

    Cost: an acquire and its release take about 2 us (a ``Semaphore``'s, 0.4 us),
    nothing beside tasks that each move megabytes; usage is read at most every
    *interval* seconds, by the thread that is admitting (a few files under /proc: 10 to
    200 us).

    Args:
        limit: the budget: bytes (an int >= 1), a size with a unit (``"300MB"``,
            ``"2GiB"``: k, M, G, T are powers of 1000, Ki, Mi, Gi, Ti of 1024), or a
            percentage of ``wp.memory_limit()`` such as ``"80%"``.
        high: pause admission when usage reaches ``high * capacity`` (> 0).
        low: resume once usage is at most ``low * capacity`` (0 < low < high).
        usage: what is watched: ``"auto"`` (above), ``"rss"`` (this process and its
            descendants), a function returning bytes in use (or None: unknown), or None
            to watch nothing (tokens only).
        interval: the longest usage may go unread while admitting, in seconds (>= 0).

    Raises:
        TypeError: *limit* is neither an int, a size nor a percentage string, *usage* is not
            one of the above, or a number is not a number.
        ValueError: *limit* is < 1 byte or the percentage not in (0, 100]; the
            watermarks are not ``0 < low < high``; *interval* is negative.

    Example::

        budget = wp.MemoryBudget("80%")                     # of the container's limit
        with wp.ThreadPool(8, budget=budget) as pool:
            for digest in pool.map(checksum, paths, cost=os.path.getsize):
                ...
    """

    __slots__ = ("_above_high", "_admitted", "_cond", "_gate_waiters", "_high", "_interval",
                 "_low", "_next_look", "_oversized", "_paused", "_pauses", "_peak", "_read",
                 "_tokens", "_usage")

    def __init__(self, limit: int | str = "80%", *, high: float = 0.9, low: float = 0.8,
                 usage: Usage = "auto", interval: float = 0.05) -> None:
        capacity, reader = _resolve(limit, usage)
        _check_watermarks(high, low)
        if isinstance(interval, bool) or not isinstance(interval, int | float):
            raise TypeError(f"interval must be a number of seconds, got {interval!r}")
        if not 0 <= interval < math.inf:
            raise ValueError(f"interval must be >= 0 and finite, got {interval!r}")
        self._tokens = Semaphore(capacity)
        self._high = high * capacity
        self._low = low * capacity
        self._read = reader
        self._interval = float(interval)
        self._next_look = 0.0
        self._cond = threading.Condition(threading.Lock())
        self._admitted = 0  # bytes of tasks let through both gates
        self._gate_waiters = 0
        self._paused = False
        self._usage: int | None = None
        self._peak: int | None = None
        self._pauses = self._above_high = self._oversized = 0

    @property
    def capacity(self) -> int:
        """The budget, in bytes."""
        return self._tokens.capacity

    def acquire(self, n: int = 1, timeout: float | None = None, *,
                blocking: bool = True) -> bool:
        """Hold *n* bytes of the budget, waiting for them (in arrival order) and, while
        usage is above the high watermark, for it to fall (or for nothing else to be in
        flight). *n* larger than the capacity holds all of it: the task runs alone.

        Args:
            n: the bytes to hold (>= 1).
            timeout: give up after this many seconds; None waits as long as it takes.
            blocking: False returns at once, as ``try_acquire``.

        Returns:
            True once admitted; False if not in time (then nothing is held).

        Raises:
            ValueError: *n* < 1, or a *timeout* with ``blocking=False``.
            TypeError: *n* is not an int.
        """
        return self._acquire(n, timeout, blocking, None)

    def _acquire_withdrawable(self, n: int, timeout: float | None,
                              ticket: WaitTicket) -> bool:
        """``acquire(n, timeout)`` for a waiter that another thread may call off
        (``_withdraw(ticket)``): it then returns False soon, holding nothing."""
        return self._acquire(n, timeout, True, ticket)

    def _acquire(self, n: int, timeout: float | None, blocking: bool,
                 ticket: WaitTicket | None) -> bool:
        tokens = min(check_count(n), self.capacity)
        deadline = None if timeout is None else time.monotonic() + timeout
        if ticket is None:
            took = self._tokens.acquire(tokens, timeout, blocking=blocking)
        else:
            took = self._tokens._acquire_withdrawable(tokens, timeout, ticket)
        if not took:
            return False
        try:
            admitted = self._pass_gate(n, tokens, deadline, blocking, ticket)
        except BaseException:  # Ctrl-C while paused, or the usage function raised
            self._tokens.release(tokens)
            raise
        if not admitted:
            self._tokens.release(tokens)
        return admitted

    def _withdraw(self, ticket: WaitTicket) -> None:
        """Call off *ticket*'s wait: out of the line for bytes, or out of the wait at
        the usage gate (which then gives its bytes back)."""
        self._tokens._withdraw(ticket)
        with self._cond:
            if self._gate_waiters:
                self._cond.notify_all()

    def try_acquire(self, n: int = 1) -> bool:
        """Hold *n* bytes if that needs no wait; never wait. Returns whether it did."""
        return self.acquire(n, blocking=False)

    def release(self, n: int = 1) -> None:
        """Give back *n* bytes (what ``acquire(n)`` took; any thread may).

        Raises:
            ValueError: *n* < 1, or more than is held ("released more than held").
            TypeError: *n* is not an int.
        """
        tokens = min(check_count(n), self.capacity)
        with self._cond:
            if tokens > self._admitted:
                raise ValueError(f"released more than held (held {self._admitted}, "
                                 f"released {n})")
            self._admitted -= tokens
            if self._gate_waiters:
                self._cond.notify_all()
        self._tokens.release(tokens)

    def hold(self, n: int) -> _Hold:
        """A context manager that holds *n* bytes inside its block.

        Raises:
            ValueError: *n* < 1.
            TypeError: *n* is not an int.

        Example::

            with budget.hold(len(blob)):
                process(blob)
        """
        return _Hold(self, check_count(n))

    def statistics(self) -> MemoryBudgetStatistics:
        """A frozen snapshot: bytes held, waiters, usage, pauses, tasks run alone."""
        tokens = self._tokens.statistics()
        with self._cond:
            return MemoryBudgetStatistics(
                tokens.capacity, tokens.held, tokens.waiters + self._gate_waiters,
                self._usage, self._peak, self._paused, self._pauses, self._above_high,
                self._oversized)

    def __repr__(self) -> str:
        s = self.statistics()
        return (f"<MemoryBudget capacity={s.capacity} held={s.held} usage={s.usage} "
                f"paused={s.paused}>")

    def _pass_gate(self, n: int, tokens: int, deadline: float | None,
                   blocking: bool, ticket: WaitTicket | None = None) -> bool:
        """The usage gate, for a caller holding *tokens*: True once let through (False
        once *ticket*, if any, is called off)."""
        while True:
            self._look()
            with self._cond:
                if ticket is not None and ticket.cancelled:
                    return False
                if not self._paused or self._admitted == 0:
                    self._admitted += tokens
                    if n > tokens:
                        self._oversized += 1
                    if self._paused:
                        self._above_high += 1
                    return True
                if not blocking:
                    return False
                wait = max(self._interval, _MIN_WAIT)
                if deadline is not None:
                    wait = min(wait, deadline - time.monotonic())
                    if wait <= 0:
                        return False
                self._gate_waiters += 1
                try:
                    self._cond.wait(wait)
                finally:
                    self._gate_waiters -= 1

    def _look(self) -> None:
        """Read the usage if it was not read in the last ``interval`` seconds, and move
        between paused and admitting at the watermarks."""
        if self._read is None:
            return
        now = time.monotonic()
        if now < self._next_look:
            return
        self._next_look = now + self._interval
        used = self._read()
        if used is None:
            return
        with self._cond:
            self._usage = used
            if self._peak is None or used > self._peak:
                self._peak = used
            if not self._paused and used >= self._high:
                self._paused = True
                self._pauses += 1
            elif self._paused and used <= self._low:
                self._paused = False
                self._cond.notify_all()


Budget: TypeAlias = Semaphore | MemoryBudget  # what budget= takes on a pool or a stage


def cost_bound(budget: Any) -> int | None:
    """What one item's cost may not exceed under *budget* (a semaphore or a
    ``MemoryBudget``, or None): a semaphore's capacity (more would wait for ever), or
    None: no budget, or a ``MemoryBudget``, which runs a larger item alone."""
    if budget is None or isinstance(budget, MemoryBudget):
        return None
    capacity: int = budget.capacity
    return capacity


@final
class _Hold:
    """What ``MemoryBudget.hold(n)`` returns: holds *n* bytes inside its block."""

    __slots__ = ("_budget", "_n")

    def __init__(self, budget: MemoryBudget, n: int) -> None:
        self._budget = budget
        self._n = n

    def __enter__(self) -> None:
        self._budget.acquire(self._n)

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self._budget.release(self._n)


def _resolve(limit: int | str, usage: Usage) -> tuple[int, Callable[[], int | None] | None]:
    """The capacity in bytes for *limit*, and the function that reads *usage*."""
    cgroup = None
    if isinstance(limit, str):
        match = _PERCENT.fullmatch(limit)
        if match is None:
            return _size(limit), _usage_reader(usage, None)
        percent = float(match.group(1))
        if not 0 < percent <= 100:
            raise ValueError(f"limit as a percentage must be > 0 and <= 100, got {limit!r}")
        total, cgroup = memory_limit_from(_ROOT, physical_memory())
        capacity = max(1, int(total * percent / 100))
    elif isinstance(limit, bool) or not isinstance(limit, int):
        raise TypeError(f"{_LIMIT_RULE}, got {limit!r}")
    elif limit < 1:
        raise ValueError(f"limit must be >= 1 byte, got {limit}")
    else:
        capacity = limit
    return capacity, _usage_reader(usage, cgroup)


def _size(limit: str) -> int:
    """The bytes of a size string such as "300MB" or "2GiB"."""
    match = _SIZE.fullmatch(limit)
    if match is None:
        raise TypeError(f"{_LIMIT_RULE}, got {limit!r}")
    unit = match.group(2).lower().removesuffix("b")
    size = int(float(match.group(1)) * _UNITS.get(unit, 1))
    if size < 1:
        raise ValueError(f"limit must be >= 1 byte, got {limit!r}")
    return size


def _usage_reader(usage: Usage, cgroup: CgroupDir | None) -> Callable[[], int | None] | None:
    """The function that reads *usage* (*cgroup*: the cgroup the limit came from)."""
    if usage is None or callable(usage):
        return usage
    if usage == "auto" and cgroup is not None:
        watched = cgroup
        return lambda: cgroup_usage(watched)
    if usage in ("auto", "rss"):
        return lambda: rss_tree(_ROOT, os.getpid())
    raise TypeError(f"usage must be 'auto', 'rss', a function returning bytes, or None, "
                    f"got {usage!r}")


def _check_watermarks(high: float, low: float) -> None:
    for name, value in (("high", high), ("low", low)):
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise TypeError(f"{name} must be a fraction of the capacity, got {value!r}")
    if not (0 < low < high < math.inf):
        raise ValueError(f"the watermarks must be 0 < low < high (fractions of the "
                         f"capacity), got low={low!r}, high={high!r}")
