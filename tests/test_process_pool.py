"""ProcessPool: the shared pool behaviour, plus crashes, kills, recycling, orphans."""

from __future__ import annotations

import concurrent.futures as cf
import contextlib
import dataclasses
import itertools
import multiprocessing
import os
import pickle
import random
import re
import signal
import subprocess
import sys
import textwrap
import threading
import time
import warnings
import weakref
from concurrent.futures.process import BrokenProcessPool
from pathlib import Path
from typing import Any

import pytest

import workpool as wp
from tests import _process_tasks, _tasks
from tests.pool_suite import WAIT, ExecutorPoolBehaviour


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


class TestProcessPoolBehaviour(ExecutorPoolBehaviour):
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


def test_unpicklable_arguments_fail_the_future_naming_them() -> None:
    # As the stdlib's pool: arguments that cannot be pickled fail the future with the
    # stdlib's own error (a TypeError for a lock), here naming the culprit; a function
    # no worker can be sent fails at the call; a map item fails the map where it is.
    lock_error = "cannot pickle '_thread.lock' object"
    with wp.ProcessPool(1) as pool:
        future = pool.submit(_tasks.square, threading.Lock())  # type: ignore[arg-type]
        with pytest.raises(TypeError, match=(r"^cannot send argument 0 of square to a worker "
                                             f"process: {lock_error}$")) as info:
            future.result(WAIT)
        assert type(info.value) is TypeError
        assert str(info.value.__cause__) == lock_error
        future = pool.submit(_tasks.add, 1, b=threading.Lock())  # type: ignore[arg-type]
        with pytest.raises(TypeError, match=r"^cannot send keyword argument 'b' of add "):
            future.result(WAIT)
        future = pool.schedule(_tasks.square, (threading.Lock(),), priority=1)
        with pytest.raises(TypeError, match=r"^cannot send argument 0 of square "):
            future.result(WAIT)
        lock = threading.Lock()
        with pytest.raises(TypeError, match=r"^cannot send the function of .*<lambda> to a "):
            pool.map(lambda x: lock, [1])
        with pytest.raises(TypeError, match=r"^cannot send the function of .*<lambda> to a "):
            pool.submit(lambda: lock)
        it = pool.map(_tasks.square, [1, threading.Lock()], chunksize=1, window=1)
        assert next(it) == 1
        with pytest.raises(TypeError, match=(r"^cannot send an item of the map of square to a "
                                             f"worker process: {lock_error}$")):
            next(it)
        future = pool.submit(id, _process_tasks.ErrorAtPickle())
        with pytest.raises(pickle.PicklingError,
                           match=r"^cannot send argument 0 of id to a worker process: "
                                 r"Error in pickle$"):
            future.result(WAIT)
        assert pool.submit(_tasks.square, 3).result(WAIT) == 9  # the pool is fine
        stats = pool.statistics()
    assert (stats.submitted, stats.failed, stats.completed) == (6, 4, 2)


def test_an_open_file_cannot_be_sent(tmp_path: Path) -> None:
    # cloudpickle would send a copy of the file's contents; the stdlib refuses.
    path = tmp_path / "data.txt"
    path.write_text("contents")
    with wp.ProcessPool(1) as pool, path.open() as f:
        with pytest.raises(TypeError) as stdlib:  # the stdlib's words, on this Python
            pickle.dumps(f)
        assert str(stdlib.value).startswith("cannot pickle '")
        refused = re.escape(str(stdlib.value))
        future = pool.submit(_process_tasks.read_all, f)
        with pytest.raises(TypeError, match=(r"^cannot send argument 0 of read_all to a "
                                             f"worker process: {refused}$")):
            future.result(WAIT)
        with pytest.raises(TypeError, match=f"^cannot send the function of .*: {refused}$"):
            pool.submit(lambda: f.read())
        with pytest.raises(TypeError, match=f"^cannot send an item of the map of read_all .*"
                                            f": {refused}$"):
            pool.map(_process_tasks.read_all, [f])
        assert pool.submit(_tasks.square, 3).result(WAIT) == 9


def test_local_functions_and_classes_travel_by_value() -> None:
    @dataclasses.dataclass(frozen=True)
    class Local:
        x: int

    class LocalError(Exception):
        pass

    def fail() -> None:
        raise LocalError("local")

    with wp.ProcessPool(1) as pool:
        got = pool.submit(lambda: Local(3)).result(WAIT)
        error = pool.submit(fail).exception(WAIT)
        items = list(pool.map(Local, range(3)))
    assert type(got) is Local  # the same class came back
    assert got == Local(3)
    assert type(error) is LocalError
    assert str(error) == "local"
    assert items == [Local(0), Local(1), Local(2)]


