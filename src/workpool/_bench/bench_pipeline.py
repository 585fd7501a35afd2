"""Pipelines: ``wp.Pipeline`` against pypeln and a hand-written queue-and-threads pipeline.

Three scenarios, from DESIGN.md's "a three-stage pipeline reaches at least 0.95 of its
bottleneck stage's throughput, in flat memory over an unbounded source":

- ``bottleneck``: stages with known costs (sleeps: 1 ms on 4 workers, 2 ms on 4
  workers, 1 ms on 4 workers), so the middle stage caps the pipeline at what it does
  alone; each pipeline's throughput is compared with that stage's alone.
- ``memory``: a 1,000,000-item generated source through three stages, in a fresh
  process each time: peak RSS growth against 100,000 items (flat: the same), and
  against a chain of ``ThreadPoolExecutor.map`` calls (eager: it grows with the input).
- ``overhead``: tiny items through three stages: the cost per item of the machinery.

Every pipeline passes items on as they finish (``ordered=False``), as pypeln and the
queue-and-threads pipeline do.
"""

from __future__ import annotations

import queue
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import workpool as wp

from .harness import Target, compare, isolated, peer, scenario

try:
    import pypeln
except ImportError:  # the bench extra brings it; without it, its rows say so
    pypeln = None

Stages = list[tuple[Callable[[Any], Any], int]]  # (function, workers) per stage
BUFFER = 64


def _sleeper(seconds: float) -> Callable[[Any], Any]:
    def stage(x: Any) -> Any:
        time.sleep(seconds)
        return x

    stage.__name__ = f"sleep_{seconds * 1e3:g}ms"
    return stage


def _tiny(x: Any) -> Any:
    return x


# -- the contenders: each runs *stages* over *source* and returns the items it got ------

def run_workpool(source: Iterable[Any], stages: Stages) -> int:
    pipe: wp.Pipeline[Any] = wp.Pipeline(source)
    for fn, workers in stages:
        pipe = pipe.map(fn, workers=workers, buffer=BUFFER, ordered=False)
    return sum(1 for _ in pipe)


def run_pypeln(source: Iterable[Any], stages: Stages) -> int:
    assert pypeln is not None
    stage: Any = source
    for fn, workers in stages:
        stage = pypeln.thread.map(fn, stage, workers=workers, maxsize=BUFFER)
    return sum(1 for _ in stage)


_STOP = object()


def run_queues(source: Iterable[Any], stages: Stages) -> int:
    """The pipeline one writes by hand: bounded queues, worker threads per stage, and
    a stop marker passed on once the last worker of a stage is done."""
    queues: list[queue.Queue[Any]] = [queue.Queue(BUFFER) for _ in range(len(stages) + 1)]
    threads: list[threading.Thread] = []

    def feed() -> None:
        put = queues[0].put
        for item in source:
            put(item)
        put(_STOP)

    def work(fn: Callable[[Any], Any], inbox: queue.Queue[Any], outbox: queue.Queue[Any],
             left: list[int], lock: threading.Lock) -> None:
        get, put = inbox.get, outbox.put
        while (item := get()) is not _STOP:
            put(fn(item))
        inbox.put(_STOP)  # for this stage's other workers
        with lock:
            left[0] -= 1
            last = left[0] == 0
        if last:
            outbox.put(_STOP)

    threads.append(threading.Thread(target=feed))
    for i, (fn, workers) in enumerate(stages):
        left, lock = [workers], threading.Lock()
        threads += [threading.Thread(target=work, args=(fn, queues[i], queues[i + 1], left, lock))
                    for _ in range(workers)]
    for thread in threads:
        thread.start()
    count = 0
    get = queues[-1].get
    while get() is not _STOP:
        count += 1
    for thread in threads:
        thread.join()
    return count


def _bottleneck_alone(fn: Callable[[Any], Any], workers: int, n: int) -> int:
    with wp.ThreadPool(workers) as pool:
        return sum(1 for _ in pool.map(fn, range(n), chunksize=1, ordered=False))


def _rate(run: Callable[[], int], n: int) -> dict[str, float]:
    started = time.perf_counter()
    got = run()
    elapsed = time.perf_counter() - started
    if got != n:
        raise AssertionError(f"got {got} items of {n}")
    return {"items/s": n / elapsed}


# -- a three-stage pipeline against its bottleneck stage -----------------------------------

