"""``AsyncPool``: bounded async work on asyncio (with uvloop when installed) and trio.

The front end: argument checks, the public methods and the ``async with`` life cycle.
The queue, the counts, retries, shutdown and statistics are the one ``Engine``'s
(``_engine/engine.py``), as for every pool; its workers are tasks of the pool's task
group (``_backends/async_backend.py``); ``map`` lives in ``async_map.py``. May import
``_core``, ``_engine``, ``_backends`` and ``_sync``.

::

    async with ── AsyncBackend.bind(task group) ── Engine.start(workers) ── initializers
    submit ── Engine.put(task, block=False) ──▶ a parked worker, a new one, or the queue
       └─ QueueFull: park on the backend's space lot (Engine.want_room) and try again
    aclose ── close_intake ── drain (workers leave once nothing is queued) or cancel_all
       ── give_up what still runs after a drain out of time ── every worker task ended
"""

from __future__ import annotations

import math
from collections.abc import Awaitable, Callable, Iterable
from contextlib import AsyncExitStack
from types import TracebackType
from typing import Any, Final, Literal, ParamSpec, TypeVar, final, overload

import anyio

from .._backends.async_backend import AsyncBackend
from .._core.exceptions import PoolClosed, QueueFull, WouldBlock
from .._core.metrics import check_metrics, register
from .._core.options import (
    Cost,
    OnError,
    Workers,
    check_budget,
    check_map_args,
    check_pool_options,
    check_resize,
    check_schedule_args,
    check_timeout,
    pool_workers,
)
from .._core.outcome import Outcome
from .._core.progress import ProgressArg, check_progress
from .._core.ratelimit import RateLimit
from .._core.retry import Retry
from .._core.stats import PoolStatistics
from .._engine.async_task import ASYNC, QUEUED, SYNC, AsyncFuture, Spec, kind_of, new_future
from .._engine.contract import Task, new_call
from .._engine.engine import SHUTDOWN_MESSAGE, Engine
from .._sync.async_semaphore import AsyncSemaphore
from .._sync.loop_budget import LoopBudget
from .._sync.memory_budget import MemoryBudget, cost_bound
from .._sync.semaphore import Semaphore
from .async_map import MapResults, MapRun

__all__ = ["AsyncPool"]

P = ParamSpec("P")
T = TypeVar("T")
_COUNTER = iter(range(1, 1 << 62))
_new = object.__new__
NEW: Final = 0
OPEN: Final = 1  # entered: taking work
CLOSED: Final = 2  # closing or closed
NOT_RUNNING: Final = "AsyncPool is not running: use 'async with AsyncPool(...)'"


