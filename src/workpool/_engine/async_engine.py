"""The scheduling engine behind ``AsyncPool``: one queue, worker tasks, the policies.

::

    submit/schedule ─▶ AsyncFuture ──┐                     ┌─▶ fast: await fn(*args)
    map ─────────────▶ Chunk ────────┼─▶ deque + heap ─▶ worker task
    retry timer, after the backoff ──┘    (bounded)        └─▶ policies: rate limit,
                                              ▲                 timeout, thread, retry
                         idle workers park ───┘ a push wakes one

Everything runs on the event loop's thread, so nothing takes a lock. A plain async task
costs a deque push, a pop and one ``await``: no task, future or cancel scope is created
for it. Wake-ups are the expensive part (a future and an event-loop turn each), so a
``submit`` wakes a worker only when none is already on its way, and a woken worker that
finds more work wakes two more: tasks that never suspend are drained by one worker at
a cost of a few wake-ups per batch, tasks that do suspend spread over every worker in
a handful of event-loop turns. ``map`` wakes one worker per queued chunk at once: its
chunks batch quick items, so that is few wake-ups for those and every worker for slow
ones. (``_bench/bench_async.py``: ``tiny_tasks`` and ``sleep_io`` measure both ends.)

A worker runs its loop inside a cancel scope of its own. Cancelling a running task
cancels that scope, and the worker goes on in a fresh one, so tasks that are never
cancelled never pay for a scope.

Two features serve front ends built over a pool (``AsyncGroup``): a *lazy* pool starts
no worker up front but one more whenever a task is queued while none is idle or on its
way, up to ``size`` (as the sync engine does), so a pool sized for the most tasks that
may ever run at once costs only the workers it used; and a spec's ``on_end`` hook
(``async_task.Spec``) counts each task's end where the engine settles it.
``cancel_owned`` cancels every task of one spec, queued or running.
"""

from __future__ import annotations

import heapq
import inspect
import itertools
import math
import time
from collections import deque
from collections.abc import Callable
from contextlib import AsyncExitStack
from typing import Any, Final, TypeGuard

import anyio

from .._backends.aio import NO_LOT, AsyncioLot, Lot, lot_type, no_lot
from .._core.context import TaskContext, current, install_slot
from .._core.exceptions import PoolClosed
from .._core.ratelimit import RateLimit
from .._core.retry import Retry
from .._core.stats import PoolStatistics, StatsRecorder
from . import async_task as task
from .async_policies import RetryTimer, failed, interrupted, is_cancellation, run_chunk, run_one
from .async_task import RUNNING, VALUE, AsyncFuture, Chunk, Job
from .async_worker import StuckThreads, Worker

__all__ = ["AsyncEngine"]

NEW: Final = 0
OPEN: Final = 1
CLOSING: Final = 2  # no intake; draining or cancelling
CLOSED: Final = 3
SHUTDOWN_MESSAGE: Final = "cannot schedule new futures after shutdown"
NOT_RUNNING: Final = "AsyncPool is not running: use 'async with AsyncPool(...)'"
_FAST: Final = 1e-4  # tasks quicker than this get their latency sampled 1 in 16
_monotonic = time.monotonic