# -- __main__ of a script travels by reference, as with the stdlib --------------------------

BY_REFERENCE = textwrap.dedent("""
    import dataclasses, multiprocessing as mp, os, sys, threading, typing
    import workpool as wp

    @dataclasses.dataclass(frozen=True)
    class Result:
        value: int

    class Pair(typing.NamedTuple):
        left: int
        right: int

    class AppError(Exception):
        pass

    LOCK = threading.Lock()
    CACHE = {}

    def make(x):
        return Result(x)

    def pair(x):
        return Pair(x, -x)

    def fail(x):
        raise AppError(f"bad {x}")

    def locked(x):
        with LOCK:
            return x + 1

    def cached(x):
        hit = x in CACHE
        CACHE[x] = True
        return hit

    def is_result(r):
        return type(r) is Result

    def show(label, call):
        try:
            print(label, call())
        except BaseException as exc:
            print(label, "raised", type(exc).__name__, exc)

    if __name__ == "__main__":
        method = sys.argv[1]
        ctx = None if method == "default" else mp.get_context(method)
        with wp.ProcessPool(1, mp_context=ctx) as pool:
            show("dataclass", lambda: type(pool.submit(make, 3).result()) is Result)
            show("namedtuple", lambda: pool.submit(pair, 2).result() == Pair(2, -2)
                 and type(pool.submit(pair, 2).result()) is Pair)
            try:
                pool.submit(fail, 1).result()
            except AppError as exc:
                print("exception", type(exc) is AppError, exc)
            except BaseException as exc:
                print("exception", "raised", type(exc).__name__, exc)
            show("lock", lambda: pool.submit(locked, 1).result())
            show("cache", lambda: [pool.submit(cached, 5).result() for _ in range(3)])
            show("argument", lambda: pool.submit(is_result, Result(1)).result())
            show("map", lambda: list(pool.map(make, range(3))) == [Result(i) for i in range(3)])
""")


def _run_script(path: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, str(path), *args], capture_output=True, text=True,
                          timeout=WAIT * 3, cwd=path.parent)


@pytest.mark.parametrize("method", ["default", "spawn", "fork", "forkserver"])
def test_main_classes_and_globals_travel_by_reference(tmp_path: Path, method: str) -> None:
    script = tmp_path / "by_reference.py"
    script.write_text(BY_REFERENCE)
    out = _run_script(script, method)
    assert out.stdout.splitlines() == [
        "dataclass True", "namedtuple True", "exception True bad 1", "lock 2",
        "cache [False, True, True]", "argument True", "map True"], out.stderr
    assert out.returncode == 0, out.stderr


BY_VALUE = textwrap.dedent("""
    import dataclasses, multiprocessing as mp
    import workpool as wp

    @dataclasses.dataclass(frozen=True)
    class Result:
        value: int

    def make(x):
        return Result(x)

    with wp.ProcessPool(1, mp_context=mp.get_context("spawn")) as pool:
        got = pool.submit(make, 3).result()
        print(type(got) is Result, got == Result(3), pool.submit(lambda: 7).result())
""")


def test_main_without_a_file_travels_by_value() -> None:
    # A spawned worker cannot import the __main__ of `python -c`: what it defines
    # travels by value, and a class comes back as itself.
    out = subprocess.run([sys.executable, "-c", BY_VALUE], capture_output=True, text=True,
                         timeout=WAIT * 3)
    assert out.stdout == "True True 7\n", out.stderr


# -- workers start at the first task --------------------------------------------------------

MODULE_LEVEL_POOL = textwrap.dedent("""
    import multiprocessing as mp, os, sys
    import workpool as wp

    METHOD = sys.argv[1]
    POOL = wp.ProcessPool(2, mp_context=None if METHOD == "default" else mp.get_context(METHOD))
    IDLE = wp.ProcessPool(2)  # never used: it starts no worker, here or in a worker

    def work(x):  # defined after the pools
        return x * x, len(mp.active_children())

    if __name__ == "__main__":
        print("children before the first task:", len(mp.active_children()))
        with POOL:
            outs = list(POOL.map(work, range(20)))
            print("results:", [value for value, _ in outs] == [x * x for x in range(20)])
            print("children of the workers:", max(children for _, children in outs))
            print("a submit:", POOL.submit(work, 3).result()[0])
""")


@pytest.mark.parametrize("method", ["default", "spawn", "forkserver", "fork"])
def test_a_module_level_pool_starts_workers_at_the_first_task(tmp_path: Path,
                                                               method: str) -> None:
    script = tmp_path / "module_level.py"
    script.write_text(MODULE_LEVEL_POOL)
    out = _run_script(script, method)
    assert out.stdout.splitlines() == [
        "children before the first task: 0", "results: True", "children of the workers: 0",
        "a submit: 9"], out.stderr
    assert out.returncode == 0, out.stderr


