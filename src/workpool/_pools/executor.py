"""The executor pools: ``ThreadPool`` here, and the shared front end for the others.

``ExecutorPool`` is what a user touches: argument checks, ``submit``/``schedule``/
``map``, shutdown and Ctrl-C escalation. The work itself is scheduled by an
``Engine`` (``_engine/engine.py``) and run by the pool kind's backend
(``_backends/``), composed into it. May import ``_core``, ``_engine``, ``_backends``,
``_sync`` and ``map``.
"""

from __future__ import annotations

import os
import threading
import time
import weakref
from collections.abc import Callable, Iterable
from concurrent.futures import Executor, Future, ThreadPoolExecutor
from concurrent.futures.thread import BrokenThreadPool
from types import TracebackType
from typing import Any, ClassVar, Final, Literal, ParamSpec, TypeVar, cast, final, overload

from .._core.chunk import Chunk, ChunkRun
from .._core.exceptions import Cancelled, WouldBlock
from .._core.future import LeanFuture
from .._core.metrics import check_metrics, register
from .._core.options import (
    Cost,
    OnError,
    Workers,
    check_budget,
    check_grace,
    check_map_args,
    check_pool_options,
    check_resize,
    check_schedule_args,
    check_timeout,
    pool_workers,
)
from .._core.outcome import Error, Value
from .._core.progress import ProgressArg, check_progress
from .._core.ratelimit import RateLimit
from .._core.retry import Retry
from .._core.stats import PoolStatistics
from .._engine.contract import Backend, ChunkTask, Run, Task, TaskFuture, new_call
from .._engine.engine import OPEN, Engine
from .._sync.memory_budget import Budget, MemoryBudget
from .._sync.semaphore import Semaphore
from .map import MapIterator, MapRun, results

__all__ = ["ExecutorPool", "ThreadPool"]

P = ParamSpec("P")
T = TypeVar("T")

_LIVE: weakref.WeakSet[Engine] = weakref.WeakSet()
_COUNTER = iter(range(1, 1 << 62))
_EXIT_ERROR = (RuntimeError, "cannot schedule new futures after interpreter shutdown")
_NO_KWARGS: Final[dict[str, Any]] = {}  # the kwargs of a call made by a group: none
_exiting = False


def _python_exit() -> None:
    # At interpreter exit, pools nobody shut down finish their queued work (as the
    # stdlib's executors do) instead of leaving idle workers waiting forever; from
    # then on a submit (from an atexit hook, say) fails as the stdlib's does.
    global _exiting
    _exiting = True
    for engine in list(_LIVE):
        engine.close_intake(_EXIT_ERROR)
    for engine in list(_LIVE):
        engine.join(None)


def _after_fork_in_child() -> None:
    # A forked child inherits the pools but none of their workers: it must never wait
    # for them or stop them (at exit, or when a pool is collected there).
    for engine in list(_LIVE):
        if engine.finalizer is not None:
            engine.finalizer.detach()
        engine.after_fork_in_child()
    _LIVE.clear()


threading._register_atexit(_python_exit)  # type: ignore[attr-defined]
os.register_at_fork(after_in_child=_after_fork_in_child)


