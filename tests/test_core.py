"""The shared core: exceptions, Retry, RateLimit and its bucket, TaskContext, statistics,
the timer."""

from __future__ import annotations

import concurrent.futures as cf
import multiprocessing
import os
import random
import subprocess
import sys
import threading
import time
from concurrent.futures.process import BrokenProcessPool
from pathlib import Path
from unittest import mock

import pytest

import workpool as wp
from workpool._core.context import TaskContext, WorkerSlot
from workpool._core.ratelimit import TokenBucket
from workpool._core.stats import StatsRecorder
from workpool._core.timer import Timer


def test_exception_tree() -> None:
    assert issubclass(wp.TaskTimeout, wp.WorkpoolError)
    assert issubclass(wp.TaskTimeout, TimeoutError)
    assert issubclass(wp.Cancelled, cf.CancelledError)
    assert issubclass(wp.PoolClosed, RuntimeError)
    assert issubclass(wp.QueueFull, wp.WouldBlock)
    assert issubclass(wp.WorkerCrashed, BrokenProcessPool)
    for name in ["TaskTimeout", "Cancelled", "PoolClosed", "WouldBlock", "QueueFull",
                 "WorkerCrashed"]:
        assert issubclass(getattr(wp, name), wp.WorkpoolError)


# -- Retry ------------------------------------------------------------------------------------

def test_retry_delays_grow_and_cap() -> None:
    retry = wp.Retry(attempts=6, backoff=0.5, multiplier=3, max_backoff=10, jitter="none")
    assert [retry.delay(k) for k in range(1, 6)] == [0.5, 1.5, 4.5, 10, 10]


def test_retry_jitter_bounds() -> None:
    rng = random.Random(1)
    full = wp.Retry(backoff=1.0, jitter="full")
    equal = wp.Retry(backoff=1.0, jitter="equal")
    for _ in range(200):
        assert 0.0 <= full.delay(2, rng) <= 2.0
        assert 1.0 <= equal.delay(2, rng) <= 2.0


def test_retry_decides_by_type_predicate_and_attempts() -> None:
    retry = wp.Retry(attempts=3, on=(KeyError,))
    assert retry.should_retry(KeyError("k"), 1)
    assert retry.should_retry(KeyError("k"), 2)
    assert not retry.should_retry(KeyError("k"), 3)
    assert not retry.should_retry(ValueError("v"), 1)
    assert not wp.Retry().should_retry(wp.Cancelled(), 1)
    status = wp.Retry(on=lambda e: getattr(e, "status", 0) in (429, 503))
    error = RuntimeError("busy")
    error.status = 503  # type: ignore[attr-defined]
    assert status.should_retry(error, 1)
    assert not status.should_retry(RuntimeError("x"), 1)


