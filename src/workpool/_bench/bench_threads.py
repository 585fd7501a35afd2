"""Thread pools: ``wp.ThreadPool`` against ``concurrent.futures.ThreadPoolExecutor``.

Defaults against defaults (each pool's own worker count and settings), pool start-up
and shutdown inside the timing unless a scenario says otherwise. Contracts from
DESIGN.md, "Numbers it must reach".
"""

from __future__ import annotations

import contextlib
import io
import itertools
import queue
import threading
import time
from collections.abc import Callable
from concurrent.futures import Executor, ThreadPoolExecutor, wait
from typing import Any, TypeVar

import workpool as wp

from .harness import Contender, Target, compare, isolated, max_in_window, scenario

ThreadPool: Any = getattr(wp, "ThreadPool", None)  # None until the pool has landed
TPE = "ThreadPoolExecutor"
F = TypeVar("F", bound=Callable[[], object])


def _tiny(x: int) -> int:
    return x


def _option(fn: F) -> F | None:
    """*fn*, or None (reported as "not available") while workpool has no ThreadPool."""
    return fn if ThreadPool is not None else None


# -- 200k tiny tasks through map ----------------------------------------------------------

def _serial(n: int) -> float:
    f = _tiny
    t0 = time.perf_counter()
    for i in range(n):
        f(i)
    return time.perf_counter() - t0