@scenario
def bottleneck(quick: bool) -> dict[str, float]:
    """sleeps of 1 ms x 4, 2 ms x 4, 1 ms x 4 workers: throughput against the 2 ms stage alone"""
    n = 1_000 if quick else 4_000
    stages: Stages = [(_sleeper(0.001), 4), (_sleeper(0.002), 4), (_sleeper(0.001), 4)]
    neck, neck_workers = stages[1]
    return compare(
        [
            ("bottleneck stage alone", lambda: _rate(
                lambda: _bottleneck_alone(neck, neck_workers, n), n)),
            ("wp.Pipeline", lambda: _rate(lambda: run_workpool(range(n), stages), n)),
            ("pypeln (threads)", peer(
                "pypeln", lambda: _rate(lambda: run_pypeln(range(n), stages), n))),
            ("queues + threads", lambda: _rate(lambda: run_queues(range(n), stages), n)),
        ],
        unit="items/s", higher_is_better={"items/s"}, baseline="bottleneck stage alone",
        targets=[Target("wp.Pipeline", ">=", 0.95)],
        title=f"{n:,} items; the 2 ms x 4 stage alone is the ceiling",
    )


# -- memory over a long source -------------------------------------------------------------

def _generated(n: int) -> Iterator[bytes]:
    return (b"%0100d" % i for i in range(n))  # 100 bytes each, made on demand


def memory_child(kind: str, n: int) -> dict[str, float]:
    """Three tiny stages over *n* generated items (run by ``isolated``)."""
    stages: Stages = [(_tiny, 2), (_tiny, 2), (_tiny, 2)]
    if kind == "wp.Pipeline":
        got = run_workpool(_generated(n), stages)
    elif kind == "pypeln":
        got = run_pypeln(_generated(n), stages)
    else:  # a chain of ThreadPoolExecutor.map calls: each submits its whole input
        with ThreadPoolExecutor(2) as a, ThreadPoolExecutor(2) as b, ThreadPoolExecutor(2) as c:
            got = sum(1 for _ in c.map(_tiny, b.map(_tiny, a.map(_tiny, _generated(n)))))
    if got != n:
        raise AssertionError(f"got {got} items of {n}")
    return {}


def _memory(kind: str, n: int) -> dict[str, float]:
    out = isolated(memory_child, kind, n)
    return {"MB": out["rss_growth_mb"], "us/item": out["seconds"] * 1e6 / n}


@scenario
def memory(quick: bool) -> dict[str, float]:
    """three stages over a generated source: peak RSS growth, fresh process each"""
    big = 200_000 if quick else 1_000_000
    small = 50_000 if quick else 100_000
    ours_big, ours_small = f"wp.Pipeline {big:,}", f"wp.Pipeline {small:,}"
    return compare(
        [
            (f"ThreadPoolExecutor.map chain {small:,}", lambda: _memory("executor", small)),
            (f"pypeln {small:,}", peer("pypeln", lambda: _memory("pypeln", small))),
            (ours_small, lambda: _memory("wp.Pipeline", small)),
            (ours_big, lambda: _memory("wp.Pipeline", big)),
        ],
        unit="MB", baseline=f"ThreadPoolExecutor.map chain {small:,}",
        targets=[Target(ours_big, "<", 20, on="value")],
        title="100-byte items, 3 stages of 2 threads",
    )


# -- the cost per item ---------------------------------------------------------------------

@scenario
def overhead(quick: bool) -> dict[str, float]:
    """tiny items through three stages of 2 threads: the machinery's cost per item"""
    n = 20_000 if quick else 100_000
    stages: Stages = [(_tiny, 2), (_tiny, 2), (_tiny, 2)]

    def timed(run: Callable[[Iterable[Any], Stages], int]) -> Callable[[], float]:
        def measure() -> float:
            started = time.perf_counter()
            got = run(range(n), stages)
            if got != n:
                raise AssertionError(f"got {got} items of {n}")
            return time.perf_counter() - started

        return measure

    return compare(
        [
            ("queues + threads", timed(run_queues)),
            ("pypeln (threads)", peer("pypeln", timed(run_pypeln))),
            ("wp.Pipeline", timed(run_workpool)),
        ],
        unit="us/item", scale=1e6 / n, baseline="queues + threads", title=f"{n:,} items",
    )
