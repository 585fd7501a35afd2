"""Autoscale and Adaptive: their checks, the scaling decisions, and the limit algorithm
on synthetic latency and drop sequences, in virtual time (no clock, no sleep)."""

from __future__ import annotations

import heapq
import itertools
import math
import random
import re
from dataclasses import dataclass, field

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import workpool as wp
from workpool._bench.bench_dynamic import ServiceModel, windows_to_reach, windows_to_settle
from workpool._core.dynamic import Limiter, LimitSample
from workpool._core.retry import retry_after
from workpool._core.stats import StatsRecorder

# -- the checks ---------------------------------------------------------------------------


@pytest.mark.parametrize(("kwargs", "message"), [
    ({"max": 0}, "max must be an int >= 1, got 0"),
    ({"max": 2.0}, "max must be an int >= 1, got 2.0"),
    ({"max": True}, "max must be an int >= 1, got True"),
    ({"max": 4, "min": -1}, "min must be an int >= 0, got -1"),
    ({"max": 4, "min": 5}, "min must be <= max, got min=5 and max=4"),
    ({"max": 4, "idle_timeout": 0}, "idle_timeout must be a finite number of seconds > 0, got 0"),
    ({"max": 4, "idle_timeout": float("inf")},
     "idle_timeout must be a finite number of seconds > 0, got inf"),
])
def test_autoscale_checks(kwargs: dict[str, object], message: str) -> None:
    with pytest.raises(ValueError, match=f"^{re.escape(message)}$"):
        wp.Autoscale(**kwargs)  # type: ignore[arg-type]


@pytest.mark.parametrize(("kwargs", "message"), [
    ({"max": 0}, "max must be an int >= 1, got 0"),
    ({"max": 4, "min": 0}, "min must be an int >= 1, got 0"),
    ({"max": 4, "min": 5}, "min must be <= max, got min=5 and max=4"),
    ({"max": 4, "tolerance": 0}, "tolerance must be > 0, got 0"),
    ({"max": 4, "backoff": 1}, "backoff must be in (0, 1), got 1"),
    ({"max": 4, "backoff": float("nan")}, "backoff must be in (0, 1), got nan"),
    ({"max": 4, "growth": 1.0}, "growth must be > 1, got 1.0"),
    ({"max": 4, "window": -1}, "window must be a finite number of seconds > 0, got -1"),
    ({"max": 4, "window_samples": 0}, "window_samples must be an int >= 1, got 0"),
])
def test_adaptive_checks(kwargs: dict[str, object], message: str) -> None:
    with pytest.raises(ValueError, match=f"^{re.escape(message)}$"):
        wp.Adaptive(**kwargs)  # type: ignore[arg-type]


def test_adaptive_drop_must_be_types_or_a_predicate() -> None:
    with pytest.raises(TypeError, match=r"^drop must be exception types or a predicate, got 429$"):
        wp.Adaptive(max=4, drop=429)  # type: ignore[arg-type]


def test_policies_are_keyword_only_frozen_values() -> None:
    with pytest.raises(TypeError):
        wp.Autoscale(8)  # type: ignore[call-arg]
    spec = wp.Autoscale(max=8)
    assert spec == wp.Autoscale(min=0, max=8, idle_timeout=5.0)
    with pytest.raises(AttributeError):
        spec.max = 9  # type: ignore[misc]
    assert wp.Adaptive(max=8) == wp.Adaptive(min=1, max=8)


def test_drop_by_type_or_predicate() -> None:
    assert wp.Adaptive(max=4).is_drop(wp.TaskTimeout("slow"))
    assert not wp.Adaptive(max=4).is_drop(ValueError())

    class Http(Exception):
        def __init__(self, status: int) -> None:
            self.status = status

    spec = wp.Adaptive(max=4, drop=lambda e: getattr(e, "status", None) in (429, 503))
    assert [spec.is_drop(Http(s)) for s in (429, 503, 500)] == [True, True, False]
    assert wp.Adaptive(max=4, drop=(Http, KeyError)).is_drop(KeyError())


# -- retry-after hints --------------------------------------------------------------------

def _with_hint(hint: object) -> Exception:
    exc = Exception("429")
    exc.retry_after = hint  # type: ignore[attr-defined]
    return exc


@pytest.mark.parametrize(("hint", "seconds"), [
    (3, 3.0), (0.5, 0.5), ("30", 30.0), (" 2 ", 2.0), (0, 0.0),
    (None, None), (-1, None), ("Wed, 21 Oct 2026 07:28:00 GMT", None), (True, None),
    (float("nan"), None), ("inf", None),
])
def test_retry_after_reads_the_attribute(hint: object, seconds: float | None) -> None:
    assert retry_after(_with_hint(hint)) == seconds


