"""Dynamic pools in the engine: ``workers=wp.Autoscale`` / ``wp.Adaptive`` on every pool,
group and stage, and ``pool.resize()``.

The policies' own decisions are tested on synthetic sequences in ``test_dynamic.py``;
here the engine follows them: exact worker counts at synchronised points (tasks
held on events, or on a file for processes), idle workers leaving after
``idle_timeout``, resizes under load that lose no task.
"""

from __future__ import annotations

import os
import random
import threading
import time
from collections.abc import Callable
from concurrent.futures import Future
from pathlib import Path

import anyio
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import workpool as wp
from tests.pool_suite import WAIT, wait_until


async def await_until(check: Callable[[], bool], what: str, timeout: float = WAIT) -> None:
    with anyio.fail_after(timeout):
        while not check():
            await anyio.sleep(0.005)
    assert check(), what


def hold(event: threading.Event, value: int) -> int:
    assert event.wait(WAIT)
    return value


def square(x: int) -> int:
    return x * x


def nap(i: int) -> int:
    time.sleep(0.002)
    return i


def wait_for_file(path: str, value: int) -> int:
    """A process task held until *path* exists (processes share no event)."""
    deadline = time.monotonic() + WAIT
    while not os.path.exists(path):
        if time.monotonic() > deadline:
            raise TimeoutError(path)
        time.sleep(0.005)
    return value


# -- Autoscale ---------------------------------------------------------------------------

def test_autoscale_threads_grow_with_the_backlog_and_leave_when_idle() -> None:
    release = threading.Event()
    with wp.ThreadPool(workers=wp.Autoscale(min=1, max=3, idle_timeout=0.1)) as pool:
        assert pool.statistics().workers == 0  # workers start with the work
        futures = [pool.submit(hold, release, i) for i in range(5)]
        wait_until(lambda: pool.statistics().running == 3, "three running")
        stats = pool.statistics()
        assert (stats.workers, stats.queued, stats.min_workers, stats.max_workers) == (3, 2, 1,
                                                                                      3)
        release.set()
        assert [f.result(WAIT) for f in futures] == [0, 1, 2, 3, 4]
        wait_until(lambda: pool.statistics().workers == 1, "back to min")
        history = [count for _, count in pool.statistics().workers_history]
        assert history[:3] == [1, 2, 3]
        assert history[-1] == 1
        assert max(history) == 3


def _threads_of(name: str) -> list[str]:
    return sorted(t.name for t in threading.enumerate() if t.name.startswith(f"{name}_"))


def test_an_idle_autoscale_thread_pool_holds_no_timer_thread() -> None:
    # Parked threads time their own idleness and leave by themselves: no timer thread
    # sweeps them, before, during or after they shrink the pool to min.
    release = threading.Event()
    spec = wp.Autoscale(min=1, max=3, idle_timeout=0.05)
    with wp.ThreadPool(workers=spec, name="idle") as pool:
        futures = [pool.submit(hold, release, i) for i in range(3)]
        wait_until(lambda: pool.statistics().running == 3, "three running")
        assert len(_threads_of("idle")) == 3
        release.set()
        assert [f.result(WAIT) for f in futures] == [0, 1, 2]
        wait_until(lambda: len(_threads_of("idle")) == 1, "one thread left")
        assert pool.statistics().workers == 1
        assert [count for _, count in pool.statistics().workers_history] == [1, 2, 3, 2, 1]
        assert not [name for name in _threads_of("idle") if name.endswith("_timer")]
        assert pool.submit(square, 4).result(WAIT) == 16  # the one left takes work
    assert _threads_of("idle") == []


def test_an_idle_thread_at_min_leaves_once_a_resize_lowers_min() -> None:
    release = threading.Event()
    with wp.ThreadPool(workers=wp.Autoscale(min=2, max=2, idle_timeout=0.05),
                       name="lowered") as pool:
        futures = [pool.submit(hold, release, i) for i in range(2)]
        wait_until(lambda: pool.statistics().running == 2, "two running")
        release.set()
        assert [f.result(WAIT) for f in futures] == [0, 1]
        time.sleep(0.1)  # idle past idle_timeout at min: both stay
        assert pool.statistics().workers == 2
        pool.resize(min=0, max=2)
        wait_until(lambda: pool.statistics().workers == 0, "no worker left")
        wait_until(lambda: _threads_of("lowered") == [], "every thread gone")


