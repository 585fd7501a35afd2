"""An async stage: coroutines on a ``wp.AsyncPool``, on the run's one event-loop thread.

::

    input channel ──aget_many──▶ dispatcher task ── pool.submit(fn, item) ──▶ AsyncPool
                                   │ at most 2 x workers items in flight     │ done callback
                                   ▼ (slots)                                  ▼
    output channel ◀──aput_many── emitter task ◀── in input order, or as they finish

Every async stage of a run, and an async source, is a task of one ``LoopThread``: one
thread running ``anyio.run`` (asyncio), started once per run and gone when the last of
them ends. The channels wake those tasks from other threads through the loop's
thread-safe callback, and directly from the loop's own thread. Stopping the run cancels
each stage's cancel scope from outside, which cancels every task its pool runs.
"""

from __future__ import annotations

import threading
import time
from collections import deque
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any

import anyio

from .._backends.aio import NO_LOT, Lot, new_lot
from .._core.metrics import read_statistics
from .._core.options import item_cost
from .._core.stats import PoolStatistics
from .._sync.memory_budget import cost_bound
from ._channel import Aborted, Channel, LoopScope, Slots, aget_many, aput_many
from ._spec import StageSpec, worker_function
from ._stages import RunContext, StageRuntime

if TYPE_CHECKING:
    from .._pools.async_pool import AsyncPool

__all__ = ["AsyncStage", "LoopThread", "leaf"]


class LoopThread:
    """The one event-loop thread of a pipeline run. Its jobs (coroutine functions)
    are added before ``start()`` and run as tasks of one task group; the thread ends
    when the last one does. A job's error (other than ``Aborted``) fails the run."""

    def __init__(self, fail: Callable[[BaseException], None]) -> None:
        self._fail = fail
        self._jobs: list[tuple[Callable[[], Awaitable[None]], str]] = []
        self.thread = threading.Thread(target=self._main, name="pipeline-loop")

    def add(self, job: Callable[[], Awaitable[None]], name: str) -> None:
        """Run *job* in the loop once it starts."""
        self._jobs.append((job, name))

    def start(self) -> None:
        """Start the thread, if there is a job to run."""
        if self._jobs:
            self.thread.start()

    def join(self) -> None:
        """Wait for the thread (and every task of its loop) to be gone."""
        if self.thread.ident is not None:
            self.thread.join()

    def _main(self) -> None:
        try:
            anyio.run(self._serve)
        except BaseException as exc:  # the loop itself failed
            self._report(exc)

    async def _serve(self) -> None:
        async with anyio.create_task_group() as tg:
            for job, name in self._jobs:
                tg.start_soon(self._guard, job, name=name)

    async def _guard(self, job: Callable[[], Awaitable[None]]) -> None:
        try:
            await job()
        except BaseException as exc:  # the job's error, whatever it is: the run's
            self._report(exc)

    def _report(self, error: BaseException) -> None:
        error = leaf(error)
        if not isinstance(error, Aborted):
            self._fail(error)


class _Pending:
    __slots__ = ("env", "future", "seq")

    def __init__(self, seq: int, env: Any, future: Any) -> None:
        self.seq = seq
        self.env = env
        self.future = future


