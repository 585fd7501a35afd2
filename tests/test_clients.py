"""Real clients that take an executor: asyncio and dask's local schedulers.

The design promises that any code written for the stdlib executors works unchanged
with ours; these are the clients users hand a pool to most often.
"""

from __future__ import annotations

import asyncio
import os
import threading
from collections.abc import Callable
from typing import Any

import dask
import dask.bag
import pytest
from dask.delayed import delayed

import workpool as wp
from tests import _tasks


def square_with_thread(x: int) -> tuple[int, str]:
    return x * x, threading.current_thread().name


def square_with_pid(x: int) -> tuple[int, int]:
    return x * x, os.getpid()


def bag(fn: Callable[[int], Any], n: int, parts: int) -> Any:
    """A dask bag of ``fn(i)`` for i in range(n), in *parts* partitions."""
    items = dask.bag.from_sequence(range(n), npartitions=parts)  # type: ignore[no-untyped-call]
    return items.map(fn)


def threads_named(prefix: str) -> list[str]:
    return [t.name for t in threading.enumerate() if t.name.startswith(prefix)]


# -- asyncio -------------------------------------------------------------------------


async def _run_on_default_executor(pool: wp.ThreadPool, n: int) -> list[tuple[int, str]]:
    loop = asyncio.get_running_loop()
    loop.set_default_executor(pool)
    calls = [loop.run_in_executor(None, square_with_thread, i) for i in range(n)]
    return list(await asyncio.gather(*calls))


def test_asyncio_default_executor() -> None:
    pool = wp.ThreadPool(4, name="aio-default")
    try:
        results = asyncio.run(_run_on_default_executor(pool, 12))
        assert [value for value, _ in results] == [i * i for i in range(12)]
        assert all(name.startswith("aio-default") for _, name in results)
        # asyncio.run ends by shutting the default executor down, waiting for it.
        assert threads_named("aio-default") == []
        with pytest.raises(RuntimeError, match="cannot schedule new futures"):
            pool.submit(_tasks.square, 2)
    finally:
        pool.shutdown()


async def _run_in(pool: wp.ProcessPool, n: int) -> list[tuple[int, int]]:
    loop = asyncio.get_running_loop()
    return list(await asyncio.gather(
        *(loop.run_in_executor(pool, square_with_pid, i) for i in range(n))))


def test_asyncio_run_in_a_process_pool() -> None:
    with wp.ProcessPool(2) as pool:
        results = asyncio.run(_run_in(pool, 8))
    assert [value for value, _ in results] == [i * i for i in range(8)]
    assert os.getpid() not in {pid for _, pid in results}


# -- dask's local schedulers -----------------------------------------------------------


def test_dask_threads_scheduler_runs_on_the_configured_pool() -> None:
    with wp.ThreadPool(4, name="dask-threads") as pool, dask.config.set(pool=pool):
        results = bag(square_with_thread, 20, 4).compute(scheduler="threads")
        total = delayed(sum)([delayed(_tasks.square)(i) for i in range(10)])
        assert total.compute(scheduler="threads") == sum(i * i for i in range(10))
    assert [value for value, _ in results] == [i * i for i in range(20)]
    assert all(name.startswith("dask-threads") for _, name in results)


def test_dask_processes_scheduler_runs_on_the_given_pool() -> None:
    with wp.ProcessPool(2) as pool:
        results = bag(square_with_pid, 20, 4).compute(scheduler="processes", pool=pool)
        total = delayed(sum)([delayed(_tasks.square)(i) for i in range(10)])
        assert total.compute(scheduler="processes", pool=pool) == sum(
            i * i for i in range(10))
        assert pool.statistics().completed >= 2
    assert [value for value, _ in results] == [i * i for i in range(20)]
    assert os.getpid() not in {pid for _, pid in results}


def test_dask_pool_as_the_scheduler() -> None:
    with wp.ThreadPool(3, name="dask-executor") as pool:
        results = bag(square_with_thread, 12, 3).compute(scheduler=pool)
    assert [value for value, _ in results] == [i * i for i in range(12)]
    assert all(name.startswith("dask-executor") for _, name in results)
