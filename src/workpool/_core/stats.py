"""Pool statistics: plain counters, a ring of recent latency samples, and fixed
histogram buckets of every latency sample.

Pools update a ``StatsRecorder`` inside the critical section they already hold to hand
out work, so recording costs a few attribute writes and no extra lock. ``snapshot()``
turns it into a frozen ``PoolStatistics``. The ring gives recent percentiles; the
buckets (``BUCKETS``, cumulative in the snapshot) count since the pool started, so
that a monitoring system can add them up across pools and over time, which
percentiles cannot be. Imports nothing of workpool.
"""

from __future__ import annotations

import time
from bisect import bisect_left
from dataclasses import dataclass
from itertools import accumulate
from typing import Final, final

from .dynamic import LimitSample

__all__ = ["BUCKETS", "PoolStatistics", "StatsRecorder"]

#: Upper bounds (seconds, inclusive) of the latency histograms' buckets; a last bucket,
#: +Inf, takes the rest. From 10 microseconds (a tiny thread task) to a minute.
BUCKETS: Final = (0.00001, 0.00005, 0.0001, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025,
                  0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)

_WINDOW = 1024  # latency samples kept: a power of two, so the ring index is a mask
_MASK = _WINDOW - 1


@final
@dataclass(frozen=True, slots=True)
class PoolStatistics:
    """A frozen snapshot of a pool's counters and recent latencies.

    Counters count tasks (``map`` items one by one), exactly. Latencies (seconds) are
    percentiles over the last 1024 latency samples (``map`` chunks count once): every
    task run is sampled, except that tasks quicker than 0.1 ms are sampled 1 in 16;
    throughput is tasks ended per second over that same window.

    The histograms count every latency sample since the pool started, each standing
    for the tasks it samples (16 for a sampled tiny task; a ``map`` chunk's run stands
    for its items, each at the chunk's run time): ``queue_wait_buckets`` and
    ``run_time_buckets`` are cumulative counts, one per bound of ``BUCKETS`` then one
    for +Inf (the total), as Prometheus wants them; ``queue_wait_sum`` and
    ``run_time_sum`` the sums of those latencies (seconds). Process pools only:
    ``crashed`` counts tasks that failed because their worker process died (counted
    in ``failed`` too); ``restarts`` counts worker processes started in place of one
    that died, was killed or retired.
    A pool with ``workers=wp.Autoscale(...)`` also reports its bounds (``min_workers``,
    ``max_workers``) and ``workers_history``, recent ``(time, workers)`` pairs with
    times on ``time.monotonic()``; one with ``workers=wp.Adaptive(...)`` reports its
    concurrency ``limit``, ``limit_history`` (recent sampling windows: time, limit,
    throughput, latency) and ``drops``, the tasks that ended in a drop. Other pools
    leave them at None, ``()`` and 0.
    """

    submitted: int
    queued: int
    running: int
    completed: int
    failed: int
    retried: int
    timed_out: int
    cancelled: int
    workers: int
    busy: int
    idle: int
    stuck: int
    throughput: float
    queue_wait_p50: float
    queue_wait_p95: float
    queue_wait_p99: float
    run_time_p50: float
    run_time_p95: float
    run_time_p99: float
    crashed: int = 0
    restarts: int = 0
    queue_wait_buckets: tuple[int, ...] = (0,) * (len(BUCKETS) + 1)
    run_time_buckets: tuple[int, ...] = (0,) * (len(BUCKETS) + 1)
    queue_wait_sum: float = 0.0
    run_time_sum: float = 0.0
    min_workers: int | None = None
    max_workers: int | None = None
    workers_history: tuple[tuple[float, int], ...] = ()
    limit: int | None = None
    limit_history: tuple[LimitSample, ...] = ()
    drops: int = 0

    @property
    def ended(self) -> int:
        """Tasks that ended: completed, failed, timed out or cancelled."""
        return self.completed + self.failed + self.timed_out + self.cancelled


def _percentile(sorted_values: list[float], q: float) -> float:
    if not sorted_values:
        return 0.0
    index = min(len(sorted_values) - 1, round(q * (len(sorted_values) - 1)))
    return sorted_values[index]


class StatsRecorder:
    """Mutable counters; the owner serialises writes (its own lock, or one writer)."""

    __slots__ = ("_count", "_ended_at", "_n", "_run", "_run_counts", "_run_sum", "_wait",
                 "_wait_counts", "_wait_sum", "cancelled", "completed", "failed", "retried",
                 "submitted", "timed_out")

    def __init__(self) -> None:
        self.submitted = 0
        self.completed = 0
        self.failed = 0
        self.retried = 0
        self.timed_out = 0
        self.cancelled = 0
        self._n = 0
        self._wait = [0.0] * _WINDOW
        self._run = [0.0] * _WINDOW
        self._ended_at = [0.0] * _WINDOW
        self._count = [0] * _WINDOW
        self._wait_counts = [0] * (len(BUCKETS) + 1)  # per bucket, not cumulative
        self._run_counts = [0] * (len(BUCKETS) + 1)
        self._wait_sum = 0.0
        self._run_sum = 0.0

    def sample(self, queue_wait: float, run_time: float, ended_at: float, count: int = 1) -> None:
        """Record one run, standing for *count* tasks (the tasks it samples)."""
        i = self._n & _MASK
        self._wait[i] = queue_wait
        self._run[i] = run_time
        self._ended_at[i] = ended_at
        self._count[i] = count
        self._n += 1
        self._wait_counts[bisect_left(BUCKETS, queue_wait)] += count
        self._run_counts[bisect_left(BUCKETS, run_time)] += count
        self._wait_sum += queue_wait * count
        self._run_sum += run_time * count

    def snapshot(self, *, queued: int, running: int, workers: int, busy: int,
                 stuck: int) -> PoolStatistics:
        """Freeze the counters with the pool's live gauges."""
        n = min(self._n, _WINDOW)
        waits = sorted(self._wait[:n]) if n < _WINDOW else sorted(self._wait)
        runs = sorted(self._run[:n]) if n < _WINDOW else sorted(self._run)
        return PoolStatistics(
            submitted=self.submitted, queued=queued, running=running,
            completed=self.completed, failed=self.failed, retried=self.retried,
            timed_out=self.timed_out, cancelled=self.cancelled,
            workers=workers, busy=busy, idle=max(0, workers - busy), stuck=stuck,
            throughput=self._throughput(n),
            queue_wait_p50=_percentile(waits, 0.50), queue_wait_p95=_percentile(waits, 0.95),
            queue_wait_p99=_percentile(waits, 0.99), run_time_p50=_percentile(runs, 0.50),
            run_time_p95=_percentile(runs, 0.95), run_time_p99=_percentile(runs, 0.99),
            queue_wait_buckets=tuple(accumulate(self._wait_counts)),
            run_time_buckets=tuple(accumulate(self._run_counts)),
            queue_wait_sum=self._wait_sum, run_time_sum=self._run_sum,
        )

    def _throughput(self, n: int) -> float:
        if n == 0:
            return 0.0
        ends = self._ended_at[:n] if n < _WINDOW else self._ended_at
        first, last = min(ends), max(ends)
        count = sum(self._count[:n]) if n < _WINDOW else sum(self._count)
        # The window reaches back to the oldest sample's end, or to "now" if the pool
        # went idle since: an idle pool's throughput decays instead of freezing.
        span = max(last, time.monotonic()) - first
        return count / span if span > 0 else 0.0