# -- what cannot be pickled or unpickled fails its task alone (CPython's test_deadlock) -----

T = _process_tasks
SEGV = "the worker process running the task died (signal SIGSEGV)"


@pytest.mark.parametrize(("fn", "arg", "kind", "message", "cause"), [
    pytest.param(id, T.ExitAtUnpickle(), wp.WorkerCrashed,
                 "the worker process could not unpickle the task's arguments: SystemExit: 1",
                 SystemExit, id="exit_at_task_unpickle"),
    pytest.param(id, T.ErrorAtUnpickle(), wp.WorkerCrashed,
                 "the worker process could not unpickle the task's arguments: "
                 "UnpicklingError: cannot be unpickled", pickle.UnpicklingError,
                 id="error_at_task_unpickle"),
    pytest.param(id, T.CrashAtUnpickle(), wp.WorkerCrashed, SEGV, None,
                 id="crash_at_task_unpickle"),
    pytest.param(T.crash, None, wp.WorkerCrashed, SEGV, None,
                 id="crash_during_func_exec_on_worker"),
    pytest.param(T.exit_one, None, SystemExit, "1", None,
                 id="exit_during_func_exec_on_worker"),
    pytest.param(T.raise_runtime_error, None, RuntimeError, "in the task", None,
                 id="error_during_func_exec_on_worker"),
    pytest.param(T.return_instance, T.CrashAtPickle, wp.WorkerCrashed, SEGV, None,
                 id="crash_during_result_pickle_on_worker"),
    pytest.param(T.return_instance, T.ExitAtPickle, SystemExit, "1", None,
                 id="exit_during_result_pickle_on_worker"),
    pytest.param(T.return_instance, T.ErrorAtPickle, pickle.PicklingError, "Error in pickle",
                 None, id="error_during_result_pickle_on_worker"),
    pytest.param(T.unpicklable, None, TypeError, "cannot pickle '_thread.lock' object", None,
                 id="unpicklable_result"),
    pytest.param(T.return_instance, T.ErrorAtUnpickle, wp.WorkerCrashed,
                 "the task's result could not be unpickled: UnpicklingError: cannot be "
                 "unpickled", pickle.UnpicklingError,
                 id="error_during_result_unpickle_in_result_handler"),
    pytest.param(T.return_instance, T.ExitAtUnpickle, wp.WorkerCrashed,
                 "the task's result could not be unpickled: SystemExit: 1", SystemExit,
                 id="exit_during_result_unpickle_in_result_handler"),
])
def test_pickling_failures_fail_only_their_task(
        fn: Any, arg: Any, kind: type[BaseException], message: str,
        cause: type[BaseException] | None) -> None:
    with wp.ProcessPool(2) as pool:
        future = pool.submit(fn) if arg is None else pool.submit(fn, arg)
        error = future.exception(WAIT)
        assert type(error) is kind
        assert str(error) == message
        if cause is not None:
            assert type(error.__cause__) is cause
        if kind is SystemExit:
            assert isinstance(error, SystemExit)
            assert error.code == 1
        assert [pool.submit(_tasks.square, i).result(WAIT) for i in range(4)] == [0, 1, 4, 9]
    stats = pool.statistics()
    assert (stats.completed, stats.failed) == (4, 1)


def test_a_result_that_cannot_be_pickled_names_its_origin() -> None:
    with wp.ProcessPool(1) as pool:
        error = pool.submit(T.return_instance, T.ErrorAtPickle).exception(WAIT)
    assert isinstance(error, pickle.PicklingError)
    assert error.__notes__ == ["(raised while pickling the task's result to send it back)"]
    assert "in __reduce__" in str(error.__cause__)  # the child's traceback


def test_a_crash_during_shutdown_fails_its_task() -> None:
    with wp.ProcessPool(2) as pool:
        future = pool.submit(T.crash_after, 0.1)
        pool.shutdown(wait=True)
        with pytest.raises(wp.WorkerCrashed, match=f"^{re.escape(SEGV)}$"):
            future.result()


def test_a_crash_while_big_arguments_are_sent() -> None:
    data = "a" * ((1 << 22) + 1)  # more than a pipe holds
    with wp.ProcessPool(2) as pool:
        with pytest.raises(wp.WorkerCrashed, match=f"^{re.escape(SEGV)}$"):
            list(pool.map(T.crash_with_data, [data] * 10))
        assert pool.submit(_tasks.square, 3).result(WAIT) == 9


