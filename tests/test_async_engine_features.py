"""What the engine and the event-loop backend offer front ends built over an
``AsyncPool`` (``AsyncGroup``): a lazy pool that starts workers as tasks need them, up
to its size; a spec's end hook, called once per task however the task ends; and
``cancel_where``, which cancels the tasks of one spec only. Every test runs on asyncio
and trio; waits are bounded.
"""

from __future__ import annotations

import threading
from collections import Counter
from typing import Any

import anyio
import pytest

import workpool as wp
from workpool._engine.async_task import (
    ASYNC,
    CANCELLED,
    ERROR,
    VALUE,
    AsyncFuture,
    Spec,
)

pytestmark = pytest.mark.anyio

WAIT = 10.0


class Boom(Exception):
    pass


class Gate:
    """Tasks that wait until the test opens the gate; ``entered`` counts arrivals."""

    def __init__(self) -> None:
        self.opened = anyio.Event()
        self.entered = 0
        self._arrived: list[tuple[int, anyio.Event]] = []

    async def task(self, value: Any = None) -> Any:
        self.entered += 1
        for n, event in self._arrived:
            if self.entered >= n:
                event.set()
        with anyio.fail_after(WAIT):
            await self.opened.wait()
        return value

    async def wait_entered(self, n: int) -> None:
        if self.entered < n:
            event = anyio.Event()
            self._arrived.append((n, event))
            with anyio.fail_after(WAIT):
                await event.wait()


def lazy_pool(workers: int, **options: Any) -> wp.AsyncPool:
    pool = wp.AsyncPool(workers, **options)
    pool._lazy = True
    return pool


async def echo(x: Any) -> Any:
    await anyio.lowlevel.checkpoint()
    return x


# -- a lazy pool ------------------------------------------------------------------------------

async def test_a_lazy_pool_grows_with_its_tasks_up_to_its_size() -> None:
    gate = Gate()
    async with lazy_pool(4) as pool:
        assert pool.statistics().workers == 0  # none started up front
        first = await pool.submit(gate.task, 0)
        await gate.wait_entered(1)
        assert pool.statistics().workers == 1
        rest = [await pool.submit(gate.task, i) for i in range(1, 6)]
        await gate.wait_entered(4)
        await anyio.wait_all_tasks_blocked()
        stats = pool.statistics()
        assert (stats.workers, stats.running, stats.queued) == (4, 4, 2)  # the size
        assert gate.entered == 4
        gate.opened.set()
        with anyio.fail_after(WAIT):
            assert [await f for f in [first, *rest]] == list(range(6))
        assert pool.statistics().workers == 4
    assert pool.statistics().workers == 0


async def test_a_lazy_pool_reuses_an_idle_worker() -> None:
    async with lazy_pool(8) as pool:
        for i in range(20):
            assert await pool.run(echo, i) == i
        assert pool.statistics().workers == 1  # one task at a time: one worker


async def test_a_lazy_pool_starts_a_worker_for_each_queued_task_that_suspends() -> None:
    gate = Gate()
    async with lazy_pool(16) as pool:
        futures = [pool.submit_nowait(gate.task, i) for i in range(10)]  # no await between
        await gate.wait_entered(10)
        assert pool.statistics().workers == 10
        gate.opened.set()
        with anyio.fail_after(WAIT):
            assert [await f for f in futures] == list(range(10))


async def test_a_lazy_pool_maps_too() -> None:
    async with lazy_pool(3) as pool:
        with anyio.fail_after(WAIT):
            assert [x async for x in pool.map(echo, range(50))] == list(range(50))
        assert 1 <= pool.statistics().workers <= 3


# -- the end hook -------------------------------------------------------------------------------

class Ends:
    """An end hook that records each call with the task's state at that moment."""

    def __init__(self) -> None:
        self.calls: Counter[int] = Counter()
        self.states: dict[int, int] = {}

    def __call__(self, job: AsyncFuture[Any]) -> None:
        assert job.done()  # called once the task has ended
        self.calls[id(job)] += 1
        self.states[id(job)] = job._state


def hooked(pool: wp.AsyncPool, ends: Ends) -> Spec:
    engine = pool._engine
    return Spec(pool._backend, ASYNC, engine.timeout, engine.retry, on_end=ends)


async def put(pool: wp.AsyncPool, spec: Spec, fn: Any, *args: Any) -> AsyncFuture[Any]:
    return await pool._put(pool._task(fn, args, {}, spec), 1, True)


