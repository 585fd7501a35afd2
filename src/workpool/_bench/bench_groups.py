"""Groups and semaphores: ``wp.Group``/``wp.AsyncGroup`` and ``wp.Semaphore``/
``wp.AsyncSemaphore`` against their stdlib twins.

The cost of a ``go`` is measured with trivial tasks, so that it is all overhead: the
group (or pool) is created, fed and left inside the timing. Contracts from issue 5:
no slower than the stdlib twin.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Callable, Coroutine
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import workpool as wp

from .harness import Target, compare, scenario

LIMIT = 8
TPE = "ThreadPoolExecutor"
Group: Any = getattr(wp, "Group", None)
AsyncGroup: Any = getattr(wp, "AsyncGroup", None)
Semaphore: Any = getattr(wp, "Semaphore", None)
AsyncSemaphore: Any = getattr(wp, "AsyncSemaphore", None)


def _tiny(x: int) -> int:
    return x


async def _atiny(x: int) -> int:
    return x


def _option(needed: Any, fn: Callable[[], float]) -> Callable[[], float] | None:
    """*fn*, or None (reported as "not available") while *needed* has not landed."""
    return fn if needed is not None else None


def _timed(main: Callable[[], Coroutine[Any, Any, float]]) -> float:
    """Run *main* on a fresh asyncio loop; it returns the seconds it measured itself."""
    return asyncio.run(main())


# -- cost per go, threads --------------------------------------------------------------------

def _tpe_submit(n: int) -> float:
    t0 = time.perf_counter()
    with ThreadPoolExecutor(LIMIT) as pool:
        for i in range(n):
            pool.submit(_tiny, i)
    return time.perf_counter() - t0


def _tpe_semaphore(n: int) -> float:
    """The stdlib's bounded fan-out: a semaphore taken before each submit, given back
    when the task ends (what ``Group(limit=8)`` does)."""
    t0 = time.perf_counter()
    sem = threading.Semaphore(LIMIT)

    def release(_: object) -> None:
        sem.release()

    with ThreadPoolExecutor(LIMIT) as pool:
        for i in range(n):
            sem.acquire()
            pool.submit(_tiny, i).add_done_callback(release)
    return time.perf_counter() - t0


def _pool_submit(n: int) -> float:
    """What a group stands on: its own ``wp.ThreadPool`` of ``limit`` threads."""
    t0 = time.perf_counter()
    with wp.ThreadPool(LIMIT) as pool:
        for i in range(n):
            pool.submit(_tiny, i)
    return time.perf_counter() - t0


def _group_go(n: int) -> float:
    t0 = time.perf_counter()
    with Group(limit=LIMIT) as g:
        for i in range(n):
            g.go(_tiny, i)
    return time.perf_counter() - t0


@scenario
def go_threads(quick: bool) -> dict[str, float]:
    """cost per go: trivial tasks, 8 at once, group or pool created and left inside"""
    n = 5_000 if quick else 20_000
    return compare(
        [
            (f"{TPE}({LIMIT}).submit", lambda: _tpe_submit(n)),
            (f"{TPE}({LIMIT}).submit + Semaphore({LIMIT})", lambda: _tpe_semaphore(n)),
            (f"ThreadPool({LIMIT}).submit", lambda: _pool_submit(n)),
            (f"Group(limit={LIMIT}).go", _option(Group, lambda: _group_go(n))),
        ],
        unit="us/task", scale=1e6 / n, baseline=f"{TPE}({LIMIT}).submit",
        targets=[Target(f"Group(limit={LIMIT}).go", ">=", 1.0)], title=f"{n:,} tasks",
    )


# -- cost per go, coroutines -----------------------------------------------------------------

def _taskgroup_semaphore(n: int) -> float:
    """The stdlib's idiom: a task per item, each holding a semaphore while it runs."""
    async def main() -> float:
        t0 = time.perf_counter()
        sem = asyncio.Semaphore(LIMIT)

        async def task(i: int) -> int:
            async with sem:
                return await _atiny(i)

        async with asyncio.TaskGroup() as tg:
            for i in range(n):
                tg.create_task(task(i))
        return time.perf_counter() - t0

    return _timed(main)


def _async_group_go(n: int) -> float:
    async def main() -> float:
        t0 = time.perf_counter()
        async with AsyncGroup(limit=LIMIT) as g:
            for i in range(n):
                await g.go(_atiny, i)
        return time.perf_counter() - t0

    return _timed(main)