# -- a map chunk: one bad item fails alone ----------------------------------------------------

def _bad_item_map(pool: wp.ProcessPool, kind: type[Any]) -> list[Any]:
    return list(pool.map(T.bad_result_at, range(64), [17] * 64, [kind] * 64, chunksize=64,
                         on_error="return"))


def _only_item_17_failed(got: list[Any]) -> BaseException:
    assert [o.unwrap() for i, o in enumerate(got) if i != 17] == [
        x * x for x in range(64) if x != 17]
    assert isinstance(got[17], wp.Error)
    return got[17].error


def test_a_result_that_cannot_be_pickled_fails_only_its_item() -> None:
    with wp.ProcessPool(1) as pool:
        error = _only_item_17_failed(_bad_item_map(pool, threading.Lock))
        assert type(error) is TypeError
        assert str(error) == "cannot pickle '_thread.lock' object"
        error = _only_item_17_failed(_bad_item_map(pool, T.ExitAtPickle))
        assert type(error) is SystemExit
    stats = pool.statistics()
    assert (stats.completed, stats.failed) == (126, 2)


def test_a_result_that_cannot_be_unpickled_fails_only_its_item() -> None:
    with wp.ProcessPool(1) as pool:
        error = _only_item_17_failed(_bad_item_map(pool, T.ErrorAtUnpickle))
        assert type(error) is wp.WorkerCrashed
        assert str(error) == ("the task's result could not be unpickled: UnpicklingError: "
                              "cannot be unpickled")
        assert type(error.__cause__) is pickle.UnpicklingError
        error = _only_item_17_failed(_bad_item_map(pool, T.ExitAtUnpickle))
        assert type(error) is wp.WorkerCrashed
        assert type(error.__cause__) is SystemExit
        pid = pool.submit(_tasks.getpid).result(WAIT)
        assert pool.submit(_tasks.getpid).result(WAIT) == pid  # no worker was lost


@pytest.mark.parametrize("bad", [T.ErrorAtUnpickle, T.ExitAtUnpickle])
def test_arguments_that_cannot_be_unpickled_fail_only_their_item(bad: type[Any]) -> None:
    items: list[Any] = list(range(64))
    items[17] = bad()
    with wp.ProcessPool(1) as pool:
        got = list(pool.map(T.identity, items, chunksize=64, on_error="return"))
    assert [o.unwrap() for i, o in enumerate(got) if i != 17] == [
        x for x in range(64) if x != 17]
    error = got[17].error  # type: ignore[union-attr]
    assert type(error) is wp.WorkerCrashed
    assert str(error).startswith("the worker process could not unpickle the task's arguments: ")
    assert type(error.__cause__) is (pickle.UnpicklingError if bad is T.ErrorAtUnpickle
                                     else SystemExit)


def test_child_traceback_is_the_cause() -> None:
    with wp.ProcessPool(1) as pool:
        error = pool.submit(_tasks.fail, "deep").exception(WAIT)
    assert isinstance(error, ValueError)
    assert 'in fail\n    raise ValueError(message)' in str(error.__cause__)
    # The stdlib's own cause type, as CPython's test_traceback asserts.
    assert type(error.__cause__) is cf.process._RemoteTraceback


@pytest.mark.parametrize(("task", "args", "how"), [
    (_tasks.exit_with, (3,), "exit code 3"),
    (_tasks.kill_self, (signal.SIGKILL,), "signal SIGKILL"),
    (_tasks.kill_self, (signal.SIGTERM,), "signal SIGTERM"),
    (_tasks.segfault, (), "signal SIGSEGV"),
])
def test_a_crash_fails_only_its_task(task: Any, args: tuple[Any, ...], how: str,
                                     monkeypatch: pytest.MonkeyPatch) -> None:
    # A cgroup that counts OOM kills and counted none: a SIGKILL is then no OOM kill.
    monkeypatch.setattr("workpool._backends.process.oom_kill_count", lambda root: 0)
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


def test_a_sigkill_when_the_oom_kill_count_rose_is_the_oom_killer(
        monkeypatch: pytest.MonkeyPatch) -> None:
    # The count as the pool reads it: 0 when it is made, then 1 at each death.
    counts = itertools.count()
    monkeypatch.setattr("workpool._backends.process.oom_kill_count",
                        lambda root: next(counts))
    retry = wp.Retry(attempts=5, backoff=0.001, on=(wp.WorkerCrashed,))
    with wp.ProcessPool(1, retry=retry, max_crashes=2) as pool:
        killed = pool.submit(_tasks.kill_self, signal.SIGKILL)
        assert pool.submit(_tasks.square, 3).result(WAIT) == 9
        error = killed.exception(WAIT)
    assert isinstance(error, wp.WorkerCrashed)
    assert str(error) == (
        "the worker process running the task was killed by the OOM killer (signal "
        "SIGKILL; the oom_kill count of its cgroup rose from 1 to 2); the task crashed 2 "
        "workers and is quarantined (max_crashes=2)")


