"""Dynamic pools: the ``Autoscale`` and ``Adaptive`` policies and the state each gives a
pool.

Both are frozen value objects, checked at construction, that make a mutable state object
per pool (as ``RateLimit.bucket()`` does): ``Autoscale.scaler()`` a ``Scaler``,
``Adaptive.limiter()`` a ``Limiter``. The states are pure: no thread, no lock, no clock
of their own. The engine feeds them events with explicit times, under the lock it holds
anyway, and reads their decisions::

    task queued, no idle worker ──> Scaler.to_start(...)  ──> spawn that many
    worker parked since t       ──> Scaler.retire_at(t)   ──> wake it then:
                                    Scaler.may_retire(...) ──> it leaves
    task starts                 ──> Limiter.on_start()     (only while in_flight < limit)
    task ends                   ──> Limiter.on_end(latency, dropped, now)
                                    a window closes now and then: limit moves

The retry-after hint that a dropped task's error may carry is ``_core.retry``'s business
(``retry_after``, ``Retry.delay_for``). Imports nothing of workpool but
``_core.exceptions``.
"""

from __future__ import annotations

import dataclasses
import math
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import NamedTuple, final

from .exceptions import TaskTimeout

__all__ = ["Adaptive", "Autoscale", "DropOn", "LimitSample", "Limiter", "Scaler"]

#: What counts as a drop: exception types, or a predicate on the task's exception.
DropOn = type[BaseException] | tuple[type[BaseException], ...] | Callable[[BaseException], bool]

_HISTORY = 512  # samples kept in a history: enough for a plot of the last few minutes
_BASELINE_WINDOWS = 100  # windows over which the no-load latency is the minimum


def _check_int(name: str, value: object, low: int) -> None:
    if not isinstance(value, int) or isinstance(value, bool) or value < low:
        raise ValueError(f"{name} must be an int >= {low}, got {value!r}")


def _check_seconds(name: str, value: object, *, positive: bool) -> None:
    ok = isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)
    if not ok or (value <= 0 if positive else value < 0):  # type: ignore[operator]
        rule = "> 0" if positive else ">= 0"
        raise ValueError(f"{name} must be a finite number of seconds {rule}, got {value!r}")


def _check_bounds(low: int, high: int) -> None:
    if low > high:
        raise ValueError(f"min must be <= max, got min={low} and max={high}")


# -- Autoscale ------------------------------------------------------------------------------

@final
@dataclass(frozen=True, slots=True, kw_only=True)
class Autoscale:
    """A worker count that follows the backlog: between ``min`` and ``max`` workers.

    A worker is added as soon as a task waits and no worker is idle, up to ``max``; a
    worker idle for ``idle_timeout`` seconds leaves, down to ``min``. ``min=0`` makes a
    pool that holds no thread or process while idle, at the cost of starting one for the
    next task. A process pool keeps one spare process starting while it is below ``max``
    and has a backlog, so that growth rarely makes a task wait for a process start;
    shrinking never stops a worker that runs a task. ``pool.resize()`` moves the bounds
    at run time; ``statistics()`` reports the current, min and max workers and their
    recent history.

    Accepted as ``workers=`` by ThreadPool, ProcessPool, AsyncPool, Group and every
    pipeline stage.

    Args:
        min: the fewest workers (>= 0, <= max).
        max: the most workers (>= 1).
        idle_timeout: seconds a worker stays idle before it leaves (> 0).

    Raises:
        ValueError: a bound or the timeout breaks its rule.

    Example::

        with wp.ThreadPool(workers=wp.Autoscale(min=0, max=32, idle_timeout=2.0)) as pool:
            results = list(pool.map(fetch, urls))
    """

    min: int = 0
    max: int
    idle_timeout: float = 5.0

    def __post_init__(self) -> None:
        _check_int("max", self.max, 1)
        _check_int("min", self.min, 0)
        _check_bounds(self.min, self.max)
        _check_seconds("idle_timeout", self.idle_timeout, positive=True)

    def scaler(self) -> Scaler:
        """A fresh scaling state for one pool."""
        return Scaler(self)


