"""ThreadPool: the shared pool behaviour, plus what is particular to threads."""

from __future__ import annotations

import concurrent.futures as cf
import gc
import subprocess
import sys
import textwrap
import threading
import time
import weakref
from concurrent.futures.thread import BrokenThreadPool
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import workpool as wp
from tests import _tasks
from tests.pool_suite import WAIT, ExecutorPoolBehaviour


class ThreadGate:
    """A gate for thread pools: an event, waited on with a bound."""

    def __init__(self) -> None:
        self._event = threading.Event()

    def wait(self) -> bool:
        return self._event.wait(WAIT)

    def open(self) -> None:
        self._event.set()


class TestThreadPoolBehaviour(ExecutorPoolBehaviour):
    def make_pool(self, **options: Any) -> wp.ThreadPool:
        return wp.ThreadPool(**options)

    def make_gate(self) -> ThreadGate:
        return ThreadGate()


def pool_threads(name: str) -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name.startswith(name + "_")]


def test_default_workers_are_the_stdlibs() -> None:
    with wp.ThreadPool() as pool:
        assert pool.workers == min(32, wp.cpus() + 4)
    with wp.ThreadPool(max_workers=3) as pool:
        assert pool.workers == 3
    with pytest.raises(TypeError, match=r"^pass workers or max_workers, not both$"):
        wp.ThreadPool(2, max_workers=3)


def test_threads_are_named_and_reused() -> None:
    with wp.ThreadPool(4, name="crawler") as pool:
        for i in range(20):
            assert pool.submit(_tasks.square, i).result(WAIT) == i * i
        # Sequential work never needs a second thread (the stdlib's idle reuse).
        assert [t.name for t in pool_threads("crawler")] == ["crawler_0"]
    assert pool_threads("crawler") == []


def test_initializer_state_is_per_worker() -> None:
    ids = iter(range(100))
    lock = threading.Lock()

    def init() -> int:
        with lock:
            return next(ids)

    gate = ThreadGate()
    with wp.ThreadPool(3, initializer=init) as pool:
        futures = [pool.submit(lambda: (gate.wait(), wp.current().state)[1]) for _ in range(3)]
        gate.open()
        states = sorted(f.result(WAIT) for f in futures)
    assert states == [0, 1, 2]


def test_initializer_failure_breaks_the_pool_as_the_stdlib() -> None:
    def init() -> None:
        raise OSError("no database")

    message = "A thread initializer failed, the thread pool is not usable anymore"
    pool = wp.ThreadPool(1, initializer=init)
    future = pool.submit(_tasks.square, 2)
    with pytest.raises(BrokenThreadPool, match=rf"^{message}$"):
        future.result(WAIT)
    with pytest.raises(BrokenThreadPool, match=rf"^{message}$"):
        pool.submit(_tasks.square, 3)
    pool.shutdown()


def test_submit_waits_while_the_queue_is_full() -> None:
    gate, entered = ThreadGate(), threading.Event()
    with wp.ThreadPool(1, queue_size=1) as pool:
        blocker = pool.submit(gate.wait)
        pool.submit(_tasks.square, 1)
        while pool.statistics().queued != 1:
            time.sleep(0.001)
        result: list[cf.Future[int]] = []

        def producer() -> None:
            entered.set()
            result.append(pool.submit(_tasks.square, 5))

        thread = threading.Thread(target=producer)
        thread.start()
        assert entered.wait(WAIT)
        thread.join(0.05)
        assert thread.is_alive(), "submit should wait for room in the queue"
        gate.open()
        thread.join(WAIT)
        assert result[0].result(WAIT) == 25
        assert blocker.result(WAIT) is True


def test_shutdown_wakes_a_blocked_submit_with_pool_closed() -> None:
    gate = ThreadGate()
    pool = wp.ThreadPool(1, queue_size=0)
    pool.submit(gate.wait)
    errors: list[BaseException] = []
    started = threading.Event()

    def producer() -> None:
        started.set()
        try:
            pool.submit(_tasks.square, 5)
        except BaseException as exc:
            errors.append(exc)

    thread = threading.Thread(target=producer)
    thread.start()
    assert started.wait(WAIT)
    time.sleep(0.02)  # let it block: the assertion below holds either way
    pool.shutdown(wait=False)
    thread.join(WAIT)
    gate.open()
    pool.shutdown()
    assert len(errors) == 1
    assert isinstance(errors[0], wp.PoolClosed)