async def test_the_end_hook_is_called_once_per_task_however_it_ends() -> None:
    ends = Ends()
    gate = Gate()

    async def fail() -> None:
        raise Boom

    async def cancel_itself() -> None:
        raise wp.Cancelled("by itself")

    async def interrupt() -> None:
        raise KeyboardInterrupt

    async with wp.AsyncPool(2, queue_size=10) as pool:
        spec = hooked(pool, ends)
        value = await put(pool, spec, echo, 1)
        error = await put(pool, spec, fail)
        own = await put(pool, spec, cancel_itself)
        base = await put(pool, spec, interrupt)
        running = await put(pool, spec, gate.task)
        blocker = await put(pool, spec, gate.task)
        queued = await put(pool, spec, echo, 2)
        await gate.wait_entered(2)
        assert queued.cancel()  # queued: never runs
        assert running.cancel()  # running: interrupted
        with anyio.fail_after(WAIT):
            with pytest.raises(wp.Cancelled, match=r"^cancelled while running$"):
                await running
        by_shutdown = await put(pool, spec, echo, 3)  # queued behind the blocker
        await pool.aclose(cancel=True)
    futures = [value, error, own, base, running, blocker, queued, by_shutdown]
    assert all(f.done() for f in futures)
    assert sorted(ends.calls.values()) == [1] * len(futures)
    assert set(ends.calls) == {id(f) for f in futures}
    assert [ends.states[id(f)] for f in futures] == [
        VALUE, ERROR, CANCELLED, ERROR, CANCELLED, CANCELLED, CANCELLED, CANCELLED]
    assert value.result() == 1
    assert isinstance(base.exception(), KeyboardInterrupt)


async def test_the_end_hook_waits_for_the_last_retry() -> None:
    ends = Ends()
    attempts = 0

    async def flaky() -> str:
        nonlocal attempts
        attempts += 1
        if attempts < 3:
            raise Boom
        return "done"

    async with wp.AsyncPool(1, retry=wp.Retry(attempts=3, backoff=0)) as pool:
        job = await put(pool, hooked(pool, ends), flaky)
        with anyio.fail_after(WAIT):
            assert await job == "done"
    assert attempts == 3
    assert list(ends.calls.values()) == [1]
    assert ends.states[id(job)] == VALUE


async def test_tasks_without_a_hook_are_unchanged() -> None:
    async with wp.AsyncPool(2) as pool:
        job = await pool.submit(echo, 5)
        with anyio.fail_after(WAIT):
            assert await job == 5
        assert job._spec.on_end is None


# -- cancel_where ---------------------------------------------------------------------------

async def test_cancel_where_cancels_one_specs_tasks_only() -> None:
    ends = Ends()
    gate = Gate()
    async with wp.AsyncPool(2, queue_size=10) as pool:
        spec = hooked(pool, ends)
        mine_running = await put(pool, spec, gate.task, "mine")
        other_running = await pool.submit(gate.task, "other")
        await gate.wait_entered(2)
        mine_queued = await put(pool, spec, echo, 1)
        other_queued = await pool.submit(echo, 2)
        pool._backend.cancel_where(lambda task: task.payload is spec, "not started",
                                   "stopped while running")
        assert mine_queued.cancelled()
        with pytest.raises(wp.Cancelled, match=r"^not started$"):
            mine_queued.result()
        with anyio.fail_after(WAIT):
            with pytest.raises(wp.Cancelled, match=r"^stopped while running$"):
                await mine_running
        gate.opened.set()
        with anyio.fail_after(WAIT):
            assert await other_running == "other"
            assert await other_queued == 2
    assert sorted(ends.calls.values()) == [1, 1]


# -- on the one engine ------------------------------------------------------------------------

async def test_many_submitters_waiting_for_room_all_get_in() -> None:
    gate = Gate()
    async with wp.AsyncPool(1, queue_size=1) as pool:
        blocker = await pool.submit(gate.task, "first")
        await gate.wait_entered(1)
        futures: list[AsyncFuture[Any]] = []

        async def submit(i: int) -> None:
            futures.append(await pool.submit(echo, i))

        async with anyio.create_task_group() as tg:
            for i in range(6):
                tg.start_soon(submit, i)
            await anyio.wait_all_tasks_blocked()
            assert len(futures) == 1  # one fits the queue; five wait for room
            gate.opened.set()
        with anyio.fail_after(WAIT):
            assert sorted([await f for f in futures]) == list(range(6))
            assert await blocker == "first"
    stats = pool.statistics()
    assert (stats.submitted, stats.completed, stats.queued) == (7, 7, 0)


