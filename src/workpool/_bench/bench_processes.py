"""Process pools: ``wp.ProcessPool`` against the stdlib pools, joblib, mpire and pebble.

Every contender runs on this interpreter, interleaved with the others (A B C, A B C,
...), and keeps the median of its repeats. Each pool is used with its defaults, as its
documentation shows it, except where a row's name says otherwise. Contracts from
DESIGN.md ("Numbers it must reach") and issue 3:

- ``tiny_map``: 200k tiny tasks (``x * x``) over a generator, workpool defaults: at
  least the throughput of ``multiprocessing.Pool.map`` over a list, and many times
  joblib's, mpire's and ``ProcessPoolExecutor``'s. Pool start-up and shutdown are
  inside every contender's timing, as a program pays them. Pools that make a round
  trip per item (chunksize 1) run fewer items, as their rows say; the unit, tasks/s,
  keeps the ratios comparable.
- ``cpu_efficiency``: 2,000 CPU-bound tasks of about 2 ms on 2 workers: parallel
  efficiency (serial time / (wall time x 2)) at least 0.95. The pools are started
  before the clock. Two reference rows read the machine: two bare processes with no
  pool (the ceiling this machine allows right now), and ``busy`` (time the workers
  spent in tasks / (wall x 2)), which another process stealing the CPU moves far less
  than it moves the efficiency.
- ``first_result``: from entering ``with Pool()`` to the first result, each sample in
  a fresh interpreter: no slower than ``ProcessPoolExecutor``.

The functions sent to worker processes are module-level, so every peer can pickle them
by reference. After each contender the process is left with one thread (workpool forks
its first workers only from a single-threaded process; a thread another library leaves
behind would send it to its forkserver); the row ``caller runs a 2nd thread`` measures
that path on purpose.
"""

from __future__ import annotations

import multiprocessing
import statistics
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ProcessPoolExecutor
from typing import Any

import workpool as wp

from .._core.forking import kernel_threads
from .harness import Contender, Target, compare, isolated, peer, scenario

__all__ = ["burn", "cpu_efficiency", "first_result", "first_result_child", "square",
           "timed_burn", "tiny_map"]

ProcessPool: Any = getattr(wp, "ProcessPool", None)  # None until the pool has landed
PPE = "ProcessPoolExecutor"
MP_MAP = "multiprocessing.Pool.map"
OURS_MAP = "ProcessPool.map"


def _option(fn: Callable[[], Any]) -> Callable[[], Any] | None:
    """*fn*, or None (reported as "not available") while workpool has no ProcessPool."""
    return fn if ProcessPool is not None else None


# -- what the workers run -------------------------------------------------------------------

def square(x: int) -> int:
    """The tiny task."""
    return x * x


def burn(k: int) -> int:
    """A pure-Python arithmetic loop of *k* rounds: CPU work that holds the GIL."""
    s = 0
    for i in range(k):
        s += i * i % 7
    return s


def timed_burn(k: int) -> float:
    """``burn(k)``; returns the seconds it took where it ran (a worker's busy time)."""
    t0 = time.perf_counter()
    burn(k)
    return time.perf_counter() - t0


def _gen(n: int) -> Iterator[int]:
    """The lazy input: nothing is materialised ahead of the pool."""
    return (i for i in range(n))


def _squares(n: int) -> int:
    """What ``sum(map(square, range(n)))`` must come to."""
    return (n - 1) * n * (2 * n - 1) // 6


def _checked(total: int, n: int, name: str) -> None:
    if total != _squares(n):
        raise AssertionError(f"{name}: wrong sum of results over {n} items")


# -- 200k tiny tasks through map ----------------------------------------------------------
# Pool start-up and shutdown are inside the timing for every contender, as a user's
# program pays them (scenario first_result measures start-up alone).

def _rate(run: Callable[[int], int], n: int, name: str) -> dict[str, float]:
    t0 = time.perf_counter()
    total = run(n)
    elapsed = time.perf_counter() - t0
    _checked(total, n, name)
    _settle()
    return {"tasks/s": n / elapsed}


def _settle() -> None:
    """Leave the process as a contender found it: one thread (after a short wait for
    threads that are ending), so that the next one may fork safely."""
    _stop_tqdm_monitor()
    deadline = time.monotonic() + 0.5
    while _threads() > 1 and time.monotonic() < deadline:
        time.sleep(0.005)


def _threads() -> int:
    """This process's threads, as the kernel counts them (C threads included)."""
    threads = kernel_threads()
    return threading.active_count() if threads is None else threads