def test_timeout_cancels_the_context_and_replaces_the_thread() -> None:
    seen = ThreadGate()
    release = ThreadGate()
    cancelled_seen: list[bool] = []

    def stuck() -> None:
        seen.open()
        release.wait()
        cancelled_seen.append(wp.current().cancelled)

    with wp.ThreadPool(1, timeout=0.1) as pool:
        future = pool.submit(stuck)
        with pytest.raises(wp.TaskTimeout):
            future.result(WAIT)
        stats = pool.statistics()
        assert (stats.stuck, stats.workers, stats.timed_out) == (1, 1, 1)
        assert pool.submit(_tasks.square, 3).result(WAIT) == 9  # the replacement
        release.open()
        deadline = time.monotonic() + WAIT
        while pool.statistics().stuck:
            assert time.monotonic() < deadline
            time.sleep(0.001)
    assert cancelled_seen == [True]


def test_drain_ends_when_the_last_task_is_given_up_on() -> None:
    # A timed-out task is retried while the pool drains, and times out again. Given up
    # on twice, its workers never come back: shutdown() must neither wait for them nor
    # for the idle workers (two by then), which only their retirement let go before.
    release = threading.Event()
    attempts: list[int] = []

    def stuck() -> None:
        attempts.append(wp.current().attempt)
        release.wait(3 * WAIT)  # ignores cancellation; longer than the waits below

    retry = wp.Retry(attempts=2, backoff=0.2, jitter="none")
    pool = wp.ThreadPool(3, timeout=0.05, retry=retry)
    gate = ThreadGate()
    held = pool.submit(gate.wait)
    assert pool.submit(_tasks.square, 2).result(WAIT) == 4  # a second worker
    gate.open()
    assert held.result(WAIT) is True  # both idle now
    future = pool.submit(stuck)
    deadline = time.monotonic() + WAIT
    while pool.statistics().retried == 0:  # given up on once: a replacement idles too
        assert time.monotonic() < deadline
        time.sleep(0.001)
    done = threading.Event()

    def close() -> None:
        pool.shutdown()
        done.set()

    closer = threading.Thread(target=close)
    closer.start()
    try:
        with pytest.raises(wp.TaskTimeout):
            future.result(WAIT)
        assert attempts == [1, 2]
        assert done.wait(WAIT), "shutdown() waited for a worker given up on, or idle"
        assert pool.statistics().stuck == 2
    finally:
        release.set()
        closer.join(WAIT)


def test_context_sleep_wakes_on_timeout() -> None:
    with wp.ThreadPool(1, timeout=0.05) as pool:
        future = pool.submit(_tasks.sleep_for, 30)
        with pytest.raises(wp.TaskTimeout):
            future.result(WAIT)


def test_a_waiting_retry_holds_no_worker() -> None:
    retry = wp.Retry(attempts=2, backoff=0.3, jitter="none")
    with wp.ThreadPool(1) as pool:
        flaky = pool.schedule(_tasks.fail_until_attempt, (2,), retry=retry)
        while pool.statistics().retried == 0:
            time.sleep(0.001)
        other = pool.submit(_tasks.started_at, None)
        other_started = other.result(WAIT)
        assert not flaky.done()  # the retry is still waiting, yet the worker was free
        assert flaky.result(WAIT) == 2
        assert other_started < time.monotonic()


def test_cancel_futures_cancels_waiting_retries() -> None:
    retry = wp.Retry(attempts=3, backoff=30)
    pool = wp.ThreadPool(1)
    future = pool.schedule(_tasks.fail, ("x",), retry=retry)
    while pool.statistics().retried == 0:
        time.sleep(0.001)
    pool.shutdown(cancel_futures=True)
    with pytest.raises(wp.Cancelled, match="waiting to retry"):
        future.result(WAIT)
    assert pool.statistics().cancelled == 1