@final
class AsyncPool:
    """A bounded pool of worker tasks for coroutines (and plain callables, which run
    in worker threads), on asyncio or trio.

    Leaving ``async with`` waits for every task; an exception (or a cancellation) in
    the block cancels what is queued and running instead, and leaves no task behind.

    Whatever a task raises, ``BaseException`` included (``KeyboardInterrupt``,
    ``SystemExit``), fails that task's future alone, as with the stdlib's executors:
    awaiting it re-raises it, and the pool and its other tasks go on. Only a
    cancellation of the pool itself (of its scope, or of one around it) is not a
    task's error.

    Args:
        workers: worker tasks, so at most this many tasks run at once (default 100).
        max_workers: the stdlib's name for *workers*.
        queue_size: tasks that may wait for a worker (default 1024): ``submit`` waits
            when it is full, ``submit_nowait`` raises ``wp.QueueFull``; 0 hands each
            task straight to an idle worker. ``map`` is bounded by its own window.
        timeout: seconds a task may run; then it fails with ``wp.TaskTimeout``. An
            async task is cancelled. A sync one is asked to stop through its context
            and its thread is given up on, as ``ThreadPool`` does: the thread runs on
            until the call returns, counted as ``stuck`` in ``statistics()``, while
            the worker goes on with other tasks. ``math.inf`` means no timeout.
        retry: a ``wp.Retry`` policy for failed tasks; a task waiting for its retry
            holds no worker.
        rate: a ``wp.RateLimit`` on task starts, shared by all workers.
        initializer: called once per worker (awaited if it is a coroutine function);
            what it returns is that worker's ``wp.current().state``.
        initargs: the initializer's arguments.
        name: names the worker tasks (``name_0``, ``name_1``, ...).
        budget: a ``wp.AsyncSemaphore`` every task takes ``cost`` tokens of (1 unless
            ``schedule(..., cost=n)`` says otherwise; ``map(..., cost=)`` per item)
            from before it is queued until it ends, however it ends (value, error, cancel,
            timeout): with costs in bytes, the pool bounds the bytes in flight, not
            only the tasks. ``submit`` waits for the tokens; ``submit_nowait`` and
            ``schedule(block=False)`` raise ``wp.WouldBlock`` without them. A
            ``wp.Semaphore`` or a ``wp.MemoryBudget``, which threads and other pools
            may share, works too: free tokens are taken in the loop, and a wait for
            tokens runs in a worker thread, so that the loop goes on (a
            ``MemoryBudget`` lets a cost larger than its capacity through, alone).
        metrics: True (under the pool's name) or a name: show the pool's statistics
            to ``workpool.exporters.prometheus`` while it lives.

    Costs: ``map`` about 0.6 us per tiny task on asyncio (a hand-written pool of
    worker tasks over an ``asyncio.Queue`` takes 0.6 to 0.8), ``submit`` 1.5 to 2.5 us
    (a future per task, which the garbage collector pays for while you hold it); no
    task, future or cancel scope is created per task, except for the policies.

    Raises:
        ValueError: ``workers < 1``, ``queue_size < 0``, or *timeout* not > 0 (nan).
        TypeError: *budget* is not a ``wp.AsyncSemaphore``, ``wp.Semaphore`` or
            ``wp.MemoryBudget``.

    Example::

        async with wp.AsyncPool(50, rate=wp.RateLimit(per_second=20)) as pool:
            async for page in pool.map(fetch, urls, ordered=False):
                print(page)
    """

    def __init__(self, workers: Workers | None = None, *, max_workers: int | None = None,
                 queue_size: int = 1024, timeout: float | None = None,
                 retry: Retry | None = None, rate: RateLimit | None = None,
                 initializer: Callable[..., Any] | None = None,
                 initargs: Iterable[Any] = (), name: str | None = None,
                 budget: AsyncSemaphore | Semaphore | MemoryBudget | None = None,
                 metrics: bool | str = False) -> None:
        count, dynamic = pool_workers(workers, max_workers, 100)
        check_pool_options(queue_size, retry, rate, initializer)
        check_metrics(metrics)
        check_budget(budget, (AsyncSemaphore, Semaphore, MemoryBudget))
        # A budget that threads share is waited for in a worker thread (LoopBudget).
        self._budget: AsyncSemaphore | LoopBudget | None = (
            LoopBudget(budget) if isinstance(budget, Semaphore | MemoryBudget) else budget)
        self._name = name or f"AsyncPool-{next(_COUNTER)}"
        self._backend = backend = AsyncBackend(initializer, tuple(initargs))
        self._engine = engine = Engine(
            backend, workers=count, queue_size=queue_size, timeout=check_timeout(timeout),
            retry=retry, bucket=None if rate is None else rate.bucket(), name=self._name,
            broken_type=PoolClosed, dynamic=dynamic)
        self._dynamic = dynamic
        self._state = NEW
        # Start the workers as tasks need them (AsyncGroup's own pool), not up front.
        self._lazy = False
        self._defaults = {kind: Spec(backend, kind, engine.timeout, retry,
                                     rated=rate is not None) for kind in (ASYNC, SYNC)}
        self._last_fn: Any = None  # the last callable submitted, and its spec: a loop
        self._last_spec = self._defaults[ASYNC]  # submitting one function checks it once
        # What a shutdown cancelled, once each (a stop may come twice), in order.
        self._unfinished: dict[AsyncFuture[Any], None] = {}
        self._running: dict[Any, None] = {}  # running when a shutdown stopped them
        self._lifetime = AsyncExitStack()  # holds the task group from start to exit
        register(self, metrics, self._name)

    @property
    def workers(self) -> int:
        """The number of worker tasks."""
        return self._engine.target

    # -- life cycle -------------------------------------------------------------------

    async def __aenter__(self) -> AsyncPool:
        if self._state != NEW:
            if self._state == OPEN:
                raise RuntimeError("AsyncPool can be entered only once")
            raise PoolClosed(SHUTDOWN_MESSAGE)
        backend = self._backend
        backend.bind(await self._lifetime.enter_async_context(anyio.create_task_group()))
        self._state = OPEN
        try:
            if not self._lazy:
                engine = self._engine
                # A dynamic pool starts at its floor: Autoscale's min, Adaptive's limit.
                scaler = engine.scaler
                engine.start(engine.target if scaler is None else scaler.min)
                # A failing initializer fails the start, with its own error.
                await backend.wait_initialized()
                if backend.init_error is not None:
                    raise backend.init_error
        except BaseException:
            await self._close(cancel=True, timeout=None)
            await self._exit()
            raise
        return self

    async def __aexit__(self, exc_type: type[BaseException] | None,
                        exc: BaseException | None, tb: TracebackType | None) -> None:
        try:
            await self._close(cancel=exc is not None, timeout=None)
        finally:
            await self._exit()

    async def aclose(self, *, cancel: bool = False, timeout: float | None = None) -> None:
        """Stop taking work, then drain, cancel, or drain until a deadline.

        - ``aclose()``: run everything queued (and waiting to retry), then return.
        - ``aclose(cancel=True)``: cancel what is queued or waiting to retry, cancel
          what runs (a sync task is asked to stop through ``wp.current()``), wait.
        - ``aclose(timeout=s)``: drain for up to *s* seconds, then cancel the rest; a
          sync task still running is asked to stop and its thread given up on (it
          runs on, counted as ``stuck``), as ``ThreadPool.shutdown(timeout=s)`` does.

        Open ``map`` iterators are cancelled in every case. Leaving ``async with``
        calls ``aclose()`` (or ``aclose(cancel=True)`` on an exception); calling it
        earlier is fine, and so is calling it twice. ``unfinished`` then holds the
        futures a shutdown cancelled.

        Raises:
            RuntimeError: called by a task of this pool (it would wait for itself).
        """
        timeout = check_timeout(timeout)
        if self._backend.is_own_task():
            raise RuntimeError("a task of an AsyncPool cannot close its own pool: "
                               "aclose() would wait for the task itself")
        await self._close(cancel=cancel, timeout=timeout)

    async def _close(self, *, cancel: bool, timeout: float | None) -> None:
        """Stop intake, then drain (until *timeout*) or cancel; wait for the workers."""
        if self._state == NEW:
            self._state = CLOSED
            return
        engine = self._engine
        backend = self._backend
        if self._state == OPEN:
            self._state = CLOSED
            for run in engine.take_maps():
                run.abandon()
            engine.close_intake()
        try:
            if not cancel and backend.alive:
                # Idle workers leave once nothing is queued or waiting to retry.
                with anyio.move_on_after(math.inf if timeout is None else timeout):
                    await backend.wait_ended()
            if backend.alive:
                self._stop(give_up=not cancel)
                await backend.wait_ended()
        except BaseException:
            self._stop(give_up=False)
            raise

    def _stop(self, give_up: bool) -> None:
        """Cancel what is queued or waiting to retry; interrupt what runs, or give up
        on it if *give_up* (a drain ran out of time: threads are not waited for)."""
        engine = self._engine
        self._running.update(dict.fromkeys(engine.running_futures()))
        self._unfinished.update(
            dict.fromkeys(f for f in engine.cancel_all() if type(f) is AsyncFuture))
        if give_up:
            engine.abandon_running()

    async def _exit(self) -> None:
        """Leave the task group (from the task that started it), every worker gone."""
        try:
            await self._lifetime.aclose()
        finally:
            self._state = CLOSED
            self._engine.join(None)  # every worker left: this closes the timer
            # Those it stopped, and those its workers stopped as a cancellation
            # around the pool ended them.
            running, self._running = self._running, {}
            running.update(self._backend.stopped)
            self._backend.stopped.clear()
            self._unfinished.update(dict.fromkeys(
                f for f in running if type(f) is AsyncFuture and f.cancelled()))

    # -- submitting ---------------------------------------------------------------------

    def _check_open(self) -> None:
        """Raise unless the pool takes work."""
        if self._state == NEW:
            raise RuntimeError(NOT_RUNNING)
        if self._state != OPEN:
            raise PoolClosed(SHUTDOWN_MESSAGE)

    def _spec_for(self, fn: Any) -> Spec:
        """The default spec for *fn* (remembered for the next call with the same fn)."""
        spec = self._defaults[kind_of(fn)]
        self._last_fn = fn
        self._last_spec = spec
        return spec

    @overload
    async def run(self, fn: Callable[P, Awaitable[T]], /,
                  *args: P.args, **kwargs: P.kwargs) -> T: ...
    @overload
    async def run(self, fn: Callable[P, T], /, *args: P.args, **kwargs: P.kwargs) -> T: ...

    async def run(self, fn: Callable[..., Any], /, *args: Any, **kwargs: Any) -> Any:
        """Run ``fn(*args, **kwargs)`` on a worker and return its result.

        Waits for room in the queue, then for the task. If the caller is cancelled
        meanwhile, so is the task.

        Example::

            page = await pool.run(fetch, url)
        """
        job: AsyncFuture[Any] = await self.submit(fn, *args, **kwargs)
        try:
            return await job
        except BaseException:
            job.cancel()
            raise

    @overload
    async def submit(self, fn: Callable[P, Awaitable[T]], /,
                     *args: P.args, **kwargs: P.kwargs) -> AsyncFuture[T]: ...
    @overload
    async def submit(self, fn: Callable[P, T], /,
                     *args: P.args, **kwargs: P.kwargs) -> AsyncFuture[T]: ...

    async def submit(self, fn: Callable[..., Any], /, *args: Any,
                     **kwargs: Any) -> AsyncFuture[Any]:
        """Queue ``fn(*args, **kwargs)``; return its ``AsyncFuture`` (await it for the
        result). Waits while the queue is full.

        *fn* is a coroutine function, or a plain callable to run in a worker thread.

        Raises:
            PoolClosed: the pool was closed (a RuntimeError, with the stdlib's message).
            RuntimeError: the pool was not entered with ``async with``.
            TypeError: *fn* is not callable, or is a coroutine object.

        Example::

            futures = [await pool.submit(fetch, url) for url in urls]
            pages = [await f for f in futures]
        """
        # The hot path, inlined (a call costs as much as the rest): make the future
        # and its task, hand it to the engine, wait for room if the queue is full.
        if self._state != OPEN:
            self._check_open()
        spec = self._last_spec if fn is self._last_fn else self._spec_for(fn)
        future: AsyncFuture[Any] = _new(AsyncFuture)  # new_future(), inline
        future._fn = fn
        future._spec = spec
        future._state = QUEUED
        future._notify = None
        task = new_call(fn, args, kwargs, future, spec.priority, spec.timeout, spec.retry,
                        spec)
        if self._budget is not None:
            return await self._put_with_budget(task, 1)
        try:
            self._engine.put(task, False)
        except QueueFull:
            await self._wait_room(task)
        return future

    @overload
    def submit_nowait(self, fn: Callable[P, Awaitable[T]], /,
                      *args: P.args, **kwargs: P.kwargs) -> AsyncFuture[T]: ...
    @overload
    def submit_nowait(self, fn: Callable[P, T], /,
                      *args: P.args, **kwargs: P.kwargs) -> AsyncFuture[T]: ...

    def submit_nowait(self, fn: Callable[..., Any], /, *args: Any,
                      **kwargs: Any) -> AsyncFuture[Any]:
        """Like ``submit``, but raise ``wp.QueueFull`` instead of waiting.

        Raises:
            QueueFull: the queue is full (a ``wp.WouldBlock``).
        """
        self._check_open()
        spec = self._last_spec if fn is self._last_fn else self._spec_for(fn)
        return self._put_now(self._task(fn, args, kwargs, spec), 1)

    def _task(self, fn: Callable[..., Any], args: tuple[Any, ...], kwargs: dict[str, Any],
              spec: Spec) -> Task:
        """A task of *fn* with *spec*'s options, and its future (``task.future``)."""
        return new_call(fn, args, kwargs, new_future(fn, spec), spec.priority,
                        spec.timeout, spec.retry, spec)

    async def _wait_room(self, task: Task) -> None:
        """Queue *task* once the queue has room, waiting in the event loop (a thread
        would block it). Raises PoolClosed if the pool closes meanwhile."""
        engine = self._engine
        space = self._backend.space
        assert space is not None
        while True:
            # Counted until the engine wakes it: room freed calls the backend then.
            engine.want_room(1)
            try:
                await space.park()
            except BaseException:
                # Still counted if it was parked; woken first (asyncio), its wake-up
                # went on to the next waiter (the Lot's rule), who is counted.
                engine.want_room(-1)
                raise
            try:
                engine.put(task, False)
                return
            except QueueFull:
                continue

    async def _put(self, task: Task, cost: int, block: bool) -> AsyncFuture[Any]:
        """Queue *task*, made by this pool or by a front end over it (``AsyncGroup``),
        holding *cost* tokens of the budget: waiting for room and tokens if *block*,
        else raising as ``submit_nowait`` does. Returns its future.

        Raises:
            PoolClosed: the pool was closed (RuntimeError before it was entered).
        """
        self._check_open()
        if not block:
            return self._put_now(task, cost)
        if self._budget is not None:
            return await self._put_with_budget(task, cost)
        try:
            self._engine.put(task, False)
        except QueueFull:
            await self._wait_room(task)
        return _future_of(task)

    def _put_now(self, task: Task, cost: int) -> AsyncFuture[Any]:
        """Queue *task* holding *cost* tokens of the budget, or raise ``wp.QueueFull``
        (or ``wp.WouldBlock``: the budget lacks the tokens)."""
        budget = self._budget
        if budget is None:
            self._engine.put(task, False)
            return _future_of(task)
        if not budget.try_acquire(cost):
            raise WouldBlock(f"budget has {budget.statistics().available} of the {cost} "
                             "tokens this task costs")
        try:
            self._engine.put(task, False)
        except BaseException:
            budget.release(cost)
            raise
        return self._charge(task, cost)

    def _charge(self, task: Task, cost: int) -> AsyncFuture[Any]:
        """*task*, queued holding *cost* tokens: they go back when it ends."""
        budget = self._budget
        assert budget is not None
        future = _future_of(task)
        future.add_done_callback(lambda _: budget.release(cost))
        return future

    async def _put_with_budget(self, task: Task, cost: int) -> AsyncFuture[Any]:
        """Queue *task* once *cost* tokens of the budget are free, waiting for them and
        for room in the queue; they return to the budget when the task ends."""
        budget = self._budget
        assert budget is not None
        await budget.acquire(cost)
        try:
            try:
                self._engine.put(task, False)
            except QueueFull:
                await self._wait_room(task)  # raises PoolClosed if it closed meanwhile
        except BaseException:
            budget.release(cost)
            raise
        return self._charge(task, cost)

    @overload
    async def schedule(self, fn: Callable[..., Awaitable[T]],
                       args: Iterable[Any] = (), kwargs: dict[str, Any] | None = None, *,
                       priority: int = 0, timeout: float | None = None,
                       retry: Retry | None = None, key: Any = None,
                       block: bool = True, cost: int = 1) -> AsyncFuture[T]: ...
    @overload
    async def schedule(self, fn: Callable[..., T], args: Iterable[Any] = (),
                       kwargs: dict[str, Any] | None = None, *, priority: int = 0,
                       timeout: float | None = None, retry: Retry | None = None,
                       key: Any = None, block: bool = True,
                       cost: int = 1) -> AsyncFuture[T]: ...

    async def schedule(self, fn: Callable[..., Any], args: Iterable[Any] = (),
                       kwargs: dict[str, Any] | None = None, *, priority: int = 0,
                       timeout: float | None = None, retry: Retry | None = None,
                       key: Any = None, block: bool = True,
                       cost: int = 1) -> AsyncFuture[Any]:
        """Submit with per-task options.

        Args:
            fn: a coroutine function or a plain callable; *args* and *kwargs* are
                passed to it.
            priority: higher runs first; FIFO within a priority.
            timeout: seconds this task may run (overrides the pool's).
            retry: this task's retry policy (overrides the pool's).
            key: a caller's identifier for the task, kept as ``future.key``.
            block: False raises ``wp.QueueFull`` instead of waiting for room (or
                ``wp.WouldBlock`` when the budget lacks the tokens).
            cost: tokens of the pool's ``budget`` the task holds from admission to its
                end (bytes, say), so the budget bounds what is in flight.

        Example::

            urgent = await pool.schedule(fetch, ("/health",), priority=10, timeout=2.0)
        """
        self._check_open()
        check_schedule_args(priority, retry, kwargs, cost)
        base = self._spec_for(fn)
        spec = Spec(self._backend, base.kind,
                    base.timeout if timeout is None else check_timeout(timeout),
                    base.retry if retry is None else retry, priority, key,
                    rated=self._engine.bucket is not None)
        return await self._put(self._task(fn, tuple(args), kwargs or {}, spec), cost, block)

    @overload
    def map(self, fn: Callable[..., Awaitable[T]], *iterables: Any, ordered: bool = True,
            window: int | None = None, chunksize: int | str = "auto",
            timeout: float | None = None,
            on_error: Literal["raise", "collect", "skip"] = "raise",
            cost: Cost = 1, progress: ProgressArg = False) -> MapResults[T]: ...
    @overload
    def map(self, fn: Callable[..., T], *iterables: Any, ordered: bool = True,
            window: int | None = None, chunksize: int | str = "auto",
            timeout: float | None = None,
            on_error: Literal["raise", "collect", "skip"] = "raise",
            cost: Cost = 1, progress: ProgressArg = False) -> MapResults[T]: ...
    @overload
    def map(self, fn: Callable[..., Awaitable[T]], *iterables: Any, ordered: bool = True,
            window: int | None = None, chunksize: int | str = "auto",
            timeout: float | None = None, on_error: Literal["return"],
            cost: Cost = 1, progress: ProgressArg = False) -> MapResults[Outcome[T]]: ...
    @overload
    def map(self, fn: Callable[..., T], *iterables: Any, ordered: bool = True,
            window: int | None = None, chunksize: int | str = "auto",
            timeout: float | None = None, on_error: Literal["return"],
            cost: Cost = 1, progress: ProgressArg = False) -> MapResults[Outcome[T]]: ...

    def map(self, fn: Callable[..., Any], *iterables: Any, ordered: bool = True,
            window: int | None = None, chunksize: int | str = "auto",
            timeout: float | None = None, on_error: OnError = "raise",
            cost: Cost = 1, progress: ProgressArg = False) -> MapResults[Any]:
        """Lazily apply *fn* to the items of *iterables* (zipped, as ``map``); iterate
        the result with ``async for``.

        Inputs may be iterables or async iterables, read only ``window`` items ahead
        of what you consumed (default four per worker), so an endless source maps in
        flat memory; reading starts at the first ``__anext__``. ``ordered=False``
        yields in completion order. On the first error (in yield order) the rest is
        cancelled and the error raised (``on_error="raise"``); "return" yields a
        ``wp.Value`` or ``wp.Error`` per item; "skip" drops failed items; "collect"
        drops them too and, after the last item, raises ``wp.ItemsFailed`` listing
        them all (the same on every pool and pipeline stage).
        ``chunksize`` is the most items one hand-off to a worker carries: "auto" grows
        it while items are quick (1 with a timeout, retry or rate limit, or a sync
        function), and items batch up only while workers are behind. ``timeout`` is
        the stdlib's: ``TimeoutError`` if a result is not ready that many seconds
        after the call. With a ``budget``, each item holds ``cost`` tokens (an int, or
        a function of the item: bytes, say) from before it is queued until it ends;
        an error of the cost function ends the input, as an error reading it does.
        Leaving the loop early (``aclose()``, ``async with``, or ``break`` and
        dropping the iterator) cancels what is queued and running; an async
        generator input is closed. ``progress=`` shows a live bar or calls
        a callable with ``wp.ProgressCounts``, as ``wp.ThreadPool.map``'s.

        Raises:
            PoolClosed: the pool was closed (RuntimeError before it was entered).
            TypeError: *fn* is not callable, or no iterable was given.
            ValueError: a bad ``window``, ``chunksize``, ``timeout`` or ``on_error``;
                a ``cost`` but no ``budget``, or more than a bounded budget's capacity.

        Example::

            async with pool.map(fetch, urls, ordered=False) as pages:
                async for page in pages:
                    if done(page):
                        break       # the rest is cancelled
        """
        check_map_args(chunksize, window, on_error, timeout)
        check_progress(progress)
        budget = self._budget
        shared = budget.budget if isinstance(budget, LoopBudget) else budget
        bound = cost_bound(shared)
        check_budget(shared, (AsyncSemaphore, Semaphore, MemoryBudget), cost,
                     bounded=not isinstance(shared, MemoryBudget))
        if not iterables:
            raise TypeError("map() must have at least one iterable")
        self._check_open()
        run = MapRun(self._engine, self._backend, fn, self._spec_for(fn), iterables,
                     ordered=ordered,
                     window=window, chunksize=chunksize, on_error=on_error, timeout=timeout,
                     budget=budget, cost=cost,
                     bound=bound,
                     progress=progress)
        return MapResults(run, on_error)

    def resize(self, workers: int | None = None, *, min: int | None = None,
               max: int | None = None) -> None:
        """Change the pool's size while it runs, as ``ThreadPool.resize`` does: a fixed
        pool's worker count, or a policy's bounds (``min=``, ``max=``).

        Raises:
            TypeError: a count where bounds are expected (or the other way round).
            ValueError: a count below 1, or bounds that break the policy's rules.
        """
        check_resize(self._dynamic, workers, min, max)
        self._engine.resize(workers, low=min, high=max)

    # -- what is going on -----------------------------------------------------------------

    def statistics(self) -> PoolStatistics:
        """A frozen snapshot of the pool's counters and latencies (``map`` items count
        one by one)."""
        return self._engine.statistics()

    @property
    def unfinished(self) -> tuple[AsyncFuture[Any], ...]:
        """Futures that a shutdown cancelled (queued, waiting to retry or running)."""
        return tuple(self._unfinished)

    def __repr__(self) -> str:
        stats = self.statistics()
        return (f"<AsyncPool {self._name!r} workers={self.workers} "
                f"running={stats.running} queued={stats.queued}>")


def _future_of(task: Task) -> AsyncFuture[Any]:
    """The future of a task this pool made (the engine types it as a ``TaskFuture``)."""
    future = task.future
    assert type(future) is AsyncFuture
    return future