def _stop_tqdm_monitor() -> None:
    """Stop tqdm's monitor thread, which mpire starts and which outlives its pool.

    A contender must leave the process as it found it: with that thread alive, every
    later contender would run in a threaded parent, where forking is unsafe.
    """
    import sys

    if "tqdm" not in sys.modules:
        return
    try:
        from tqdm._monitor import TMonitor  # type: ignore[import-untyped]
    except ImportError:
        return

    for thread in threading.enumerate():
        if isinstance(thread, TMonitor):
            thread.exit()
            thread.tqdm_cls.monitor = None  # the next progress bar starts its own


def _ours_map(n: int) -> int:
    with ProcessPool() as pool:
        return sum(pool.map(square, _gen(n)))


def _ours_map_threaded(n: int) -> int:
    """The same, called from a program that already runs a second thread."""
    stop = threading.Event()
    other = threading.Thread(target=stop.wait, name="bench-idle")
    other.start()
    try:
        return _ours_map(n)
    finally:
        stop.set()
        other.join()


def _mp_map(items: list[int]) -> int:
    with multiprocessing.Pool() as pool:
        return sum(pool.map(square, items))


def _mp_imap(n: int) -> int:
    with multiprocessing.Pool() as pool:
        return sum(pool.imap(square, _gen(n)))


def _ppe_map(n: int, chunksize: int) -> int:
    with ProcessPoolExecutor() as pool:
        return sum(pool.map(square, _gen(n), chunksize=chunksize))


def _joblib_map(n: int) -> int:
    from joblib import Parallel, delayed
    from joblib.externals.loky import get_reusable_executor

    total: int = sum(Parallel(n_jobs=wp.cpus())(delayed(square)(x) for x in _gen(n)))
    # joblib keeps its loky workers for the next call; stop them, as the other pools'
    # ``with`` blocks do, so that every round pays start-up and shutdown alike.
    get_reusable_executor().shutdown(wait=True)
    return total


def _mpire_map(n: int) -> int:
    from mpire.pool import WorkerPool

    with WorkerPool() as pool:
        # mpire needs the length of a generator to chunk it (without it: chunks of 4,
        # and a warning that says to pass iterable_len).
        return sum(pool.map(square, _gen(n), iterable_len=n))


def _pebble_map(n: int) -> int:
    import pebble

    with pebble.ProcessPool() as pool:
        return sum(pool.map(square, _gen(n)).result())


@scenario
def tiny_map(quick: bool) -> dict[str, float]:
    """200k tiny tasks (x*x) over a generator, defaults; pool start-up and shutdown timed"""
    n = 50_000 if quick else 200_000
    # Contenders that pay a round trip per item run fewer items; tasks/s keeps the
    # ratios meaningful.
    n_imap = 5_000 if quick else n
    n_one = 2_000 if quick else 20_000
    items = list(range(n))  # the baseline's list exists before its clock starts
    imap = f"multiprocessing.Pool.imap chunksize=1 ({n_imap // 1000}k)"
    ppe_1 = f"{PPE}.map chunksize=1 ({n_one // 1000}k)"
    threaded = f"{OURS_MAP}, caller runs a 2nd thread"
    pebble_map = f"pebble ProcessPool.map chunksize=1 ({n_one // 1000}k)"
    contenders: list[Contender] = [
        (MP_MAP, lambda: _rate(lambda k: _mp_map(items), n, MP_MAP)),
        (OURS_MAP, _option(lambda: _rate(_ours_map, n, OURS_MAP))),
        (threaded, _option(lambda: _rate(_ours_map_threaded, n, threaded))),
        (imap, lambda: _rate(_mp_imap, n_imap, imap)),
        (ppe_1, lambda: _rate(lambda k: _ppe_map(k, 1), n_one, ppe_1)),
        (f"{PPE}.map chunksize=1000",
         lambda: _rate(lambda k: _ppe_map(k, 1000), n, PPE)),
        ("joblib Parallel (loky)", peer("joblib", lambda: _rate(_joblib_map, n, "joblib"))),
        ("mpire WorkerPool.map", peer("mpire", lambda: _rate(_mpire_map, n, "mpire"))),
        (pebble_map, peer("pebble", lambda: _rate(_pebble_map, n_one, "pebble"))),
    ]
    return compare(
        contenders, unit="tasks/s", higher_is_better={"tasks/s"}, baseline=MP_MAP,
        targets=[Target(OURS_MAP, ">=", 1.0)],
        title=f"{n:,} items (fewer where a row says); baseline over a list, others a "
              "generator; start-up and shutdown inside every timing",
    )


# -- 2 ms CPU-bound tasks on 2 workers --------------------------------------------------------
# The pools are started and warmed up (one small map) before the clock starts, for
# every contender: this measures how well each keeps 2 cores busy, not its start-up.