async def test_a_submitter_cancelled_while_waiting_for_room_leaves_no_trace() -> None:
    gate = Gate()
    async with wp.AsyncPool(1, queue_size=1) as pool:
        blocker = await pool.submit(gate.task, "first")
        await gate.wait_entered(1)
        queued = await pool.submit(echo, 1)
        with anyio.move_on_after(0.05) as scope:
            await pool.submit(echo, "never")
        assert scope.cancelled_caught
        waiter: list[AsyncFuture[Any]] = []

        async def submit() -> None:
            waiter.append(await pool.submit(echo, 2))

        async with anyio.create_task_group() as tg:
            tg.start_soon(submit)
            await anyio.wait_all_tasks_blocked()
            assert waiter == []
            gate.opened.set()  # room frees: the remaining waiter is woken
        with anyio.fail_after(WAIT):
            assert [await blocker, await queued, await waiter[0]] == ["first", 1, 2]
    assert pool.statistics().submitted == 3


async def test_workers_start_at_async_with_and_are_counted_idle() -> None:
    async with wp.AsyncPool(4) as pool:
        await anyio.wait_all_tasks_blocked()
        stats = pool.statistics()
        assert (stats.workers, stats.idle, stats.busy) == (4, 4, 0)
    assert pool.statistics().workers == 0


async def test_a_deadline_is_kept_on_the_loop_without_a_timer_thread() -> None:
    async def slow() -> None:
        await anyio.sleep(WAIT)

    async with wp.AsyncPool(2, timeout=0.05) as pool:
        job = await pool.submit(slow)
        with anyio.fail_after(WAIT):
            with pytest.raises(wp.TaskTimeout, match=r"^task timed out after 0.05 s$"):
                await job
        assert not [t for t in threading.enumerate() if t.name.endswith("_timer")]
    assert pool.statistics().timed_out == 1


async def test_a_running_task_cancelled_is_not_retried() -> None:
    gate = Gate()
    async with wp.AsyncPool(1, retry=wp.Retry(attempts=3, backoff=0)) as pool:
        job = await pool.submit(gate.task)
        await gate.wait_entered(1)
        assert job.cancel()
        with anyio.fail_after(WAIT):
            with pytest.raises(wp.Cancelled, match=r"^cancelled while running$"):
                await job
    stats = pool.statistics()
    assert (gate.entered, stats.retried, stats.cancelled) == (1, 0, 1)


async def test_a_retry_after_a_backoff_comes_back_without_a_timer_thread() -> None:
    attempts: list[int] = []

    async def flaky() -> int:
        attempts.append(wp.current().attempt)
        if len(attempts) < 3:
            raise Boom
        return len(attempts)

    async with wp.AsyncPool(1, retry=wp.Retry(attempts=3, backoff=0.01)) as pool:
        with anyio.fail_after(WAIT):
            assert await pool.run(flaky) == 3
        assert not [t for t in threading.enumerate() if t.name.endswith("_timer")]
    assert attempts == [1, 2, 3]
    assert pool.statistics().retried == 2


async def test_a_cancellation_around_the_pool_lists_each_unfinished_task_once() -> None:
    gate = Gate()
    pool = wp.AsyncPool(3, queue_size=4)
    futures: list[AsyncFuture[Any]] = []
    with anyio.CancelScope() as scope:
        async with pool:
            for i in range(7):
                futures.append(await pool.submit(gate.task, i))
            await gate.wait_entered(3)
            scope.cancel()
            await anyio.sleep(WAIT)
    assert all(f.cancelled() for f in futures)
    assert sorted(map(id, pool.unfinished)) == sorted(map(id, futures))
    stats = pool.statistics()
    assert (stats.submitted, stats.cancelled, stats.workers) == (7, 7, 0)


async def test_a_retry_that_needs_a_new_worker_starts_it_on_the_loop() -> None:
    # The backoff's task re-queues the retry while the one worker is busy and the lazy
    # pool is below its size: it starts a worker task, on the loop.
    gate = Gate()
    failed = anyio.Event()

    async def flaky() -> str:
        if not failed.is_set():
            failed.set()
            raise Boom
        return "again"

    async with lazy_pool(2, retry=wp.Retry(attempts=2, backoff=0.1)) as pool:
        job = await pool.submit(flaky)
        with anyio.fail_after(WAIT):
            await failed.wait()
        blocker = await pool.submit(gate.task, "held")  # the one worker takes it
        await gate.wait_entered(1)
        assert pool.statistics().workers == 1
        with anyio.fail_after(WAIT):
            assert await job == "again"
        assert pool.statistics().workers == 2
        gate.opened.set()
        with anyio.fail_after(WAIT):
            assert await blocker == "held"
