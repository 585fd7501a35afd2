"""DaskPool on a real Dask cluster: the shared pool behaviour, placement, bounded
flight, retries, timeouts, a killed worker, Ctrl-C, and a dask pipeline stage.

Most tests share one in-process ``LocalCluster`` (threads, started once for the
module); the worker-death test starts one of processes. Dask keeps threads of its own
while a cluster lives (its workers' executors, its callback and offload threads):
the leak check here (``no_leaks``) lets those through per test, and checks once the clusters are
closed that the cluster's threads and processes are gone (the callback and offload
threads are distributed's, for the life of the process).
"""

from __future__ import annotations

import concurrent.futures as cf
import json
import multiprocessing
import os
import signal
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import dask
import psutil
import pytest
from distributed import Client, LocalCluster, get_worker

import workpool as wp
from tests import _tasks
from tests._interrupt import interrupt_when_ready
from tests.pool_suite import WAIT, ExecutorPoolBehaviour
from tests.test_process_pool import FileGate

# distributed's own threads, for the life of the process once used.
_PROCESS_WIDE = ("Dask-Callback-Thread", "Dask-Offload")


def _threads() -> set[threading.Thread]:
    return {t for t in threading.enumerate() if t is not threading.main_thread()}


def _wait_for(check: Any, timeout: float = WAIT) -> bool:
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.01)
    return True


@pytest.fixture(scope="module")
def cluster() -> Iterator[LocalCluster]:
    before = _threads()
    with LocalCluster(n_workers=2, threads_per_worker=2, processes=False,
                      dashboard_address=":0", resources={"GPU": 1}) as local:
        yield local

    def leaked() -> list[str]:
        return sorted(t.name for t in _threads() - before
                      if t.is_alive() and not t.name.startswith(_PROCESS_WIDE))

    assert _wait_for(lambda: not leaked()), f"threads left behind: {leaked()}"


@pytest.fixture(scope="module")
def client(cluster: LocalCluster) -> Iterator[Client]:
    with Client(cluster, set_as_default=False) as dask_client:
        yield dask_client


@pytest.fixture(autouse=True)
def no_leaks() -> Iterator[None]:
    """No thread but the cluster's, no child process, left behind by a test (this
    module's version of the conftest check)."""
    before = _threads()
    yield

    def leaked() -> list[str]:
        return sorted(t.name for t in _threads() - before
                      if t.is_alive() and "Dask-" not in t.name)

    assert _wait_for(lambda: not leaked()), f"threads left behind: {leaked()}"
    assert _wait_for(lambda: not multiprocessing.active_children()), (
        f"child processes left behind: {multiprocessing.active_children()}")


class TestDaskPoolBehaviour(ExecutorPoolBehaviour):
    @pytest.fixture(autouse=True)
    def _setup(self, tmp_path: Path, client: Client) -> None:
        self.tmp = tmp_path
        self.gates = 0
        self.client = client

    def make_pool(self, **options: Any) -> wp.DaskPool:
        return wp.DaskPool(self.client, **options)

    def make_gate(self) -> FileGate:
        self.gates += 1
        return FileGate(self.tmp / f"gate-{self.gates}")


# -- tasks (module level: the cluster pickles them by reference) ---------------------------

def worker_address(_: Any = None) -> str:
    return str(get_worker().address)


def with_scheduler(item: Any) -> tuple[Any, str]:
    return item, str(get_worker().scheduler.address)


def token(_: Any = None) -> bytes:
    return os.urandom(16)


def wait_cancelled(marker: str) -> None:
    """Loop until the task's context is cancelled, then leave *marker* behind."""
    ctx = wp.current()
    deadline = time.monotonic() + WAIT
    while not ctx.cancelled and time.monotonic() < deadline:
        time.sleep(0.005)
    # Written aside, then renamed: the marker appears with its text, never empty.
    Path(marker + ".tmp").write_text(str(ctx.cancelled))
    os.replace(marker + ".tmp", marker)


# -- beyond the shared behaviour --------------------------------------------------------------

def test_identical_calls_run_twice(client: Client) -> None:
    with wp.DaskPool(client, workers=2) as pool:
        first, second = pool.submit(token), pool.submit(token)
        assert first.result(WAIT) != second.result(WAIT)
        assert len(set(pool.map(token, [None] * 4, chunksize=1))) == 4