@final
class Scaler:
    """One pool's scaling state: its current bounds, its decisions, its history.

    The owner serialises calls (the engine's lock) and passes its own counts and times:
    the scaler keeps no clock and counts no worker itself, so it cannot drift from the
    engine. Decisions are pure functions of what is passed and the current bounds.
    """

    __slots__ = ("_history", "idle_timeout", "max", "min")

    def __init__(self, spec: Autoscale) -> None:
        self.min = spec.min
        self.max = spec.max
        self.idle_timeout = spec.idle_timeout
        self._history: deque[tuple[float, int]] = deque(maxlen=_HISTORY)

    @property
    def history(self) -> tuple[tuple[float, int], ...]:
        """Recent ``(time, workers)`` pairs, oldest first, one per change (bounded)."""
        return tuple(self._history)

    def to_start(self, *, workers: int, idle: int, backlog: int, spare: bool = False) -> int:
        """How many workers to start now.

        One per waiting task that no idle worker will take, within ``max``; at least
        enough to reach ``min``. With *spare* (a pool whose workers are slow to start:
        processes) one more while there is a backlog and room below ``max``.

        Args:
            workers: workers alive or starting.
            idle: of those, the ones free to take a task (starting ones included).
            backlog: tasks waiting for a worker.
            spare: keep one extra worker starting while there is a backlog.
        """
        wanted = max(0, backlog - idle) + (1 if spare and backlog > 0 else 0)
        return max(0, min(wanted, self.max - workers), self.min - workers)

    def retire_at(self, idle_since: float) -> float:
        """When a worker idle since *idle_since* should ask ``may_retire`` again."""
        return idle_since + self.idle_timeout

    def may_retire(self, *, workers: int, idle_since: float, now: float) -> bool:
        """Whether a worker idle since *idle_since* leaves at *now*: it has been idle for
        ``idle_timeout`` and the pool stays at ``min`` or above without it."""
        return workers > self.min and now - idle_since >= self.idle_timeout

    def surplus(self, workers: int) -> int:
        """Workers above ``max`` (after ``resize`` lowered it): each leaves as soon as it
        is idle, never while it runs a task."""
        return max(0, workers - self.max)

    def resize(self, *, min: int | None = None, max: int | None = None) -> None:
        """Move the bounds; either may be omitted. Checked as ``Autoscale``'s are.

        Raises:
            ValueError: a bound breaks its rule, or min > max.
        """
        low = self.min if min is None else min
        high = self.max if max is None else max
        _check_int("max", high, 1)
        _check_int("min", low, 0)
        _check_bounds(low, high)
        self.min, self.max = low, high

    def record(self, now: float, workers: int) -> None:
        """Note the worker count at *now*; a count equal to the last one adds nothing."""
        if not self._history or self._history[-1][1] != workers:
            self._history.append((now, workers))


# -- Adaptive -------------------------------------------------------------------------------