def _simple_queue(n: int) -> float:
    """The floor for a hand-off between threads: one producer, one consumer, no futures."""
    q: queue.SimpleQueue[object] = queue.SimpleQueue()
    stop = object()

    def consume() -> None:
        get, f = q.get, _tiny
        while (item := get()) is not stop:
            f(item)  # type: ignore[arg-type]

    def produce() -> None:
        put = q.put
        for i in range(n):
            put(i)
        put(stop)

    t0 = time.perf_counter()
    threads = [threading.Thread(target=consume), threading.Thread(target=produce)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return time.perf_counter() - t0


def _map(make: Callable[[], Executor], n: int) -> float:
    t0 = time.perf_counter()
    with make() as pool:
        for _ in pool.map(_tiny, range(n)):
            pass
    return time.perf_counter() - t0


@scenario
def tiny_map(quick: bool) -> dict[str, float]:
    """200k tiny tasks through map, results consumed in order"""
    n = 20_000 if quick else 200_000
    return compare(
        [
            ("serial loop (floor)", lambda: _serial(n)),
            ("2-thread SimpleQueue (floor)", lambda: _simple_queue(n)),
            (f"{TPE}.map", lambda: _map(ThreadPoolExecutor, n)),
            ("ThreadPool.map", _option(lambda: _map(ThreadPool, n))),
        ],
        unit="us/task", scale=1e6 / n, baseline=f"{TPE}.map",
        targets=[Target("ThreadPool.map", ">=", 10)], title=f"{n:,} tasks",
    )


@scenario
def map_progress(quick: bool) -> dict[str, float]:
    """200k tiny tasks through map, with progress off, to a callable, and as plain lines"""
    n = 20_000 if quick else 200_000

    def mapped(progress: object) -> float:
        with contextlib.redirect_stderr(io.StringIO()):  # the plain lines: not a terminal
            t0 = time.perf_counter()
            with ThreadPool() as pool:
                for _ in pool.map(_tiny, range(n), progress=progress):
                    pass
            return time.perf_counter() - t0

    return compare(
        [
            ("ThreadPool.map", _option(lambda: mapped(False))),
            ("progress=callable", _option(lambda: mapped(lambda counts: None))),
            ("progress=True", _option(lambda: mapped(True))),
        ],
        unit="us/task", scale=1e6 / n, baseline="ThreadPool.map", title=f"{n:,} tasks",
    )


# -- submit + result per task -------------------------------------------------------------

def _submit_all(make: Callable[[], Executor], n: int) -> float:
    t0 = time.perf_counter()
    with make() as pool:
        futures = [pool.submit(_tiny, i) for i in range(n)]
        for f in futures:
            f.result()
    return time.perf_counter() - t0


def _submit_one(make: Callable[[], Executor], n: int) -> float:
    t0 = time.perf_counter()
    with make() as pool:
        for i in range(n):
            pool.submit(_tiny, i).result()
    return time.perf_counter() - t0


@scenario
def submit_all(quick: bool) -> dict[str, float]:
    """submit every task, then result() of each"""
    n = 10_000 if quick else 20_000
    return compare(
        [
            (f"{TPE}.submit", lambda: _submit_all(ThreadPoolExecutor, n)),
            ("ThreadPool.submit", _option(lambda: _submit_all(ThreadPool, n))),
        ],
        unit="us/task", scale=1e6 / n, baseline=f"{TPE}.submit",
        targets=[Target("ThreadPool.submit", ">=", 1.0)], title=f"{n:,} tasks",
    )


@scenario
def submit_wait_one(quick: bool) -> dict[str, float]:
    """submit one task and wait for its result, one at a time (a round trip per task)"""
    n = 5_000 if quick else 20_000
    return compare(
        [
            (f"{TPE}.submit", lambda: _submit_one(ThreadPoolExecutor, n)),
            ("ThreadPool.submit", _option(lambda: _submit_one(ThreadPool, n))),
        ],
        unit="us/task", scale=1e6 / n, baseline=f"{TPE}.submit",
        targets=[Target("ThreadPool.submit", ">=", 1.0)], title=f"{n:,} tasks",
    )


# -- lazy map in flat memory ----------------------------------------------------------------

def _echo(item: bytes) -> bytes:
    return item


def lazy_map_child(kind: str, n: int) -> dict[str, float]:
    """Map over *n* generated 100-byte items, consumed one by one (run by ``isolated``)."""
    items = (b"%0100d" % i for i in range(n))  # 100 bytes each, made on demand
    pool: Executor = ThreadPool() if kind == "ThreadPool" else ThreadPoolExecutor()
    count = 0
    with pool:
        for _ in pool.map(_echo, items):
            count += 1
    if count != n:
        raise AssertionError(f"map yielded {count} items of {n}")
    return {}


def _lazy(kind: str, n: int) -> dict[str, float]:
    out = isolated(lazy_map_child, kind, n)
    return {"MB": out["rss_growth_mb"], "us/item": out["seconds"] * 1e6 / n}


@scenario
def lazy_map_memory(quick: bool) -> dict[str, float]:
    """map over generated 100-byte items: peak RSS growth and time, fresh process each"""
    big = 300_000 if quick else 2_000_000
    small = 100_000 if quick else 300_000  # the most ThreadPoolExecutor.map can afford
    ours_big, ours_small = f"ThreadPool.map {big:,}", f"ThreadPool.map {small:,}"
    return compare(
        [
            (f"{TPE}.map {small:,}", lambda: _lazy(TPE, small)),
            (ours_small, _option(lambda: _lazy("ThreadPool", small))),
            (ours_big, _option(lambda: _lazy("ThreadPool", big))),
        ],
        unit="MB", baseline=f"{TPE}.map {small:,}",
        targets=[
            Target(ours_big, "<", 20, on="value"),
            Target(ours_small, ">=", 1.0, unit="us/item"),
        ],
    )


# -- I/O-bound: 10 ms tasks on 100 workers --------------------------------------------------

def _sleepers(make: Callable[[int], Executor], n: int, workers: int,
              delay: float) -> dict[str, float]:
    """Throughput of *n* sleeping tasks, and its fraction of Little's law workers / delay.

    The workers are started before the clock does (the stdlib starts its threads lazily,
    one per submit), so this is the steady state both pools reach.
    """
    with make(workers) as pool:
        wait([pool.submit(time.sleep, delay) for _ in range(workers)])
        t0 = time.perf_counter()
        for _ in pool.map(time.sleep, itertools.repeat(delay, n)):
            pass
        elapsed = time.perf_counter() - t0
    return {"of N/L": n / elapsed / (workers / delay), "tasks/s": n / elapsed}


@scenario
def sleep_io(quick: bool) -> dict[str, float]:
    """tasks sleeping 10 ms on 100 workers: throughput against Little's law N/L"""
    n, workers, delay = (1_000 if quick else 5_000), 100, 0.010
    return compare(
        [
            (f"{TPE}.map", lambda: _sleepers(ThreadPoolExecutor, n, workers, delay)),
            ("ThreadPool.map", _option(lambda: _sleepers(ThreadPool, n, workers, delay))),
        ],
        unit="of N/L", higher_is_better={"of N/L", "tasks/s"}, baseline=f"{TPE}.map",
        targets=[Target("ThreadPool.map", ">=", 0.95, on="value")],
        title=f"{n:,} tasks, N/L = {workers / delay:,.0f} tasks/s",
    )


# -- rate limit -----------------------------------------------------------------------------



def _rated(n: int, per_second: float, burst: int) -> dict[str, float]:
    starts: list[float] = []  # list.append is atomic: no lock needed

    def task(_: int) -> None:
        starts.append(time.monotonic())

    with ThreadPool(rate=wp.RateLimit(per_second=per_second, burst=burst)) as pool:
        wait([pool.submit(task, i) for i in range(n)])
    starts.sort()
    span = starts[-1] - starts[0]
    return {"tasks/s": (n - 1) / span if span > 0 else float("inf"),
            "starts in any 1 s": float(max_in_window(starts))}


@scenario
def rate_limit(quick: bool) -> dict[str, float]:
    """RateLimit(per_second=200): achieved rate and the busiest 1-second window"""
    n, limit, burst = (200 if quick else 600), 200, 1
    name = f"ThreadPool(rate={limit}/s)"
    contenders: list[Contender] = [(name, _option(lambda: _rated(n, limit, burst)))]
    return compare(
        contenders, unit="tasks/s",
        targets=[
            Target(name, "within", limit, on="value", tolerance=0.01),
            Target(name, "<=", limit + burst, on="value", unit="starts in any 1 s"),
        ],
        title=f"{n} tasks, (n - 1) / (last start - first start)",
    )
