"""The engine behind ``AsyncGroup``: a queue, worker tasks, and the group's end.

::

    go(fn) ── limit reached? park ── group cancelled? ──▶ a cancelled AsyncFuture
                   │                                      (fn never runs)
                   ▼
       queue ──▶ worker task (the group's anyio task group, up to `limit` of them)
                   │  await fn(*args) in the worker's own cancel scope; settle the
                   │  AsyncFuture; take the next job, or park as idle
                   ▼
       a failure: queued jobs cancelled, the task group's scope cancelled (running
       jobs and the block itself stop at their next await)
    __aexit__: wait for every job; idle workers leave; raise ExceptionGroup(failures)

A ``go`` creates no task: it queues an ``AsyncFuture`` and wakes an idle worker, or
starts one, only when no worker is already on its way; a worker that takes a job and
sees more queued sends the next one. So at most ``limit`` workers ever exist, tasks
that never suspend are run by one worker without a wake-up each, and tasks that do
suspend each get a worker within a few event-loop turns. Parking uses the native lots
of ``_backends/aio.py``. A worker runs its jobs in a cancel scope of its own, so that
one job can be cancelled (``AsyncFuture.cancel()``); it goes on in a fresh scope.

The engine is its futures' owner, as an ``AsyncPool``'s engine is: an
``AsyncFuture`` asks its owner only for ``new_lot()`` and ``cancel_job()``.
"""

from __future__ import annotations

import itertools
from collections import deque
from collections.abc import Callable
from concurrent.futures import CancelledError
from functools import partial
from typing import Any, Final

import anyio

from .._backends.aio import NO_LOT, Lot, lot_type, no_lot
from .._core.context import TaskContext, WorkerSlot, install_slot
from .._engine.async_task import (
    ASYNC,
    CANCELLED,
    ERROR,
    QUEUED,
    RUNNING,
    VALUE,
    AsyncFuture,
    Spec,
    new_future,
)
from .._pools.async_pool import AsyncPool
from .policy import CLOSED, EXITING, NEW, OPEN, verdict

__all__ = ["CLOSED", "EXITING", "NEW", "OPEN", "GroupEngine"]

MESSAGE: Final = "unhandled errors in an AsyncGroup"
NOT_STARTED: Final = "the group was cancelled before the task started"


class _Worker:
    __slots__ = ("ctx", "job", "restart", "scope", "slot")

    def __init__(self, worker_id: int) -> None:
        self.slot = WorkerSlot(worker_id)
        self.ctx = TaskContext(self.slot)  # shared by its jobs; replaced once cancelled
        self.job: AsyncFuture[Any] | None = None
        self.restart = False  # a job's cancellation used the worker's scope up
        self.scope: anyio.CancelScope | None = None


