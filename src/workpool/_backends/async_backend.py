"""Running work as tasks of an event loop: the backend of ``AsyncPool`` (asyncio, or
trio, through anyio).

Owns ``AsyncBackend``, the ``Backend`` whose workers are tasks of the pool's task group,
and how one of them runs a task: inline for a plain coroutine function, through the
policies (rate limit, timeout, a worker thread for a sync callable) otherwise, or a
chunk of quick ``map`` items. The engine (``_engine/engine.py``) owns intake, queue,
counts, retries, shutdown and statistics, as for every pool. May import ``_core``,
``_engine`` and ``aio`` (the ``Lot``).

A worker task is the async twin of a worker thread (``_engine/threaded.py``)::

    spawn ── task in the pool's task group ── initializer ── loop:
        begin ── await the task ── end ──┬─ next task
                                         ├─ parked: wait on the worker's Lot (resume
                                         │  puts the task in its inbox and unparks it),
                                         │  then woke() while Engine.waking says so
                                         └─ leaving

What makes it cheap: the hand-off is lazy (``lazy_wake``: a wake-up costs a future and
an event-loop turn, so a burst of tiny tasks is drained by the workers running, and
tasks that suspend still spread over every worker); a plain async task is awaited
inline, with no task, future or cancel scope of its own; a worker runs its loop in one
cancel scope, replaced only once a task is interrupted (``interrupt``: the scope is
cancelled, the task ends ``TASK_STOPPED``, the worker goes on in a fresh one); deadlines
are cancel scopes with a deadline on the loop (``own_deadlines``), not timer calls.

Every call into the backend comes from the loop's thread, so nothing here takes a lock
or hops between threads: the engine's timed calls are the loop's too (deadlines are
cancel scopes, ``own_deadlines``; a retry's backoff is a task, ``call_later``), and
AsyncPool is driven from the loop alone.

A sync callable runs in a worker thread through a ``ThreadCall``, which the pool may
give up on (at the task's timeout, or a shutdown out of time) while the thread,
counted as stuck (``stray``), runs on until the call returns::

    PENDING ──the thread starts it──▶ RUNNING ──▶ RETURNED
       │                                 │
       └─────── the worker gives up ─────┴──▶ GIVEN_UP (never starts / counted stuck)

What a task raises, ``BaseException`` included, fails that task alone. The one
exception a worker lets through is a cancellation of its own by the event loop
(``is_cancellation``): its scope's (the task is stopped) or one around the pool.
"""

from __future__ import annotations

import contextvars
import inspect
import math
import os
import threading
import time
from collections.abc import Callable
from concurrent.futures import Future
from functools import partial
from queue import Empty, SimpleQueue
from typing import Any, Final

import anyio
import anyio.to_thread

from .._core.context import TaskContext, WorkerSlot, current, install_slot
from .._core.exceptions import Cancelled
from .._core.timer import TimerHandle
from .._engine.async_task import (
    QUEUED,
    RUNNING,
    SYNC,
    AsyncFuture,
    ChunkEnd,
    Failure,
    Spec,
    fn_name,
)
from .._engine.contract import TASK_FAILED, TASK_OK, TASK_STOPPED, Backend, Task, Worker
from .._engine.engine import settle
from .aio import NO_LOT, AsyncioLot, Lot, lot_type, no_lot

__all__ = ["DAEMON_THREADS", "AsyncBackend", "AsyncWorker", "DaemonThreads", "ThreadCall",
           "is_cancellation"]

_NO_KWARGS: Final[dict[str, Any]] = {}
_LEAVE: Final[Any] = object()  # what a worker's loop returns when the worker leaves
_NOT_STARTED: Final = "cancelled by shutdown before it started"