def test_a_retry_withdrawn_before_it_is_scheduled_schedules_nothing(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """The race the invariant test found: a task failed and is to be retried, and a
    shutdown withdraws it (then the last worker closes the timer) before its worker
    schedules the retry. The worker schedules nothing, and raises nothing."""
    retry = wp.Retry(attempts=3, backoff=30)
    pool = wp.ThreadPool(1)
    engine = pool._engine
    schedule = engine._schedule_retry

    def withdrawn_first(task: Any, delay: float) -> None:
        pool.shutdown(wait=False, cancel_futures=True)  # from the worker, in between
        schedule(task, delay)

    monkeypatch.setattr(engine, "_schedule_retry", withdrawn_first)
    future = pool.schedule(_tasks.fail, ("x",), retry=retry)
    with pytest.raises(wp.Cancelled, match="waiting to retry"):
        future.result(WAIT)
    pool.shutdown(wait=True)
    assert engine._timer is None  # no timer was started for it
    s = pool.statistics()
    assert (s.retried, s.cancelled, s.failed) == (1, 1, 0)


def test_cancel_futures_lets_running_tasks_finish() -> None:
    # As the stdlib: queued tasks are cancelled, running ones finish.
    started, release = threading.Event(), threading.Event()

    def hold() -> str:
        started.set()
        assert release.wait(WAIT)
        return "finished"

    pool = wp.ThreadPool(1)
    running = pool.submit(hold)
    queued = pool.submit(_tasks.square, 3)
    assert started.wait(WAIT)
    pool.shutdown(wait=False, cancel_futures=True)
    assert queued.cancelled()
    assert not running.done()
    release.set()
    assert running.result(WAIT) == "finished"
    pool.shutdown()
    assert pool.unfinished == (queued,)
    stats = pool.statistics()
    assert (stats.completed, stats.cancelled) == (1, 1)


def test_shutdown_timeout_interrupts_context_sleep() -> None:
    pool = wp.ThreadPool(1)
    future = pool.submit(_tasks.sleep_for, 30)
    while pool.statistics().running == 0:
        time.sleep(0.001)
    pool.shutdown(timeout=0.05)
    with pytest.raises(wp.Cancelled):
        future.result(WAIT)
    assert pool.unfinished == (future,)
    assert pool.statistics().cancelled == 1


def test_cancel_interrupts_a_rate_limit_wait() -> None:
    pool = wp.ThreadPool(2, rate=wp.RateLimit(per_second=0.01))
    first = pool.submit(_tasks.square, 2)
    second = pool.submit(_tasks.square, 3)  # its slot is 100 s away
    assert first.result(WAIT) == 4
    deadline = time.monotonic() + WAIT
    while not second.running():
        assert time.monotonic() < deadline
        time.sleep(0.001)
    pool.shutdown(cancel_futures=True)
    with pytest.raises(wp.Cancelled, match="rate limit"):
        second.result(WAIT)


def test_map_under_a_timeout_fails_items_alone() -> None:
    with wp.ThreadPool(2, timeout=0.1) as pool:
        got = list(pool.map(_tasks.sleep_for, [0, 30, 0], on_error="return"))
    assert got[0] == wp.Value(None)
    assert got[2] == wp.Value(None)
    assert isinstance(got[1], wp.Error)
    assert isinstance(got[1].error, wp.TaskTimeout)


def test_map_under_a_retry_retries_items() -> None:
    with wp.ThreadPool(2, retry=wp.Retry(attempts=3, backoff=0.001)) as pool:
        assert list(pool.map(_tasks.fail_until_attempt, [1, 2, 3])) == [1, 2, 3]
    assert pool.statistics().retried == 3


def test_a_collected_pool_lets_its_threads_go() -> None:
    pool = wp.ThreadPool(2, name="forgotten")
    assert pool.submit(_tasks.square, 2).result(WAIT) == 4
    del pool
    gc.collect()
    deadline = time.monotonic() + WAIT
    while pool_threads("forgotten"):
        assert time.monotonic() < deadline
        time.sleep(0.005)


def test_shutdown_without_wait_returns_and_finishes_later() -> None:
    gate = ThreadGate()
    pool = wp.ThreadPool(1, name="nowait")
    running = pool.submit(gate.wait)
    queued = pool.submit(_tasks.square, 6)
    pool.shutdown(wait=False)
    assert not queued.done()
    gate.open()
    assert running.result(WAIT) is True
    assert queued.result(WAIT) == 36
    pool.shutdown()


def test_statistics_gauges() -> None:
    gate = ThreadGate()
    with wp.ThreadPool(3) as pool:
        futures = [pool.submit(gate.wait) for _ in range(2)]
        while pool.statistics().running != 2:
            time.sleep(0.001)
        stats = pool.statistics()
        assert (stats.workers, stats.busy, stats.idle, stats.running) == (2, 2, 0, 2)
        gate.open()
        cf.wait(futures, timeout=WAIT)


# -- every task ends exactly once -------------------------------------------------------

task_spec = st.tuples(
    st.sampled_from(["ok", "fail", "slow", "flaky"]),
    st.integers(min_value=-2, max_value=2),  # priority
)


def _run_spec(kind: str, delay: float) -> str:
    ctx = wp.current()
    if kind == "slow":
        ctx.sleep(delay)
    if kind == "fail":
        raise ValueError("fail")
    if kind == "flaky" and ctx.attempt < 2:
        raise ValueError("flaky")
    return kind


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(specs=st.lists(task_spec, min_size=1, max_size=30),
       workers=st.integers(min_value=1, max_value=4),
       flavour=st.sampled_from(["drain", "cancel", "timeout", "nowait"]),
       stop_after=st.integers(min_value=0, max_value=30),
       delay=st.sampled_from([0.0, 0.001, 0.005]))
def test_every_task_ends_exactly_once(specs: list[tuple[str, int]], workers: int,
                                      flavour: str, stop_after: int, delay: float) -> None:
    retry = wp.Retry(attempts=2, backoff=0.001)
    pool = wp.ThreadPool(workers, timeout=0.05, retry=retry)
    futures = []
    ends: list[cf.Future[Any]] = []
    lock = threading.Lock()

    def on_end(future: cf.Future[Any]) -> None:
        with lock:
            ends.append(future)

    for i, (kind, priority) in enumerate(specs):
        if i == stop_after:
            break
        slow = 0.2 if kind == "slow" and priority > 0 else delay
        future = pool.schedule(_run_spec, (kind, slow), priority=priority)
        future.add_done_callback(on_end)
        futures.append(future)
    if flavour == "drain":
        pool.shutdown()
    elif flavour == "cancel":
        pool.shutdown(cancel_futures=True)
    elif flavour == "timeout":
        pool.shutdown(timeout=0.01)
    else:
        pool.shutdown(wait=False)
        pool.shutdown()
    assert all(f.done() for f in futures)
    with lock:
        assert sorted(map(id, ends)) == sorted(map(id, futures))  # each once
    stats = pool.statistics()
    assert stats.submitted == len(futures)
    assert stats.ended == len(futures)
    outcomes = {"ok": 0, "error": 0, "cancelled": 0}
    for future in futures:
        if future.cancelled() or isinstance(future.exception(), wp.Cancelled):
            outcomes["cancelled"] += 1
        elif future.exception() is not None:
            outcomes["error"] += 1
        else:
            outcomes["ok"] += 1
    assert outcomes["ok"] == stats.completed
    assert outcomes["cancelled"] == stats.cancelled
    assert outcomes["error"] == stats.failed + stats.timed_out
    deadline = time.monotonic() + WAIT
    while pool.statistics().stuck:
        assert time.monotonic() < deadline
        time.sleep(0.001)


# -- Ctrl-C ----------------------------------------------------------------------------------

CTRL_C = textwrap.dedent("""
    import os, signal, threading, time, sys
    signal.signal(signal.SIGINT, signal.default_int_handler)  # even when started in background
    import workpool as wp
    release = threading.Event()
    def task(i):
        if i == 0:
            print("running", flush=True)
        release.wait(float(sys.argv[2]))
        return i
    try:
        with wp.ThreadPool(1) as pool:
            futures = [pool.submit(task, i) for i in range(5)]
            while pool.statistics().running == 0:
                time.sleep(0.001)
            for _ in range(int(sys.argv[1])):
                threading.Timer(0.05, os.kill, (os.getpid(), signal.SIGINT)).start()
                time.sleep(0.3) if sys.argv[1] == "2" else None
            time.sleep(5)
    except KeyboardInterrupt:
        print("interrupted", flush=True)
    print("cancelled", sum(f.cancelled() for f in futures), flush=True)
    print("stuck", pool.statistics().stuck, flush=True)
    release.set()
""")


def test_first_ctrl_c_cancels_the_queue_and_waits_for_running() -> None:
    out = subprocess.run([sys.executable, "-c", CTRL_C, "1", "0.5"], capture_output=True,
                         text=True, timeout=WAIT * 2)
    assert out.stdout.split("\n")[:4] == ["running", "interrupted", "cancelled 4", "stuck 0"]


def test_second_ctrl_c_abandons_running_tasks() -> None:
    # The first Ctrl-C lands in the with block; the second while __exit__ waits for the
    # running task: it is given up on, and the program goes on.
    out = subprocess.run([sys.executable, "-c", SECOND_CTRL_C], capture_output=True, text=True,
                         timeout=WAIT * 2)
    assert out.stdout.split("\n")[:3] == ["interrupted", "abandoned 1", "stuck 1"], out.stderr


SECOND_CTRL_C = textwrap.dedent("""
    import os, signal, threading, time
    signal.signal(signal.SIGINT, signal.default_int_handler)  # even when started in background
    import workpool as wp
    release = threading.Event()
    pool = wp.ThreadPool(1)
    try:
        with pool:
            running = pool.submit(release.wait, 30)
            while pool.statistics().running == 0:
                time.sleep(0.001)
            threading.Timer(0.2, os.kill, (os.getpid(), signal.SIGINT)).start()
            os.kill(os.getpid(), signal.SIGINT)
            time.sleep(5)
    except KeyboardInterrupt:
        print("interrupted", flush=True)
    print("abandoned", int(isinstance(running.exception(1), wp.Cancelled)), flush=True)
    print("stuck", pool.statistics().stuck, flush=True)
    release.set()
""")


# -- admission by a budget -------------------------------------------------------------------

def test_budget_bounds_the_cost_in_flight() -> None:
    budget = wp.Semaphore(10)
    peak = 0
    lock = threading.Lock()
    held = 0

    def task(cost: int) -> int:
        nonlocal peak, held
        with lock:
            held += cost
            peak = max(peak, held)
        time.sleep(0.002)
        with lock:
            held -= cost
        return cost

    with wp.ThreadPool(8, budget=budget) as pool:
        futures = [pool.schedule(task, (c,), cost=c) for c in [4, 6, 3, 7, 5, 5, 2, 8] * 3]
        assert sum(f.result(WAIT) for f in futures) == 40 * 3
    assert peak <= 10
    assert budget.statistics().held == 0


def test_budget_without_room_would_block() -> None:
    budget = wp.Semaphore(4)
    gate = ThreadGate()
    with wp.ThreadPool(2, budget=budget) as pool:
        first = pool.schedule(gate.wait, cost=3)
        with pytest.raises(wp.WouldBlock, match=r"^budget has 1 of the 2 tokens"):
            pool.schedule(_tasks.square, (2,), cost=2, block=False)
        with pytest.raises(ValueError, match=r"^n must be <= capacity \(4\), got 5$"):
            pool.schedule(_tasks.square, (2,), cost=5)
        with pytest.raises(ValueError, match=r"^cost must be an int >= 1, got 0$"):
            pool.schedule(_tasks.square, (2,), cost=0)
        assert pool.submit(_tasks.square, 3).result(WAIT) == 9  # cost 1 fits
        gate.open()
        assert first.result(WAIT) is True
    assert budget.statistics().held == 0


def test_budget_bounds_map_items_in_flight() -> None:
    budget = wp.Semaphore(5)
    peak = 0

    def task(x: int) -> int:
        nonlocal peak
        peak = max(peak, budget.statistics().held)
        return x * x

    with wp.ThreadPool(4, budget=budget) as pool:
        assert list(pool.map(task, range(2000))) == [x * x for x in range(2000)]
    assert 1 <= peak <= 5
    assert budget.statistics().held == 0


def test_a_blocked_hand_off_is_woken_by_a_worker_going_idle() -> None:
    gate, done = ThreadGate(), threading.Event()
    result: list[int] = []
    with wp.ThreadPool(1, queue_size=0) as pool:
        blocker = pool.submit(gate.wait)

        def producer() -> None:
            result.append(pool.submit(_tasks.square, 7).result(WAIT))
            done.set()

        thread = threading.Thread(target=producer)
        thread.start()
        gate.open()
        assert done.wait(WAIT)
        thread.join(WAIT)
        assert blocker.result(WAIT) is True
    assert result == [49]


# -- drop-in: what code written for ThreadPoolExecutor relies on ----------------------


def test_is_a_thread_pool_executor_with_its_attributes() -> None:
    with wp.ThreadPool(3, thread_name_prefix="legacy") as pool:
        assert isinstance(pool, cf.ThreadPoolExecutor)
        assert pool._max_workers == 3
        assert pool.submit(threading.current_thread).result(WAIT).name.startswith("legacy_")
    with pytest.raises(TypeError, match=r"^thread_name_prefix must be a str, got 3$"):
        wp.ThreadPool(1, thread_name_prefix=3)  # type: ignore[arg-type]


def _run_script(code: str, timeout: float = 30) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-c", textwrap.dedent(code)], capture_output=True,
                          text=True, timeout=timeout)