class AsyncStage(StageRuntime):
    """A stage of ``kind="async"``. See the module docstring."""

    kind = "async"

    def __init__(self, run: RunContext, spec: StageSpec, source: Channel,
                 sink: Channel, loop: LoopThread) -> None:
        super().__init__(run, spec, source, sink)
        self._scope = LoopScope()  # the stage's, cancelled from any thread
        self._done: deque[_Pending] = deque()
        self._ready: Lot = NO_LOT  # where the emitter waits for a finished item
        self._expected: int | None = None
        self.running = 0
        self._pool: AsyncPool | None = None  # while the stage runs
        loop.add(self._serve, f"{spec.name}-stage")

    async def _serve(self) -> None:
        with self._scope.open():
            await self._work()

    async def _work(self) -> None:
        from .._pools.async_pool import AsyncPool

        spec = self.spec
        limit = Slots(2 * spec.workers)
        self._ready = new_lot()
        # A budget shared with threads: its tokens are waited for in a worker thread,
        # so that the loop goes on (the pool's LoopBudget).
        pool = self._pool = AsyncPool(spec.pool_workers, timeout=spec.timeout, retry=spec.retry,
                                      rate=spec.rate, name=f"pipeline-{spec.name}",
                                      budget=spec.budget)
        async with pool, anyio.create_task_group() as tg:
            tg.start_soon(self._dispatch, pool, limit)
            await self._emit(limit)

    def _timed(self) -> Any:
        fn = worker_function(self.spec)
        counters = self.counters
        perf = time.perf_counter

        async def timed(item: Any) -> Any:
            self.running += 1
            started = perf()
            try:
                return await fn(item)
            finally:
                seconds = perf() - started
                counters.busy_seconds += seconds
                counters.sample(seconds)
                self.running -= 1

        return timed

    async def _dispatch(self, pool: Any, limit: Slots) -> None:
        fn = self._timed()
        tagged = self.book is not None
        counters = self.counters
        budget, cost = self.spec.budget, self.spec.cost
        bound = cost_bound(budget)  # what cost(item) may not exceed
        seq = 0
        try:
            while True:
                envs = await aget_many(self.input, limit.free() or 1)
                if not envs:
                    return
                counters.items_in += len(envs)
                for env in envs:
                    await limit.aacquire()
                    item = env[0] if tagged else env
                    if budget is None:
                        future = await pool.submit(fn, item)
                    else:  # the item holds its cost from now until it ends
                        future = await pool.schedule(fn, (item,),
                                                     cost=item_cost(cost, item, bound))
                    pending = _Pending(seq, env, future)
                    seq += 1
                    future.add_done_callback(lambda _, p=pending: self._finished(p))
        finally:
            self._expected = seq
            self._wake()

    def _finished(self, pending: _Pending) -> None:
        self._done.append(pending)
        self._wake()

    def _wake(self) -> None:
        self._ready.unpark()

    async def _emit(self, limit: Slots) -> None:
        done, ordered = self._done, self.spec.ordered
        handled = 0
        held: dict[int, _Pending] = {}
        while self._expected is None or handled < self._expected:
            if not done:
                await self._ready.park()  # all on the loop's thread: no wake-up is lost
                continue
            pending = done.popleft()
            if not ordered:
                if not await self._handle(pending, limit):
                    return
                handled += 1
                continue
            held[pending.seq] = pending
            while handled in held:
                if not await self._handle(held.pop(handled), limit):
                    return
                handled += 1
        self.output.close()

    async def _handle(self, pending: _Pending, limit: Slots) -> bool:
        """Pass on the output of an item that ended; False once the stage stopped at
        an item that failed under ``on_error="raise"``."""
        if self.halted:
            return False
        future, env = pending.future, pending.env
        pending.future = pending.env = None  # no cycle through the future's callback
        try:
            value, errors = future.result(), None
        except BaseException as exc:
            value, errors = None, {0: exc}
        out = self.settle([env], [value], errors)
        if out:
            self.counters.items_out += len(out)
            await aput_many(self.output, out)
        if self.raising is not None:
            self.stop_at_failure()
            return False
        limit.release()
        return True

    def cancel(self) -> None:
        self._scope.cancel()

    def busy(self) -> int:
        return self.running

    def statistics(self) -> PoolStatistics | None:
        # Read from another thread than the loop's: read_statistics reads again if
        # it met the loop changing the pool's queue.
        pool = self._pool
        return None if pool is None else read_statistics(pool)


def leaf(error: BaseException) -> BaseException:
    """The exception to report from what a task group raised: the first leaf that is
    not the pipeline's own ``Aborted``."""
    while isinstance(error, BaseExceptionGroup):
        inner = [e for e in error.exceptions if not isinstance(e, Aborted)]
        error = (inner or list(error.exceptions))[0]
    return error