class ExecutorPool(Executor):
    """What every ``concurrent.futures``-compatible workpool pool shares."""

    _broken_type: ClassVar[type[Exception]]
    _chunk_target: ClassVar[float]  # seconds a map chunk should take
    _max_chunk: ClassVar[int]

    def __init__(self, workers: Workers | None = None, *, max_workers: int | None = None,
                 queue_size: int = 1024, timeout: float | None = None,
                 retry: Retry | None = None, rate: RateLimit | None = None,
                 initializer: Callable[..., Any] | None = None,
                 initargs: tuple[Any, ...] = (), name: str | None = None,
                 budget: Budget | None = None, thread_name_prefix: str = "",
                 metrics: bool | str = False) -> None:
        count, dynamic = pool_workers(workers, max_workers, self._default_workers())
        check_pool_options(queue_size, retry, rate, initializer)
        check_budget(budget, (Semaphore, MemoryBudget))
        check_metrics(metrics)
        self._budget = budget
        self._timeout = check_timeout(timeout)
        self._retry = retry
        self._rate = rate
        self._workers = count
        if not isinstance(thread_name_prefix, str):
            raise TypeError(f"thread_name_prefix must be a str, got {thread_name_prefix!r}")
        self._name = name or thread_name_prefix or f"{type(self).__name__}-{next(_COUNTER)}"
        self._backend = self._make_backend(initializer, tuple(initargs))
        self._engine = Engine(
            self._backend, workers=count, queue_size=queue_size, timeout=self._timeout,
            retry=retry, bucket=None if rate is None else rate.bucket(), name=self._name,
            broken_type=self._broken_type, dynamic=dynamic)
        self._dynamic = dynamic
        # What the backend prepared once per run of chunks (a map, a pipeline stage),
        # kept while the run lives.
        self._runs: weakref.WeakKeyDictionary[ChunkRun, Run] = weakref.WeakKeyDictionary()
        self._max_workers = count  # read by code written for the stdlib (dask, ...)
        self._unfinished: list[Future[Any]] = []
        _LIVE.add(self._engine)
        self._engine.finalizer = weakref.finalize(self, self._engine.close_intake)
        if _exiting:  # created by an atexit hook: refuses work as the stdlib's does
            self._engine.close_intake(_EXIT_ERROR)
        register(self, metrics, self._name)

    def _default_workers(self) -> int:
        raise NotImplementedError

    def _make_backend(self, initializer: Callable[..., Any] | None,
                      initargs: tuple[Any, ...]) -> Backend:
        raise NotImplementedError

    @property
    def workers(self) -> int:
        """The number of workers the pool keeps (a dynamic pool: the most it may have
        now, its ``max`` or its adaptive limit)."""
        return self._engine.target

    def resize(self, workers: int | None = None, *, min: int | None = None,
               max: int | None = None) -> None:
        """Change the pool's size while it runs.

        A fixed pool keeps *workers* from now on. An Autoscale pool takes a new
        ``max`` (*workers*, or ``max=``) and ``min``; an Adaptive pool new bounds for
        its limit (``min=``, ``max=``). Workers above the new size leave: idle ones at
        once, busy ones when their task ends (no task is stopped or lost); when the
        size grows, queued tasks get new workers at once.

        Raises:
            TypeError: a count where bounds are expected (or the other way round).
            ValueError: a count below 1, or bounds that break the policy's rules.

        Example::

            pool.resize(32)                      # a fixed pool
            pool.resize(min=2, max=64)           # an Autoscale pool
        """
        check_resize(self._dynamic, workers, min, max)
        self._engine.resize(workers, low=min, high=max)
        if self._dynamic is None:
            self._max_workers = self._engine.target

    # -- submitting ------------------------------------------------------------------

    def submit(self, fn: Callable[P, T], /, *args: P.args, **kwargs: P.kwargs) -> Future[T]:
        """Run ``fn(*args, **kwargs)`` on a worker; return its future.

        Blocks while the queue is full (``queue_size``).

        Raises:
            PoolClosed: the pool was shut down (a RuntimeError, with the stdlib's message).
            TypeError: *fn* is not callable.
        """
        if not callable(fn):
            raise TypeError(f"fn must be callable, got {fn!r}")
        future: Future[T] = LeanFuture()
        task = self._task(fn, args, kwargs, future, 0, self._timeout, self._retry)
        if task is None:  # failed already (arguments a process cannot be sent)
            return future
        if self._budget is None:
            self._engine.put(task)
        else:
            self._put_with_budget(task, 1, True)
        return future

    def _put_with_budget(self, task: Task, cost: int, block: bool) -> None:
        """Admit *task* once *cost* tokens of the budget are free; they return to the
        budget when the task ends."""
        budget = self._budget
        assert budget is not None
        if block:
            budget.acquire(cost)
        elif not budget.try_acquire(cost):
            raise WouldBlock(f"budget has {budget.statistics().available} of the {cost} "
                             "tokens this task costs")
        try:
            self._engine.put(task, block=block)
        except BaseException:
            budget.release(cost)
            raise
        _future(task).add_done_callback(lambda _: budget.release(cost))

    def _submit_chunk(self, fn: Callable[..., Any], items: list[Any], *, star: bool = False,
                      flag: ChunkRun | None = None, timeout: float | None = None,
                      retry: Retry | None = None, block: bool = True,
                      tokens: int | None = None) -> Future[Chunk]:
        """The pools' chunk API, what ``map`` and pipeline stages stand on: run *fn*
        on each of *items* (``fn(*item)`` when *star*) as one task; its future's
        ``Chunk`` holds a value per item and the errors by index (an item's error fails
        that item alone; the future itself fails only when the task does, as under
        *timeout* or once *retry* is spent, which apply to the chunk as a whole).

        *flag* is the run the chunk belongs to: a running thread chunk stops between
        items once ``flag.closed`` is true, and what the backend prepares once per run
        (the pickled *fn*, for processes) is kept per *flag*. A rate limit applies per
        item; the budget, if any, is held for *tokens* (``len(items)`` unless given:
        one per item). Blocks while the
        queue is full, unless not *block* (``wp.QueueFull``, or ``wp.WouldBlock`` for
        the budget).

        Raises:
            PoolClosed: the pool was shut down.
            The pickling error (processes) when *fn* or an item cannot be sent.
        """
        backend = self._backend
        run = None if flag is None else self._runs.get(flag)
        if run is None:
            run = Run(backend.prepare_run(fn))
            if flag is not None:
                self._runs[flag] = run
        payload = backend.prepare_chunk(fn, run.prepared, star, items)
        task = ChunkTask(fn, LeanFuture(), items, star=star, flag=flag, timeout=timeout,
                         retry=retry, payload=payload, run=run)
        if self._budget is None:
            self._engine.put(task, block=block)
        else:
            self._put_with_budget(task, len(items) if tokens is None else tokens, block)
        return _future(task)

    def _task(self, fn: Callable[..., Any], args: tuple[Any, ...], kwargs: dict[str, Any],
              future: Future[Any], priority: int, timeout: float | None,
              retry: Retry | None) -> Task | None:
        """The task for a call; None if *future* failed already (then the call is
        counted as submitted and failed)."""
        return new_call(fn, args, kwargs, future, priority, timeout, retry, None)

    def submit_nowait(self, fn: Callable[P, T], /, *args: P.args,
                      **kwargs: P.kwargs) -> Future[T]:
        """Like ``submit``, but raise ``wp.QueueFull`` instead of waiting."""
        if not callable(fn):
            raise TypeError(f"fn must be callable, got {fn!r}")
        future: Future[T] = LeanFuture()
        task = self._task(fn, args, kwargs, future, 0, self._timeout, self._retry)
        if task is None:
            return future
        if self._budget is None:
            self._engine.put(task, block=False)
        else:
            self._put_with_budget(task, 1, False)
        return future

    def schedule(self, fn: Callable[..., T], args: Iterable[Any] = (),
                 kwargs: dict[str, Any] | None = None, *, priority: int = 0,
                 timeout: float | None = None, retry: Retry | None = None,
                 key: Any = None, block: bool = True, cost: int = 1) -> Future[T]:
        """Submit with per-task options.

        Args:
            fn: the callable; *args* and *kwargs* are passed to it.
            priority: higher runs first; FIFO within a priority.
            timeout: seconds this task may run (overrides the pool's).
            retry: this task's retry policy (overrides the pool's).
            key: a caller's identifier for the task, kept as ``future.key``.
            block: False raises ``wp.QueueFull`` instead of waiting for room (or
                ``wp.WouldBlock`` when the budget lacks the tokens).
            cost: tokens of the pool's ``budget`` the task holds from admission to its
                end (bytes, say), so the budget bounds what is in flight.

        Example::

            urgent = pool.schedule(fetch, ("/health",), priority=10, timeout=2.0)
        """
        if not callable(fn):
            raise TypeError(f"fn must be callable, got {fn!r}")
        check_schedule_args(priority, retry, kwargs, cost)
        task_timeout = self._timeout if timeout is None else check_timeout(timeout)
        future: Future[T] = LeanFuture()
        future.key = key  # type: ignore[attr-defined]  # as AsyncFuture.key
        task = self._task(fn, tuple(args), kwargs or {}, future, priority, task_timeout,
                          self._retry if retry is None else retry)
        if task is None:
            return future
        if self._budget is None:
            self._engine.put(task, block=block)
        else:
            self._put_with_budget(task, cost, block)
        return future

    @overload
    def map(self, fn: Callable[..., T], *iterables: Iterable[Any],
            timeout: float | None = None, chunksize: int | str = "auto",
            ordered: bool = True, window: int | None = None,
            on_error: Literal["raise", "collect", "skip"] = "raise",
            cost: Cost = 1, progress: ProgressArg = False) -> MapIterator[T]: ...

    @overload
    def map(self, fn: Callable[..., T], *iterables: Iterable[Any],
            timeout: float | None = None, chunksize: int | str = "auto",
            ordered: bool = True, window: int | None = None,
            on_error: Literal["return"], cost: Cost = 1,
            progress: ProgressArg = False) -> MapIterator[Value[T] | Error]: ...

    def map(self, fn: Callable[..., T], *iterables: Iterable[Any],
            timeout: float | None = None, chunksize: int | str = "auto",
            ordered: bool = True, window: int | None = None,
            on_error: OnError = "raise", cost: Cost = 1,
            progress: ProgressArg = False) -> MapIterator[Any]:
        """Lazily apply *fn* to the items of *iterables* (zipped, as ``map``).

        Reads the input only ``window`` items ahead of what you consumed, so an endless
        generator maps in flat memory. ``chunksize="auto"`` batches items from their
        measured run time (1 when the pool has a timeout, retry or rate policy:
        with a larger chunksize those apply per chunk). ``ordered=False`` yields in
        completion order.
        ``on_error``: "raise" raises the first error after the items before it;
        "return" yields ``wp.Value``/``wp.Error`` per item; "skip" drops failed items;
        "collect" drops them too and, after the last item, raises ``wp.ItemsFailed``
        listing them all (the same on every pool and pipeline stage). ``timeout`` is
        the stdlib's: ``TimeoutError`` if a result is not ready that many seconds
        after the call. ``cost`` is what each item holds of the pool's ``budget``
        while it is out: an int, or a function of the item (``len``, say: then each
        item is a chunk of its own); it is called in this thread, as items are read.
        ``progress=True`` shows a live bar on standard error (count, rate, time left;
        plain lines when it is not a terminal) while you iterate; ``progress=callable``
        is called with ``wp.ProgressCounts`` instead (in your thread, at most ten times
        a second, and once at the end). The total is the input's ``len()`` when it has
        one.

        Closing the iterator early cancels what is queued. An iterator nobody
        iterates still runs all its items by the pool's shutdown, as the stdlib's.

        Example::

            for size in pool.map(len, open("big.txt"), ordered=False):
                total += size

            squares = list(pool.map(square, range(10_000), progress=True))
        """
        if not callable(fn):
            raise TypeError(f"fn must be callable, got {fn!r}")
        if not iterables:
            raise TypeError("map() must have at least one iterable")
        check_map_args(chunksize, window, on_error, timeout)
        check_budget(self._budget, (Semaphore, MemoryBudget), cost,
                     bounded=not isinstance(self._budget, MemoryBudget))
        check_progress(progress)
        if self._engine.state != OPEN:
            self._engine.put(Task(fn, (), {}, Future()))  # raises as submit would
        policies = (self._timeout is not None or self._retry is not None
                    or self._rate is not None)
        run = MapRun(self._engine, self._submit_chunk, fn, iterables, timeout=timeout,
                     chunksize=1 if policies and chunksize == "auto" else chunksize,
                     ordered=ordered, window=window, on_error=on_error,
                     workers=self._workers, target=self._chunk_target,
                     max_chunk=self._max_chunk, task_timeout=self._timeout,
                     task_retry=self._retry, budget=self._budget, cost=cost,
                     progress=progress)
        self._engine.remember_map(run)
        run.fill()
        return results(run)

    # -- shutting down ---------------------------------------------------------------

    def shutdown(self, wait: bool = True, *, cancel_futures: bool = False,
                 timeout: float | None = None) -> None:
        """Stop taking work, then drain, cancel, or drain until a deadline.

        - ``shutdown()``: run everything queued, then return.
        - ``shutdown(cancel_futures=True)``: cancel what is queued or waiting to retry;
          running tasks finish (exactly as the stdlib's).
        - ``shutdown(timeout=s)``: drain for up to *s* seconds, then cancel what is
          left and stop running tasks (``timeout=0``: at once): their futures fail
          with ``wp.Cancelled``; threads are asked to stop (``wp.current().cancelled``)
          and given up on, processes are killed.
        - ``wait=False``: return at once; workers finish in the background.

        Ctrl-C while the ``with`` block exits escalates the same way: the first cancels
        what is queued and waits for running tasks, a second stops those too.
        ``unfinished`` then holds every future the shutdown cancelled or gave up on,
        running ones included.
        """
        grace = check_grace(timeout)
        deadline = None if grace is None else time.monotonic() + grace
        engine = self._engine
        runs = engine.take_maps()
        if wait and not cancel_futures and deadline is None:
            for run in runs:
                run.drain()
        engine.close_intake()
        left = self._unfinished
        if cancel_futures:
            left += _futures(engine.cancel_pending())
        if not wait or engine.join(deadline):
            return
        running = _futures(engine.running_futures())
        left += _futures(engine.cancel_pending())
        engine.abandon_running()
        engine.join(None)
        # Running tasks given up on; a task that finished on its own meanwhile is not.
        left += [f for f in running if f.done() and _was_cancelled(f)]

    def _cancel_all(self) -> None:
        """Stop everything now, in one call, without waiting (``shutdown()`` waits):
        close intake, cancel what is queued or waiting to retry, and stop running
        tasks, threads cooperatively (their context is cancelled), processes by a
        kill; a task handed to a worker that has not started it yet is stopped too.

        Stronger than ``shutdown(cancel_futures=True)``, whose running tasks finish as
        the stdlib's; the pools' way for a cancelled pipeline stage."""
        engine = self._engine
        engine.take_maps()
        engine.close_intake()
        self._unfinished += _futures(engine.cancel_all())

    @property
    def unfinished(self) -> tuple[Future[Any], ...]:
        """Futures that a shutdown cancelled or gave up on, in no particular order."""
        return tuple(self._unfinished)

    def __enter__(self) -> ExecutorPool:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        if exc_type is not None and issubclass(exc_type, KeyboardInterrupt):
            self._escalate()
            return
        try:
            self.shutdown(wait=True)
        except KeyboardInterrupt:
            self._escalate()
            raise

    def _escalate(self) -> None:
        """Ctrl-C: first cancel what is queued and wait for running tasks; a second
        Ctrl-C gives up on those too."""
        try:
            self.shutdown(wait=True, cancel_futures=True)
        except KeyboardInterrupt:
            self._unfinished += _futures(self._engine.abandon_running())
            self._engine.join(None)
            raise

    def statistics(self) -> PoolStatistics:
        """A frozen snapshot of the pool's counters and latencies."""
        return self._engine.statistics()

    def __repr__(self) -> str:
        stats = self.statistics()
        return (f"<{type(self).__name__} {self._name!r} workers={self.workers} "
                f"running={stats.running} queued={stats.queued}>")