def test_an_idle_process_at_min_leaves_once_a_resize_lowers_min(tmp_path: Path) -> None:
    go = str(tmp_path / "go")
    with wp.ProcessPool(workers=wp.Autoscale(min=2, max=2, idle_timeout=0.05)) as pool:
        futures = [pool.submit(wait_for_file, go, i) for i in range(2)]
        wait_until(lambda: pool.statistics().running == 2, "two running")
        Path(go).touch()
        assert [f.result(WAIT) for f in futures] == [0, 1]
        time.sleep(0.15)  # idle past idle_timeout at min: both stay
        assert pool.statistics().workers == 2
        pool.resize(min=0, max=2)
        wait_until(lambda: pool.statistics().workers == 0, "no worker left")
        wait_until(lambda: not pool._engine.live_workers(), "every process reaped")


@pytest.mark.anyio
async def test_an_idle_async_worker_at_min_leaves_once_a_resize_lowers_min() -> None:
    async def echo(x: int) -> int:
        await anyio.sleep(0)
        return x

    async with wp.AsyncPool(workers=wp.Autoscale(min=2, max=2, idle_timeout=0.05)) as pool:
        futures = [await pool.submit(echo, i) for i in range(4)]
        assert [await f for f in futures] == [0, 1, 2, 3]
        await anyio.sleep(0.15)  # idle past idle_timeout at min: both stay
        assert pool.statistics().workers == 2
        pool.resize(min=0, max=2)
        await await_until(lambda: pool.statistics().workers == 0, "no worker left")
        assert await (await pool.submit(echo, 9)) == 9  # one starts again


def test_autoscale_min_zero_starts_one_for_the_first_task_and_ends_with_none() -> None:
    with wp.ThreadPool(workers=wp.Autoscale(min=0, max=4, idle_timeout=0.05)) as pool:
        assert pool.statistics().workers == 0
        assert pool.submit(lambda: 7).result(WAIT) == 7
        assert pool.statistics().completed == 1
        wait_until(lambda: pool.statistics().workers == 0, "no worker left")
        assert pool.submit(lambda: 8).result(WAIT) == 8  # a new one starts
        assert [count for _, count in pool.statistics().workers_history][:3] == [1, 0, 1]


def test_autoscale_processes_grow_and_leave(tmp_path: Path) -> None:
    go = str(tmp_path / "go")
    with wp.ProcessPool(workers=wp.Autoscale(min=0, max=2, idle_timeout=0.1)) as pool:
        futures = [pool.submit(wait_for_file, go, i) for i in range(3)]
        wait_until(lambda: pool.statistics().running == 2, "two processes running")
        assert pool.statistics().workers == 2
        Path(go).touch()
        assert [f.result(WAIT) for f in futures] == [0, 1, 2]
        wait_until(lambda: pool.statistics().workers == 0, "every process gone")
        wait_until(lambda: not pool._engine.live_workers(), "every process reaped")


@pytest.mark.anyio
async def test_autoscale_async_pool_starts_at_min_and_returns_to_it() -> None:
    release = anyio.Event()

    async def held(i: int) -> int:
        await release.wait()
        return i

    async with wp.AsyncPool(workers=wp.Autoscale(min=1, max=4, idle_timeout=0.05)) as pool:
        assert pool.statistics().workers == 1
        futures = [await pool.submit(held, i) for i in range(6)]
        await await_until(lambda: pool.statistics().running == 4, "four running")
        assert (pool.statistics().workers, pool.statistics().queued) == (4, 2)
        release.set()
        assert [await f for f in futures] == [0, 1, 2, 3, 4, 5]
        await await_until(lambda: pool.statistics().workers == 1, "back to min")