def is_cancellation(exc: BaseException) -> bool:
    """Whether *exc*, caught by a worker, is the event loop cancelling it (a scope
    around it was cancelled) rather than something its task raised: the one exception
    that does not end up in the task's future.

    On asyncio a task may raise ``CancelledError`` itself, untouched by any scope; that
    one is the task's own error, as any other."""
    return (not isinstance(exc, Exception)
            and isinstance(exc, anyio.get_cancelled_exc_class())
            and anyio.current_effective_deadline() == -math.inf)


class AsyncWorker(Worker):
    """A worker task: parked, it waits on ``lot`` for ``inbox``. ``scope`` is the
    cancel scope its tasks run in (cancelled to interrupt one: ``restart``, with the
    ``reason`` the task is cancelled with); ``call`` the sync call it waits on in a
    thread, if any."""

    __slots__ = ("call", "inbox", "lot", "reason", "restart", "scope")

    def __init__(self, worker_id: int) -> None:
        super().__init__(worker_id)
        self.lot: Lot = NO_LOT  # made on the loop, in spawn
        self.inbox: Task | None = None
        self.scope: anyio.CancelScope | None = None
        self.restart = False
        self.reason: str | None = None
        self.call: ThreadCall | None = None


class AsyncBackend(Backend):
    """Workers are tasks of one event loop (see the module docstring). ``bind`` (in
    the loop, once) gives it the task group its workers run in; it is also the
    ``TaskOwner`` of the pool's ``AsyncFuture``s."""

    broken_message = "an initializer failed, the AsyncPool is not usable"
    lazy_wake = True
    lazy_spawn = True
    own_deadlines = True
    reuse_context = True
    one_thread = True  # the loop's (see the module docstring)

    def __init__(self, initializer: Callable[..., Any] | None,
                 initargs: tuple[Any, ...]) -> None:
        self.initializer = initializer
        self.initargs = initargs
        self.init_error: BaseException | None = None  # the first initializer's error
        self.initializing = 0  # workers whose initializer has not returned
        self.workers: list[AsyncWorker] = []  # alive, in start order
        self.alive = 0  # worker tasks not ended
        self.new_lot: Callable[[], Lot] = no_lot
        self.tg: Any = None
        self.space: Lot | None = None  # callers waiting for room (Engine.want_room)
        self.exit_lot: Lot | None = None  # close() waiting for the workers to end
        self.limiter: anyio.CapacityLimiter | None = None
        self.on_asyncio = False
        self.stuck = 0  # threads given up on, still running (under _THREAD_LOCK)
        # The futures of tasks its workers ended because of a cancellation around the
        # pool (the pool lists them as unfinished).
        self.stopped: dict[Any, None] = {}

    def bind(self, tg: Any) -> None:
        """In the event loop: start workers in *tg* from now on."""
        lot = lot_type()
        self.new_lot = lot
        self.on_asyncio = lot is AsyncioLot
        self.space = lot()
        self.exit_lot = lot()
        # Sync tasks run in threads: one per busy worker, plus those given up on. The
        # workers are the bound; a limiter of the pool's size would shrink the pool
        # by each stuck thread on trio, which holds its token until the thread
        # returns (and anyio's default one is shared: 40 threads in all).
        self.limiter = anyio.CapacityLimiter(math.inf)
        self.tg = tg

    # -- the workers ------------------------------------------------------------------

    def new_worker(self, worker_id: int) -> Worker:
        return AsyncWorker(worker_id)

    def spawn(self, worker: Worker) -> None:
        assert isinstance(worker, AsyncWorker)
        worker.lot = self.new_lot()
        self.alive += 1
        self.workers.append(worker)
        if self.initializer is not None:
            self.initializing += 1
        self.tg.start_soon(self._work, worker,
                           name=f"{self.engine.name}_{worker.slot.worker_id}")

    def resume(self, worker: Worker, task: Task) -> None:
        assert isinstance(worker, AsyncWorker)
        worker.inbox = task
        worker.lot.unpark()

    def release(self, worker: Worker) -> None:
        assert isinstance(worker, AsyncWorker)
        worker.lot.unpark()

    def room(self, every: bool = False) -> bool:
        space = self.space
        if space is None or not space.waiters:
            return False
        if every:
            space.unpark_all()
        else:
            space.unpark()
        return True

    def stray(self) -> int:
        return self.stuck

    def call_later(self, delay: float, callback: Callable[[], None]) -> TimerHandle:
        """A retry's backoff, kept on the loop by a task of the pool's (no timer
        thread): the re-queue runs on the loop, where starting a worker task works."""
        handle = _LoopTimerHandle(time.monotonic() + delay, callback)
        self.tg.start_soon(self._later, delay, handle,
                           name=f"{self.engine.name}_retry")
        return handle

    async def _later(self, delay: float, handle: _LoopTimerHandle) -> None:
        with anyio.CancelScope() as scope:
            handle.scope = scope
            await anyio.sleep(delay)
        if not handle.cancelled:
            handle.callback()

    # -- stopping ---------------------------------------------------------------------

    def interrupt(self, worker: Worker, task: Task, reason: str | None = None) -> None:
        """Cancel *task* where it runs on *worker*: its context, and the worker's
        scope (an async task stops at its next ``await``; a sync one sees its
        context, and the worker waits for the thread). *reason* is what its future is
        cancelled with (default: "cancelled while running", or "by shutdown")."""
        assert isinstance(worker, AsyncWorker)
        if worker.task is not task:
            return
        ctx = worker.slot.ctx
        if ctx is not None:
            ctx.cancel()
        worker.restart = True
        worker.reason = reason
        if worker.scope is not None:
            worker.scope.cancel()

    def give_up(self, worker: Worker, task: Task, error: BaseException) -> None:
        """The hard stop of a shutdown: a sync call's thread is given up on (the task
        fails with *error* now, the thread runs on counted as stuck); an async task
        is interrupted."""
        assert isinstance(worker, AsyncWorker)
        call = worker.call
        if call is not None and worker.task is task:
            # Said as every task a shutdown stops on this pool says it.
            call.give_up_with(Cancelled("cancelled by shutdown while running")
                              if isinstance(error, Cancelled) else error)
        else:
            self.interrupt(worker, task)

    def close(self) -> None:
        """Nothing to let go of: a worker task starts with its worker."""

    def after_fork_in_child(self) -> None:
        """Nothing to forget: an event loop does not survive a fork."""

    # -- what AsyncFuture and the front ends ask ----------------------------------------

    def cancel_future(self, future: AsyncFuture[Any]) -> None:
        """``AsyncFuture.cancel()`` (``TaskOwner``): withdraw it if queued or waiting
        to retry, interrupt it if running, else (handed to a worker that has not
        started it) cancel it now, so that it never starts."""
        shutdown = self.engine.stop.is_set()
        queued, retrying = self.engine.withdraw(lambda t: t.future is future)
        if queued:
            future._cancelled("cancelled by shutdown before it started" if shutdown
                              else "cancelled before it started")
        elif retrying:
            future._cancelled("cancelled by shutdown while waiting to retry" if shutdown
                              else "cancelled while waiting to retry")
        elif future._state == RUNNING:
            for worker in self.workers:
                task = worker.task
                if task is not None and task.future is future:
                    self.interrupt(worker, task)
                    return
            # Re-queued for a retry and taken by a worker that has not begun it.
            future._cancelled("cancelled while waiting to retry")
        elif future._state == QUEUED:
            future._cancelled("cancelled by shutdown before it started" if shutdown
                              else "cancelled before it started")

    def cancel_where(self, match: Callable[[Task], bool], not_started: str,
                     running: str | None) -> list[Task]:
        """Cancel every task that *matches*: queued ones and those waiting to retry
        never start (settled with ``Cancelled(not_started)``), running ones are
        interrupted (with *running*). Returns the tasks withdrawn, for their owner's
        accounting (a ``map`` run's chunks)."""
        queued, retrying = self.engine.withdraw(match)
        for worker in self.workers:
            task = worker.task
            if task is not None and match(task):
                self.interrupt(worker, task, running)
            for handed in (worker.first, worker.inbox, worker.next):  # handed, not begun
                if handed is not None and match(handed):
                    settle(handed.future, None, Cancelled(not_started))
        withdrawn = queued + retrying
        for task in withdrawn:
            settle(task.future, None, Cancelled(not_started))
        return withdrawn

    def is_own_task(self) -> bool:
        """Whether the calling task is one of this pool's workers."""
        try:
            ctx = current()
        except RuntimeError:
            return False
        return any(w.slot.ctx is ctx for w in self.workers)

    async def wait_initialized(self) -> None:
        """Wait until every worker's initializer returned (``AsyncPool`` surfaces the
        first failure at ``async with``)."""
        assert self.exit_lot is not None
        while self.initializing:
            await self.exit_lot.park()

    async def wait_ended(self) -> None:
        """Wait until every worker task has ended."""
        assert self.exit_lot is not None
        while self.alive:
            await self.exit_lot.park()

    # -- a worker -----------------------------------------------------------------------

    async def _work(self, worker: AsyncWorker) -> None:
        engine = self.engine
        slot = worker.slot
        install_slot(slot)
        try:
            # worker.first stays set until the loop takes it: a cancellation around
            # the pool during the initializer finds it there (_cancel_handed).
            task = worker.first
            if self.initializer is not None and not await self._initialize(worker):
                worker.first = None
                engine.failed_to_start(worker, task)
                return
            worker.first = None
            if task is None:
                task = engine.next_task(worker)
            elif engine.waking:  # started for this task: pass on what came meanwhile
                engine.woke()
            while True:
                # The tasks run in a cancel scope of this worker's: interrupting one
                # cancels it, and the worker goes on in a fresh one.
                nxt = None
                with anyio.CancelScope() as scope:
                    worker.scope = scope
                    nxt = await self._loop(worker, task)
                if nxt is _LEAVE:
                    return
                task = nxt
                worker.restart = False
                worker.reason = None
        finally:
            worker.scope = None
            self._cancel_handed(worker)
            self.workers.remove(worker)
            self.alive -= 1
            engine.left(worker)
            if self.exit_lot is not None and (not self.alive or self.initializing):
                self.exit_lot.unpark_all()

    def _cancel_handed(self, worker: AsyncWorker) -> None:
        """*worker* ends (a cancellation around the pool, while it waited) with a task
        handed to it and not begun (its first, or one put in its inbox while it was
        parked): that task, and what ``end`` hands on, end cancelled, listed among
        the pool's unfinished, as every task a shutdown stops before it started."""
        for handed in (worker.first, worker.inbox):
            if handed is not None:
                self._end_stopped(worker, handed, _NOT_STARTED, 0.0)
        worker.first = worker.inbox = None

    def _end_stopped(self, worker: AsyncWorker, task: Task, message: str,
                     started: float) -> None:
        """End *task* on *worker*, stopped by a cancellation around the pool (the pool
        lists its future as unfinished), then each task ``end`` hands on, as never
        started."""
        nxt: Task | None = task
        while nxt is not None:
            self.stopped[nxt.future] = None
            nxt = self.engine.end(worker, nxt, TASK_STOPPED, Cancelled(message), started)
            message = _NOT_STARTED

    async def _initialize(self, worker: AsyncWorker) -> bool:
        """Run the initializer in *worker* (``wp.current()`` works in it): False if it
        raised (the first error is kept for ``async with`` to raise)."""
        assert self.initializer is not None
        slot = worker.slot
        slot.ctx = TaskContext(slot)
        try:
            state = self.initializer(*self.initargs)
            if inspect.isawaitable(state):
                state = await state
            slot.state = state
        except BaseException as exc:
            if self.init_error is None:
                self.init_error = exc
            return False
        finally:
            slot.ctx = None
            self.initializing -= 1
            if not self.initializing and self.exit_lot is not None:
                self.exit_lot.unpark_all()
        return True

    async def _loop(self, worker: AsyncWorker, task: Task | None) -> Any:
        """Run tasks until the worker leaves (``_LEAVE``) or a task was interrupted
        (the next task, to run in a fresh scope)."""
        # The hot path: local names, and the plain async task inlined, keep a tiny
        # task near a hand-written asyncio.Queue worker's cost.
        engine = self.engine
        begin, end, woke = engine.begin, engine.end, engine.woke
        perf = time.perf_counter
        lot = worker.lot
        while True:
            while task is None:
                if worker.leaving:
                    return _LEAVE
                task = worker.inbox
                if task is None:
                    await lot.park()
                    continue
                worker.inbox = None
                if engine.waking:  # woken while others are parked
                    woke()
            # A task end() handed back begun is run as is.
            outcome = None if worker.task is task else begin(worker, task)
            # When it started: read for a sampled task alone, or one under an
            # adaptive limit (as the thread backend)
            started = perf() if task.enqueued or worker.limited else 0.0
            if outcome is None:
                try:
                    if task.payload.fast:
                        if task.items is None:
                            # fn(*args): 40 ns less than fn(*args, **{}), which copies
                            # the dict
                            kind, value = TASK_OK, await (
                                task.fn(*task.args, **task.kwargs) if task.kwargs
                                else task.fn(*task.args))
                        else:  # quick map items: _run()'s first case, inline
                            kind, value = TASK_OK, await self._run_chunk(task, task.items)
                    else:
                        kind, value = await self._run(worker, task)
                except BaseException as exc:  # the task's error, unless it is cancelled
                    if is_cancellation(exc):
                        return self._stopped(worker, task, exc, started)
                    kind, value = TASK_FAILED, exc
            else:
                kind, value = outcome
            task = end(worker, task, kind, value, started)
            del value  # a parked worker keeps no result alive
            if worker.restart:
                return task

    def _stopped(self, worker: AsyncWorker, task: Task, exc: BaseException,
                 started: float) -> Task | None:
        """*task* was cancelled where it ran: by ``interrupt`` (the worker goes on
        with the next task, returned), or by a cancellation around the pool (what is
        handed to this worker is cancelled too, and *exc* goes on)."""
        engine = self.engine
        by_shutdown = engine.halted or engine.stop.is_set()
        if worker.restart:
            reason = ("cancelled by shutdown while running" if by_shutdown and
                      worker.reason is None else worker.reason or "cancelled while running")
            return engine.end(worker, task, TASK_STOPPED, Cancelled(reason), started)
        self._end_stopped(worker, task, "cancelled by shutdown while running", started)
        raise exc

    async def _run(self, worker: AsyncWorker, task: Task) -> tuple[int, Any]:
        """A task that is not a plain async call: a chunk of quick map items, or one
        call (or item) through the policies."""
        spec: Spec = task.payload
        items = task.items
        if items is not None:
            if spec.fast:
                return TASK_OK, await self._run_chunk(task, items)
            fn, args, kwargs = task.fn, items[0] if task.star else (items[0],), _NO_KWARGS
        else:
            fn, args, kwargs = task.fn, task.args, task.kwargs
        bucket = self.engine.bucket
        if bucket is not None:
            delay = bucket.reserve()
            if delay > 0:
                await anyio.sleep(delay)
        timeout = task.timeout
        if spec.kind == SYNC:
            value = await self._call_sync(worker, task, fn, args, kwargs, timeout)
        elif timeout is None:
            value = await fn(*args, **kwargs)
        else:
            with anyio.CancelScope(deadline=anyio.current_time() + timeout) as scope:
                value = await fn(*args, **kwargs)
            if scope.cancelled_caught:
                raise self.engine.timed_out(task)
        if items is not None:
            return TASK_OK, ChunkEnd([value], 0, 0.0)
        return TASK_OK, value

    async def _run_chunk(self, task: Task, items: list[Any]) -> ChunkEnd:
        """Quick map items, one after the other, each error caught as the item's. A
        chunk stopped midway reports the items that ran (the rest are cancelled)."""
        fn = task.fn
        star = task.star
        run = task.flag
        assert run is not None  # an async map's chunks carry their run
        results: list[Any] = []
        append = results.append
        errors = 0
        started = time.perf_counter()
        for item in items:
            if run.closed:
                break
            try:
                append(await (fn(*item) if star else fn(item)))
            except BaseException as exc:
                if is_cancellation(exc):
                    raise
                append(Failure(exc))
                errors += 1
        return ChunkEnd(results, errors, time.perf_counter() - started)

    async def _call_sync(self, worker: AsyncWorker, task: Task, fn: Callable[..., Any],
                         args: tuple[Any, ...], kwargs: dict[str, Any],
                         timeout: float | None) -> Any:
        """Run a sync callable in a worker thread, which nothing can interrupt.

        A cancellation (``AsyncFuture.cancel()``, ``aclose(cancel=True)``) cancels the
        task's context, which code that calls ``wp.current().checkpoint()`` or
        ``sleep()`` sees, and the worker waits for the thread. At the task's timeout,
        or when a draining ``aclose`` runs out of time (``give_up``), the pool gives up
        on the thread instead, as ``ThreadPool`` does: the context is cancelled, the
        task fails at once (with ``TaskTimeout``, or ``Cancelled``) and the worker
        goes on, while the thread, counted as stuck, runs until the call returns.
        """
        ctx = worker.slot.ctx
        assert ctx is not None
        call = ThreadCall(self, fn, args, kwargs, ctx)
        deadline = math.inf if timeout is None else anyio.current_time() + timeout
        # The shield keeps cancellations off the thread (they reach it through its
        # context); only the scope inside it gives up on the thread: at the deadline,
        # or when cancelled by give_up_with().
        with anyio.CancelScope(shield=True), anyio.CancelScope(deadline=deadline) as scope:
            worker.call = call
            call.scope = scope
            try:
                return await run_in_thread(call.run, self.limiter, self.on_asyncio)
            finally:
                worker.call = None
        ctx.cancel()
        call.give_up()
        if call.error is not None:
            raise call.error
        raise self.engine.timed_out(task)