def test_retry_waits_at_least_the_hint() -> None:
    retry = wp.Retry(backoff=1.0, jitter="none", max_backoff=2.0)
    assert retry.delay_for(ValueError(), 1) == 1.0
    assert retry.delay_for(_with_hint(7), 1) == 7.0  # not capped by max_backoff
    assert retry.delay_for(_with_hint(0.2), 2) == 2.0  # the backoff is longer


# -- Autoscale decisions --------------------------------------------------------------------

def test_a_worker_per_waiting_task_up_to_max() -> None:
    s = wp.Autoscale(max=8).scaler()
    assert s.to_start(workers=0, idle=0, backlog=1) == 1  # min=0: the first task starts one
    assert s.to_start(workers=5, idle=2, backlog=10) == 3  # room for 3 more
    assert s.to_start(workers=5, idle=2, backlog=4) == 2
    assert s.to_start(workers=5, idle=5, backlog=4) == 0  # idle workers take them
    assert s.to_start(workers=8, idle=0, backlog=100) == 0


def test_min_workers_and_the_spare_process() -> None:
    s = wp.Autoscale(min=2, max=4).scaler()
    assert s.to_start(workers=0, idle=0, backlog=0) == 2
    assert s.to_start(workers=2, idle=0, backlog=1, spare=True) == 2  # the task's, a spare
    assert s.to_start(workers=2, idle=2, backlog=1, spare=True) == 1
    assert s.to_start(workers=2, idle=2, backlog=0, spare=True) == 0  # no backlog, no spare
    assert s.to_start(workers=4, idle=0, backlog=9, spare=True) == 0


def test_idle_workers_leave_after_the_timeout_down_to_min() -> None:
    s = wp.Autoscale(min=1, max=4, idle_timeout=2.0).scaler()
    assert s.retire_at(10.0) == 12.0
    assert not s.may_retire(workers=3, idle_since=10.0, now=11.999)
    assert s.may_retire(workers=3, idle_since=10.0, now=12.0)
    assert not s.may_retire(workers=1, idle_since=10.0, now=99.0)  # min stays
    zero = wp.Autoscale(max=4, idle_timeout=1.0).scaler()
    assert zero.may_retire(workers=1, idle_since=0.0, now=1.0)  # min=0: the last one too


def test_resize_moves_the_bounds() -> None:
    s = wp.Autoscale(min=1, max=8).scaler()
    s.resize(max=3)
    assert (s.min, s.max, s.surplus(5), s.surplus(2)) == (1, 3, 2, 0)
    s.resize(min=3, max=6)
    assert s.to_start(workers=1, idle=1, backlog=0) == 2
    with pytest.raises(ValueError, match=r"^min must be <= max, got min=7 and max=6$"):
        s.resize(min=7)
    with pytest.raises(ValueError, match=r"^max must be an int >= 1, got 0$"):
        s.resize(min=0, max=0)
    assert (s.min, s.max) == (3, 6)  # a refused resize changes nothing


def test_history_keeps_each_change_once_and_is_bounded() -> None:
    s = wp.Autoscale(max=8).scaler()
    for t, n in [(0.0, 0), (1.0, 1), (1.5, 1), (2.0, 3), (9.0, 0)]:
        s.record(t, n)
    assert s.history == ((0.0, 0), (1.0, 1), (2.0, 3), (9.0, 0))
    for i in range(1000):
        s.record(10.0 + i, i % 2)
    assert len(s.history) == 512
    assert s.history[-1] == (1009.0, 1)


# -- the limit algorithm ------------------------------------------------------------------

BASE = 0.05


@dataclass
class Sim:
    """A closed loop in virtual time: as many requests in flight as the limit allows,
    each served by *model* (latency by the accepted requests in flight, a drop above
    its cap), its end fed to the limiter at its end time."""

    limiter: Limiter
    model: ServiceModel
    t: float = 0.0
    accepted: int = 0
    rng: random.Random = field(default_factory=lambda: random.Random(7))
    heap: list[tuple[float, int, float, bool]] = field(default_factory=list)
    seq: itertools.count[int] = field(default_factory=itertools.count)

    def _fill(self) -> None:
        lim = self.limiter
        while lim.in_flight < lim.limit:
            lim.on_start()
            if self.accepted >= self.model.cap:
                latency, dropped = self.model.base, True
            else:
                self.accepted += 1
                jitter = 1 + self.rng.uniform(-0.02, 0.02)
                latency, dropped = self.model.latency(self.accepted) * jitter, False
            heapq.heappush(self.heap, (self.t + latency, next(self.seq), latency, dropped))

    def run(self, until: float) -> None:
        self._fill()
        while self.heap and self.heap[0][0] <= until:
            self.t, _, latency, dropped = heapq.heappop(self.heap)
            self.accepted -= not dropped
            self.limiter.on_end(latency, dropped, self.t)
            self._fill()
        self.t = until