@final
@dataclass(frozen=True, slots=True, kw_only=True)
class Adaptive:
    """A concurrency limit that finds, and follows, the concurrency a service can take.

    The pool runs at most ``limit`` tasks at once and moves the limit once per sampling
    window (at least ``window`` seconds, twice its slowest task's latency, and
    ``window_samples`` ended tasks or two per unit of limit if fewer), from what the
    tasks that started in the window measured:

    - a *drop* (a task whose exception matches ``drop``: by default ``wp.TaskTimeout``;
      e.g. a predicate recognising HTTP 429 or 503) cuts the limit to ``backoff`` times
      itself (multiplicative decrease);
    - latency above ``1 + tolerance`` times the no-load latency (the least window
      median of the last 100 windows), two windows in a row (one may be a pause on
      either side) or with drops in the window, sets the limit to the concurrency the
      service served without queueing: in-flight x no-load latency / latency (Little's
      law, as TCP Vegas estimates its queue), with the milder latency of the two,
      never below half the limit; the first of the two windows holds the limit;
    - otherwise, when the window used the whole limit, it grows: by ``growth`` times per
      window until the first sign of a queue (slow start), then by 1 per window, 1
      more for every 8 windows grown in a row, while latency holds;
    - a window that did not use the limit (too little work) leaves it where it is.

    Why this mix: AIMD alone (Netflix ``AIMDLimit``) climbs by 1 per window (C windows
    to reach a concurrency C) and only learns from drops, so it sits at the service's
    breaking point. Gradient2 tolerates 50% latency growth against a drifting long-term
    average and settles well above the knee. Hill climbing (.NET's thread pool) needs
    many noisy throughput samples per move. The latency knee, measured against a
    no-load baseline, tells where queueing starts; one window past the knee yields the
    knee itself (the Vegas estimate), so a capacity drop is followed in a window or two.
    Slow start bounds overshoot to ``growth - 1`` (25%) while reaching C from 1 in about
    log(C) / log(growth) windows (13 for C = 40, 17 for C = 100). Throughput needs no separate
    test: below the knee it grows with the limit, past it the latency test fires.

    An exception that carries a retry-after hint (see ``Retry``) delays its task's
    retry by at least that long. ``statistics()`` reports the limit, its recent history
    and the drop count. Works with ``rate=`` (the rate still caps starts) and
    ``retry=``.

    Args:
        min: the lowest limit, and the first (>= 1).
        max: the highest limit (>= min).
        tolerance: latency may exceed the no-load latency by this fraction before the
            limit shrinks (> 0).
        backoff: the factor a drop multiplies the limit by (0 < backoff < 1).
        growth: the factor of slow start per window (> 1).
        window: the least seconds of a sampling window (> 0).
        window_samples: the least ended tasks in a sampling window (>= 1), or two
            per unit of limit when that is fewer.
        drop: exception types, or a predicate on the exception, that mark a drop.

    Raises:
        ValueError: a number breaks its rule.
        TypeError: ``drop`` is neither exception types nor callable.

    Example::

        def overloaded(exc: BaseException) -> bool:
            return getattr(exc, "status", None) in (429, 503)

        async with wp.AsyncPool(workers=wp.Adaptive(max=200, drop=overloaded)) as pool:
            pages = [page async for page in pool.map(fetch, urls)]
    """

    min: int = 1
    max: int
    tolerance: float = 0.1
    backoff: float = 0.9
    growth: float = 1.25
    window: float = 0.5
    window_samples: int = 10
    drop: DropOn = field(default=(TaskTimeout,))

    def __post_init__(self) -> None:
        _check_int("min", self.min, 1)
        _check_int("max", self.max, 1)
        _check_bounds(self.min, self.max)
        _check_number("tolerance", self.tolerance, "> 0", lambda x: x > 0)
        _check_number("backoff", self.backoff, "in (0, 1)", lambda x: 0 < x < 1)
        _check_number("growth", self.growth, "> 1", lambda x: x > 1)
        _check_seconds("window", self.window, positive=True)
        _check_int("window_samples", self.window_samples, 1)
        drop = self.drop
        is_types = (isinstance(drop, type) and issubclass(drop, BaseException)) or (
            isinstance(drop, tuple)
            and all(isinstance(t, type) and issubclass(t, BaseException) for t in drop))
        if not is_types and not callable(drop):
            raise TypeError(f"drop must be exception types or a predicate, got {drop!r}")

    def is_drop(self, exc: BaseException) -> bool:
        """Whether a task that raised *exc* was dropped (a sign of overload)."""
        drop = self.drop
        if isinstance(drop, type | tuple):
            return isinstance(exc, drop)
        return bool(drop(exc))

    def limiter(self) -> Limiter:
        """A fresh limit state for one pool, at ``min``."""
        return Limiter(self)


def _median(values: list[float]) -> float:
    values.sort()
    mid = len(values) // 2
    return values[mid] if len(values) % 2 else (values[mid - 1] + values[mid]) / 2


def _check_number(name: str, value: object, rule: str, ok: Callable[[float], bool]) -> None:
    if (not isinstance(value, int | float) or isinstance(value, bool)
            or not math.isfinite(value) or not ok(value)):
        raise ValueError(f"{name} must be {rule}, got {value!r}")


class LimitSample(NamedTuple):
    """One closed sampling window of an ``Adaptive`` limit."""

    time: float  #: when the window closed (the clock the pool passes)
    limit: int  #: the limit set at its close
    throughput: float  #: tasks completed per second during the window
    latency: float  #: median latency of its completed tasks, seconds (0.0: none)