def test_a_group_and_a_stage_take_autoscale() -> None:
    with wp.Group(limit=wp.Autoscale(max=3, idle_timeout=0.05)) as g:
        for i in range(10):
            g.go(square, i)
    assert g.results() == [i * i for i in range(10)]
    assert g.limit == 3
    out = list(wp.Pipeline(range(50)).map(lambda x: x + 1,
                                          workers=wp.Autoscale(max=4, idle_timeout=0.05)))
    assert out == list(range(1, 51))
    with pytest.raises(TypeError, match="sizes the group's own pool: not with pool="), \
            wp.ThreadPool(2) as pool:
        wp.Group(limit=wp.Autoscale(max=3), pool=pool)


# -- resize ------------------------------------------------------------------------------

def test_resize_down_lets_idle_workers_go_now_and_busy_ones_after_their_task() -> None:
    release = threading.Event()
    with wp.ThreadPool(4) as pool:
        futures = [pool.submit(hold, release, i) for i in range(4)]
        wait_until(lambda: pool.statistics().running == 4, "four running")
        pool.resize(1)
        assert pool.workers == 1
        assert pool.statistics().workers == 4  # busy: none is stopped
        release.set()
        assert [f.result(WAIT) for f in futures] == [0, 1, 2, 3]
        wait_until(lambda: pool.statistics().workers == 1, "one left")
        assert list(pool.map(abs, range(-5, 0))) == [5, 4, 3, 2, 1]
        assert pool.statistics().workers == 1


def test_resize_up_starts_workers_for_the_backlog_at_once() -> None:
    release = threading.Event()
    with wp.ThreadPool(1) as pool:
        futures = [pool.submit(hold, release, i) for i in range(3)]
        wait_until(lambda: pool.statistics().running == 1, "one running")
        pool.resize(3)
        wait_until(lambda: pool.statistics().running == 3, "three running")
        release.set()
        assert [f.result(WAIT) for f in futures] == [0, 1, 2]


def test_resize_moves_autoscale_bounds() -> None:
    with wp.ThreadPool(workers=wp.Autoscale(min=0, max=2, idle_timeout=5.0)) as pool:
        pool.resize(min=1, max=5)
        stats = pool.statistics()
        assert (stats.min_workers, stats.max_workers, pool.workers) == (1, 5, 5)
        pool.resize(3)  # a count: the new max (min stays below it)
        assert (pool.statistics().min_workers, pool.statistics().max_workers) == (1, 3)


@pytest.mark.parametrize(("make", "call", "error", "message"), [
    (lambda: wp.ThreadPool(2), lambda p: p.resize(0), ValueError,
     "workers must be >= 1, got 0"),
    (lambda: wp.ThreadPool(2), lambda p: p.resize(min=1), TypeError,
     "min= and max= resize a wp.Autoscale or wp.Adaptive pool; a fixed pool takes "
     "resize(workers)"),
    (lambda: wp.ThreadPool(2), lambda p: p.resize(), TypeError,
     "resize() needs the new worker count"),
    (lambda: wp.ThreadPool(2), lambda p: p.resize(2.5), TypeError,
     "workers must be an int, got 2.5"),
    (lambda: wp.ThreadPool(workers=wp.Adaptive(max=4)), lambda p: p.resize(3), TypeError,
     "an Adaptive pool's limit moves by itself: resize(min=, max=) moves its bounds"),
    (lambda: wp.ThreadPool(workers=wp.Autoscale(max=4)), lambda p: p.resize(min=5),
     ValueError, "min must be <= max, got min=5 and max=4"),
])
def test_bad_resizes_are_refused_with_the_rule(make: Callable[[], wp.ThreadPool],
                                               call: Callable[[wp.ThreadPool], None],
                                               error: type[Exception], message: str) -> None:
    with make() as pool:
        with pytest.raises(error) as info:
            call(pool)
        assert str(info.value) == message