def test_a_forked_child_exits_while_a_pool_exists() -> None:
    # The child inherits the pool but not its threads: it must neither wait for them
    # at exit nor accept work it could never run.
    out = _run_script("""
        import os, sys, warnings
        import workpool as wp
        # 3.12+ warns that forking a process with threads may deadlock the child.
        warnings.simplefilter("ignore", DeprecationWarning)
        pool = wp.ThreadPool(2)
        assert pool.submit(pow, 2, 5).result(10) == 32
        pid = os.fork()
        if pid == 0:
            try:
                pool.submit(pow, 2, 3)
            except wp.PoolClosed as exc:
                print("child:", exc, flush=True)
            sys.exit(0)  # a normal exit: runs the exit hooks
        _, status = os.waitpid(pid, 0)
        print("child exit:", os.waitstatus_to_exitcode(status))
        print("parent:", pool.submit(pow, 3, 2).result(10))
    """)
    assert out.stderr == ""
    assert out.stdout.splitlines() == [
        "child: cannot schedule new futures in a forked child process: the pool belongs "
        "to its parent",
        "child exit: 0",
        "parent: 9",
    ]


def test_submit_after_interpreter_shutdown_raises_the_stdlibs_error() -> None:
    out = _run_script("""
        import atexit
        import workpool as wp

        @atexit.register
        def late():
            for p in (pool, wp.ThreadPool(1)):
                try:
                    p.submit(print, "ran")
                except RuntimeError as exc:
                    print(type(exc).__name__, exc)

        pool = wp.ThreadPool(2)
        pool.submit(print, "early").result(10)
    """)
    assert out.stderr == ""
    assert out.stdout.splitlines() == [
        "early",
        "RuntimeError cannot schedule new futures after interpreter shutdown",
        "RuntimeError cannot schedule new futures after interpreter shutdown",
    ]