@final
class Limiter:
    """One pool's adaptive concurrency limit (the algorithm is ``Adaptive``'s docstring).

    Not thread-safe: the owner serialises calls (the engine's lock). A task may start
    while ``in_flight < limit``; the owner calls ``on_start()`` when it starts and
    ``on_end(latency, dropped, now)`` once when it ends, however it ends: per run, so
    each attempt of a retried task counts. A window counts the tasks that started
    after it opened (``now - latency`` at or after its opening), so a limit is judged
    by tasks that ran under it.
    """

    __slots__ = ("_baseline", "_history", "_max_flight", "_opened", "_queued", "_slow_start",
                 "_spec", "_starts", "_streak", "_sum_flight", "_w_drops", "_w_latencies",
                 "_w_slowest", "drops", "in_flight", "limit")

    def __init__(self, spec: Adaptive) -> None:
        self._spec = spec
        self.limit = spec.min
        self.in_flight = 0
        self.drops = 0
        self._slow_start = True
        self._streak = 0  # windows grown in a row since slow start ended
        self._queued: float | None = None  # the last window's latency, if it queued
        self._baseline: deque[float] = deque(maxlen=_BASELINE_WINDOWS)
        self._history: deque[LimitSample] = deque(maxlen=_HISTORY)
        self._opened: float | None = None
        self._reset_window()

    def _reset_window(self) -> None:
        self._w_latencies: list[float] = []
        self._w_drops = 0
        self._w_slowest = 0.0
        self._starts = 0
        self._sum_flight = 0
        self._max_flight = self.in_flight

    @property
    def max(self) -> int:
        """The highest the limit may go."""
        return self._spec.max

    @property
    def history(self) -> tuple[LimitSample, ...]:
        """The last 512 closed windows, oldest first."""
        return tuple(self._history)

    @property
    def no_load_latency(self) -> float | None:
        """The latency the service shows without a queue (seconds), once measured."""
        return min(self._baseline) if self._baseline else None

    def resize(self, *, min: int | None = None, max: int | None = None) -> None:
        """Move the limit's bounds; either may be omitted. Checked as ``Adaptive``'s
        are; the limit is brought within them.

        Raises:
            ValueError: a bound breaks its rule, or min > max.
        """
        spec = dataclasses.replace(self._spec, min=self._spec.min if min is None else min,
                                   max=self._spec.max if max is None else max)
        self._spec = spec
        if self.limit < spec.min:
            self.limit = spec.min
        elif self.limit > spec.max:
            self.limit = spec.max

    def on_start(self) -> None:
        """A task starts (the owner checked ``in_flight < limit``)."""
        self.in_flight += 1
        self._starts += 1
        self._sum_flight += self.in_flight
        self._max_flight = max(self._max_flight, self.in_flight)

    def on_end(self, latency: float, dropped: bool, now: float) -> None:
        """A task that started *latency* seconds before *now* ended; *dropped* says
        whether its failure is a drop (``Adaptive.is_drop``)."""
        self.in_flight -= 1
        self.drops += dropped
        if self._opened is None:
            self._opened = now - latency
        if now - latency < self._opened:
            return  # it ran under an earlier limit
        if dropped:
            self._w_drops += 1
        else:
            self._w_latencies.append(latency)
        spec = self._spec
        elapsed = now - self._opened
        self._w_slowest = max(self._w_slowest, latency)
        # At least two of its slowest latency long: a shorter window would only count
        # the tasks that ended quickly, the first ones after the limit moved.
        # Samples: window_samples, or two per unit of limit when fewer, so that slow
        # start from a limit of 1 takes windows of two round trips, not ten.
        if elapsed >= max(spec.window, 2 * self._w_slowest) and (
                len(self._w_latencies) + self._w_drops >= min(spec.window_samples,
                                                               2 * self.limit)):
            self._close(now, elapsed)

    def _close(self, now: float, elapsed: float) -> None:
        lats = self._w_latencies
        latency = _median(lats) if lats else 0.0
        if lats:
            self._baseline.append(latency)
        self.limit = self._next_limit(latency)
        self._history.append(LimitSample(now, self.limit, len(lats) / elapsed, latency))
        self._opened = now
        self._reset_window()

    def _next_limit(self, latency: float) -> int:
        spec, limit = self._spec, self.limit
        base = min(self._baseline) if self._baseline else 0.0
        queued = latency > base * (1 + spec.tolerance)
        # One slow window may be a pause on either side (a GC, a busy host): a queue
        # counts once two windows in a row show it (the milder of the two is used),
        # or drops in the same window confirm it.
        before, self._queued = self._queued, latency if queued else None
        confirmed = queued and (before is not None or self._w_drops > 0)
        if self._w_drops or confirmed:
            self._slow_start, self._streak = False, 0
            new = limit
            if confirmed:  # the concurrency served without a queue (Vegas)
                flight = self._sum_flight / self._starts if self._starts else limit
                slowest = min(latency, before or latency)
                new = max(math.floor(flight * base / slowest), math.floor(limit / 2))
            if self._w_drops:
                new = min(new, math.floor(limit * spec.backoff))
        elif queued or self._max_flight < limit:
            return limit  # a queue to confirm, or too little work to learn from
        elif self._slow_start:
            new = math.ceil(limit * spec.growth)
        else:
            new = limit + 1 + self._streak // 8
            self._streak += 1
        return max(spec.min, min(spec.max, new))
