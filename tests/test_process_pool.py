"""ProcessPool: the shared pool behaviour, plus crashes, kills, recycling, orphans."""

from __future__ import annotations

import contextlib
import os
import pickle
import random
import signal
import subprocess
import sys
import textwrap
import threading
import time
from concurrent.futures.process import BrokenProcessPool
from pathlib import Path
from typing import Any

import pytest

import workpool as wp
from tests import _tasks
from tests.pool_suite import WAIT, PoolBehaviour


class FileGate:
    """A gate processes can share: it opens when its file exists."""

    def __init__(self, path: Path) -> None:
        self.path = str(path)

    def wait(self) -> bool:
        deadline = time.monotonic() + WAIT
        while not os.path.exists(self.path):
            if time.monotonic() > deadline:
                return False
            time.sleep(0.002)
        return True

    def open(self) -> None:
        Path(self.path).touch()


class TestProcessPoolBehaviour(PoolBehaviour):
    kills_running = True

    @pytest.fixture(autouse=True)
    def _tmp(self, tmp_path: Path) -> None:
        self.tmp = tmp_path
        self.gates = 0

    def make_pool(self, **options: Any) -> wp.ProcessPool:
        return wp.ProcessPool(**options)

    def make_gate(self) -> FileGate:
        self.gates += 1
        return FileGate(self.tmp / f"gate-{self.gates}")


def worker_pids(pool: wp.ProcessPool) -> list[int]:
    return [w.process.pid for w in pool._engine.live_workers()  # type: ignore[attr-defined]
            if getattr(w, "process", None) is not None]


def test_default_workers_are_the_cpus() -> None:
    with wp.ProcessPool() as pool:
        assert pool.workers == wp.cpus()


def test_lambdas_and_closures_travel() -> None:
    base = 10
    with wp.ProcessPool(2) as pool:
        assert pool.submit(lambda x: x + base, 5).result(WAIT) == 15
        assert list(pool.map(lambda x: x * base, range(4))) == [0, 10, 20, 30]


def test_unpicklable_argument_fails_at_submit_naming_it() -> None:
    with wp.ProcessPool(1) as pool:
        with pytest.raises(pickle.PicklingError,
                           match=r"^cannot send argument 0 of square to a worker process: "):
            pool.submit(_tasks.square, threading.Lock())  # type: ignore[arg-type]
        with pytest.raises(pickle.PicklingError, match=r"keyword argument 'b' of add"):
            pool.submit(_tasks.add, 1, b=threading.Lock())  # type: ignore[arg-type]
        lock = threading.Lock()
        with pytest.raises(pickle.PicklingError, match=r"^cannot send the function of "):
            pool.map(lambda x: lock, [1])
        it = pool.map(_tasks.square, [1, threading.Lock()], chunksize=1, window=1)
        assert next(it) == 1
        with pytest.raises(pickle.PicklingError, match="an item of the map of square"):
            next(it)
        assert pool.submit(_tasks.square, 3).result(WAIT) == 9  # the pool is fine


def test_child_traceback_is_the_cause() -> None:
    with wp.ProcessPool(1) as pool:
        error = pool.submit(_tasks.fail, "deep").exception(WAIT)
    assert isinstance(error, ValueError)
    assert 'in fail\n    raise ValueError(message)' in str(error.__cause__)


@pytest.mark.parametrize(("task", "args", "how"), [
    (_tasks.exit_with, (3,), "exit code 3"),
    (_tasks.kill_self, (signal.SIGKILL,), "signal SIGKILL"),
    (_tasks.kill_self, (signal.SIGTERM,), "signal SIGTERM"),
    (_tasks.segfault, (), "signal SIGSEGV"),
])
def test_a_crash_fails_only_its_task(task: Any, args: tuple[Any, ...], how: str) -> None:
    with wp.ProcessPool(2) as pool:
        before = [pool.submit(_tasks.square, i) for i in range(4)]
        crashed = pool.submit(task, *args)
        error = crashed.exception(WAIT)
        after = [pool.submit(_tasks.square, i) for i in range(4)]
        assert [f.result(WAIT) for f in before + after] == [0, 1, 4, 9] * 2
    assert isinstance(error, wp.WorkerCrashed)
    assert isinstance(error, BrokenProcessPool)  # existing except clauses keep working
    assert str(error) == f"the worker process running the task died ({how})"
    stats = pool.statistics()
    assert (stats.completed, stats.failed) == (8, 1)


