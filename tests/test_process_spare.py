"""An Autoscale ``ProcessPool``'s spare process: started off the caller's thread and
off the reader while the pool is below its ``max`` with a backlog, taken by the next
worker (no task waits for a process start), never counted as a worker, and gone after
an idle shrink and after shutdown.

Process starts are counted by the thread that makes them (a forkserver context, so
that every start goes through ``Process.start``); tasks are held on a file (processes
share no event), and every wait is bounded.
"""

from __future__ import annotations

import multiprocessing
import os
import random
import threading
import time
from multiprocessing.context import ForkServerProcess
from pathlib import Path
from typing import Any

import pytest

import workpool as wp
from tests.pool_suite import WAIT, wait_until
from workpool._backends.process import ProcessBackend

from . import _process_tasks as _ptasks
from . import _tasks


def held_id(path: str) -> int:
    """Wait (bounded) until *path* exists; return the id of the worker that ran it."""
    deadline = time.monotonic() + WAIT
    while not os.path.exists(path):
        if time.monotonic() > deadline:
            raise TimeoutError(path)
        time.sleep(0.005)
    return wp.current().worker_id


def nap(i: int, seconds: float) -> int:
    time.sleep(seconds)
    if i % 7 == 3:
        raise ValueError(i)
    return i


@pytest.fixture
def starts(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """The name of the thread of every forkserver process start, in order."""
    names: list[str] = []
    start = ForkServerProcess.start

    def counted(self: Any) -> None:
        names.append(threading.current_thread().name.rsplit("_", 1)[-1])
        start(self)

    monkeypatch.setattr(ForkServerProcess, "start", counted)
    return names


def forkserver_pool(**options: Any) -> wp.ProcessPool:
    return wp.ProcessPool(mp_context=multiprocessing.get_context("forkserver"), **options)


def backend(pool: wp.ProcessPool) -> ProcessBackend:
    b = pool._engine.backend
    assert isinstance(b, ProcessBackend)
    return b


def spare_ready(pool: wp.ProcessPool) -> bool:
    b = backend(pool)
    return len(b._spares) == 1 and not b._starting


def test_growth_takes_a_spare_started_in_the_background(tmp_path: Path,
                                                       starts: list[str]) -> None:
    go = str(tmp_path / "go")
    with forkserver_pool(workers=wp.Autoscale(min=0, max=3, idle_timeout=0.1)) as pool:
        first = pool.submit(held_id, go)
        wait_until(lambda: pool.statistics().running == 1, "the first task running")
        # The first worker's process started for its task (on the reader: the pool
        # held nothing); the spare starts on a thread of its own.
        wait_until(lambda: spare_ready(pool), "a spare")
        assert starts == ["reader", "spare"]
        assert pool.statistics().workers == 1  # a spare is not a worker
        assert len(multiprocessing.active_children()) == 2

        second = pool.submit(held_id, go)  # takes the spare; the next one starts
        wait_until(lambda: pool.statistics().running == 2, "two running")
        wait_until(lambda: spare_ready(pool), "the next spare")
        assert starts == ["reader", "spare", "spare"]

        third = pool.submit(held_id, go)  # takes it, and the pool is at max: no spare
        wait_until(lambda: pool.statistics().running == 3, "three running")
        assert (backend(pool)._spares, backend(pool)._starting) == ([], False)
        assert starts == ["reader", "spare", "spare"]
        fourth = pool.submit(held_id, go)  # queued: no growth beyond max
        assert (pool.statistics().workers, pool.statistics().queued) == (3, 1)
        assert len(multiprocessing.active_children()) == 3

        Path(go).touch()
        ids = [f.result(WAIT) for f in (first, second, third)]
        assert sorted(ids) == [0, 1, 2]  # each child took the id of its worker
        assert fourth.result(WAIT) in ids
        # The idle sweep lets every worker go (min=0): no spare is kept either.
        wait_until(lambda: pool.statistics().workers == 0, "no worker left")
        wait_until(lambda: not multiprocessing.active_children(), "every process gone")
        assert backend(pool)._spares == []
        assert starts == ["reader", "spare", "spare"]


def test_a_burst_to_max_keeps_no_spare(tmp_path: Path) -> None:
    go = str(tmp_path / "go")
    with forkserver_pool(workers=wp.Autoscale(max=3, idle_timeout=5.0)) as pool:
        futures = [pool.submit(held_id, go) for _ in range(5)]
        wait_until(lambda: pool.statistics().running == 3, "three running")
        # A spare started on the way up finds the pool at max: it is stopped.
        wait_until(lambda: not backend(pool)._starting, "the starter done")
        assert backend(pool)._spares == []
        assert len(multiprocessing.active_children()) == 3
        Path(go).touch()
        assert sorted({f.result(WAIT) for f in futures}) == [0, 1, 2]


def test_an_idle_shrink_to_min_lets_the_spare_go(tmp_path: Path, starts: list[str]) -> None:
    go = str(tmp_path / "go")
    with forkserver_pool(workers=wp.Autoscale(min=1, max=4, idle_timeout=0.05)) as pool:
        futures = [pool.submit(held_id, go)]
        wait_until(lambda: pool.statistics().running == 1, "one running")
        futures.append(pool.submit(held_id, go))
        wait_until(lambda: pool.statistics().running == 2, "two running")
        wait_until(lambda: spare_ready(pool), "a spare")
        assert len(multiprocessing.active_children()) == 3  # 2 workers and the spare
        Path(go).touch()
        assert sorted(f.result(WAIT) for f in futures) == [0, 1]
        wait_until(lambda: pool.statistics().workers == 1, "back to min")
        wait_until(lambda: len(multiprocessing.active_children()) == 1,
                   "the spare gone with the worker that left")
        assert backend(pool)._spares == []
        assert pool.submit(abs, -3).result(WAIT) == 3  # the one left runs it
    # The first worker's process, the spare the second took, the spare let go.
    assert starts == ["reader", "spare", "spare"]
    assert not multiprocessing.active_children()


def test_a_spare_killed_while_idle_is_replaced(tmp_path: Path) -> None:
    go = str(tmp_path / "go")
    with forkserver_pool(workers=wp.Autoscale(max=3)) as pool:
        first = pool.submit(held_id, go)
        wait_until(lambda: pool.statistics().running == 1, "one running")
        wait_until(lambda: spare_ready(pool), "a spare")
        spare = backend(pool)._spares[0][0]
        spare.kill()
        wait_until(lambda: not spare.is_alive(), "the spare dead")
        second = pool.submit(held_id, go)  # a fresh process, not the dead spare
        Path(go).touch()
        assert sorted([first.result(WAIT), second.result(WAIT)]) == [0, 1]
        assert pool.statistics().crashed == 0


def test_no_spare_survives_shutdown(tmp_path: Path) -> None:
    # The forkserver and its socket are the process's own once started: warm it up.
    with forkserver_pool(workers=1) as pool:
        assert pool.submit(abs, -1).result(WAIT) == 1
    fds = set(os.listdir("/proc/self/fd"))
    for i in range(6):
        count = 1 + i % 2  # below max: a spare is started
        pool = forkserver_pool(workers=wp.Autoscale(max=3))
        try:
            futures = [pool.submit(abs, -n) for n in range(count)]
            if i >= 3:  # a spare held; before, shut down while one may be starting
                wait_until(lambda p=pool: spare_ready(p), "a spare")  # type: ignore[misc]
        finally:
            pool.shutdown(wait=True)
        assert [f.result(0) for f in futures] == list(range(count))
        assert not multiprocessing.active_children()
        assert backend(pool)._spares == []
        assert not any(t.name.endswith("_spare") and t.is_alive()
                       for t in threading.enumerate())
    assert set(os.listdir("/proc/self/fd")) == fds


def test_a_crash_and_a_timeout_in_a_growing_pool_fail_only_their_task(
        tmp_path: Path) -> None:
    with forkserver_pool(workers=wp.Autoscale(max=3, idle_timeout=5.0), timeout=1.0,
                         max_tasks_per_child=2) as pool:
        crashed = pool.submit(_ptasks.crash)
        stuck = pool.submit(_tasks.spin, 30)
        doubled = [pool.submit(_ptasks.double, i) for i in range(10)]
        with pytest.raises(wp.WorkerCrashed):
            crashed.result(WAIT)
        with pytest.raises(wp.TaskTimeout):
            stuck.result(WAIT)
        assert [f.result(WAIT) for f in doubled] == [2 * i for i in range(10)]
        assert pool.statistics().workers <= 3
        stats = pool.statistics()
        assert (stats.completed, stats.failed, stats.timed_out) == (10, 1, 1)
    assert not multiprocessing.active_children()


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_every_task_ends_exactly_once_with_resizes(seed: int) -> None:
    rng = random.Random(seed)
    tasks = 40
    ends: list[int] = []
    lock = threading.Lock()

    def ended(_: Any) -> None:
        with lock:
            ends.append(1)

    with forkserver_pool(workers=wp.Autoscale(max=4, idle_timeout=0.01)) as pool:
        futures = []
        for i in range(tasks):
            future = pool.submit(nap, i, rng.choice((0.0, 0.001, 0.005)))
            future.add_done_callback(ended)
            futures.append(future)
            if rng.random() < 0.2:
                pool.resize(rng.randint(1, 5))
        outcomes = [("error", i) if f.exception(WAIT) is not None else ("value", f.result())
                    for i, f in enumerate(futures)]
    assert outcomes == [("error", i) if i % 7 == 3 else ("value", i) for i in range(tasks)]
    assert len(ends) == tasks
    failed = sum(1 for i in range(tasks) if i % 7 == 3)
    stats = pool.statistics()
    assert (stats.completed, stats.failed, stats.cancelled) == (tasks - failed, failed, 0)
    assert not multiprocessing.active_children()
