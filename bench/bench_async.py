"""Async pools: ``wp.AsyncPool`` against the asyncio, anyio and aiometer idioms.

Each scenario is a plain function ``name(quick) -> {metric: number}`` that measures on
its own: contenders run interleaved (A B C, A B C, ...) and each keeps its median, so
a noisy neighbour slows every contender alike. ``python -m bench.bench_async`` prints
the table; ``--quick`` runs smaller sizes. Contracts (DESIGN.md, issue 4):

- 100k tiny coroutines at concurrency 100: AsyncPool at least half the throughput of
  a hand-written pool of 100 worker tasks over ``asyncio.Queue`` (the floor);
- 1,000 tasks of ``sleep(0.01)`` at concurrency 100: at least 0.95 of 10,000 tasks/s;
- ``RateLimit(per_second=100)`` over 300 tasks: within 1% of 100/s, and no 1-second
  window above limit + burst;
- a 2,000,000-item async generator through ``map``: peak RSS grows by under 20 MB.
"""

from __future__ import annotations

import asyncio
import gc
import json
import os
import statistics
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Callable, Coroutine
from pathlib import Path
from typing import Any

import anyio

import workpool as wp

from .harness import max_in_window

__all__ = ["lazy_map_memory", "rate_limit", "sleep_io", "tiny_tasks"]

CONCURRENCY = 100
_ROOT = Path(__file__).resolve().parent.parent



def _asyncio(fn: Callable[..., Coroutine[Any, Any, Any]], *args: Any) -> Any:
    return asyncio.run(fn(*args))


def _trio(fn: Callable[..., Coroutine[Any, Any, Any]], *args: Any) -> Any:
    import trio

    return trio.run(fn, *args)


def _uvloop() -> Callable[..., Any] | None:
    try:
        import uvloop
    except ImportError:
        return None

    def run(fn: Callable[..., Coroutine[Any, Any, Any]], *args: Any) -> Any:
        return uvloop.run(fn(*args))

    return run


def _interleaved(contenders: list[tuple[str, Callable[[], Any]]],
                 repeats: int) -> dict[str, list[Any]]:
    """Run each contender *repeats* times, round-robin; their samples by name."""
    samples: dict[str, list[Any]] = {name: [] for name, _ in contenders}
    for _ in range(repeats):
        for name, fn in contenders:
            gc.collect()
            samples[name].append(fn())
    return samples


def _repeats(quick: bool) -> int:
    return 3 if quick else 5


# -- 100k tiny coroutines at concurrency 100 ---------------------------------------------

async def _tiny(x: int) -> int:
    return x


async def _queue_floor(n: int) -> float:
    """The floor: 100 hand-written worker tasks over an ``asyncio.Queue``."""
    t0 = time.perf_counter()
    q: asyncio.Queue[int] = asyncio.Queue()
    out: list[int] = []

    async def worker() -> None:
        while True:
            i = await q.get()
            out.append(await _tiny(i))
            q.task_done()

    workers = [asyncio.create_task(worker()) for _ in range(CONCURRENCY)]
    for i in range(n):
        q.put_nowait(i)
    await q.join()
    for w in workers:
        w.cancel()
    await asyncio.gather(*workers, return_exceptions=True)
    return time.perf_counter() - t0


async def _semaphore_gather(n: int) -> float:
    t0 = time.perf_counter()
    sem = asyncio.Semaphore(CONCURRENCY)

    async def one(i: int) -> int:
        async with sem:
            return await _tiny(i)

    await asyncio.gather(*(one(i) for i in range(n)))
    return time.perf_counter() - t0


async def _taskgroup_semaphore(n: int) -> float:
    t0 = time.perf_counter()
    sem = asyncio.Semaphore(CONCURRENCY)

    async def one(i: int) -> int:
        async with sem:
            return await _tiny(i)

    async with asyncio.TaskGroup() as tg:
        for i in range(n):
            tg.create_task(one(i))
    return time.perf_counter() - t0


async def _aiometer(n: int) -> float:
    import aiometer

    t0 = time.perf_counter()
    async with aiometer.amap(_tiny, range(n), max_at_once=CONCURRENCY) as results:
        async for _ in results:
            pass
    return time.perf_counter() - t0


async def _anyio_limiter(n: int) -> float:
    t0 = time.perf_counter()
    limiter = anyio.CapacityLimiter(CONCURRENCY)
    out: list[int] = []

    async def one(i: int) -> None:
        async with limiter:
            out.append(await _tiny(i))

    async with anyio.create_task_group() as tg:
        for i in range(n):
            tg.start_soon(one, i)
    return time.perf_counter() - t0


