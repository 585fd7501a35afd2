"""AsyncGroup over an AsyncPool passed as ``pool=``: the pool's queue bound and budget
apply, the group cancels its own tasks only, and its own pool starts the workers its
tasks need. On asyncio and trio; every wait is bounded.
"""

from __future__ import annotations

from typing import Any

import anyio
import pytest

import workpool as wp

pytestmark = pytest.mark.anyio

WAIT = 10.0


class Boom(Exception):
    pass


async def echo(x: Any) -> Any:
    await anyio.lowlevel.checkpoint()
    return x


async def test_go_nowait_on_a_full_pool_raises_queue_full() -> None:
    release = anyio.Event()

    async def hold() -> None:
        with anyio.fail_after(WAIT):
            await release.wait()

    async with wp.AsyncPool(1, queue_size=1) as pool, wp.AsyncGroup(pool=pool) as g:
        g.go_nowait(hold)
        await anyio.wait_all_tasks_blocked()
        g.go_nowait(echo, 1)  # waits in the pool's queue
        with pytest.raises(wp.QueueFull, match=r"^queue is full \(1 tasks\)$"):
            g.go_nowait(echo, 2)
        release.set()
    assert g.results() == [None, 1]


async def test_a_pools_budget_applies_to_the_groups_tasks() -> None:
    budget = wp.AsyncSemaphore(2)
    running = most = 0

    async def task(i: int) -> int:
        nonlocal running, most
        running += 1
        most = max(most, running)
        for _ in range(3):
            await anyio.lowlevel.checkpoint()
        running -= 1
        return i

    async with wp.AsyncPool(8, budget=budget) as pool:
        async with wp.AsyncGroup(pool=pool) as g:
            for i in range(10):
                await g.go(task, i)
        assert g.results() == list(range(10))
        assert most == 2
        assert budget.statistics().available == 2  # every token given back


async def test_a_failure_cancels_the_groups_tasks_not_the_pools_others() -> None:
    fail = anyio.Event()
    other_release = anyio.Event()

    async def fail_soon() -> None:
        with anyio.fail_after(WAIT):
            await fail.wait()
        raise Boom("x")

    async def other() -> str:
        with anyio.fail_after(WAIT):
            await other_release.wait()
        return "other"

    async with wp.AsyncPool(4) as pool:
        outside = await pool.submit(other)
        with pytest.raises(ExceptionGroup) as info:  # noqa: PT012
            async with wp.AsyncGroup(pool=pool) as g:
                mine = await g.go(anyio.sleep, WAIT)
                await g.go(fail_soon)
                await anyio.wait_all_tasks_blocked()
                fail.set()
                await anyio.sleep(WAIT)
        assert [repr(e) for e in info.value.exceptions] == ["Boom('x')"]
        with pytest.raises(wp.Cancelled, match=r"^cancelled with its group while running$"):
            mine.result()
        assert not outside.done()
        other_release.set()
        with anyio.fail_after(WAIT):
            assert await outside == "other"


async def test_the_own_pool_starts_only_the_workers_it_needs() -> None:
    async with wp.AsyncGroup(limit=50) as g:
        for i in range(20):
            with anyio.fail_after(WAIT):
                assert await (await g.go(echo, i)) == i
        assert g._engine.statistics().workers == 1  # one task at a time: one worker
    assert g.results() == list(range(20))