def test_what_cannot_be_pickled_fails_its_future(client: Client) -> None:
    with wp.DaskPool(client, workers=2) as pool:
        future = pool.submit(id, threading.Lock())
        with pytest.raises(TypeError, match=r"cannot pickle '_thread.lock' object"):
            future.result(WAIT)
        assert pool.submit(_tasks.square, 2).result(WAIT) == 4
    assert (pool.statistics().failed, pool.statistics().completed) == (1, 1)


def test_at_most_workers_tasks_are_on_the_cluster(client: Client, tmp_path: Path) -> None:
    gate = FileGate(tmp_path / "gate")
    with wp.DaskPool(client, workers=3) as pool:
        it = pool.map(_tasks.wait_gate, [gate] * 50, chunksize=1, window=50)
        try:
            assert _wait_for(lambda: pool.statistics().running == 3)
            stats = pool.statistics()
            assert (stats.running, stats.queued) == (3, 47)

            def on_the_cluster() -> int:
                return sum(len(keys) for keys in client.processing().values())

            assert _wait_for(lambda: on_the_cluster() == 3)
            assert pool.statistics().running == 3
        finally:
            gate.open()
        assert list(it) == [True] * 50


def test_placement_by_worker_and_by_resource(client: Client) -> None:
    addresses = sorted(client.nthreads())
    with wp.DaskPool(client, workers=4) as pool:
        for address in addresses:
            placed = [pool.schedule(worker_address, workers=address) for _ in range(4)]
            assert {f.result(WAIT) for f in placed} == {address}
        assert pool.schedule(worker_address, resources={"GPU": 1}).result(WAIT) in addresses
        nowhere = pool.schedule(worker_address, resources={"TPU": 1}, timeout=0.3)
        with pytest.raises(wp.TaskTimeout, match=r"^task timed out after 0.3 s$"):
            nowhere.result(WAIT)
        with pytest.raises(ValueError, match=r"^resources must be > 0, got GPU=0$"):
            pool.schedule(worker_address, resources={"GPU": 0})
        with pytest.raises(TypeError, match=r"^workers must be a Dask worker's address"):
            pool.schedule(worker_address, workers=3)  # type: ignore[arg-type]
    with wp.DaskPool(client, resources={"GPU": 1}) as gpus:
        assert gpus.submit(worker_address).result(WAIT) in addresses


def test_retry_backs_off_holding_no_cluster_thread(client: Client) -> None:
    retry = wp.Retry(attempts=3, backoff=0.2, jitter="none")
    with wp.DaskPool(client, workers=2, retry=retry) as pool:
        started = time.monotonic()
        future = pool.submit(_tasks.fail_until_attempt, 3)
        assert _wait_for(lambda: pool.statistics().retried == 1)
        # Waiting for its retry, the task is queued here, nowhere on the cluster.
        stats = pool.statistics()
        assert (stats.running, stats.queued) == (0, 1)
        assert future.result(WAIT) == 3
        assert time.monotonic() - started >= 0.2 + 0.4
    stats = pool.statistics()
    assert (stats.retried, stats.completed, stats.failed) == (2, 1, 0)


def test_timeout_cancels_the_task_on_its_worker(client: Client, tmp_path: Path) -> None:
    marker = tmp_path / "saw-cancel"
    with wp.DaskPool(client, workers=2) as pool:
        future = pool.schedule(wait_cancelled, (str(marker),), timeout=0.2)
        with pytest.raises(wp.TaskTimeout, match=r"^task timed out after 0.2 s$"):
            future.result(WAIT)
        assert _wait_for(marker.exists)
        assert marker.read_text() == "True"
        assert pool.submit(_tasks.square, 5).result(WAIT) == 25
    assert pool.statistics().timed_out == 1


def test_address_connects_a_client_the_pool_closes(cluster: LocalCluster) -> None:
    with wp.DaskPool(address=cluster.scheduler_address, workers=2) as pool:
        assert pool.submit(_tasks.square, 6).result(WAIT) == 36
        own = pool.client
        assert own.status == "running"
    assert own.status == "closed"


