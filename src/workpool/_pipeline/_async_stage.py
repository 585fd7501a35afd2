"""An async stage: coroutines on a ``wp.AsyncPool``, in an event loop of its own.

::

    input channel ──aget_many──▶ dispatcher task ── pool.submit(fn, item) ──▶ AsyncPool
                                   │ at most 2 x workers items in flight     │ done callback
                                   ▼                                          ▼
    output channel ◀──aput_many── emitter task ◀── in input order, or as they finish

The stage's thread runs ``anyio.run`` (asyncio); the channels wake its tasks from other
threads through the loop's thread-safe callback. Stopping the run cancels the stage's
cancel scope from outside, which cancels every task the pool runs.
"""

from __future__ import annotations

import time
from collections import deque
from typing import Any

import anyio

from ._channel import Aborted, Channel, LoopScope, aget_many, aput_many
from ._spec import StageSpec, worker_function
from ._stages import RunContext, StageRuntime

__all__ = ["AsyncStage", "leaf"]


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
                 sink: Channel) -> None:
        super().__init__(run, spec, source, sink)
        self._scope = LoopScope()  # the stage's, cancelled from any thread
        self._done: deque[_Pending] = deque()
        self._ready: anyio.Event | None = None
        self._expected: int | None = None
        self.running = 0
        self.thread(self._main, "loop")

    def _main(self) -> None:
        try:
            anyio.run(self._serve)
        except BaseExceptionGroup as group:
            raise leaf(group) from None

    async def _serve(self) -> None:
        with self._scope.open():
            await self._work()

    async def _work(self) -> None:
        from .._pools.async_pool import AsyncPool

        spec = self.spec
        limit = anyio.Semaphore(2 * spec.workers)
        pool = AsyncPool(spec.workers, timeout=spec.timeout, retry=spec.retry,
                         rate=spec.rate, name=f"pipeline-{spec.name}")
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

    async def _dispatch(self, pool: Any, limit: anyio.Semaphore) -> None:
        fn = self._timed()
        tagged = self.book is not None
        counters = self.counters
        seq = 0
        try:
            while True:
                envs = await aget_many(self.input, limit.value or 1)
                if not envs:
                    return
                counters.items_in += len(envs)
                for env in envs:
                    await limit.acquire()
                    future = await pool.submit(fn, env[0] if tagged else env)
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
        if self._ready is not None:
            self._ready.set()

    async def _emit(self, limit: anyio.Semaphore) -> None:
        done, ordered = self._done, self.spec.ordered
        handled = 0
        held: dict[int, _Pending] = {}
        while self._expected is None or handled < self._expected:
            if not done:
                self._ready = anyio.Event()
                if not done and (self._expected is None or handled < self._expected):
                    await self._ready.wait()
                continue
            pending = done.popleft()
            if not ordered:
                await self._handle(pending, limit)
                handled += 1
                continue
            held[pending.seq] = pending
            while handled in held:
                await self._handle(held.pop(handled), limit)
                handled += 1
        self.output.close()

    async def _handle(self, pending: _Pending, limit: anyio.Semaphore) -> None:
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
        limit.release()

    def cancel(self) -> None:
        self._scope.cancel()

    def busy(self) -> int:
        return self.running


def leaf(error: BaseException) -> BaseException:
    """The exception to report from what a task group raised: the first leaf that is
    not the pipeline's own ``Aborted``."""
    while isinstance(error, BaseExceptionGroup):
        inner = [e for e in error.exceptions if not isinstance(e, Aborted)]
        error = (inner or list(error.exceptions))[0]
    return error