_WORKERS = 2
_TASK_SECONDS = 0.002
_calibrated: list[int] = []


def _rounds_for_2ms() -> int:
    """The ``burn`` rounds that take about 2 ms here (measured once, median of 7)."""
    if not _calibrated:
        probe = 20_000
        burn(probe)
        times = []
        for _ in range(7):
            t0 = time.perf_counter()
            burn(probe)
            times.append(time.perf_counter() - t0)
        _calibrated.append(max(1, round(probe * _TASK_SECONDS / statistics.median(times))))
    return _calibrated[0]


_WARM = list(range(4 * _WORKERS))  # the warm-up map: every worker started and ready


# Each returns (wall seconds of the timed map, seconds the workers spent in tasks).

def _cpu_ours(items: list[int]) -> tuple[float, float]:
    with ProcessPool(_WORKERS) as pool:
        list(pool.map(square, _WARM))
        t0 = time.perf_counter()
        busy = sum(pool.map(timed_burn, items))
        return time.perf_counter() - t0, busy


def _cpu_mp(items: list[int]) -> tuple[float, float]:
    with multiprocessing.Pool(_WORKERS) as pool:
        pool.map(square, _WARM)
        t0 = time.perf_counter()
        busy = sum(pool.map(timed_burn, items))
        return time.perf_counter() - t0, busy


def _cpu_ppe(items: list[int]) -> tuple[float, float]:
    with ProcessPoolExecutor(_WORKERS) as pool:
        list(pool.map(square, _WARM))
        t0 = time.perf_counter()
        busy = sum(pool.map(timed_burn, items))
        return time.perf_counter() - t0, busy


def _cpu_joblib(items: list[int]) -> tuple[float, float]:
    from joblib import Parallel, delayed
    from joblib.externals.loky import get_reusable_executor

    try:
        with Parallel(n_jobs=_WORKERS) as parallel:
            parallel(delayed(square)(x) for x in _WARM)
            t0 = time.perf_counter()
            busy = sum(parallel(delayed(timed_burn)(k) for k in items))
            return time.perf_counter() - t0, busy
    finally:
        get_reusable_executor().shutdown(wait=True)  # no idle workers left for the next


def _cpu_mpire(items: list[int]) -> tuple[float, float]:
    from mpire.pool import WorkerPool

    # keep_alive: the workers of the warm-up map also run the timed one.
    with WorkerPool(n_jobs=_WORKERS, keep_alive=True) as pool:
        pool.map(square, _WARM)
        t0 = time.perf_counter()
        busy = sum(pool.map(timed_burn, items))
        return time.perf_counter() - t0, busy


def _bare_worker(k: int, count: int, ready: Any, busy: Any) -> None:
    ready.wait()
    total = 0.0
    for _ in range(count):
        total += timed_burn(k)
    busy.put(total)