def test_shutdown_without_wait_closes_its_client_once_the_work_ends(
        cluster: LocalCluster, tmp_path: Path) -> None:
    gate = FileGate(tmp_path / "gate")
    pool = wp.DaskPool(address=cluster.scheduler_address, workers=2)
    running = pool.submit(_tasks.wait_gate, gate)
    assert _wait_for(lambda: pool.statistics().running == 1)
    pool.shutdown(wait=False)
    assert pool.client.status == "running"  # the task still needs it
    gate.open()
    assert running.result(WAIT) is True
    assert _wait_for(lambda: pool.client.status == "closed")


def fail_to_start() -> None:
    raise OSError("no model file")


def test_a_failing_initializer_fails_the_task_and_runs_again(client: Client) -> None:
    from workpool._backends import dask as backend

    with wp.DaskPool(client, workers=1, initializer=fail_to_start) as pool:
        future = pool.submit(_tasks.square, 2)
        with pytest.raises(cf.BrokenExecutor,
                           match=r"^the initializer failed on Dask worker .*: OSError"):
            future.result(WAIT)
        assert isinstance(future.exception().__cause__, OSError)  # type: ignore[union-attr]
        with pytest.raises(cf.BrokenExecutor):
            pool.submit(_tasks.square, 3).result(WAIT)
    with wp.DaskPool(client, workers=2, initializer=_tasks.make_state, initargs=("x",)) as pool:
        assert pool.submit(_tasks.describe).result(WAIT)[2] == "state-x"
        token = pool._dask.token
        assert any(where[0] == token for where in backend._STATES)
    # Shutdown forgot the values on the workers (this cluster's run in this process).
    assert not any(where[0] == token for where in backend._STATES)


def test_bad_clients_are_refused_with_the_rule(cluster: LocalCluster, client: Client) -> None:
    with pytest.raises(TypeError, match=r"^client must be a distributed.Client or None, got 'x'$"):
        wp.DaskPool("x")  # type: ignore[arg-type]
    closed = Client(cluster.scheduler_address, set_as_default=False)
    closed.close()
    with pytest.raises(ValueError, match=r"^client must be open, got a closed one$"):
        wp.DaskPool(closed)
    with pytest.raises(TypeError, match=r"^pass client or address, not both$"):
        wp.DaskPool(client, address="tcp://127.0.0.1:1")
    with pytest.raises(TypeError, match=r"^resources must be a mapping"):
        wp.DaskPool(client, resources=["GPU"])  # type: ignore[arg-type]
    # A bad option closes the client the pool started, never one passed in.
    scheduler = cluster.scheduler
    assert scheduler is not None
    clients = set(scheduler.clients)
    with pytest.raises(ValueError, match=r"^timeout must be > 0, got -1$"):
        wp.DaskPool(address=cluster.scheduler_address, timeout=-1)
    assert _wait_for(lambda: set(scheduler.clients) == clients)
    with pytest.raises(ValueError, match=r"^timeout must be > 0, got -1$"):
        wp.DaskPool(client, timeout=-1)
    assert client.status == "running"


def test_a_killed_worker_is_worker_crashed() -> None:
    with (dask.config.set({"distributed.scheduler.allowed-failures": 0}),
          LocalCluster(n_workers=1, threads_per_worker=1, processes=True,
                       dashboard_address=":0") as cluster,
          Client(cluster, set_as_default=False) as client,
          wp.DaskPool(client, workers=2) as pool):
        future = pool.submit(_tasks.exit_with, 3)
        with pytest.raises(wp.WorkerCrashed, match=r"^the Dask workers running the task died"):
            future.result(30)
        assert type(future.exception().__cause__).__name__ == "KilledWorker"  # type: ignore[union-attr]
        # The nanny starts a fresh worker; the pool goes on.
        assert pool.submit(_tasks.square, 7).result(30) == 49
    assert pool.statistics().failed == 1


