"""How ``AsyncPool`` runs what is not a plain async task, and how tasks end.

A plain async task (or one quick ``map`` item) runs inline in the engine's worker loop.
Everything else comes here: a chunk of quick map items (``run_chunk``), and a task
with a policy (``run_one``), which runs through ``call_with_policies``::

    rate limit: sleep until its slot ─▶ timeout: a cancel scope with a deadline
        ─▶ await fn(...)  or, for a sync callable, a worker thread (bounded by the pool)

A failed task is retried (``failed``) after its backoff, waiting in the ``RetryTimer``,
off the workers; an interrupted one is counted and ended (``interrupted``).

What a task raises, ``BaseException`` included (``KeyboardInterrupt``, ``SystemExit``),
fails that task alone. The one exception a worker lets through is a cancellation of its
own by the event loop (``is_cancellation``): the task's, the pool's, or one around the
pool.
"""

from __future__ import annotations

import heapq
import itertools
import math
import time
from collections.abc import Callable
from typing import Any, Final, Protocol

import anyio

from .._backends.aio import Lot
from .._core.context import TaskContext
from .._core.exceptions import Cancelled, TaskTimeout
from .._core.ratelimit import TokenBucket
from .._core.stats import StatsRecorder
from .async_task import (
    CANCELLED,
    ERROR,
    QUEUED,
    RUNNING,
    SYNC,
    VALUE,
    AsyncFuture,
    Chunk,
    Failure,
    Job,
    Spec,
)
from .async_worker import StuckThreads, ThreadCall, Worker, run_in_thread

__all__ = ["PolicyHost", "RetryTimer", "call_with_policies", "failed", "interrupted",
           "is_cancellation", "run_chunk", "run_one"]

_monotonic = time.monotonic
_NO_KWARGS: Final[dict[str, Any]] = {}


class PolicyHost(Protocol):
    """What the policies use of the engine whose workers call them (``AsyncEngine``):
    named as a contract, since the engine is built on this module and not beside it."""

    stats: StatsRecorder
    stopping: bool  # no task may start any more
    unfinished: list[AsyncFuture[Any]]  # what a shutdown cancelled or gave up on
    retrying: RetryTimer
    bucket: TokenBucket | None  # the pool's rate limit
    limiter: anyio.CapacityLimiter | None  # threads of sync tasks
    on_asyncio: bool  # the library the pool runs on: asyncio, else trio
    stuck: StuckThreads

    def requeue(self, job: Job) -> None:
        """Queue a retried task again."""


def is_cancellation(exc: BaseException) -> bool:
    """Whether *exc*, caught by a worker, is the event loop cancelling it (a scope
    around it was cancelled) rather than something its task raised: the one exception
    that does not end up in the task's future.

    On asyncio a task may raise ``CancelledError`` itself, untouched by any scope; that
    one is the task's own error, as any other."""
    return (not isinstance(exc, Exception)
            and isinstance(exc, anyio.get_cancelled_exc_class())
            and anyio.current_effective_deadline() == -math.inf)


def interrupted(engine: PolicyHost, w: Worker, job: Job, done: int = 0) -> None:
    """*job* was interrupted by a cancellation while running."""
    w.job = None
    if type(job) is Chunk:
        engine.stats.cancelled += job.count - done
        return
    engine.stats.cancelled += 1
    if engine.stopping:
        job._cancelled("cancelled by shutdown while running")
        engine.unfinished.append(job)
    else:
        job._cancelled(w.reason or "cancelled while running")