def test_a_poison_pill_is_quarantined() -> None:
    retry = wp.Retry(attempts=10, backoff=0.001, on=(wp.WorkerCrashed,))
    with wp.ProcessPool(1, retry=retry, max_crashes=3) as pool:
        future = pool.submit(_tasks.exit_with, 1)
        with pytest.raises(wp.WorkerCrashed, match=r"crashed 3 workers and is quarantined"):
            future.result(WAIT)
        assert pool.submit(_tasks.square, 2).result(WAIT) == 4
    assert pool.statistics().retried == 2


def test_retry_on_crash_runs_the_task_again() -> None:
    retry = wp.Retry(attempts=2, backoff=0.001, on=(wp.WorkerCrashed,))
    with wp.ProcessPool(1, retry=retry) as pool:
        assert pool.submit(_crash_first_time).result(WAIT) == 2


def _crash_first_time() -> int:
    if wp.current().attempt == 1:
        os._exit(5)
    return wp.current().attempt


def test_a_crash_inside_a_chunk_fails_only_its_item() -> None:
    with wp.ProcessPool(2) as pool:
        got = list(pool.map(_tasks.crash_on, range(50), [17] * 50, chunksize=10,
                            on_error="return"))
    assert [o.unwrap() for i, o in enumerate(got) if i != 17] == [
        x * x for x in range(50) if x != 17]
    assert isinstance(got[17], wp.Error)
    assert isinstance(got[17].error, wp.WorkerCrashed)


def test_timeout_kills_a_busy_loop() -> None:
    with wp.ProcessPool(1, timeout=0.2) as pool:
        pid = pool.submit(_tasks.getpid).result(WAIT)
        stuck = pool.submit(_tasks.spin, 30)
        with pytest.raises(wp.TaskTimeout):
            stuck.result(WAIT)
        new_pid = pool.submit(_tasks.getpid).result(WAIT)
    assert new_pid != pid
    assert pool.statistics().timed_out == 1


def test_recycling_after_max_tasks() -> None:
    with wp.ProcessPool(1, max_tasks_per_worker=2) as pool:
        pids = [pool.submit(_tasks.getpid).result(WAIT) for _ in range(6)]
    assert len(set(pids)) == 3
    assert pids[0] == pids[1]
    assert pids[2] == pids[3]
    assert pids[4] == pids[5]


def test_recycling_over_max_memory() -> None:
    with wp.ProcessPool(1, max_memory_per_worker=150 << 20) as pool:
        first = pool.submit(_tasks.hold_memory, 200).result(WAIT)
        second = pool.submit(_tasks.getpid).result(WAIT)
    assert first != second


def test_initializer_state_lives_in_the_worker() -> None:
    with wp.ProcessPool(1, initializer=_tasks.make_state, initargs=("m",)) as pool:
        assert [pool.submit(_tasks.describe).result(WAIT)[2] for _ in range(3)] == [
            "state-m"] * 3


def test_initializer_failure_breaks_the_pool_as_the_stdlib() -> None:
    message = "A child process terminated abruptly, the process pool is not usable anymore"
    pool = wp.ProcessPool(1, initializer=_tasks.fail, initargs=("init",))
    with pytest.raises(BrokenProcessPool, match=f"^{message}$"):
        pool.submit(_tasks.square, 2).result(WAIT)
    with pytest.raises(BrokenProcessPool, match=f"^{message}$"):
        pool.submit(_tasks.square, 3)
    pool.shutdown()


def test_bad_process_options() -> None:
    with pytest.raises(ValueError, match=r"^max_tasks_per_worker must be >= 1, got 0$"):
        wp.ProcessPool(1, max_tasks_per_worker=0)
    with pytest.raises(ValueError, match=r"^max_crashes must be >= 1, got 0$"):
        wp.ProcessPool(1, max_crashes=0)


def test_shutdown_leaves_no_child() -> None:
    pool = wp.ProcessPool(2)
    assert pool.submit(_tasks.square, 3).result(WAIT) == 9
    pids = worker_pids(pool)
    pool.shutdown()
    for pid in pids:
        assert not Path(f"/proc/{pid}").exists() or _zombie(pid)


def test_cancel_shutdown_kills_running_processes() -> None:
    pool = wp.ProcessPool(1)
    running = pool.submit(_tasks.spin, 30)
    while pool.statistics().running == 0:
        time.sleep(0.001)
    time.sleep(0.05)  # let the child start spinning; the kill works either way
    pool.shutdown(cancel_futures=True)
    with pytest.raises(wp.Cancelled):
        running.result(WAIT)