def test_ctrl_c_leaves_no_scheduler_or_worker_process(tmp_path: Path) -> None:
    result = interrupt_when_ready(tmp_path, """
        import json, os, time
        import psutil
        import workpool as wp

        def slow(x):
            time.sleep(0.2)
            return x

        if __name__ == "__main__":
            with wp.DaskPool(workers=2) as pool:
                it = pool.map(slow, range(1000), chunksize=1)
                next(it)
                pids = [p.pid for p in psutil.Process().children(recursive=True)]
                print(json.dumps(pids), flush=True)
                for _ in it:
                    pass
    """)
    pids = json.loads(result.ready)
    assert pids, result.err
    assert result.returncode != 0
    assert "KeyboardInterrupt" in result.err
    assert _wait_for(lambda: not any(psutil.pid_exists(p) and psutil.Process(p).status()
                                     != psutil.STATUS_ZOMBIE for p in pids), 30)


@pytest.mark.timeout(90)  # the harness's bounds: 30 s to start, 30 to stop, 5 to leave
def test_a_terminal_ctrl_c_stops_a_pool_whose_own_cluster_it_interrupted(
        tmp_path: Path) -> None:
    # A terminal's Ctrl-C reaches the cluster's worker processes too: the tasks they
    # ran never end, so the pool gives them a grace, not a wait without end.
    result = interrupt_when_ready(tmp_path, """
        import json, time
        import psutil
        import workpool as wp

        def slow(x):
            time.sleep(60)
            return x

        if __name__ == "__main__":
            with wp.DaskPool() as pool:
                futures = [pool.submit(slow, i) for i in range(2)]
                while pool.statistics().running < 2:
                    time.sleep(0.01)
                pids = [p.pid for p in psutil.Process().children(recursive=True)]
                print(json.dumps(pids), flush=True)
                # Short sleeps, not one long one: a SIGINT that lands while this thread
                # waits for the GIL on its way into a sleep (CPython looked for signals
                # just before that wait) is handled only when that sleep ends.
                while True:
                    time.sleep(0.05)
    """, group=True)
    pids = json.loads(result.ready)
    assert pids, result.err  # the cluster's processes: the scheduler's, the workers'
    assert result.err.splitlines()[-1] == "KeyboardInterrupt", result.err
    assert result.returncode == -signal.SIGINT
    assert result.seconds < 20  # grace (1 s) and Dask's own nanny timeout (4 s)
    assert result.left == []  # nothing of the script's process group is left


def test_a_dask_stage_in_a_mixed_pipeline_resumes(client: Client, tmp_path: Path) -> None:
    db = tmp_path / "run.sqlite"
    seen: list[int] = []
    with client.as_current():
        first = (wp.Pipeline(range(30), journal=db, key=int)
                 .map(_tasks.square, kind="dask", workers=2)
                 .map(_tasks.add, kind="thread")
                 .each(seen.append).run())
        assert (first.items_read, first.resumed) == (30, 0)
        assert sorted(seen) == [x * x for x in range(30)]
        assert [s.kind for s in first.stages][:2] == ["dask", "thread"]
        again = (wp.Pipeline(range(40), journal=db, key=int)
                 .map(_tasks.square, kind="dask", workers=2)
                 .map(_tasks.add, kind="thread")
                 .each(seen.append).run())
    assert (again.items_read, again.resumed) == (40, 30)
    assert sorted(seen) == sorted([x * x for x in range(30)] + [x * x for x in range(30, 40)])


def test_futures_of_a_pool_are_the_stdlibs(client: Client) -> None:
    with wp.DaskPool(client) as pool:
        assert pool.workers == 2 * 4  # twice the cluster's threads
        future = pool.submit(_tasks.square, 3)
        assert isinstance(future, cf.Future)
        assert future.result(WAIT) == 9


def test_dask_stages_without_a_client_share_a_cluster_of_the_run() -> None:
    from workpool._pools.dask import default_client

    assert default_client() is None
    pipe = (wp.Pipeline(range(20)).map(with_scheduler, kind="dask", workers=2)
            .map(with_scheduler, kind="dask"))
    with iter(pipe) as items:
        got = list(items)
    assert sorted(x for (x, _), _ in got) == list(range(20))
    assert len({first for (_, first), _ in got} | {second for _, second in got}) == 1
    # Both stages ran on one LocalCluster, closed with the run: its worker processes
    # are gone (no_leaks).