def _phases(best: int) -> tuple[tuple[LimitSample, ...], tuple[LimitSample, ...]]:
    limiter = wp.Adaptive(max=10 * best, window=0.2).limiter()
    sim = Sim(limiter, ServiceModel(best, base=BASE))
    sim.run(15.0)
    first = limiter.history
    sim.model = ServiceModel(best // 2, base=BASE)
    sim.run(30.0)
    return first, limiter.history[len(first):]


@pytest.mark.parametrize("best", [20, 40, 64])
def test_reaches_the_best_concurrency_without_overshooting(best: int) -> None:
    first, _ = _phases(best)
    reach = windows_to_reach(first, best)
    assert reach is not None
    assert reach <= 20
    assert max(s.limit for s in first) <= 1.25 * best
    steady = first[reach + 10:]  # then it probes around C*, within ±10%
    assert all(abs(s.limit - best) <= 0.1 * best for s in steady), [s.limit for s in steady]


@pytest.mark.parametrize("best", [20, 40, 64])
def test_settles_within_five_windows_after_the_capacity_halves(best: int) -> None:
    _, second = _phases(best)
    settle = windows_to_settle(second, best / 2, hold=len(second) - 5)
    assert settle is not None
    assert settle <= 5, [s.limit for s in second[:10]]


def _window(lim: Limiter, t: float, latency: float, *, drops: int = 0) -> float:
    """One saturated sampling window of 10 s from *t*: the limit filled, each task
    replaced as it ends, twice over, every task taking *latency* (the first *drops*
    of them dropped); a last task ends at t + 10 and closes it. Returns t + 10."""
    while lim.in_flight < lim.limit:
        lim.on_start()
    n = lim.limit
    for i in range(2 * n):
        lim.on_end(latency, i < drops, t + (i // n + 1) * latency)
        lim.on_start()
    lim.on_end(latency, False, t + 10.0)
    return t + 10.0


def test_slow_start_grows_by_a_quarter_per_window_while_latency_holds() -> None:
    lim = wp.Adaptive(max=1000, window=10).limiter()
    t, seen = 0.0, []
    for _ in range(17):
        t = _window(lim, t, BASE)
        seen.append(lim.limit)
    assert seen == [2, 3, 4, 5, 7, 9, 12, 15, 19, 24, 30, 38, 48, 60, 75, 94, 118]
    assert lim.no_load_latency == BASE
    assert [s.limit for s in lim.history] == seen
    assert lim.history[0] == LimitSample(10.0, 2, 3 / 10.0, BASE)  # 3 tasks in 10 s


def test_drops_cut_the_limit_multiplicatively() -> None:
    lim = wp.Adaptive(max=1000, window=10, backoff=0.9).limiter()
    t = 0.0
    for _ in range(17):
        t = _window(lim, t, BASE)
    assert lim.limit == 118
    for expected in (106, 95, 85):
        t = _window(lim, t, BASE, drops=3)
        assert lim.limit == expected
    t = _window(lim, t, BASE)
    assert lim.limit == 86  # slow start is over: + 1 per window
    assert lim.drops == 9


def test_a_queue_is_cut_to_the_vegas_estimate_once_two_windows_show_it() -> None:
    lim = wp.Adaptive(max=1000, window=10).limiter()
    t = 0.0
    for _ in range(13):
        t = _window(lim, t, BASE)
    assert lim.limit == 48
    t = _window(lim, t, 0.080)
    assert lim.limit == 48  # one slow window: held
    t = _window(lim, t, BASE)
    assert lim.limit == 60  # it was a pause: slow start goes on
    t = _window(lim, t, 0.080)
    t = _window(lim, t, 0.075)
    assert lim.limit == 40  # 60 in flight x 0.050 / 0.075
    t = _window(lim, t, BASE)
    t = _window(lim, t, BASE)
    assert lim.limit == 42  # then + 1 per window


def test_the_cut_is_at_most_half_a_window() -> None:
    lim = wp.Adaptive(max=1000, window=10).limiter()
    t = 0.0
    for _ in range(10):
        t = _window(lim, t, BASE)
    assert lim.limit == 24
    t = _window(lim, t, 1.0)
    t = _window(lim, t, 1.0)
    assert lim.limit == 12
    t = _window(lim, t, 1.0)
    assert lim.limit == 6


def test_a_limit_the_work_does_not_fill_stays() -> None:
    lim = wp.Adaptive(max=100, window=0.5).limiter()
    t = 0.0
    for _ in range(40):  # one task at a time, each 0.05 s
        lim.on_start()
        t += BASE
        lim.on_end(BASE, False, t)
    # The first window filled the limit of 1 and grew it; the others did not fill 2.
    assert [s.limit for s in lim.history] == [2, 2, 2]
    assert lim.limit == 2


def test_a_window_counts_only_tasks_started_under_it() -> None:
    lim = wp.Adaptive(max=100, window=0.5, window_samples=2).limiter()
    lim.on_start()
    lim.on_end(0.1, False, 0.1)  # opens the first window at 0.0
    lim.on_start()
    lim.on_end(0.1, False, 0.6)
    assert lim.limit == 2  # closed at 0.6 (two samples, 0.6 >= 0.5 s)
    lim.on_start()
    lim.on_start()
    lim.on_end(5.0, True, 5.1)  # started at 0.1, before the window opened: ignored
    assert lim.drops == 1
    lim.on_end(0.1, False, 1.3)
    assert len(lim.history) == 1  # one sample so far in this window
    assert lim.limit == 2


def test_a_window_lasts_twice_its_slowest_task() -> None:
    lim = wp.Adaptive(max=100, window=0.1, window_samples=1).limiter()
    lim.on_start()
    lim.on_end(0.4, False, 0.4)  # opened at 0.0; 0.4 < 2 x 0.4
    assert not lim.history
    lim.on_start()
    lim.on_end(0.2, False, 0.8)
    assert [s.limit for s in lim.history] == [2]


def test_limits_stay_within_min_and_max() -> None:
    lim = wp.Adaptive(min=3, max=5, window=10).limiter()
    assert lim.limit == 3
    t = 0.0
    for _ in range(4):
        t = _window(lim, t, BASE)
    assert lim.limit == 5
    for _ in range(4):
        t = _window(lim, t, BASE, drops=5)
    assert lim.limit == 3


def test_statistics_fields_default_for_fixed_pools() -> None:
    stats = StatsRecorder().snapshot(queued=0, running=0, workers=4, busy=0, stuck=0)
    assert (stats.min_workers, stats.max_workers, stats.workers_history) == (None, None, ())
    assert (stats.limit, stats.limit_history, stats.drops) == (None, (), 0)


def test_the_benchmark_drivers_run() -> None:
    """The stand-alone drivers of the dynamic benchmark, briefly, in real time."""
    import asyncio

    from workpool._bench import bench_dynamic as bench

    spec = wp.Adaptive(max=8, window=0.05, drop=bench.is_overloaded)
    r = bench.run(spec, 0.3)
    assert r.answers
    assert r.history
    assert all(1 <= s.limit <= 8 for s in r.history)
    scaled = wp.Autoscale(min=1, max=5, idle_timeout=0.1)
    got = asyncio.run(bench._burst(scaled, 50, 0.001))
    assert got["peak workers"] == 5
    assert got["s back to min"] < 1.0  # not inf: it went back to one worker


@given(st.lists(st.tuples(st.floats(0.001, 2.0), st.booleans(), st.floats(0.0, 0.5)),
                max_size=300),
       st.integers(1, 5), st.integers(0, 60))
@settings(max_examples=200, deadline=None)
def test_the_limit_moves_within_its_bounds(
        events: list[tuple[float, bool, float]], low: int, extra: int) -> None:
    """Whatever the latencies and drops: the limit stays in [min, max], a window moves
    it by at most x growth up and half down, and in-flight counts balance."""
    spec = wp.Adaptive(min=low, max=low + extra, window=0.3, window_samples=3)
    lim = spec.limiter()
    now, before = 0.0, lim.limit
    for latency, dropped, gap in events:
        lim.on_start()
        now += gap + latency
        lim.on_end(latency, dropped, now)
        assert spec.min <= lim.limit <= spec.max
        assert math.floor(before / 2) <= lim.limit <= math.ceil(before * spec.growth)
        before = lim.limit
    assert lim.in_flight == 0
    assert lim.drops == sum(d for _, d, _ in events)
    assert [s.limit for s in lim.history][-1:] == ([lim.limit] if lim.history else [])
