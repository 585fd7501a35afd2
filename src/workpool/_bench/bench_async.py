"""Async pools: ``wp.AsyncPool`` against the asyncio, anyio and aiometer idioms.

Contenders run interleaved through the harness's ``compare`` (A B C, A B C, ...), each
keeping its median, so a noisy neighbour slows every contender alike; each contender
runs its own event loop. Contracts (DESIGN.md):

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
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Callable, Coroutine
from pathlib import Path
from typing import Any

import anyio

import workpool as wp

from .harness import Contender, Target, compare, max_in_window, scenario

__all__ = ["lazy_map_memory", "rate_limit", "sleep_io", "tiny_tasks"]

CONCURRENCY = 100
# The folder that holds the workpool package (src/ of a checkout, or site-packages):
# the child imports this suite, and the same workpool, from there.
_ROOT = Path(__file__).resolve().parents[2]



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


async def _queue_futures_floor(n: int) -> float:
    """The floor for ``submit``: the same pool, handing back an ``asyncio.Future`` per
    item, all held until awaited in order (what ``AsyncPool.submit`` gives)."""
    t0 = time.perf_counter()
    q: asyncio.Queue[tuple[asyncio.Future[int], int]] = asyncio.Queue()
    loop = asyncio.get_running_loop()

    async def worker() -> None:
        while True:
            fut, i = await q.get()
            try:
                fut.set_result(await _tiny(i))
            except Exception as exc:
                fut.set_exception(exc)
            q.task_done()

    workers = [asyncio.create_task(worker()) for _ in range(CONCURRENCY)]
    futures = []
    for i in range(n):
        fut = loop.create_future()
        q.put_nowait((fut, i))
        futures.append(fut)
    for fut in futures:
        await fut
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


@scenario
def tiny_tasks(quick: bool) -> dict[str, float]:
    """100k tiny coroutines at concurrency 100, against hand-written asyncio.Queue pools"""
    n = 20_000 if quick else 100_000
    floor = "asyncio.Queue, 100 workers (floor)"
    contenders: list[Contender] = [
        (floor, lambda: _asyncio(_queue_floor, n)),
        ("asyncio.Semaphore + gather", lambda: _asyncio(_semaphore_gather, n)),
        ("asyncio.TaskGroup + Semaphore", lambda: _asyncio(_taskgroup_semaphore, n)),
        ("aiometer.amap", lambda: _asyncio(_aiometer, n)),
        ("anyio task group + CapacityLimiter", lambda: _asyncio(_anyio_limiter, n)),
        ("AsyncPool.map", lambda: _asyncio(_pool_map, n)),
        ("AsyncPool.map [trio]", lambda: _trio(_pool_map, n)),
    ]
    out = compare(contenders, unit="us/task", scale=1e6 / n, baseline=floor,
                  targets=[Target("AsyncPool.map", ">=", 0.5)],
                  title=f"{n:,} tasks on asyncio (trio row: the same code on trio)")
    # submit hands back a future per task, all held: against the same floor handing
    # back an asyncio.Future per item (holding n live objects costs the GC alike).
    # Always 100k, the size its target is set for, quick or not: at 20k the pool's
    # start and close (a task group, 100 worker tasks) weigh on the ratio, not the
    # per-task cost the target is about. Three contenders: still about a second.
    m = 100_000
    futures_floor = "asyncio.Queue + a Future per item (floor)"
    out |= compare(
        [(futures_floor, lambda: _asyncio(_queue_futures_floor, m)),
         ("AsyncPool.submit", lambda: _asyncio(_pool_submit, m)),
         ("AsyncPool.submit [trio]", lambda: _trio(_pool_submit, m))],
        unit="us/task", scale=1e6 / m, baseline=futures_floor,
        targets=[Target("AsyncPool.submit", ">=", 0.5)],
        title=f"{m:,} tasks through submit, every future held until awaited")
    uv = _uvloop()
    if uv is not None:
        uv_floor = floor + " [uvloop]"
        out |= compare(
            [(uv_floor, lambda: uv(_queue_floor, n)),
             ("AsyncPool.map [uvloop]", lambda: uv(_pool_map, n))],
            unit="us/task", scale=1e6 / n, baseline=uv_floor, title=f"{n:,} tasks on uvloop")
    return out


# -- 1,000 tasks of sleep(0.01) at concurrency 100 ---------------------------------------

async def _sleep10(_: int) -> None:
    await asyncio.sleep(0.01)


async def _sleep10_trio(_: int) -> None:
    import trio

    await trio.sleep(0.01)


async def _sleep_floor(n: int) -> dict[str, float]:
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
    return _rates(n, elapsed)


def _rates(n: int, elapsed: float) -> dict[str, float]:
    return {"of N/L": n / elapsed / (CONCURRENCY / 0.01), "tasks/s": n / elapsed}


async def _sleep_pool(n: int, task: Callable[[int], Coroutine[Any, Any, None]] = _sleep10
                      ) -> dict[str, float]:
    async with wp.AsyncPool(CONCURRENCY) as pool:
        await anyio.sleep(0)  # the workers start and park, as the floor's do
        t0 = time.perf_counter()
        async for _ in pool.map(task, range(n)):
            pass
        return _rates(n, time.perf_counter() - t0)


@scenario
def sleep_io(quick: bool) -> dict[str, float]:
    """1,000 sleep(0.01) tasks at concurrency 100, as a fraction of Little's law"""
    n = 1_000
    floor = "asyncio.Queue, 100 workers"
    contenders: list[Contender] = [
        (floor, lambda: _asyncio(_sleep_floor, n)),
        ("AsyncPool.map", lambda: _asyncio(_sleep_pool, n)),
        ("AsyncPool.map [trio]", lambda: _trio(_sleep_pool, n, _sleep10_trio)),
    ]
    uv = _uvloop()
    if uv is not None:
        contenders += [(floor + " [uvloop]", lambda: uv(_sleep_floor, n)),
                       ("AsyncPool.map [uvloop]", lambda: uv(_sleep_pool, n))]
    # Two targets: 0.95 of N/L, as for threads, and the hand-written pool's own
    # throughput. On asyncio a wave of 100 sleeps takes 10 ms, rounded up to the next
    # millisecond by epoll, after the loop's busy time for the wave: every microsecond
    # a task costs the loop shows here.
    return compare(contenders, unit="of N/L", higher_is_better={"of N/L", "tasks/s"},
                   baseline=floor, targets=[Target("AsyncPool.map", ">=", 0.95, on="value"),
                                            Target("AsyncPool.map", ">=", 1.0, unit="tasks/s")],
                   title=f"{n:,} tasks, N/L = {CONCURRENCY / 0.01:,.0f} tasks/s")