@scenario
def go_async(quick: bool) -> dict[str, float]:
    """cost per go: trivial coroutines, 8 at once, on asyncio"""
    n = 5_000 if quick else 20_000
    base = f"asyncio.TaskGroup + Semaphore({LIMIT})"
    ours = f"AsyncGroup(limit={LIMIT}).go"
    return compare(
        [
            (base, lambda: _taskgroup_semaphore(n)),
            (ours, _option(AsyncGroup, lambda: _async_group_go(n))),
        ],
        unit="us/task", scale=1e6 / n, baseline=base,
        targets=[Target(ours, ">=", 1.0)], title=f"{n:,} tasks",
    )


# -- semaphores ------------------------------------------------------------------------------

def _acquire_release(sem: Any, n: int) -> float:
    acquire, release = sem.acquire, sem.release
    t0 = time.perf_counter()
    for _ in range(n):
        acquire()
        release()
    return time.perf_counter() - t0


def _contended(sem: Any, n: int, threads: int = 4) -> float:
    """*threads* threads taking and giving back one token of a 2-token semaphore."""
    per = n // threads

    def work() -> None:
        for _ in range(per):
            with sem:
                pass

    workers = [threading.Thread(target=work) for _ in range(threads)]
    t0 = time.perf_counter()
    for t in workers:
        t.start()
    for t in workers:
        t.join()
    return time.perf_counter() - t0


@scenario
def semaphore_threads(quick: bool) -> dict[str, float]:
    """acquire + release: uncontended, and 4 threads on 2 tokens"""
    n = 50_000 if quick else 200_000
    ours = "wp.Semaphore"
    result = compare(
        [
            ("threading.Semaphore", lambda: _acquire_release(threading.Semaphore(1), n)),
            (ours, _option(Semaphore, lambda: _acquire_release(Semaphore(1), n))),
        ],
        unit="us/pair", scale=1e6 / n, baseline="threading.Semaphore",
        targets=[Target(ours, ">=", 1.0)], title=f"uncontended, {n:,} pairs",
    )
    m = n // 4
    result |= {
        f"contended {k}": v for k, v in compare(
            [
                ("threading.Semaphore", lambda: _contended(threading.Semaphore(2), m)),
                (ours, _option(Semaphore, lambda: _contended(Semaphore(2), m))),
            ],
            unit="us/pair", scale=1e6 / m, baseline="threading.Semaphore",
            targets=[Target(ours, ">=", 1.0)], title=f"4 threads, 2 tokens, {m:,} pairs",
        ).items()
    }
    return result


def _async_acquire_release(make: Callable[[], Any], n: int) -> float:
    async def main() -> float:
        sem = make()
        acquire, release = sem.acquire, sem.release
        t0 = time.perf_counter()
        for _ in range(n):
            await acquire()
            release()
        return time.perf_counter() - t0

    return _timed(main)


def _async_contended(make: Callable[[], Any], n: int, tasks: int = 100) -> float:
    """*tasks* tasks, each taking a token, yielding once, giving it back."""
    async def main() -> float:
        sem = make()
        per = n // tasks

        async def work() -> None:
            for _ in range(per):
                await sem.acquire()
                try:
                    await asyncio.sleep(0)
                finally:
                    sem.release()

        t0 = time.perf_counter()
        async with asyncio.TaskGroup() as tg:
            for _ in range(tasks):
                tg.create_task(work())
        return time.perf_counter() - t0

    return _timed(main)


@scenario
def semaphore_async(quick: bool) -> dict[str, float]:
    """acquire + release on asyncio: uncontended, and 100 tasks on 10 tokens"""
    n = 50_000 if quick else 200_000
    ours = "wp.AsyncSemaphore"
    result = compare(
        [
            ("asyncio.Semaphore", lambda: _async_acquire_release(
                lambda: asyncio.Semaphore(1), n)),
            (ours, _option(AsyncSemaphore, lambda: _async_acquire_release(
                lambda: AsyncSemaphore(1), n))),
        ],
        unit="us/pair", scale=1e6 / n, baseline="asyncio.Semaphore",
        targets=[Target(ours, ">=", 1.0)], title=f"uncontended, {n:,} pairs",
    )
    m = n // 10
    result |= {
        f"contended {k}": v for k, v in compare(
            [
                ("asyncio.Semaphore", lambda: _async_contended(
                    lambda: asyncio.Semaphore(10), m)),
                (ours, _option(AsyncSemaphore, lambda: _async_contended(
                    lambda: AsyncSemaphore(10), m))),
            ],
            unit="us/pair", scale=1e6 / m, baseline="asyncio.Semaphore",
            targets=[Target(ours, ">=", 1.0)], title=f"100 tasks, 10 tokens, {m:,} pairs",
        ).items()
    }
    return result