def test_a_thread_given_up_on_does_not_keep_the_interpreter_alive() -> None:
    started = time.monotonic()
    out = _run_script("""
        import time
        import workpool as wp
        pool = wp.ThreadPool(1, timeout=0.2)
        future = pool.submit(time.sleep, 60)
        print(type(future.exception(10)).__name__)
    """)
    assert (out.stdout, out.stderr, out.returncode) == ("TaskTimeout\n", "", 0)
    assert time.monotonic() - started < 25  # the sleeping thread was not waited for


def test_statistics_count_map_items_not_chunks() -> None:
    with wp.ThreadPool(4) as pool:
        assert sum(pool.map(_tasks.square, range(80_000))) == sum(i * i for i in range(80_000))
        stats = pool.statistics()
    assert (stats.submitted, stats.completed, stats.failed) == (80_000, 80_000, 0)


def _fails_after(n: int) -> Any:
    yield from range(n)
    raise OSError("the input broke")


@pytest.mark.parametrize("ordered", [True, False])
@pytest.mark.parametrize("chunksize", ["auto", 1, 7])
def test_map_yields_every_item_read_before_the_input_fails(ordered: bool,
                                                          chunksize: int | str) -> None:
    got: list[int] = []
    with wp.ThreadPool(2) as pool:
        results = pool.map(_tasks.square, _fails_after(100), ordered=ordered,
                           chunksize=chunksize)
        with pytest.raises(OSError, match=r"^the input broke$"):
            got.extend(results)
    assert sorted(got) == [i * i for i in range(100)]
    assert list(results) == []