# -- RateLimit(per_second=100) over 300 tasks --------------------------------------------



async def _rated(n: int, per_second: float) -> dict[str, float]:
    starts: list[float] = []

    async def task(_: int) -> None:
        starts.append(time.monotonic())

    async with wp.AsyncPool(CONCURRENCY, rate=wp.RateLimit(per_second=per_second)) as pool:
        async for _ in pool.map(task, range(n)):
            pass
    starts.sort()
    return {"tasks/s": (n - 1) / (starts[-1] - starts[0]),
            "starts in any 1 s": float(max_in_window(starts))}


@scenario
def rate_limit(quick: bool) -> dict[str, float]:
    """RateLimit(per_second=100) over 300 tasks: rate and the busiest 1-second window"""
    n, limit = (100 if quick else 300), 100
    names = ("AsyncPool", "AsyncPool [trio]")
    return compare(
        [(names[0], lambda: _asyncio(_rated, n, limit)),
         (names[1], lambda: _trio(_rated, n, limit))],
        unit="tasks/s", repeats=1,
        targets=[t for name in names for t in (
            Target(name, "within", limit, on="value", tolerance=0.01),
            Target(name, "<=", limit + 1, on="value", unit="starts in any 1 s"))],
        title=f"{n} tasks, (n - 1) / (last start - first start)",
    )


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
            "from workpool._bench.bench_async import lazy_map_child; "
            "print(json.dumps(lazy_map_child(sys.argv[2], int(sys.argv[3]))))")
    proc = subprocess.run([sys.executable, "-c", code, str(_ROOT), backend, str(n)],
                          capture_output=True, text=True, timeout=600, cwd=str(_ROOT))
    if proc.returncode != 0:
        raise RuntimeError(f"child failed: {proc.stderr.strip()[-500:]}")
    result: dict[str, float] = json.loads(proc.stdout.strip().splitlines()[-1])
    return result


@scenario
def lazy_map_memory(quick: bool) -> dict[str, float]:
    """peak RSS growth of AsyncPool.map over a 2,000,000-item async generator"""
    if not Path("/proc/self/clear_refs").exists():  # pragma: no cover - not Linux
        return {}
    n = 300_000 if quick else 2_000_000
    names = [f"AsyncPool.map [{backend}]" for backend in ("asyncio", "trio")]
    return compare(
        [(names[0], lambda: _isolated("asyncio", n)), (names[1], lambda: _isolated("trio", n))],
        unit="MB", repeats=1 if quick else 3,
        targets=[Target(name, "<", 20, on="value") for name in names],
        title=f"{n:,} items of 100 bytes, each run in a fresh process",
    )