@pytest.mark.parametrize(("kwargs", "message"), [
    ({"attempts": 0}, r"^attempts must be an int >= 1, got 0$"),
    ({"backoff": -1}, r"^backoff must be >= 0, got -1$"),
    ({"multiplier": 0.5}, r"^multiplier must be >= 1, got 0.5$"),
    ({"max_backoff": -2}, r"^max_backoff must be >= 0, got -2$"),
    ({"jitter": "some"}, r"^jitter must be 'full', 'equal' or 'none', got 'some'$"),
])
def test_retry_refuses_bad_values(kwargs: dict[str, object], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        wp.Retry(**kwargs)  # type: ignore[arg-type]


def test_retry_is_frozen() -> None:
    with pytest.raises(AttributeError):
        wp.Retry().attempts = 5  # type: ignore[misc]


# -- RateLimit ----------------------------------------------------------------------------------

def test_rate_limit_refuses_bad_values() -> None:
    with pytest.raises(ValueError, match=r"^per_second must be > 0, got 0$"):
        wp.RateLimit(per_second=0)
    with pytest.raises(ValueError, match=r"^burst must be an int >= 1, got 0$"):
        wp.RateLimit(per_second=1, burst=0)


def test_bucket_hands_out_absolute_slots() -> None:
    now = [100.0]
    bucket = TokenBucket(wp.RateLimit(per_second=4, burst=2))
    with mock.patch("workpool._core.ratelimit.time.monotonic", side_effect=lambda: now[0]):
        assert [bucket.reserve() for _ in range(4)] == [0.0, 0.0, 0.25, 0.5]
        now[0] = 101.0  # idle for a while: the burst is available again, no more
        assert [bucket.reserve() for _ in range(3)] == [0.0, 0.0, 0.25]


def test_bucket_wait_is_interrupted_by_stop() -> None:
    bucket = TokenBucket(wp.RateLimit(per_second=0.001))
    assert bucket.acquire()
    stop = threading.Event()
    stop.set()
    assert bucket.acquire(stop) is False


# -- TaskContext ---------------------------------------------------------------------------------

def test_context_fields_and_cancellation() -> None:
    slot = WorkerSlot(3, state="s")
    ctx = TaskContext(slot, attempt=2, deadline=time.monotonic() + 100)
    assert (ctx.worker_id, ctx.state, ctx.attempt, ctx.cancelled) == (3, "s", 2, False)
    remaining = ctx.remaining()
    assert remaining is not None
    assert 99 < remaining <= 100
    ctx.checkpoint()
    ctx.cancel()
    assert ctx.cancelled
    assert ctx.cancel_called
    with pytest.raises(wp.Cancelled, match=r"^task was cancelled$"):
        ctx.checkpoint()
    with pytest.raises(wp.Cancelled):
        ctx.sleep(10)
    assert TaskContext(None).remaining() is None


def test_context_sleep_wakes_on_cancel_from_another_thread() -> None:
    ctx = TaskContext(WorkerSlot(0))
    timer = threading.Timer(0.05, ctx.cancel)
    timer.start()
    started = time.monotonic()
    with pytest.raises(wp.Cancelled):
        ctx.sleep(30)
    assert time.monotonic() - started < 10
    timer.join()
    with pytest.raises(ValueError, match=r"^seconds must be >= 0, got -1$"):
        TaskContext(None).sleep(-1)


# -- statistics -----------------------------------------------------------------------------------

def test_statistics_percentiles_over_the_window() -> None:
    recorder = StatsRecorder()
    for i in range(1, 101):
        recorder.sample(queue_wait=i / 1000, run_time=i / 100, ended_at=float(i))
    stats = recorder.snapshot(queued=0, running=0, workers=2, busy=1, stuck=0)
    assert (stats.run_time_p50, stats.run_time_p95, stats.run_time_p99) == (0.51, 0.95, 0.99)
    assert stats.queue_wait_p50 == 0.051
    assert (stats.workers, stats.busy, stats.idle) == (2, 1, 1)
    for i in range(2000):  # only the last 1024 samples count
        recorder.sample(queue_wait=0.0, run_time=5.0, ended_at=200.0 + i)
    assert recorder.snapshot(queued=0, running=0, workers=1, busy=0,
                             stuck=0).run_time_p50 == 5.0


# -- the timer ------------------------------------------------------------------------------------

def test_timer_runs_in_order_and_cancels() -> None:
    timer = Timer("t")
    done = threading.Event()
    order: list[str] = []
    def last() -> None:
        order.append("b")
        done.set()

    timer.call_later(0.03, last)
    timer.call_later(0.01, lambda: order.append("a"))
    timer.call_later(0.02, lambda: order.append("x")).cancel()
    assert done.wait(10)
    timer.close()
    assert order == ["a", "b"]
    with pytest.raises(RuntimeError, match=r"^timer is closed$"):
        timer.call_later(0, lambda: None)


# -- forking ----------------------------------------------------------------------------------

FORK_CHECK = """
import threading
import os
import subprocess
import sys
from workpool._core.forking import can_fork_safely

stop = threading.Event()
thread = threading.Thread(target=stop.wait, args=(10,))
thread.start()
print(can_fork_safely())
stop.set()
thread.join(10)
joined = []
for _ in range(20):  # right after a join, the thread may still count in the kernel
    ended = threading.Thread(target=int)
    ended.start()
    ended.join(10)
    joined.append(can_fork_safely())
print(joined == [True] * 20)
"""


@pytest.mark.skipif("fork" not in multiprocessing.get_all_start_methods(), reason="no fork")
def test_can_fork_safely_only_while_one_thread_runs() -> None:
    # In a fresh interpreter: this one may hold threads of C libraries that tests loaded.
    root = Path(__file__).resolve().parent.parent
    out = subprocess.run([sys.executable, "-c", FORK_CHECK], capture_output=True, text=True,
                         timeout=60, env={**os.environ, "PYTHONPATH": str(root / "src")})
    assert (out.returncode, out.stderr, out.stdout.split()) == (0, "", ["False", "True"])