@pytest.mark.parametrize("bad", [float("nan"), -1.0, 0, "1"])
def test_a_bad_timeout_is_refused_at_the_call(bad: Any) -> None:
    error = TypeError if isinstance(bad, str) else ValueError
    with pytest.raises(error, match=r"^timeout must be"):
        wp.ThreadPool(1, timeout=bad)
    with wp.ThreadPool(1) as pool:
        with pytest.raises(error, match=r"^timeout must be"):
            pool.schedule(_tasks.square, (2,), timeout=bad)
        if bad != -1.0 and bad != 0:  # map's timeout is the stdlib's: >= 0 allowed
            with pytest.raises(error, match=r"^timeout must be"):
                pool.map(_tasks.square, [1], timeout=bad)


def test_an_infinite_timeout_means_none() -> None:
    with wp.ThreadPool(1, timeout=float("inf")) as pool:
        assert pool.schedule(_tasks.square, (3,), timeout=float("inf")).result(WAIT) == 9
        assert list(pool.map(_tasks.square, [2], timeout=float("inf"))) == [4]


class _Big:
    def method(self) -> int:
        return 1


@pytest.mark.parametrize("timeout", [None, 30.0])
def test_no_stale_references_to_a_finished_task(timeout: float | None) -> None:
    # The future stays alive; the pool must not keep the task's function or arguments.
    collected = threading.Event()
    with wp.ThreadPool(2, timeout=timeout) as pool:
        obj = _Big()
        ref = weakref.ref(obj, lambda _: collected.set())
        future = pool.submit(obj.method)
        arg_future = pool.submit(id, _Big())
        assert future.result(WAIT) == 1
        arg_future.result(WAIT)
        del obj
        for _ in range(50):
            gc.collect()
            if collected.wait(0.05):
                break
        assert ref() is None
        assert future.done()