class AsyncEngine:
    """Queue, workers, retry timer and statistics of one ``AsyncPool``."""

    def __init__(self, *, workers: int, queue_size: int, timeout: float | None,
                 retry: Retry | None, rate: RateLimit | None, name: str,
                 initializer: Callable[..., Any] | None, initargs: tuple[Any, ...],
                 lazy: bool = False) -> None:
        self.size = workers
        self.lazy = lazy  # start workers on demand, up to size
        self.capacity = queue_size
        self.timeout = timeout
        self.retry = retry
        self.bucket = None if rate is None else rate.bucket()
        self.name = name
        self.initializer = initializer
        self.initargs = initargs
        self.state = NEW
        self.stopping = False  # no task may start any more
        self.stats = StatsRecorder()
        self.defaults = {kind: task.Spec(self, kind, timeout, retry, rated=rate is not None)
                         for kind in (task.ASYNC, task.SYNC)}
        self.last_fn: Any = None  # the last callable submitted, and its spec: a loop
        self.last_spec = self.defaults[task.ASYNC]  # submitting one function checks it once
        self.q: deque[Job] = deque()  # priority 0, FIFO
        self.heap: list[tuple[int, int, Job]] = []  # other priorities: (-priority, seq)
        self.woken = 0  # workers unparked and not yet running: work is on its way
        self.workers: list[Worker] = []  # started ones, in order (all of them unless lazy)
        self.alive = 0
        self.retrying = RetryTimer(self.requeue, name)
        self.retrying.on_idle = self._maybe_drained
        self.maps: set[Any] = set()  # map runs not yet closed
        self.unfinished: list[AsyncFuture[Any]] = []
        self.ids = itertools.count()
        self.tick = 0
        self.sample_mask = 0  # sample the latency of 1 task in (mask + 1)
        self.tg: Any = None
        self.lifetime = AsyncExitStack()  # holds the task group from start() to exit()
        self.limiter: anyio.CapacityLimiter | None = None
        self.on_asyncio = False  # learnt at the start, with the lots' library
        self.stuck = StuckThreads()  # threads the pool gave up on, still running
        self.new_lot: Callable[[], Lot] = no_lot
        self.idle = self.space = self.drain_lot = self.exit_lot = NO_LOT

    # -- life cycle -----------------------------------------------------------------

    async def start(self) -> None:
        """Start the workers in a task group owned by the calling task."""
        self.new_lot = lot_type()
        self.on_asyncio = self.new_lot is AsyncioLot
        for attr in ("idle", "space", "drain_lot", "exit_lot"):
            setattr(self, attr, self.new_lot())
        # Sync tasks run in threads: one per busy worker, plus those given up on (at
        # a timeout, or by a shutdown out of time). The workers are the bound; a
        # limiter of the pool's size would shrink the pool by each stuck thread on
        # trio, which holds its token until the thread returns. (Without a limiter of
        # its own the pool would share anyio's default one: 40 threads in all.)
        self.limiter = anyio.CapacityLimiter(math.inf)
        self.tg = await self.lifetime.enter_async_context(anyio.create_task_group())
        self.retrying.bind(self.tg, self.new_lot())
        self.state = OPEN
        try:
            for _ in range(0 if self.lazy else self.size):
                w = Worker(len(self.workers))
                self.workers.append(w)
                self.alive += 1
                name = f"{self.name}_{w.slot.worker_id}"
                if self.initializer is None:
                    self.tg.start_soon(self._work, w, False, name=name)
                else:  # wait for each initializer: a failing one fails the pool's start
                    await self.tg.start(self._work, w, False, name=name)
        except BaseException:
            self.cancel_all()
            await self.lifetime.aclose()
            self.state = CLOSED
            raise

    async def close(self, *, cancel: bool, timeout: float | None) -> None:
        """Stop intake, then drain (until *timeout*) or cancel; wait for the workers."""
        if self.state in (NEW, CLOSED):
            self.state = CLOSED
            return
        if self.state == OPEN:
            self.state = CLOSING
            self.space.unpark_all()  # blocked submitters raise PoolClosed
            for run in list(self.maps):
                run.abandon()
        try:
            if not cancel:
                with anyio.move_on_after(timeout if timeout is not None else float("inf")):
                    while not self._quiet():
                        await self.drain_lot.park()
            # What still runs after a drain ran out of time: threads are given up on.
            self.cancel_all(give_up=not cancel)
            while self.alive:
                await self.exit_lot.park()
        except BaseException:
            self.cancel_all()
            raise
        self.state = CLOSED

    async def exit(self) -> None:
        """Leave the task group (from the task that started it), every worker gone."""
        await self.lifetime.aclose()
        self.state = CLOSED

    def cancel_all(self, give_up: bool = False) -> None:
        """Cancel what is queued or waiting to retry; interrupt what runs (and give up
        on the threads of sync tasks if *give_up*, else wait for them); stop."""
        self.stopping = True
        if self.state == OPEN:
            self.state = CLOSING
        for run in list(self.maps):
            run.abandon()
        jobs = list(self.q) + [entry[2] for entry in self.heap]
        self.q.clear()
        self.heap.clear()
        for job in jobs:
            self._cancel_queued(job, "cancelled by shutdown before it started")
        for job in self.retrying.clear():
            self._cancel_queued(job, "cancelled by shutdown while waiting to retry")
        for w in self.workers:
            if w.job is not None:
                self._interrupt(w, give_up)
        self.space.unpark_all()
        self.idle.unpark_all()

    def is_own_task(self) -> bool:
        """Whether the calling task is one this pool runs."""
        try:
            ctx = current()
        except RuntimeError:
            return False
        return any(w.slot.ctx is ctx for w in self.workers)

    def _quiet(self) -> bool:
        return (not self.q and not self.heap and not self.retrying
                and all(w.job is None for w in self.workers))

    def _maybe_drained(self) -> None:
        if self.drain_lot.waiters and self._quiet():
            self.drain_lot.unpark_all()

    # -- intake ---------------------------------------------------------------------

    def check_open(self) -> None:
        """Raise unless the pool takes work."""
        if self.state != OPEN:
            if self.state == NEW:
                raise RuntimeError(NOT_RUNNING)
            raise PoolClosed(SHUTDOWN_MESSAGE)

    def spec_for(self, fn: Any) -> task.Spec:
        """The default spec for *fn* (remembered for the next call with the same fn)."""
        spec = self.defaults[task.kind_of(fn)]
        self.last_fn = fn
        self.last_spec = spec
        return spec

    def stamp(self) -> float:
        """When a task was queued, for the latency sample; 0.0 if it is not sampled."""
        self.tick += 1
        return 0.0 if self.tick & self.sample_mask else _monotonic()

    def has_room(self) -> bool:
        """Whether the queue takes one more task (an idle worker takes it at once)."""
        return (len(self.q) + len(self.heap) - self.woken < self.capacity
                or bool(self.idle.waiters))

    async def wait_room(self) -> None:
        """Wait until the queue has room. Raises PoolClosed if the pool closes."""
        while True:
            self.check_open()
            if self.has_room():
                return
            await self.space.park()

    def push(self, job: Job) -> None:
        """Queue *job* and make sure a worker is on its way."""
        priority = job._spec.priority
        if priority:
            heapq.heappush(self.heap, (-priority, next(self.ids), job))
        else:
            self.q.append(job)
        if not self.woken:
            if self.idle.waiters:
                self.wake()
            elif len(self.workers) < self.size:
                self.grow()

    def wake(self) -> None:
        """Unpark one idle worker, if any."""
        if self.idle.unpark():
            self.woken += 1

    def grow(self) -> None:
        """Start one more worker (a lazy pool's, below its size): it is on its way to
        the queue, as a woken one is."""
        if self.stopping:
            return
        w = Worker(len(self.workers))
        self.workers.append(w)
        self.alive += 1
        self.woken += 1
        self.tg.start_soon(self._work, w, True, name=f"{self.name}_{w.slot.worker_id}")

    def wake_for_queue(self) -> None:
        """Unpark idle workers until one is on its way for each queued entry (a map
        chunk holds a batch of quick items, so this wakes few workers for them, and
        every worker at once for slow ones)."""
        waiters = self.idle.waiters
        while len(self.q) + len(self.heap) > self.woken:
            if waiters:
                self.wake()
            elif len(self.workers) < self.size and not self.stopping:
                self.grow()
            else:
                return

    def cancel_job(self, job: AsyncFuture[Any]) -> None:
        """``AsyncFuture.cancel()`` of a task that has not finished."""
        if job._state == task.QUEUED:
            if self._unqueue(job):
                self.stats.cancelled += 1
                job._cancelled("cancelled before it started")
            elif self.retrying.discard(job):
                self.stats.cancelled += 1
                job._cancelled("cancelled while waiting to retry")
                if self.state >= CLOSING:
                    self._maybe_drained()  # it may have been all a drain waited for
        elif job._state == RUNNING:
            for w in self.workers:
                if w.job is job:
                    self._interrupt(w)
                    return

    def cancel_chunks(self, run: task.ChunkOwner) -> int:
        """Remove *run*'s queued chunks and interrupt its running ones (those report
        their cancelled items themselves); return the items removed, which are never
        delivered."""
        removed = 0
        if any(type(job) is Chunk and job.run is run for job in self.q):
            keep = [job for job in self.q if not (type(job) is Chunk and job.run is run)]
            removed = sum(job.count for job in self.q
                          if type(job) is Chunk and job.run is run)
            self.q.clear()
            self.q.extend(keep)
        for job in [job for job in self.retrying.due if type(job) is Chunk and job.run is run]:
            self.retrying.discard(job)
            removed += job.count
        for w in self.workers:
            running = w.job
            if type(running) is Chunk and running.run is run:
                self._interrupt(w)
        self.stats.cancelled += removed
        while self.space.waiters and self.has_room():
            self.space.unpark()
        if self.state >= CLOSING:
            self._maybe_drained()
        return removed

    def cancel_owned(self, spec: task.Spec, not_started: str, running: str) -> None:
        """Cancel every task of *spec* (one owner's, as an ``AsyncGroup``'s): queued
        ones and those waiting to retry never start (cancelled with the message
        *not_started*), running ones are interrupted (cancelled with *running*)."""
        def owned(job: Job | None) -> TypeGuard[AsyncFuture[Any]]:
            return type(job) is AsyncFuture and job._spec is spec

        dropped: list[AsyncFuture[Any]] = [job for job in self.q if owned(job)]
        if dropped:
            keep = [job for job in self.q if not owned(job)]
            self.q.clear()
            self.q.extend(keep)
        if any(owned(entry[2]) for entry in self.heap):
            dropped += [entry[2] for entry in self.heap if owned(entry[2])]
            self.heap[:] = [entry for entry in self.heap if not owned(entry[2])]
            heapq.heapify(self.heap)
        for job in [job for job in self.retrying.due if owned(job)]:
            self.retrying.discard(job)
            dropped.append(job)
        for w in self.workers:
            if owned(w.job) and w.job._state == RUNNING:
                w.reason = running
                self._interrupt(w)
        self.stats.cancelled += len(dropped)
        for job in dropped:
            job._cancelled(not_started)
        while self.space.waiters and self.has_room():
            self.space.unpark()
        if self.state >= CLOSING:
            self._maybe_drained()

    def _unqueue(self, job: Job) -> bool:
        try:
            self.q.remove(job)
        except ValueError:
            for i, entry in enumerate(self.heap):
                if entry[2] is job:
                    self.heap[i] = self.heap[-1]
                    self.heap.pop()
                    heapq.heapify(self.heap)
                    break
            else:
                return False
        if self.space.waiters:
            self.space.unpark()
        return True

    def _cancel_queued(self, job: Job, message: str) -> None:
        if type(job) is Chunk:
            self.stats.cancelled += job.count
            job.run.deliver(job, [], 0.0)
        elif job._state < VALUE:
            self.stats.cancelled += 1
            job._cancelled(message)
            self.unfinished.append(job)

    def _interrupt(self, w: Worker, give_up: bool = False) -> None:
        ctx = w.slot.ctx
        if ctx is not None:
            ctx.cancel()  # what a task in a thread sees; async ones get the scope's
        w.restart = True
        if give_up and w.call is not None:
            w.call.cancel_by_shutdown()
        if w.scope is not None:
            w.scope.cancel()

    # -- workers ----------------------------------------------------------------------

    async def _work(self, w: Worker, grown: bool,
                    task_status: Any = anyio.TASK_STATUS_IGNORED) -> None:
        install_slot(w.slot)
        w.slot.ctx = w.ctx
        if grown and self.woken:  # grow() counted it as on its way
            self.woken -= 1
        try:
            if self.initializer is not None:
                await self._initialize(w)
                task_status.started()
            while True:
                # Tasks run in a cancel scope of this worker's: cancelling a running
                # task cancels it, and the worker goes on in a fresh one.
                with anyio.CancelScope() as scope:
                    w.scope = scope
                    if await self._loop(w):
                        return  # the pool stops
                w.restart = False
                w.reason = None
                w.ctx = w.slot.ctx = TaskContext(w.slot)
        finally:
            w.job = None
            self.alive -= 1
            if not self.alive:
                self.exit_lot.unpark_all()
            if self.state >= CLOSING:
                self._maybe_drained()

    async def _initialize(self, w: Worker) -> None:
        init = self.initializer
        assert init is not None
        state = init(*self.initargs)
        if inspect.isawaitable(state):
            state = await state
        w.slot.state = state

    async def _loop(self, w: Worker) -> bool:
        # The hot path: local names, and the plain async task and the success case
        # inlined, keep a tiny task near a hand-written asyncio.Queue worker's cost.
        q = self.q
        heap = self.heap
        idle = self.idle
        idle_waiters = idle.waiters
        space = self.space
        space_waiters = space.waiters
        stats = self.stats
        while True:
            if heap and (heap[0][0] < 0 or not q):
                job: Job = heapq.heappop(heap)[2]
            elif q:
                job = q.popleft()
            else:
                if self.stopping:
                    return True
                if self.state >= CLOSING:
                    self._maybe_drained()
                if space_waiters:  # an idle worker is room for a hand-off
                    space.unpark()
                await idle.park()
                if self.woken:
                    self.woken -= 1
                more = len(q) + len(heap) - self.woken - 1
                if more > 0 and idle_waiters:
                    self.wake()
                    if more > 1 and idle_waiters:
                        self.wake()
                continue
            if space_waiters:
                space.unpark()
            if q and not self.woken:
                if idle_waiters:
                    self.wake()
                elif len(self.workers) < self.size:
                    self.grow()
            w.job = job
            if type(job) is Chunk:
                run = job.run
                if job.count == 1 and run.spec.fast:
                    # One map item (slow items are never batched), inline as a plain
                    # task is: no coroutine per item, latency sampled 1 in 16.
                    item = job.items[0]
                    started = _monotonic()
                    try:
                        value = await (run.fn(*item) if run.star else run.fn(item))
                    except BaseException as exc:
                        if is_cancellation(exc):
                            interrupted(self, w, job)
                            run.deliver(job, [], 0.0)
                            raise
                        value = task.Failure(exc)
                    ended = _monotonic()
                    error = type(value) is task.Failure
                    if error:
                        stats.failed += 1
                    else:
                        stats.completed += 1
                    self.tick += 1
                    if not self.tick & 15:
                        stats.sample(started - job._t0, ended - started, ended, 16)
                    run.deliver(job, [value], ended - started, error)
                else:
                    await run_chunk(self, w, job)
                w.job = None
                if w.restart:
                    return False
                continue
            t0 = job._t0
            started = _monotonic() if t0 else 0.0
            spec = job._spec
            if spec.fast:
                job._state = RUNNING
                try:
                    value = await job._fn(*job._args, **job._kwargs)
                except BaseException as exc:  # the task's error, unless it is cancelled
                    if is_cancellation(exc):
                        interrupted(self, w, job)
                        raise
                    failed(self, job, exc)
                else:
                    job._state = VALUE
                    job._value = value
                    if job._notify is not None:
                        job._notify_all()
                    stats.completed += 1
                    on_end = spec.on_end
                    if on_end is not None:
                        on_end(job)
            else:
                await run_one(self, w, job)
            w.job = None
            if t0:
                self._sample(job, t0, started)
            if w.restart:
                return False

    def _sample(self, job: Job, t0: float, started: float) -> None:
        ended = _monotonic()
        self.stats.sample(started - t0, ended - started, ended, self.sample_mask + 1)
        self.sample_mask = 15 if ended - started < _FAST else 0

    def requeue(self, job: Job) -> None:
        """Queue a retried task again."""
        if job._t0:
            job._t0 = _monotonic()
        self.push(job)  # past the queue bound: the task was admitted already

    # -- statistics -------------------------------------------------------------------------

    def statistics(self) -> PoolStatistics:
        """A frozen snapshot (map items count one by one)."""
        running = sum(1 for w in self.workers if w.job is not None)
        queued = sum(job.count if type(job) is Chunk else 1 for job in self.q)
        queued += sum(job.count if type(job) is Chunk else 1 for _, _, job in self.heap)
        queued += sum(job.count if type(job) is Chunk else 1 for job in self.retrying.due)
        return self.stats.snapshot(queued=queued, running=running, workers=self.alive,
                                   busy=running, stuck=self.stuck.count)