@settings(max_examples=25, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(seed=st.integers(0, 2**32 - 1), tasks=st.integers(1, 60),
       autoscale=st.booleans())
def test_every_task_ends_exactly_once_under_random_resizes(seed: int, tasks: int,
                                                           autoscale: bool) -> None:
    rng = random.Random(seed)
    delays = [rng.choice((0.0, 0.0, 0.001, 0.003)) for _ in range(tasks)]
    fails = {i for i in range(tasks) if rng.random() < 0.2}
    ends: list[int] = []
    lock = threading.Lock()

    def task(i: int) -> int:
        time.sleep(delays[i])
        if i in fails:
            raise ValueError(i)
        return i

    def ended(future: Future[int]) -> None:
        with lock:
            ends.append(1)

    workers: int | wp.Autoscale = (wp.Autoscale(max=4, idle_timeout=0.01) if autoscale
                                    else 2)
    with wp.ThreadPool(workers=workers) as pool:
        futures = []
        for i in range(tasks):
            future = pool.submit(task, i)
            future.add_done_callback(ended)
            futures.append(future)
            if rng.random() < 0.2:
                pool.resize(rng.randint(1, 5))
        outcomes = []
        for i, future in enumerate(futures):
            error = future.exception(WAIT)
            outcomes.append(("error", i) if error is not None else ("value", future.result()))
    assert outcomes == [("error", i) if i in fails else ("value", i) for i in range(tasks)]
    assert len(ends) == tasks
    stats = pool.statistics()
    assert (stats.completed, stats.failed, stats.cancelled) == (tasks - len(fails),
                                                               len(fails), 0)


# -- Adaptive ----------------------------------------------------------------------------

class Busy(Exception):
    """A service's "429": a drop."""

    def __init__(self, retry_after: float | None = None) -> None:
        super().__init__("busy")
        self.retry_after = retry_after


def test_adaptive_limit_grows_while_latency_holds() -> None:
    adaptive = wp.Adaptive(min=1, max=16, window=0.02, window_samples=4)
    with wp.ThreadPool(workers=adaptive) as pool:
        assert pool.statistics().limit == 1
        # A flat-latency service: the limit grows (slow start) while the pool is full.
        results = list(pool.map(nap, range(600), chunksize=1))
        assert results == list(range(600))
        stats = pool.statistics()
        assert stats.limit is not None
        assert stats.limit >= 3
        assert stats.limit_history
        assert stats.limit_history[-1].limit == stats.limit
        assert stats.drops == 0
        assert stats.workers <= stats.limit


def test_adaptive_drops_are_counted_and_cut_the_limit() -> None:
    def is_busy(exc: BaseException) -> bool:
        return isinstance(exc, Busy)

    adaptive = wp.Adaptive(min=1, max=8, window=0.01, window_samples=2, drop=is_busy)
    calls = 0

    def service(i: int) -> int:
        nonlocal calls
        calls += 1
        time.sleep(0.001)
        if i % 2:
            raise Busy()
        return i

    with wp.ThreadPool(workers=adaptive) as pool:
        futures = [pool.submit(service, i) for i in range(200)]
        errors = sum(1 for f in futures if isinstance(f.exception(WAIT), Busy))
        stats = pool.statistics()
    assert errors == 100
    assert stats.drops == 100
    assert stats.limit is not None
    assert stats.limit <= 2  # half the calls dropped


@pytest.mark.anyio
async def test_adaptive_on_an_async_pool_and_a_retry_after_hint() -> None:
    starts: list[float] = []

    async def throttled() -> str:
        starts.append(time.monotonic())
        if len(starts) == 1:
            raise Busy(retry_after=0.2)
        return "ok"

    async with wp.AsyncPool(workers=wp.Adaptive(max=8, drop=(Busy,)),
                            retry=wp.Retry(attempts=2, backoff=0.001)) as pool:
        assert await (await pool.submit(throttled)) == "ok"
        stats = pool.statistics()
    assert starts[1] - starts[0] >= 0.2  # the hint, not the 1 ms backoff
    assert (stats.drops, stats.retried, stats.completed) == (1, 1, 1)


def test_a_stage_and_a_group_take_adaptive() -> None:
    out = list(wp.Pipeline(range(40)).map(lambda x: -x, workers=wp.Adaptive(max=4)))
    assert out == [-x for x in range(40)]
    with wp.Group(limit=wp.Adaptive(max=4)) as g:
        for i in range(20):
            g.go(abs, i)
    assert g.results() == list(range(20))


def test_statistics_of_a_fixed_pool_have_no_dynamic_fields() -> None:
    with wp.ThreadPool(2) as pool:
        stats = pool.statistics()
    assert (stats.min_workers, stats.max_workers, stats.workers_history, stats.limit,
            stats.limit_history, stats.drops) == (None, None, (), None, (), 0)