def _cpu_bare(items: list[int]) -> tuple[float, float]:
    """The ceiling: forked processes, each given its share up front; no pool at all."""
    fork = "fork" in multiprocessing.get_all_start_methods()
    ctx = multiprocessing.get_context("fork" if fork else None)
    ready = ctx.Barrier(_WORKERS + 1)
    busy = ctx.SimpleQueue()
    shares = [len(items) // _WORKERS + (i < len(items) % _WORKERS) for i in range(_WORKERS)]
    procs = [ctx.Process(target=_bare_worker, args=(items[0], share, ready, busy))
             for share in shares]
    for p in procs:
        p.start()
    ready.wait()  # every process is up: go
    t0 = time.perf_counter()
    total = sum(busy.get() for _ in procs)
    for p in procs:
        p.join()
    return time.perf_counter() - t0, total


@scenario
def cpu_efficiency(quick: bool) -> dict[str, float]:
    """2,000 CPU-bound tasks of about 2 ms on 2 workers: parallel efficiency, warm pools"""
    n = 500 if quick else 2_000
    items = [_rounds_for_2ms()] * n
    sample = items[: 100 if quick else 250]
    serial: list[float] = []  # this round's serial time, measured first in each round

    def run_serial() -> dict[str, float]:
        # The serial time of the n tasks: n times the median time of one, from a
        # sample run here. The median leaves out the tasks that another process
        # on this machine interrupted.
        per_task = statistics.median(timed_burn(k) for k in sample)
        serial.append(per_task * n)
        return {"ms/task": per_task * 1e3}

    def efficiency(
        run: Callable[[list[int]], tuple[float, float]],
    ) -> Callable[[], dict[str, float]]:
        def measure() -> dict[str, float]:
            wall, busy = run(items)
            _settle()
            return {"efficiency": serial[-1] / (wall * _WORKERS),
                    "busy": busy / (wall * _WORKERS), "s wall": wall}
        return measure

    ours = "ProcessPool(2).map"
    contenders: list[Contender] = [
        ("serial loop, 1 process", run_serial),
        (f"{_WORKERS} bare processes, no pool (ceiling)", efficiency(_cpu_bare)),
        ("multiprocessing.Pool(2).map", efficiency(_cpu_mp)),
        (ours, _option(efficiency(_cpu_ours))),
        (f"{PPE}(2).map chunksize=1", efficiency(_cpu_ppe)),
        ("joblib Parallel(n_jobs=2) (loky)", peer("joblib", efficiency(_cpu_joblib))),
        ("mpire WorkerPool(2).map", peer("mpire", efficiency(_cpu_mpire))),
    ]
    return compare(
        contenders, unit="efficiency", higher_is_better={"efficiency", "busy"},
        baseline="multiprocessing.Pool(2).map",
        targets=[Target(ours, ">=", 0.95, on="value")],
        title=f"{n:,} tasks of {_TASK_SECONDS * 1e3:g} ms; efficiency = serial time / (wall x "
              f"{_WORKERS}); busy = time in tasks / (wall x {_WORKERS}); pools started before "
              "the clock",
    )


# -- time to the first result, in a fresh interpreter -----------------------------------------

def first_result_child(kind: str) -> dict[str, float]:
    """Enter a pool, submit one task, wait for it (run by ``isolated``).

    The pool's library is imported before the clock starts, including the modules it
    would import on first use, and only that library: no other one's threads or warm
    forkserver can help or hinder it. ``workpool, cold`` leaves workpool's deferred
    import of its process backend inside the timing, as a program's first pool pays it.
    """
    import importlib

    # One thread, as the interpreter starts; the library's import may start its own
    # (mpire's, through numpy's BLAS): those are part of what it costs.
    if _threads() != 1:
        raise RuntimeError(f"{kind}: {_threads()} threads before the library is imported")
    start: Callable[[], Any]
    if kind in ("workpool", "workpool, cold"):
        if kind == "workpool":
            importlib.import_module("workpool._backends.process")  # what ProcessPool() loads

        def start() -> Any:
            return ProcessPool()

        def first(pool: Any) -> Any:
            return pool.submit(square, 7).result()
    elif kind == PPE:
        def start() -> Any:
            return ProcessPoolExecutor()

        def first(pool: Any) -> Any:
            return pool.submit(square, 7).result()
    elif kind == "multiprocessing":
        importlib.import_module("multiprocessing.pool")  # what multiprocessing.Pool() loads

        def start() -> Any:
            return multiprocessing.Pool()

        def first(pool: Any) -> Any:
            return pool.apply_async(square, (7,)).get()
    elif kind == "pebble":
        import pebble

        def start() -> Any:
            return pebble.ProcessPool()

        def first(pool: Any) -> Any:
            return pool.schedule(square, (7,)).result()
    elif kind == "mpire":
        from mpire.pool import WorkerPool

        def start() -> Any:
            return WorkerPool()

        def first(pool: Any) -> Any:
            return pool.apply_async(square, (7,)).get()
    else:
        raise ValueError(f"unknown pool {kind!r}")
    t0 = time.perf_counter()
    with start() as pool:
        result = first(pool)
        t1 = time.perf_counter()
    t2 = time.perf_counter()
    if result != 49:
        raise AssertionError(f"{kind}: wrong result {result!r}")
    return {"ms to first result": (t1 - t0) * 1e3, "ms incl. shutdown": (t2 - t0) * 1e3}


def _first(kind: str) -> dict[str, float]:
    out = isolated(first_result_child, kind, timeout=120)
    return {k: out[k] for k in ("ms to first result", "ms incl. shutdown")}


@scenario
def first_result(quick: bool) -> dict[str, float]:
    """from entering `with Pool()` to the first submit(...).result(), fresh process each"""
    base = f"{PPE}()"
    contenders: list[Contender] = [
        (base, lambda: _first(PPE)),
        ("ProcessPool()", _option(lambda: _first("workpool"))),
        ("ProcessPool(), backend import timed", _option(lambda: _first("workpool, cold"))),
        ("multiprocessing.Pool()", lambda: _first("multiprocessing")),
        ("pebble ProcessPool()", peer("pebble", lambda: _first("pebble"))),
        ("mpire WorkerPool()", peer("mpire", lambda: _first("mpire"))),
    ]
    return compare(
        contenders, unit="ms to first result", baseline=base,
        targets=[Target("ProcessPool()", ">=", 1.0)],
        title="default workers; each sample a fresh interpreter, its pool's library "
              "imported before the clock",
    )