def test_shutdown_timeout_zero_stops_running_tasks_at_once() -> None:
    started = threading.Event()

    def hold() -> None:
        started.set()
        wp.current().sleep(30)

    pool = wp.ThreadPool(1)
    running = pool.submit(hold)
    queued = pool.submit(_tasks.square, 2)
    assert started.wait(WAIT)
    pool.shutdown(timeout=0)
    assert queued.cancelled()
    with pytest.raises(wp.Cancelled, match=r"^abandoned by shutdown$"):
        running.result(WAIT)
    assert set(pool.unfinished) == {running, queued}
    with pytest.raises(ValueError, match=r"^timeout must be >= 0, got nan$"):
        pool.shutdown(timeout=float("nan"))


class _Result:
    pass


@pytest.mark.parametrize("on_error", ["raise", "return"])
@pytest.mark.parametrize("chunksize", [1, 5])
def test_map_keeps_no_reference_to_what_it_handed_out(on_error: str,
                                                      chunksize: int) -> None:
    # As the stdlib's map: the caller may be the last to hold a result.
    with wp.ThreadPool(2) as pool:
        for got in pool.map(lambda _: _Result(), range(10), chunksize=chunksize,
                            on_error=on_error):  # type: ignore[call-overload]
            ref = weakref.ref(got if on_error == "raise" else got.unwrap())
            del got
            gc.collect()
            assert ref() is None


def test_cancel_futures_runs_a_task_already_handed_to_a_starting_worker() -> None:
    # As the stdlib runs the calls already in its call queue: a task handed straight
    # to a worker that is still starting is taken, not queued, so a cancel lets it run.
    release = threading.Event()
    pool = wp.ThreadPool(1, initializer=release.wait, initargs=(WAIT,))
    taken = pool.submit(_tasks.square, 4)
    queued = pool.submit(_tasks.square, 5)
    pool.shutdown(wait=False, cancel_futures=True)
    release.set()
    assert taken.result(WAIT) == 16
    assert queued.cancelled()
    pool.shutdown()


def test_unordered_map_reports_every_item_of_a_chunk_that_failed_whole() -> None:
    # A chunk that times out fails as a whole: each of its items gets the error.
    with wp.ThreadPool(2, timeout=0.3) as pool:
        got = list(pool.map(_tasks.sleep_for, [0, 0, 0, 0, 30, 0, 0, 0, 0, 0], chunksize=5,
                            ordered=False, on_error="return"))
    errors = [o for o in got if isinstance(o, wp.Error)]
    assert len(got) == 10
    assert len(errors) == 5
    assert all(isinstance(e.error, wp.TaskTimeout) for e in errors)