async def _pool_map(n: int) -> float:
    t0 = time.perf_counter()
    count = 0
    async with wp.AsyncPool(CONCURRENCY) as pool:
        async for _ in pool.map(_tiny, range(n)):
            count += 1
    assert count == n
    return time.perf_counter() - t0


async def _pool_submit(n: int) -> float:
    t0 = time.perf_counter()
    async with wp.AsyncPool(CONCURRENCY) as pool:
        futures = [await pool.submit(_tiny, i) for i in range(n)]
        for f in futures:
            await f
    return time.perf_counter() - t0


def tiny_tasks(quick: bool) -> dict[str, float]:
    """100k tiny coroutines at concurrency 100: us/task, and throughput as a multiple of
    the hand-written asyncio.Queue pool's (the floor; >= 0.5 required of AsyncPool)"""
    n = 20_000 if quick else 100_000
    floor = "asyncio.Queue, 100 workers (floor)"
    contenders: list[tuple[str, Callable[[], float]]] = [
        (floor, lambda: _asyncio(_queue_floor, n)),
        ("asyncio.Semaphore + gather", lambda: _asyncio(_semaphore_gather, n)),
        ("asyncio.TaskGroup + Semaphore", lambda: _asyncio(_taskgroup_semaphore, n)),
        ("aiometer.amap", lambda: _asyncio(_aiometer, n)),
        ("anyio task group + CapacityLimiter", lambda: _asyncio(_anyio_limiter, n)),
        ("AsyncPool.map", lambda: _asyncio(_pool_map, n)),
        ("AsyncPool.submit", lambda: _asyncio(_pool_submit, n)),
        ("AsyncPool.map [trio]", lambda: _trio(_pool_map, n)),
        ("AsyncPool.submit [trio]", lambda: _trio(_pool_submit, n)),
    ]
    uv = _uvloop()
    if uv is not None:
        contenders += [
            (floor + " [uvloop]", lambda: uv(_queue_floor, n)),
            ("AsyncPool.map [uvloop]", lambda: uv(_pool_map, n)),
        ]
    medians = {k: statistics.median(v)
               for k, v in _interleaved(contenders, _repeats(quick)).items()}
    out: dict[str, float] = {}
    for name, seconds in medians.items():
        base = medians[floor + " [uvloop]"] if "[uvloop]" in name else medians[floor]
        out[f"{name}: us/task"] = seconds / n * 1e6
        out[f"{name}: x floor"] = base / seconds
    return out


# -- 1,000 tasks of sleep(0.01) at concurrency 100 ---------------------------------------

async def _sleep10(_: int) -> None:
    await asyncio.sleep(0.01)


async def _sleep10_trio(_: int) -> None:
    import trio

    await trio.sleep(0.01)


async def _sleep_floor(n: int) -> float:
    q: asyncio.Queue[int] = asyncio.Queue()

    async def worker() -> None:
        while True:
            i = await q.get()
            await _sleep10(i)
            q.task_done()

    workers = [asyncio.create_task(worker()) for _ in range(CONCURRENCY)]
    await asyncio.sleep(0)
    t0 = time.perf_counter()
    for i in range(n):
        q.put_nowait(i)
    await q.join()
    elapsed = time.perf_counter() - t0
    for w in workers:
        w.cancel()
    await asyncio.gather(*workers, return_exceptions=True)
    return n / elapsed


async def _sleep_pool(n: int, task: Callable[[int], Coroutine[Any, Any, None]] = _sleep10
                      ) -> float:
    async with wp.AsyncPool(CONCURRENCY) as pool:
        await anyio.sleep(0)  # the workers start and park, as the floor's do
        t0 = time.perf_counter()
        async for _ in pool.map(task, range(n)):
            pass
        return n / (time.perf_counter() - t0)


def sleep_io(quick: bool) -> dict[str, float]:
    """1,000 tasks of sleep(0.01) at concurrency 100: tasks/s, as a fraction of
    Little's law 10,000/s (>= 0.95 required of AsyncPool)"""
    n = 1_000
    contenders: list[tuple[str, Callable[[], float]]] = [
        ("asyncio.Queue, 100 workers", lambda: _asyncio(_sleep_floor, n)),
        ("AsyncPool.map", lambda: _asyncio(_sleep_pool, n)),
        ("AsyncPool.map [trio]", lambda: _trio(_sleep_pool, n, _sleep10_trio)),
    ]
    uv = _uvloop()
    if uv is not None:
        contenders += [("asyncio.Queue, 100 workers [uvloop]", lambda: uv(_sleep_floor, n)),
                       ("AsyncPool.map [uvloop]", lambda: uv(_sleep_pool, n))]
    out: dict[str, float] = {}
    for name, rates in _interleaved(contenders, _repeats(quick)).items():
        rate = statistics.median(rates)
        out[f"{name}: tasks/s"] = rate
        out[f"{name}: of N/L"] = rate / (CONCURRENCY / 0.01)
    return out