async def run_chunk(engine: PolicyHost, w: Worker, chunk: Chunk) -> None:
    """Run a map chunk of several quick items, or one item through the policies."""
    run = chunk.run
    if not run.spec.fast:  # one item: the policy path
        started = _monotonic()
        await run_one(engine, w, chunk)
        ended = _monotonic()
        engine.stats.sample(started - chunk._t0, ended - started, ended, 1)
        return
    fn = run.fn
    star = run.star
    results: list[Any] = []
    append = results.append
    errors = 0
    started = _monotonic()
    try:
        for item in chunk.items:
            if run.stopped:
                break
            try:
                append(await (fn(*item) if star else fn(item)))
            except BaseException as exc:
                if is_cancellation(exc):
                    raise
                append(Failure(exc))
                errors += 1
    except BaseException:
        interrupted(engine, w, chunk, len(results))
        engine.stats.completed += len(results) - errors
        engine.stats.failed += errors
        run.deliver(chunk, results, _monotonic() - started, errors)
        raise
    ended = _monotonic()
    stats = engine.stats
    stats.completed += len(results) - errors
    stats.failed += errors
    stats.cancelled += chunk.count - len(results)
    stats.sample(started - chunk._t0, ended - started, ended, chunk.count)
    run.deliver(chunk, results, ended - started, errors)


async def run_one(engine: PolicyHost, w: Worker, job: Job) -> None:
    """One task (or one-item chunk) through the policies: rate, timeout, thread."""
    if type(job) is Chunk:
        run = job.run
        fn, kwargs = run.fn, _NO_KWARGS
        args = job.items[0] if run.star else (job.items[0],)
        if run.stopped:
            engine.stats.cancelled += 1
            run.deliver(job, [], 0.0)
            return
    else:
        fn, args, kwargs = job._fn, job._args, job._kwargs
        job._state = RUNNING
    try:
        value = await call_with_policies(engine, w, fn, args, kwargs, job._spec, job._attempt)
    except BaseException as exc:
        if not is_cancellation(exc):
            failed(engine, job, exc)
            return
        interrupted(engine, w, job)
        if type(job) is Chunk:
            job.run.deliver(job, [], 0.0)
        raise
    else:
        engine.stats.completed += 1
        if type(job) is Chunk:
            job.run.deliver(job, [value], 0.0)
        else:
            job._finish(VALUE, value)


def failed(engine: PolicyHost, job: Job, exc: BaseException) -> None:
    """*job* raised *exc*: retry it after its backoff, or end it."""
    policy = job._spec.retry
    attempt = job._attempt
    if policy is not None and not engine.stopping and policy.should_retry(exc, attempt):
        engine.stats.retried += 1
        job._attempt = attempt + 1
        if type(job) is not Chunk:
            job._state = QUEUED
        delay = policy.delay(attempt)
        if delay > 0:
            engine.retrying.add(job, delay)
        else:
            engine.requeue(job)
        return
    stats = engine.stats
    if isinstance(exc, TaskTimeout):
        stats.timed_out += 1
    elif isinstance(exc, Cancelled):
        stats.cancelled += 1
    else:
        stats.failed += 1
    if type(job) is Chunk:
        job.run.deliver(job, [Failure(exc)], 0.0, 1)
    elif isinstance(exc, Cancelled):
        job._finish(CANCELLED, exc)
        if engine.stopping:  # it stopped when the shutdown asked it to
            engine.unfinished.append(job)
    else:
        job._finish(ERROR, exc)


async def call_with_policies(engine: PolicyHost, w: Worker, fn: Callable[..., Any],
                             args: tuple[Any, ...], kwargs: dict[str, Any], spec: Spec,
                             attempt: int) -> Any:
    """Run one call on worker *w* under the pool's rate limit and *spec*'s timeout.

    Raises:
        TaskTimeout: it ran past its timeout.
        BaseException: whatever the call raised.
    """
    bucket = engine.bucket
    if bucket is not None:
        delay = bucket.reserve()
        if delay > 0:
            await anyio.sleep(delay)
    timeout = spec.timeout
    slot = w.slot
    ctx = w.ctx
    if timeout is not None or attempt > 1:
        deadline = None if timeout is None else time.monotonic() + timeout
        ctx = slot.ctx = TaskContext(slot, attempt, deadline)
    try:
        if spec.kind == SYNC:
            return await _call_sync(engine, w, fn, args, kwargs, ctx, timeout)
        if timeout is None:
            return await fn(*args, **kwargs)
        with anyio.CancelScope(deadline=anyio.current_time() + timeout):
            return await fn(*args, **kwargs)
        raise TaskTimeout(f"task timed out after {timeout:g} s")
    finally:
        slot.ctx = w.ctx