class GroupEngine:
    """The state and workers of one ``AsyncGroup``. See the module docstring."""

    def __init__(self, limit: int | None, pool: AsyncPool | None, timeout: float | None,
                 name: str) -> None:
        self.limit = limit
        self.pool = pool
        self.timeout = timeout
        self.name = name
        self.state = NEW
        self.active = 0  # jobs started by go() and not ended
        self.cancelled = False
        self.timed_out = False
        self.closing = False  # idle workers leave
        self.q: deque[tuple[AsyncFuture[Any], int]] = deque()  # (job, index in values)
        # Results, not futures, are kept for results(): holding every future alive
        # costs a third more per go() through the garbage collector.
        self.values: list[Any] = []
        self.on_pool: set[AsyncFuture[Any]] = set()
        self.workers: set[_Worker] = set()
        self.woken = 0  # workers woken or started and not yet at the queue
        self.errors: list[Exception] = []
        self.base_error: BaseException | None = None
        self.failed = 0
        self.cancelled_jobs = 0
        self.last_fn: Any = None
        self.ids = itertools.count()
        self.tg: Any = None
        self.timer_scope: anyio.CancelScope | None = None
        self.cancel_exc: type[BaseException] = BaseException
        self.new_lot: Callable[[], Lot] = no_lot
        self.idle = self.space = self.done = NO_LOT
        self.spec = Spec(self, ASYNC, None, None)

    # -- life cycle ---------------------------------------------------------------------

    async def open(self) -> None:
        if self.state != NEW:
            raise RuntimeError("an AsyncGroup can be entered only once")
        self.cancel_exc = anyio.get_cancelled_exc_class()
        self.new_lot = lot_type()
        self.idle, self.space, self.done = self.new_lot(), self.new_lot(), self.new_lot()
        self.tg = anyio.create_task_group()
        await self.tg.__aenter__()
        self.state = OPEN
        if self.timeout is not None:
            self.tg.start_soon(self.expire, name=f"{self.name}_timer")

    async def close(self, exc: BaseException | None) -> bool:
        """Leave the block: wait for every job, then raise what the block raises;
        True swallows *exc*, False lets it propagate as it is."""
        self.state = EXITING
        caught: BaseException | None = None  # a cancellation of the block
        if isinstance(exc, self.cancel_exc):
            caught = exc
        elif exc is not None:
            if not isinstance(exc, Exception) and self.base_error is None:
                self.base_error = exc
            self.cancel()
        if caught is None and not self.cancelled:
            try:
                await self.wait_jobs()
            except self.cancel_exc as cancelled:
                caught = cancelled
        if caught is not None:
            self.stop_jobs()  # whichever scope was cancelled, queued jobs never run
        if self.pool is not None and self.active:
            with anyio.CancelScope(shield=True):  # its jobs are not in our task group
                await self.wait_jobs()
        propagate = await self.leave_task_group(caught)
        self.state = CLOSED
        return self.verdict(exc, caught, propagate)

    async def wait_jobs(self) -> None:
        while self.active:
            await self.done.park()

    async def leave_task_group(self, caught: BaseException | None) -> BaseException | None:
        """Let the workers go and exit the task group; return the cancellation to
        propagate (one from outside the group), if any."""
        self.closing = True
        self.idle.unpark_all()
        if self.timer_scope is not None:
            self.timer_scope.cancel()
        try:
            if caught is None:
                await self.tg.__aexit__(None, None, None)
                return None
            if await self.tg.__aexit__(type(caught), caught, caught.__traceback__):
                return None
            return caught
        except self.cancel_exc as outer:
            return outer

    def verdict(self, exc: BaseException | None, caught: BaseException | None,
                propagate: BaseException | None) -> bool:
        body_error = exc if isinstance(exc, Exception) and caught is None else None
        if verdict(MESSAGE, self.errors, self.base_error, self.timed_out, exc, body_error):
            return False
        if propagate is None:
            return exc is not None  # the group's own cancellation: swallowed
        if propagate is exc:
            return False
        raise propagate

    async def expire(self) -> None:
        with anyio.CancelScope() as scope:
            self.timer_scope = scope
            if self.closing:  # the group ended before this task started
                return
            assert self.timeout is not None
            await anyio.sleep(self.timeout)
            if not self.cancelled:
                self.errors.append(TimeoutError(f"group timed out after {self.timeout:g} s"))
                self.timed_out = True
                self.cancel()

    # -- intake ---------------------------------------------------------------------------

    def check_state(self) -> None:
        if self.state == NEW:
            raise RuntimeError("AsyncGroup.go() called before the group was entered: use "
                               "'async with wp.AsyncGroup() as g:'")
        if self.state == CLOSED or (self.state == EXITING and not self.active):
            raise RuntimeError("AsyncGroup.go() called after the group's block exited: a "
                               "group takes no new tasks once all of its tasks ended")

    async def wait_slot(self, limit: int) -> None:
        while self.active >= limit and not self.cancelled:
            await self.space.park()

    def refused(self, fn: Callable[..., Any], args: tuple[Any, ...],
                kwargs: dict[str, Any]) -> AsyncFuture[Any]:
        """The handle ``go`` returns once the group is cancelled: cancelled already."""
        job = new_future(fn, args, kwargs, self.spec, 0.0)
        job._cancelled(NOT_STARTED)
        self.cancelled_jobs += 1
        return job

    def queue(self, fn: Callable[..., Any], args: tuple[Any, ...],
              kwargs: dict[str, Any]) -> AsyncFuture[Any]:
        """Queue a job for the workers (``AsyncGroup.go`` inlines this)."""
        job = new_future(fn, args, kwargs, self.spec, 0.0)
        values = self.values
        self.q.append((job, len(values)))
        values.append(None)
        self.active += 1
        if not self.woken:
            self.dispatch()
        return job

    def dispatch(self) -> None:
        """Send a worker to the queue: wake an idle one, or start one."""
        self.woken += 1
        if not self.idle.unpark():
            worker = _Worker(next(self.ids))
            self.workers.add(worker)
            self.tg.start_soon(self.work, worker, name=f"{self.name}_{worker.slot.worker_id}")

    async def submit(self, fn: Callable[..., Any], args: tuple[Any, ...],
                     kwargs: dict[str, Any]) -> AsyncFuture[Any]:
        """Run a job on the group's pool instead of its own workers."""
        assert self.pool is not None
        self.active += 1
        try:
            job: AsyncFuture[Any] = await self.pool.submit(fn, *args, **kwargs)
        except BaseException:
            self.release()
            raise
        return self.track(job)

    def submit_nowait(self, fn: Callable[..., Any], args: tuple[Any, ...],
                      kwargs: dict[str, Any]) -> AsyncFuture[Any]:
        assert self.pool is not None
        self.active += 1
        try:
            job: AsyncFuture[Any] = self.pool.submit_nowait(fn, *args, **kwargs)
        except BaseException:
            self.release()
            raise
        return self.track(job)

    def track(self, job: AsyncFuture[Any]) -> AsyncFuture[Any]:
        self.on_pool.add(job)
        job.add_done_callback(partial(self.pool_job_done, len(self.values)))
        self.values.append(None)
        if self.cancelled:
            job.cancel()
        return job

    # -- workers ------------------------------------------------------------------------

    async def work(self, w: _Worker) -> None:
        install_slot(w.slot)
        w.slot.ctx = w.ctx
        if self.woken:
            self.woken -= 1
        try:
            while not await self.serve(w):
                w.restart = False
                w.ctx = w.slot.ctx = TaskContext(w.slot)
        finally:
            w.job = None
            self.workers.discard(w)

    async def serve(self, w: _Worker) -> bool:
        """Run jobs in a fresh cancel scope: True when the worker leaves, False when
        the cancellation of one job used the scope up."""
        with anyio.CancelScope() as scope:
            w.scope = scope
            return await self.loop(w)
        return False

    async def loop(self, w: _Worker) -> bool:
        # The hot path: a job costs a pop, one await and its settling, inline.
        q = self.q
        values = self.values
        idle = self.idle
        space = self.space
        cancel_exc = self.cancel_exc
        while True:
            if not q:
                if self.closing:
                    return True
                await idle.park()
                if self.woken:
                    self.woken -= 1
                continue
            job, index = q.popleft()
            if q and not self.woken:
                self.dispatch()
            w.job = job
            job._state = RUNNING
            try:
                value = await job._fn(*job._args, **job._kwargs)
            except cancel_exc:
                w.job = None
                job._cancelled("cancelled while running" if w.restart else
                               "cancelled with its group while running")
                self.cancelled_jobs += 1
                self.release()
                raise
            except (Exception, KeyboardInterrupt, SystemExit) as exc:
                w.job = None
                self.job_raised(job, exc)
            else:
                w.job = None
                values[index] = value
                job._finish(VALUE, value)
                self.active -= 1
                if space.waiters:
                    space.unpark()
                if not self.active and self.state == EXITING:
                    self.done.unpark()
            if w.restart:
                return False

    def release(self) -> None:
        """A job left the group."""
        self.active -= 1
        if self.space.waiters:
            self.space.unpark()
        if not self.active and self.state == EXITING:
            self.done.unpark()

    def job_raised(self, job: AsyncFuture[Any], exc: BaseException) -> None:
        if isinstance(exc, CancelledError):  # wp.Cancelled: a cancellation, not a failure
            job._finish(CANCELLED, exc)
            self.cancelled_jobs += 1
            self.release()
            return
        job._finish(ERROR, exc)
        self.failed += 1
        if isinstance(exc, Exception):
            self.errors.append(exc)
        elif self.base_error is None:
            self.base_error = exc
        self.release()
        self.cancel()

    def pool_job_done(self, index: int, job: AsyncFuture[Any]) -> None:
        """The done callback of a job run on the group's pool."""
        self.on_pool.discard(job)
        if job.cancelled():
            self.cancelled_jobs += 1
            self.release()
        elif (error := job.exception()) is not None:
            self.failed += 1
            if isinstance(error, Exception):
                self.errors.append(error)
            elif self.base_error is None:
                self.base_error = error
            self.release()
            self.cancel()
        else:
            self.values[index] = job.result()
            self.release()

    # -- what AsyncFuture asks of its owner (new_lot is an attribute) ----------------------

    def cancel_job(self, job: AsyncFuture[Any]) -> None:
        """``AsyncFuture.cancel()`` of a job that has not finished."""
        if job._state == QUEUED:
            for entry in self.q:
                if entry[0] is job:
                    self.q.remove(entry)
                    job._cancelled("cancelled before it started")
                    self.cancelled_jobs += 1
                    self.release()
                    return
        elif job._state == RUNNING:
            for w in self.workers:
                if w.job is job:
                    w.restart = True
                    w.ctx.cancel()
                    if w.scope is not None:
                        w.scope.cancel()
                    return

    # -- cancellation -------------------------------------------------------------------

    def cancel(self) -> None:
        """Cancel every job and the block itself (the task group's scope)."""
        if self.cancelled:
            return
        self.stop_jobs()
        for w in self.workers:
            if w.job is not None:
                w.ctx.cancel()
        if self.tg is not None:
            self.tg.cancel_scope.cancel()

    def stop_jobs(self) -> None:
        """Refuse new jobs, cancel the queued ones and those on the pool."""
        self.cancelled = True
        queued = [job for job, _ in self.q]
        self.q.clear()
        for job in queued:
            job._cancelled(NOT_STARTED)
            self.cancelled_jobs += 1
            self.release()
        for job in list(self.on_pool):
            job.cancel()
        self.space.unpark_all()