# -- RateLimit(per_second=100) over 300 tasks --------------------------------------------



async def _rated(n: int, per_second: float) -> list[float]:
    starts: list[float] = []

    async def task(_: int) -> None:
        starts.append(time.monotonic())

    async with wp.AsyncPool(CONCURRENCY, rate=wp.RateLimit(per_second=per_second)) as pool:
        async for _ in pool.map(task, range(n)):
            pass
    return sorted(starts)


def rate_limit(quick: bool) -> dict[str, float]:
    """RateLimit(per_second=100) over 300 tasks: achieved rate, (n - 1) / (last start -
    first start), and the most starts in any 1-second window (<= 101 required)"""
    n, limit = (100 if quick else 300), 100
    out: dict[str, float] = {}
    for name, run in (("AsyncPool", _asyncio), ("AsyncPool [trio]", _trio)):
        starts = run(_rated, n, limit)
        out[f"{name}: tasks/s"] = (n - 1) / (starts[-1] - starts[0])
        out[f"{name}: starts in any 1 s"] = float(max_in_window(starts))
    return out


# -- a 2,000,000-item async generator through map, in a fresh process --------------------

async def _echo(item: bytes) -> bytes:
    return item


async def _items(n: int) -> AsyncIterator[bytes]:
    for i in range(n):
        yield b"%0100d" % i  # 100 bytes each, made on demand


async def _lazy_map(n: int) -> None:
    count = 0
    async with wp.AsyncPool(CONCURRENCY) as pool:
        async for _ in pool.map(_echo, _items(n)):
            count += 1
    if count != n:
        raise AssertionError(f"map yielded {count} items of {n}")


def _status_kb(key: str) -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(key + ":"):
                return int(line.split()[1])
    raise ValueError(key)


def lazy_map_child(backend: str, n: int) -> dict[str, float]:
    """In a fresh process: map *n* items; peak RSS growth (MB) and time per item."""
    gc.collect()
    before = _status_kb("VmRSS")
    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")  # reset the high-water mark: imports do not count
    t0 = time.perf_counter()
    (_trio if backend == "trio" else _asyncio)(_lazy_map, n)
    seconds = time.perf_counter() - t0
    return {"MB": (_status_kb("VmHWM") - before) / 1024, "us/item": seconds / n * 1e6}


def _isolated(backend: str, n: int) -> dict[str, float]:
    code = ("import json, sys; sys.path.insert(0, sys.argv[1]); "
            "from bench.bench_async import lazy_map_child; "
            "print(json.dumps(lazy_map_child(sys.argv[2], int(sys.argv[3]))))")
    proc = subprocess.run([sys.executable, "-c", code, str(_ROOT), backend, str(n)],
                          capture_output=True, text=True, timeout=600, cwd=str(_ROOT),
                          env={**os.environ, "PYTHONPATH": str(_ROOT / "src")})
    if proc.returncode != 0:
        raise RuntimeError(f"child failed: {proc.stderr.strip()[-500:]}")
    result: dict[str, float] = json.loads(proc.stdout.strip().splitlines()[-1])
    return result


def lazy_map_memory(quick: bool) -> dict[str, float]:
    """a 2,000,000-item async generator of 100-byte items through AsyncPool.map, each in
    a fresh process: peak RSS growth (< 20 MB required) and us/item"""
    if not Path("/proc/self/clear_refs").exists():  # pragma: no cover - not Linux
        return {}
    n = 300_000 if quick else 2_000_000
    out: dict[str, float] = {}
    for backend in ("asyncio", "trio"):
        runs = [_isolated(backend, n) for _ in range(1 if quick else 3)]
        out[f"AsyncPool.map {n:,} [{backend}]: MB"] = statistics.median(r["MB"] for r in runs)
        out[f"AsyncPool.map {n:,} [{backend}]: us/item"] = statistics.median(
            r["us/item"] for r in runs)
    return out


SCENARIOS = [tiny_tasks, sleep_io, rate_limit, lazy_map_memory]


def _main(argv: list[str]) -> None:
    quick = "--quick" in argv
    only = [a for a in argv if not a.startswith("-")]
    for scenario in SCENARIOS:
        if only and scenario.__name__ not in only:
            continue
        title = (scenario.__doc__ or scenario.__name__).split("\n\n")[0]
        print(f"\n## {scenario.__name__}: {' '.join(title.split())}")
        t0 = time.perf_counter()
        result = scenario(quick)
        width = max((len(k) for k in result), default=0)
        for key, value in result.items():
            print(f"  {key:<{width}}  {value:>12,.3f}")
        print(f"  ({time.perf_counter() - t0:.1f} s)")


if __name__ == "__main__":
    _main(sys.argv[1:])