def _future(task: Task) -> Future[Any]:
    """The future of a task this pool made: always a ``concurrent.futures.Future``
    (the engine types it by what it needs of one, ``TaskFuture``)."""
    return cast("Future[Any]", task.future)


def _futures(futures: list[TaskFuture]) -> list[Future[Any]]:
    """What the engine returns of this pool's tasks' futures (see ``_future``)."""
    return cast("list[Future[Any]]", futures)


def _was_cancelled(future: Future[Any]) -> bool:
    return future.cancelled() or isinstance(future.exception(0), Cancelled)


@final
class ThreadPool(ExecutorPool, ThreadPoolExecutor):
    """A bounded pool of worker threads; a drop-in ``ThreadPoolExecutor``.

    It is a ``ThreadPoolExecutor`` (a subclass, for code that checks, such as
    ``asyncio``'s ``loop.set_default_executor``), run by workpool's engine.

    Args:
        workers: threads to keep (default ``min(32, wp.cpus() + 4)``, as the stdlib).
        max_workers: the stdlib's name for *workers*.
        queue_size: tasks that may wait for a worker (default 1024); ``submit`` waits
            when it is full, ``submit_nowait`` raises ``wp.QueueFull``; 0 hands each
            task straight to a worker.
        timeout: seconds a task may run; then its future fails with ``wp.TaskTimeout``,
            its context is cancelled and a new thread takes the stuck one's place.
        retry: a ``wp.Retry`` policy for failed tasks (a waiting retry holds no thread).
        rate: a ``wp.RateLimit`` shared by all workers.
        initializer: called in each new thread with *initargs*; its return value is
            the worker's ``wp.current().state``.
        name: prefix of the threads' names (``thread_name_prefix``, the stdlib's
            name for it, is accepted too).
        budget: a ``wp.Semaphore`` or a ``wp.MemoryBudget`` every task takes ``cost``
            tokens of (1 unless ``schedule(..., cost=n)`` or ``map(..., cost=)`` says
            otherwise) from admission to its end: with costs in bytes, the pool bounds
            the bytes in flight, not only the tasks.
        metrics: True (under the pool's name) or a name: show the pool's statistics
            to ``workpool.exporters.prometheus`` while it lives.

    Whatever a task raises, ``BaseException`` included (``KeyboardInterrupt``,
    ``SystemExit``), fails that task's future alone, as with the stdlib's executors:
    ``result()`` re-raises it, and the pool and its other tasks go on.

    Costs about a microsecond per ``map`` item and less than the stdlib per ``submit``.

    Example::

        with wp.ThreadPool(16, rate=wp.RateLimit(per_second=20)) as pool:
            for status in pool.map(fetch_status, urls, ordered=False):
                print(status)
    """

    _broken_type = BrokenThreadPool
    _chunk_target = 0.002
    _max_chunk = 512

    def _default_workers(self) -> int:
        from .._core.sizing import cpus

        return min(32, cpus() + 4)

    def _make_backend(self, initializer: Callable[..., Any] | None,
                      initargs: tuple[Any, ...]) -> Backend:
        from .._backends.thread import ThreadBackend

        return ThreadBackend(initializer, initargs)

    def __enter__(self) -> ThreadPool:
        return self

    # -- the hook of a wp.Group over its own pool --------------------------------------

    def _put_future(self, future: Future[Any], fn: Callable[..., Any],
                    args: tuple[Any, ...], *, after_me: bool = False) -> None:
        """Run ``fn(*args)`` and settle *future*, which the caller made (a ``wp.Group``
        makes its own, which tells the group when it is cancelled); the pool's
        options (timeout, retry, budget) do not apply. Blocks while the queue is full.
        *after_me*: the caller is a task of this pool, about to end, whose worker is
        to run this one next (``Engine.put_next``).
        """
        task = new_call(fn, args, _NO_KWARGS, future, 0, None, None, None)
        if after_me:
            self._engine.put_next(task)
        else:
            self._engine.put(task)