async def _call_sync(engine: PolicyHost, w: Worker, fn: Callable[..., Any],
                     args: tuple[Any, ...], kwargs: dict[str, Any], ctx: TaskContext,
                     timeout: float | None) -> Any:
    """Run a sync callable in a worker thread, which nothing can interrupt.

    A cancellation (``AsyncFuture.cancel()``, ``aclose(cancel=True)``) cancels the
    task's context, which code that calls ``wp.current().checkpoint()`` or ``sleep()``
    sees, and the worker waits for the thread. At the task's timeout, or when a
    draining ``aclose`` runs out of time, the pool gives up on the thread instead, as
    ``ThreadPool`` does: the context is cancelled, the task fails at once (with
    ``TaskTimeout``, or ``Cancelled``) and the worker goes on, while the thread,
    counted as stuck, runs until the call returns.
    """
    call = ThreadCall(engine.stuck, fn, args, kwargs, ctx)
    deadline = math.inf if timeout is None else anyio.current_time() + timeout
    # The shield keeps cancellations off the thread (they reach it through its
    # context); only the scope inside it gives up on the thread: at the deadline, or
    # when cancelled by cancel_by_shutdown().
    with anyio.CancelScope(shield=True), anyio.CancelScope(deadline=deadline) as scope:
        w.call = call
        call.scope = scope
        try:
            return await run_in_thread(call.run, engine.limiter, engine.on_asyncio)
        finally:
            w.call = None
    ctx.cancel()
    call.give_up()
    if call.by_shutdown:
        raise Cancelled("cancelled by shutdown while running")
    raise TaskTimeout(f"task timed out after {timeout:g} s")


class RetryTimer:
    """Tasks waiting out their retry backoff, holding no worker. One timer task, started
    in the pool's task group on first use, puts each back in the queue when it is due;
    it ends when none is left."""

    def __init__(self, requeue: Callable[[Job], None], name: str) -> None:
        self.due: dict[Job, float] = {}  # job -> when it runs again
        self._requeue = requeue
        self._name = name
        self._heap: list[tuple[float, int, Job]] = []
        self._ids = itertools.count()
        self._running = False
        self._scope: anyio.CancelScope | None = None
        self._tg: Any = None
        self._lot: Lot | None = None
        self.on_idle: Callable[[], None] = _nothing

    def bind(self, tg: Any, lot: Lot) -> None:
        """Start timer tasks in *tg*; wait in *lot* (made inside the event loop)."""
        self._tg = tg
        self._lot = lot

    def __len__(self) -> int:
        return len(self.due)

    def add(self, job: Job, delay: float) -> None:
        """Re-queue *job* after *delay* seconds."""
        due = _monotonic() + delay
        self.due[job] = due
        heapq.heappush(self._heap, (due, next(self._ids), job))
        if not self._running:
            self._running = True
            self._tg.start_soon(self._run, name=f"{self._name}_retry")
        elif self._heap[0][2] is job and self._lot is not None:
            self._lot.unpark()  # due before what the timer waits for

    def discard(self, job: Job) -> bool:
        """Forget *job* (cancelled); False if it was not waiting."""
        return self.due.pop(job, None) is not None

    def clear(self) -> list[Job]:
        """Forget every waiting job and stop the timer; return the jobs."""
        jobs = list(self.due)
        self.due.clear()
        self._heap.clear()
        if self._scope is not None:
            self._scope.cancel()
        return jobs

    async def _run(self) -> None:
        heap = self._heap
        assert self._lot is not None
        with anyio.CancelScope() as scope:
            self._scope = scope
            while heap:
                due, _, job = heap[0]
                if self.due.get(job) != due:  # cancelled meanwhile
                    heapq.heappop(heap)
                    continue
                wait = due - _monotonic()
                if wait > 0:
                    with anyio.move_on_after(wait):
                        await self._lot.park()
                    continue
                heapq.heappop(heap)
                del self.due[job]
                self._requeue(job)
        self._running = False
        self._scope = None
        self.on_idle()


def _nothing() -> None:
    pass