def _zombie(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().split(")")[1].split()[0] == "Z"
    except OSError:
        return True


ORPHAN = textwrap.dedent("""
    import sys, time
    import workpool as wp
    from tests import _tasks
    pool = wp.ProcessPool(2)
    futures = [pool.submit(_tasks.spin, 60) for _ in range(2)]
    while pool.statistics().running < 2:
        time.sleep(0.01)
    print(*[w.process.pid for w in pool._engine.live_workers()], flush=True)
    time.sleep(60)
""")


def test_workers_exit_when_the_parent_is_killed() -> None:
    parent = subprocess.Popen([sys.executable, "-c", ORPHAN], stdout=subprocess.PIPE, text=True,
                              cwd=Path(__file__).parent.parent)
    try:
        assert parent.stdout is not None
        pids = [int(p) for p in parent.stdout.readline().split()]
        assert len(pids) == 2
    finally:
        parent.kill()
        parent.wait(WAIT)
        if parent.stdout is not None:
            parent.stdout.close()
    deadline = time.monotonic() + 3.0
    while not all(not Path(f"/proc/{pid}").exists() or _zombie(pid) for pid in pids):
        assert time.monotonic() < deadline, "workers outlived their parent"
        time.sleep(0.02)


CTRL_C = textwrap.dedent("""
    import os, signal, threading, time
    signal.signal(signal.SIGINT, signal.default_int_handler)  # even when started in background
    import workpool as wp
    from tests import _tasks
    try:
        with wp.ProcessPool(2) as pool:
            futures = [pool.submit(_tasks.spin, 60) for _ in range(6)]
            while pool.statistics().running < 2:
                time.sleep(0.01)
            pids = [w.process.pid for w in pool._engine.live_workers()]
            print(*pids, flush=True)
            threading.Timer(0.1, os.kill, (os.getpid(), signal.SIGINT)).start()
            threading.Timer(0.4, os.kill, (os.getpid(), signal.SIGINT)).start()
            time.sleep(60)
    except KeyboardInterrupt:
        print("interrupted", sum(f.cancelled() for f in futures), flush=True)
""")


def test_ctrl_c_in_a_process_running_a_pool() -> None:
    out = subprocess.run([sys.executable, "-c", CTRL_C], capture_output=True, text=True,
                         timeout=WAIT * 2, cwd=Path(__file__).parent.parent)
    lines = out.stdout.splitlines()
    pids = [int(p) for p in lines[0].split()]
    assert lines[1] == "interrupted 4", out.stderr
    for pid in pids:
        assert not Path(f"/proc/{pid}").exists() or _zombie(pid)


# -- chaos: a killer SIGKILLs a random worker every 50 ms ---------------------------------

def _chaos(pool: wp.ProcessPool, n: int) -> list[Any]:
    stop = threading.Event()

    def killer() -> None:
        rng = random.Random(7)
        while not stop.wait(0.05):
            pids = worker_pids(pool)
            if pids:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(rng.choice(pids), signal.SIGKILL)

    thread = threading.Thread(target=killer)
    thread.start()
    try:
        futures = [pool.submit(_tasks.spin_square, i) for i in range(n)]
        outcomes = []
        for future in futures:
            error = future.exception(60)
            outcomes.append(future.result() if error is None else error)
        return outcomes
    finally:
        stop.set()
        thread.join()


@pytest.mark.timeout(120)
def test_chaos_with_retry_every_result_is_right() -> None:
    retry = wp.Retry(attempts=20, backoff=0.001, on=(wp.WorkerCrashed,))
    with wp.ProcessPool(2, retry=retry, max_crashes=20) as pool:
        outcomes = _chaos(pool, 2000)
    assert outcomes == [i * i for i in range(2000)]
    assert pool.statistics().completed == 2000


@pytest.mark.timeout(120)
def test_chaos_without_retry_every_task_ends_once() -> None:
    with wp.ProcessPool(2) as pool:
        outcomes = _chaos(pool, 2000)
    stats = pool.statistics()
    crashed = [o for o in outcomes if isinstance(o, BaseException)]
    assert all(isinstance(o, wp.WorkerCrashed) for o in crashed)
    assert [o for o in outcomes if not isinstance(o, BaseException)] == [
        i * i for i in range(2000) if not isinstance(outcomes[i], BaseException)]
    assert stats.completed + stats.failed == 2000 == stats.ended
    assert stats.failed == len(crashed)