def test_a_sigkill_without_an_oom_kill_count_may_be_the_oom_killer(
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("workpool._backends.process.oom_kill_count", lambda root: None)
    with wp.ProcessPool(1) as pool:
        error = pool.submit(_tasks.kill_self, signal.SIGKILL).exception(WAIT)
        exited = pool.submit(_tasks.exit_with, 3).exception(WAIT)
    assert str(error) == ("the worker process running the task was killed by SIGKILL "
                          "(possibly the OOM killer)")
    assert str(exited) == "the worker process running the task died (exit code 3)"


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


@pytest.mark.parametrize("chunksize", [5, 64, "auto"])
def test_max_tasks_per_worker_counts_map_items(chunksize: Any) -> None:
    with wp.ProcessPool(1, max_tasks_per_worker=3) as pool:
        pids = list(pool.map(_tasks.getpid, range(10), chunksize=chunksize))
    runs = [len(list(group)) for _, group in itertools.groupby(pids)]
    assert runs == [3, 3, 3, 1]
    assert len(set(pids)) == 4  # each worker ran 3 items, then a fresh one went on
    assert pool.statistics().completed == 10


def test_recycling_over_max_memory() -> None:
    with wp.ProcessPool(1, max_memory_per_worker=150 << 20) as pool:
        first = pool.submit(_tasks.hold_memory, 200).result(WAIT)
        second = pool.submit(_tasks.getpid).result(WAIT)
    assert first != second


def test_initializer_state_lives_in_the_worker() -> None:
    with wp.ProcessPool(1, initializer=_tasks.make_state, initargs=("m",)) as pool:
        assert [pool.submit(_tasks.describe).result(WAIT)[2] for _ in range(3)] == [
            "state-m"] * 3


def _kill_starting_children(folder: Path, kills: int) -> None:
    """SIGKILL the first *kills* children as they start (each leaves a file named by
    its pid in *folder*, then blocks in the initializer)."""
    killed: set[str] = set()
    deadline = time.monotonic() + WAIT
    while len(killed) < kills:
        assert time.monotonic() < deadline, f"only {len(killed)} children started"
        for pid in set(os.listdir(folder)) - killed:
            os.kill(int(pid), signal.SIGKILL)
            killed.add(pid)
        time.sleep(0.005)


def test_a_first_child_killed_as_it_starts_is_replaced(tmp_path: Path) -> None:
    with wp.ProcessPool(1, initializer=_process_tasks.block_in_start,
                        initargs=(str(tmp_path), 3)) as pool:
        future = pool.submit(_tasks.square, 7)
        _kill_starting_children(tmp_path, 3)  # as many as a worker's start survives
        assert future.result(WAIT) == 49
        assert pool.submit(_tasks.square, 8).result(WAIT) == 64
    assert len(os.listdir(tmp_path)) == 4  # three killed, one that runs


def test_a_first_child_killed_four_times_as_it_starts_breaks_the_pool(
        tmp_path: Path) -> None:
    message = "A child process terminated abruptly, the process pool is not usable anymore"
    pool = wp.ProcessPool(1, initializer=_process_tasks.block_in_start,
                          initargs=(str(tmp_path), 4))
    try:
        future = pool.submit(_tasks.square, 7)
        _kill_starting_children(tmp_path, 4)
        with pytest.raises(BrokenProcessPool, match=f"^{message}$"):
            future.result(WAIT)
    finally:
        pool.shutdown()
    assert len(os.listdir(tmp_path)) == 4


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
    # The stdlib's name, the stdlib's checks and messages.
    with pytest.raises(ValueError, match=r"^max_tasks_per_child must be >= 1$"):
        wp.ProcessPool(1, max_tasks_per_child=0)
    with pytest.raises(TypeError, match=r"^max_tasks_per_child must be an integer$"):
        wp.ProcessPool(1, max_tasks_per_child=1.5)  # type: ignore[arg-type]
    fork = multiprocessing.get_context("fork")
    with pytest.raises(ValueError, match=r"^max_tasks_per_child is incompatible with the "
                                         r"'fork' multiprocessing start method; supply a "
                                         r"different mp_context\.$"):
        wp.ProcessPool(1, mp_context=fork, max_tasks_per_child=3)


def test_shutdown_leaves_no_child() -> None:
    pool = wp.ProcessPool(2)
    assert pool.submit(_tasks.square, 3).result(WAIT) == 9
    pids = worker_pids(pool)
    pool.shutdown()
    for pid in pids:
        assert not Path(f"/proc/{pid}").exists() or _zombie(pid)


def test_cancel_futures_lets_the_running_task_finish(tmp_path: Path) -> None:
    gate = FileGate(tmp_path / "gate")
    pool = wp.ProcessPool(1)
    running = pool.submit(_tasks.wait_gate, gate)
    deadline = time.monotonic() + WAIT
    while pool.statistics().running == 0:
        assert time.monotonic() < deadline, "the task never started"
        time.sleep(0.001)
    pid = worker_pids(pool)
    queued = [pool.submit(_tasks.square, i) for i in range(3)]

    def open_once_cancelled() -> None:  # shutdown() below waits for the running task
        end = time.monotonic() + WAIT
        while not all(f.cancelled() for f in queued) and time.monotonic() < end:
            time.sleep(0.001)
        gate.open()

    opener = threading.Thread(target=open_once_cancelled)
    opener.start()
    pool.shutdown(cancel_futures=True)
    opener.join()
    assert running.result(0) is True  # it ran to its end, in the same worker
    assert all(f.cancelled() for f in queued)
    assert set(pool.unfinished) == set(queued)
    stats = pool.statistics()
    assert (stats.completed, stats.cancelled) == (1, 3)
    assert pid
    assert not worker_pids(pool)


def test_shutdown_timeout_kills_running_processes() -> None:
    pool = wp.ProcessPool(1)
    running = pool.submit(_tasks.spin, 30)
    deadline = time.monotonic() + WAIT
    while pool.statistics().running == 0:
        assert time.monotonic() < deadline, "the task never started"
        time.sleep(0.001)
    queued = pool.submit(_tasks.square, 2)
    started = time.monotonic()
    pool.shutdown(timeout=0.1)
    assert time.monotonic() - started < 5  # killed, not waited for
    with pytest.raises(wp.Cancelled, match=r"^cancelled by shutdown: its worker process was "
                                           r"killed$"):
        running.result(0)
    assert queued.cancelled()
    assert set(pool.unfinished) == {running, queued}


# -- nothing of a finished task stays in the pool ---------------------------------------------

def test_no_stale_references() -> None:
    with wp.ProcessPool(1) as pool:
        held = T.Held()
        collected = threading.Event()
        watch = weakref.ref(held, lambda _: collected.set())
        pool.submit(held.method, held)  # the future is dropped at once
        del held
        assert collected.wait(WAIT), "the pool kept the function or arguments of a task"
        future = pool.submit(T.make_held)
        result_collected = threading.Event()
        result = weakref.ref(future.result(WAIT), lambda _: result_collected.set())
        del future
        assert result_collected.wait(WAIT), "the pool kept the result of a task"
        gone = [threading.Event() for _ in range(3)]
        values = [weakref.ref(v, lambda _, e=e: e.set())  # type: ignore[misc]
                  for v, e in zip(pool.map(T.make_held, range(3), chunksize=3), gone,
                                  strict=True)]
        assert all(e.wait(WAIT) for e in gone), "the pool kept the results of a map"
    assert watch() is None
    assert result() is None
    assert all(v() is None for v in values)


# -- forked children of the caller leave the workers alone ------------------------------------

FORKED_CHILD = textwrap.dedent("""
    import multiprocessing as mp, os, sys
    import workpool as wp

    def pid(_=None):
        return os.getpid()

    if __name__ == "__main__":
        with wp.ProcessPool(2) as pool:
            ran = set(pool.map(pid, range(20), chunksize=1))
            workers = {p.pid for p in mp.active_children()}
            child = os.fork()
            if child == 0:
                sys.exit(0)  # a normal exit: atexit hooks and finalizers run
            _, status = os.waitpid(child, 0)
            print("child exit status:", status)
            print("workers alive:", workers == {p.pid for p in mp.active_children()})
            after = {f.result(10) for f in [pool.submit(pid) for _ in range(20)]}
            print("same workers:", after <= workers and ran <= workers)
        print("done")
""")


def test_a_forked_child_leaves_the_workers_alone(tmp_path: Path) -> None:
    script = tmp_path / "forked_child.py"
    script.write_text(FORKED_CHILD)
    out = _run_script(script)
    assert out.stdout.splitlines() == [
        "child exit status: 0", "workers alive: True", "same workers: True", "done"], out.stderr
    assert "Traceback" not in out.stderr, out.stderr
    assert "Exception ignored" not in out.stderr, out.stderr


def test_a_stdlib_fork_pool_beside_a_live_pool() -> None:
    with wp.ProcessPool(2) as pool:
        assert pool.submit(_tasks.square, 3).result(WAIT) == 9
        pids = worker_pids(pool)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", DeprecationWarning)  # fork of a threaded process
            fork = multiprocessing.get_context("fork")
            with cf.ProcessPoolExecutor(2, mp_context=fork) as stdlib:
                assert list(stdlib.map(_tasks.square, range(10))) == [x * x for x in range(10)]
        assert pool.submit(_tasks.square, 4).result(WAIT) == 16
        assert worker_pids(pool) == pids


def _zombie(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().split(")")[1].split()[0] == "Z"
    except OSError:
        return True


ORPHAN = textwrap.dedent("""
    import sys, time
    import workpool as wp
    from tests import _process_tasks, _tasks
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
    from tests import _process_tasks, _tasks
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


def test_a_task_may_start_processes_of_its_own() -> None:
    # As with the stdlib's workers (not daemons since Python 3.9).
    with wp.ProcessPool(1) as pool:
        assert pool.submit(_process_tasks.sum_doubles_in_a_pool_of_its_own, 10).result(
            60) == 90


@pytest.mark.parametrize("method", ["spawn", "fork", "forkserver"])
def test_initargs_may_hold_multiprocessing_queues(method: str) -> None:
    # As with the stdlib: a Queue (or Lock) travels to workers as a process argument.
    ctx = multiprocessing.get_context(method)
    queue = ctx.Queue()
    try:
        with wp.ProcessPool(1, mp_context=ctx, initializer=_process_tasks.remember_queue,
                            initargs=(queue,)) as pool:
            assert pool.submit(_process_tasks.say_through_state, "hello").result(WAIT)
        assert [queue.get(timeout=WAIT), queue.get(timeout=WAIT)] == ["initialized", "hello"]
    finally:
        queue.close()
        queue.join_thread()


QUEUE_IN_INITARGS = """
import multiprocessing, sys
import workpool as wp
from tests import _process_tasks

if __name__ == "__main__":
    queue = multiprocessing.Queue()
    with wp.ProcessPool(2, initializer=_process_tasks.remember_queue,
                        initargs=(queue,)) as pool:
        print(pool.submit(_process_tasks.say_through_state, "hello").result(30))
    print(sorted(queue.get(timeout=30) for _ in range(3)))
"""


def test_a_default_pool_takes_a_queue_in_initargs(tmp_path: Path) -> None:
    # The day-one script: a multiprocessing.Queue of the default context.
    script = tmp_path / "queue_in_initargs.py"
    script.write_text(QUEUE_IN_INITARGS)
    root = str(Path(__file__).resolve().parent.parent)
    out = subprocess.run([sys.executable, str(script)], capture_output=True, text=True,
                         timeout=60, cwd=root, env={**os.environ, "PYTHONPATH": root})
    assert (out.returncode, out.stderr) == (0, "")
    assert out.stdout.splitlines() == ["True", "['hello', 'initialized', 'initialized']"]


# -- one reader for every child ------------------------------------------------------------

def test_a_child_killed_while_others_are_busy_fails_only_its_task(tmp_path: Path) -> None:
    gate = FileGate(tmp_path / "gate")
    with wp.ProcessPool(3) as pool:
        busy = [pool.submit(_tasks.wait_gate, gate) for _ in range(2)]
        deadline = time.monotonic() + WAIT
        while pool.statistics().running < 2:
            assert time.monotonic() < deadline, "the busy tasks never started"
            time.sleep(0.005)
        killed = pool.submit(_tasks.kill_self, signal.SIGKILL)
        assert isinstance(killed.exception(WAIT), wp.WorkerCrashed)
        assert "signal SIGKILL" in str(killed.exception())
        assert not any(f.done() for f in busy)  # the reader still waits on them
        gate.open()
        assert [f.result(WAIT) for f in busy] == [True, True]
        assert pool.submit(_tasks.square, 5).result(WAIT) == 25
    stats = pool.statistics()
    assert (stats.completed, stats.failed) == (3, 1)


def test_a_child_that_dies_while_idle_is_replaced_for_the_next_task() -> None:
    with wp.ProcessPool(1) as pool:
        first = pool.submit(_tasks.getpid).result(WAIT)
        os.kill(first, signal.SIGKILL)
        deadline = time.monotonic() + WAIT
        while first in worker_pids(pool):  # the reader sees the sentinel and reaps it
            assert time.monotonic() < deadline, "the dead idle child was never reaped"
            time.sleep(0.005)
        second = pool.submit(_tasks.getpid).result(WAIT)
        # Killed, and handed a task at once: the task either finds the child dead
        # (and fails as a crash) or a fresh one; it ends once either way.
        os.kill(second, signal.SIGKILL)
        racing = pool.submit(_tasks.getpid)
        error = racing.exception(WAIT)
        assert error is None or isinstance(error, wp.WorkerCrashed), error
        third = pool.submit(_tasks.getpid).result(WAIT)
    assert len({first, second, third}) == 3
    assert pool.statistics().failed == (error is not None)


@pytest.mark.timeout(120)
def test_sixteen_workers_with_random_kills_end_every_task_once() -> None:
    rng = random.Random(16)
    kills = {i for i in range(400) if rng.random() < 0.1}
    ends: list[int] = [0] * 400
    lock = threading.Lock()

    def ended(i: int) -> None:
        with lock:
            ends[i] += 1

    with wp.ProcessPool(16) as pool:
        futures: list[cf.Future[Any]] = []
        for i in range(400):
            future: cf.Future[Any]
            if i in kills:
                future = pool.submit(_tasks.kill_self, signal.SIGKILL)
            else:
                future = pool.submit(_tasks.spin_square, i)
            future.add_done_callback(lambda _, i=i: ended(i))  # type: ignore[misc]
            futures.append(future)
        # Whole chunks too: a child killed in one reruns the rest one by one.
        mapped = list(pool.map(_tasks.crash_on, range(200), [7] * 200, chunksize=25,
                               on_error="return"))
        outcomes: list[Any] = [f.exception(60) or f.result() for f in futures]
    assert ends == [1] * 400
    for i, outcome in enumerate(outcomes):
        if i in kills:
            assert isinstance(outcome, wp.WorkerCrashed)
        else:
            assert outcome == i * i
    assert [type(m) for m in mapped] == [wp.Error if i == 7 else wp.Value
                                         for i in range(200)]
    assert [m.value for m in mapped if isinstance(m, wp.Value)] == [
        i * i for i in range(200) if i != 7]
    stats = pool.statistics()
    assert stats.failed == len(kills) + 1
    assert stats.completed == 400 - len(kills) + 199


def test_a_callback_may_shut_the_pool_down(tmp_path: Path) -> None:
    # Callbacks run on the reader (as on the stdlib's manager thread): a shutdown
    # there does not wait for the reader's own workers.
    gate = FileGate(tmp_path / "gate")
    pool = wp.ProcessPool(2)
    stopped = threading.Event()
    threads: list[threading.Thread] = []

    def stop(_: cf.Future[Any]) -> None:
        threads.append(threading.current_thread())
        pool.shutdown(wait=True)
        stopped.set()

    future = pool.submit(_tasks.wait_gate, gate)
    future.add_done_callback(stop)
    gate.open()
    assert stopped.wait(WAIT)
    assert threads[0] is not threading.current_thread()
    pool.shutdown()
    assert future.result() is True
    assert worker_pids(pool) == []


PRELOADED_FIRST_TASK = """
import os, sys
import workpool as wp
from workpool._backends.process import ProcessBackend
from tests import _tasks

preloads = []
preload = ProcessBackend._preload

def spy(self, *args):
    preloads.append(preload(self, *args))
    return preloads[-1]

ProcessBackend._preload = spy

if __name__ == "__main__":
    with wp.ProcessPool(2) as pool:
        print(pool.submit(_tasks.square, 7).result(30))
        print(sorted(f.result(30) for f in [pool.submit(_tasks.square, i) for i in range(4)]))
    print(preloads, pool.statistics().completed)
    with wp.ProcessPool(2) as pool:
        crashed = pool.submit(_tasks.exit_with, 3).exception(30)
        print(type(crashed).__name__, pool.submit(_tasks.square, 3).result(30))
    print(preloads, (pool.statistics().completed, pool.statistics().failed))
"""


def test_the_first_task_is_sent_to_the_first_child_as_it_forks(tmp_path: Path) -> None:
    # Forked while the process has a single thread, the first child gets the first
    # task at once, before the reader starts; the task runs, or crashes, as any other.
    script = tmp_path / "preloaded.py"
    script.write_text(PRELOADED_FIRST_TASK)
    root = Path(__file__).resolve().parent.parent
    path = os.pathsep.join([str(root / "src"), str(root)])
    out = subprocess.run([sys.executable, str(script)], capture_output=True, text=True,
                         timeout=60, cwd=root, env={**os.environ, "PYTHONPATH": path})
    assert (out.returncode, out.stderr) == (0, "")
    assert out.stdout.splitlines() == ["49", "[0, 1, 4, 9]", "[True] 5",
                                       "WorkerCrashed 9", "[True, True] (1, 1)"]