class _LoopTimerHandle(TimerHandle):
    """A timed call kept by a task of the loop: cancelling it (on the loop) ends the
    task's wait too, so that no task waits out a backoff nobody needs."""

    __slots__ = ("scope",)

    def __init__(self, when: float, callback: Callable[[], None]) -> None:
        super().__init__(when, callback)
        self.scope: anyio.CancelScope | None = None

    def cancel(self) -> None:
        super().cancel()
        if self.scope is not None:
            self.scope.cancel()


def _in_thread(fn: Callable[..., Any], args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
    value = fn(*args, **kwargs)
    if inspect.iscoroutine(value):
        value.close()  # no "never awaited" warning: the error says what to do
        raise TypeError(f"{fn_name(fn)} is not a coroutine function but returned a "
                        f"coroutine: declare it with 'async def'")
    return value


class DaemonThreads:
    """Daemon threads for the sync tasks of AsyncPools on asyncio, kept for reuse.

    anyio's worker threads on asyncio are not daemons, so a call the pool gave up on
    (stuck past its timeout) would hold the interpreter open at exit until it returns;
    ThreadPool's workers do not, and neither do trio's threads. A thread waits for its
    next call for ``IDLE`` seconds, then leaves; a call finds an idle thread or starts
    one (never waits for one: a stuck thread does not shrink any pool).
    """

    IDLE: Final = 10.0
    NAME: Final = "workpool-async-thread"

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._idle = 0
        self._calls: SimpleQueue[tuple[Future[Any], Callable[[], Any]]] = SimpleQueue()

    def submit(self, fn: Callable[[], Any]) -> Future[Any]:
        """Run *fn* on a daemon thread; its future."""
        future: Future[Any] = Future()
        with self._lock:
            start = not self._idle
            if not start:
                self._idle -= 1
        self._calls.put((future, fn))
        if start:
            threading.Thread(target=self._work, name=self.NAME, daemon=True).start()
        return future

    def _work(self) -> None:
        calls = self._calls
        while True:
            try:
                future, fn = calls.get(timeout=self.IDLE)
            except Empty:
                with self._lock:
                    if self._idle:  # nobody counted on this thread: leave
                        self._idle -= 1
                        return
                continue  # a call is on its way to it
            if future.set_running_or_notify_cancel():
                try:
                    future.set_result(fn())
                except BaseException as exc:  # the call's error is its future's
                    future.set_exception(exc)
            del future, fn
            with self._lock:
                self._idle += 1

    def after_fork_in_child(self) -> None:
        """The threads are the parent's: start over."""
        self._lock = threading.Lock()
        self._idle = 0
        self._calls = SimpleQueue()


DAEMON_THREADS: Final = DaemonThreads()
os.register_at_fork(after_in_child=DAEMON_THREADS.after_fork_in_child)


async def run_in_thread(fn: Callable[[], Any], limiter: anyio.CapacityLimiter | None,
                        on_asyncio: bool) -> Any:
    """Run *fn* in a daemon thread; cancelling the wait gives up on the thread (it runs
    on until *fn* returns). On asyncio (*on_asyncio*, as the pool learnt when it
    started) the threads are ``DAEMON_THREADS``; on trio, trio's own (daemons too)."""
    if on_asyncio:
        import asyncio

        context = contextvars.copy_context()  # as asyncio.to_thread does
        return await asyncio.wrap_future(DAEMON_THREADS.submit(partial(context.run, fn)))
    return await anyio.to_thread.run_sync(fn, limiter=limiter, abandon_on_cancel=True)


_THREAD_LOCK: Final = threading.Lock()
_PENDING: Final = 0
_RUNNING: Final = 1
_GIVEN_UP: Final = 2
_RETURNED: Final = 3


class ThreadCall:
    """A sync call in a worker thread that the pool may give up on."""

    __slots__ = ("args", "backend", "error", "fn", "kwargs", "scope", "slot", "state")

    def __init__(self, backend: AsyncBackend, fn: Callable[..., Any],
                 args: tuple[Any, ...], kwargs: dict[str, Any], ctx: TaskContext) -> None:
        self.backend = backend
        self.fn = fn
        self.args = args
        self.kwargs = kwargs
        # The thread's own slot: once the worker has given up on it and moved on,
        # wp.current() in the thread is still this task's (cancelled) context.
        self.slot = WorkerSlot(ctx.worker_id)
        self.slot.ctx = ctx
        self.state = _PENDING
        self.scope: anyio.CancelScope | None = None  # cancelled to give up on the thread
        self.error: BaseException | None = None  # what the task fails with, if not timeout

    def run(self) -> Any:
        """The thread's side: the call, unless it was given up on before it started."""
        with _THREAD_LOCK:
            if self.state == _GIVEN_UP:
                return None
            self.state = _RUNNING
        install_slot(self.slot)  # in the context this thread runs the call in
        try:
            return _in_thread(self.fn, self.args, self.kwargs)
        finally:
            with _THREAD_LOCK:
                if self.state == _GIVEN_UP:
                    self.backend.stuck -= 1
                self.state = _RETURNED

    def give_up_with(self, error: BaseException) -> None:
        """A shutdown out of time: the task fails with *error* now."""
        self.error = error
        if self.scope is not None:
            self.scope.cancel()

    def give_up(self) -> None:
        """The worker's side, once it gave up: a running call is counted as stuck until
        it returns; one not started yet never starts."""
        with _THREAD_LOCK:
            if self.state == _RUNNING:
                self.backend.stuck += 1
            if self.state != _RETURNED:
                self.state = _GIVEN_UP
