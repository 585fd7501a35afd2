"""``AsyncGroup``: Go's errgroup with ``SetLimit``, for coroutines, on asyncio and trio:
an ``AsyncPool``, a limit and a fail-fast error policy. May import ``_core``,
``_backends``, ``_engine`` and ``_pools``.

A group runs its tasks on a pool, and schedules nothing itself::

    go(fn) ── limit reached? park ── group cancelled? ──▶ a cancelled AsyncFuture
                   │ no                                   (fn never runs)
                   ▼
       the group's own lazy AsyncPool(limit) ── or ── the AsyncPool passed as pool=
         (Engine.put, straight)                        (submit's path: room, budget)
                   │  every task carries the group's Spec: its on_end hook counts the
                   ▼  task's end where the engine settles it, no done callback each
    the first failure: the pool cancels the group's tasks (its backend's cancel_where:
    queued ones never start, running ones are interrupted), the block's cancel scope is cancelled,
    waiting go() calls return cancelled futures
    __aexit__: wait until no task is in flight, leave the scope and the own pool,
    raise the verdict (``policy.py``, shared with ``Group``)

The block runs in a cancel scope of the group's (with the ``timeout`` as its
deadline), entered after the own pool on an ``AsyncExitStack``. Cancelling the group
cancels that scope and the group's tasks one by one, never the pool's workers: a pool
passed as ``pool=`` runs other tasks too.
"""

from __future__ import annotations

import inspect
import itertools
import math
from collections.abc import Awaitable, Callable
from concurrent.futures import CancelledError
from contextlib import AsyncExitStack
from types import TracebackType
from typing import Any, Final, ParamSpec, TypeVar, final

import anyio
import anyio.lowlevel

from .._backends.aio import NO_LOT, Lot, lot_type
from .._core.dynamic import Adaptive, Autoscale
from .._core.exceptions import WouldBlock
from .._core.metrics import register
from .._core.options import check_timeout
from .._engine.async_task import (
    ASYNC,
    CANCELLED,
    QUEUED,
    VALUE,
    AsyncFuture,
    Spec,
    new_future,
)
from .._engine.contract import new_call
from .._pools.async_pool import AsyncPool
from .policy import (
    CLOSED,
    EXITING,
    NEW,
    OPEN,
    GroupBase,
    check_group_metrics,
    check_limit,
    group_samples,
    verdict,
)

__all__ = ["AsyncGroup"]

P = ParamSpec("P")
T = TypeVar("T")

MESSAGE: Final = "unhandled errors in an AsyncGroup"
NOT_STARTED: Final = "the group was cancelled before the task started"
WITH_GROUP: Final = "cancelled with its group while running"
# A group without a limit starts every task at once: its pool may grow to as many
# workers as tasks run at the same time (idle ones are reused).
UNLIMITED: Final = 1 << 16
_COUNTER = itertools.count(1)
_new = object.__new__


@final
class AsyncGroup(GroupBase):
    """Run coroutines at most ``limit`` at once, and stop them all at the first
    failure: Go's ``errgroup`` with ``SetLimit``, on asyncio or trio.

    ``await g.go(fn, *args, **kwargs)`` starts ``fn(*args, **kwargs)`` and returns
    its ``wp.AsyncFuture`` (await it for the result; ``cancel()``, ``done()``,
    ``result()``); while ``limit`` tasks are in flight it waits for one to end.
    Leaving the ``async with`` block waits for every task.

    The first task that fails cancels the group, through anyio's cancel scopes: tasks
    not started yet never start (their futures are cancelled, and so are those of
    later ``go`` calls), running ones are cancelled at their next ``await``, and so is
    the block itself. Leaving the block then raises
    ``ExceptionGroup("unhandled errors in an AsyncGroup", [...])`` of every real
    failure, in the order they happened; cancellations are not failures. As with
    ``asyncio.TaskGroup``, an exception raised by the block itself cancels the group
    too and is raised inside that ``ExceptionGroup``, after the tasks' failures;
    ``KeyboardInterrupt`` and ``SystemExit`` cancel, wait, and are re-raised as they
    are. A cancellation of the block from outside cancels the tasks and propagates.

    ``go`` takes coroutine functions only (a ``TypeError`` names anything else); run
    a blocking function with ``go(anyio.to_thread.run_sync, fn, *args)``. It waits
    only for the limit: it is not a checkpoint otherwise. Inside a task,
    ``wp.current()`` gives its context (``cancelled``, ``acheckpoint()``).

    Args:
        limit: the most tasks in flight at once (None: no limit, every ``go``
            starts its task at once); or a ``wp.Autoscale`` or ``wp.Adaptive`` for
            the group's own pool (``go`` blocks at its ``max``), as for ``Group``.
        pool: a ``wp.AsyncPool`` to run the tasks on (with its timeout, retry, rate
            and budget), instead of an ``AsyncPool`` of the group's own; the group
            still applies its limit and cancellation and does not close the pool.
        timeout: seconds for the whole group, from entering the block; then the
            group is cancelled and leaving the block raises ``TimeoutError``
            (inside the ``ExceptionGroup`` if tasks failed too).
        name: names the group's worker tasks (default ``workpool-agroup-N``).
        metrics: True (under the group's name) or a name: show the statistics of the
            group's own pool to ``workpool.exporters.prometheus`` while the group
            lives (not with *pool*: opt that pool in instead).

    Cost: a ``go`` creates no task, a few microseconds, about a third of
    ``asyncio.TaskGroup.create_task`` with a semaphore: the group's own pool starts
    worker tasks as they are needed, up to ``limit`` (as many as run at once without
    a limit), which take queued tasks in turn. It keeps each task's result for
    ``results()``.

    Raises:
        ValueError: *limit* < 1 or *timeout* <= 0.
        TypeError: *limit* is not an int, or *pool* not an ``AsyncPool``.

    Example::

        async with wp.AsyncGroup(limit=8) as g:  # 200 calls, 8 at once, stop at the first error
            for url in urls:
                await g.go(fetch, url)
        pages = g.results()                      # in go order
    """

    __slots__ = ("__weakref__", "_active", "_base_error", "_cancel_exc", "_cancelled",
                 "_cancelled_tasks", "_direct", "_done", "_engine", "_errors", "_exiting",
                 "_failed", "_last_fn", "_limit", "_name", "_own", "_pool", "_scope",
                 "_space", "_space_waiters", "_spec", "_stack", "_state",
                 "_timed_out", "_timeout", "_values")

    def __init__(self, limit: int | Autoscale | Adaptive | None = None, *,
                 pool: AsyncPool | None = None,
                 timeout: float | None = None, name: str | None = None,
                 metrics: bool | str = False) -> None:
        if pool is not None and not isinstance(pool, AsyncPool):
            raise TypeError(f"pool must be a wp.AsyncPool or None, got {pool!r}")
        limit, dynamic = check_limit(limit, pool)
        check_group_metrics(metrics, pool)
        self._limit = limit
        self._timeout = check_timeout(timeout)
        self._name = name or f"workpool-agroup-{next(_COUNTER)}"
        self._own = pool is None
        self._direct = self._own  # go() queues on the own pool itself: not cancelled
        if pool is None:
            size = limit or UNLIMITED  # the limit bounds the queue too: it never fills
            pool = AsyncPool(dynamic or size, queue_size=size, name=self._name)
            pool._lazy = True
        self._pool = pool
        engine = self._engine = pool._engine
        # Every task of the group carries this spec (the pool's options); its end
        # hook counts the task's end. A refused go() gets a future without the hook.
        self._spec = Spec(pool._backend, ASYNC, engine.timeout, engine.retry,
                          rated=engine.bucket is not None, on_end=self._ended)
        self._state = NEW
        self._exiting = False  # the block has ended: __aexit__ waits for the last task
        self._active = 0  # tasks started by go() and not ended
        self._cancelled = False
        self._timed_out = False
        # Results, not futures, are kept for results(): holding every future alive
        # costs a third more per go() through the garbage collector.
        self._values: list[Any] = []
        self._errors: list[Exception] = []
        self._base_error: BaseException | None = None
        self._failed = 0
        self._cancelled_tasks = 0
        self._last_fn: Any = None
        self._space: Lot = NO_LOT  # go() calls waiting for the limit
        self._space_waiters = NO_LOT.waiters  # its waiters, for the hot path
        self._done: Lot = NO_LOT  # __aexit__ waiting for the last task
        self._scope: anyio.CancelScope | None = None  # the block's
        self._stack = AsyncExitStack()  # the own pool, then the block's scope
        self._cancel_exc: type[BaseException] = BaseException
        register(self, metrics, self._name, group_samples)

    # -- life cycle ---------------------------------------------------------------------

    async def __aenter__(self) -> AsyncGroup:
        if self._state != NEW:
            raise RuntimeError("an AsyncGroup can be entered only once")
        self._cancel_exc = anyio.get_cancelled_exc_class()
        new_lot = lot_type()
        self._space, self._done = new_lot(), new_lot()
        self._space_waiters = self._space.waiters
        if self._own:
            await self._stack.enter_async_context(self._pool)
        deadline = math.inf if self._timeout is None else anyio.current_time() + self._timeout
        self._scope = self._stack.enter_context(anyio.CancelScope(deadline=deadline))
        self._state = OPEN
        return self

    async def __aexit__(self, exc_type: type[BaseException] | None,
                        exc: BaseException | None, tb: TracebackType | None) -> bool:
        """Wait for every task, then raise what the block raises; True swallows
        *exc*, False lets it propagate as it is."""
        self._state = EXITING
        self._exiting = True
        caught: BaseException | None = None  # a cancellation of the block
        if isinstance(exc, self._cancel_exc):
            caught = exc
        elif exc is not None:
            if not isinstance(exc, Exception) and self._base_error is None:
                self._base_error = exc
            self.cancel()
        if caught is None and not self._cancelled:
            try:
                await self._wait_tasks()
            except self._cancel_exc as cancelled:
                caught = cancelled
        if caught is not None and not self._cancelled:
            assert self._scope is not None
            if self._scope.cancel_called:  # not cancel(): the deadline
                self._errors.append(TimeoutError(
                    f"group timed out after {self._timeout:g} s"))
                self._timed_out = True
            self._stop()  # whichever scope was cancelled, the tasks stop
        if self._active:
            with anyio.CancelScope(shield=True):  # cancelled: they end at their next await
                await self._wait_tasks()
        propagate = await self._leave(caught)
        self._state = CLOSED
        return self._verdict(exc, caught, propagate)

    async def _wait_tasks(self) -> None:
        while self._active:
            await self._done.park()

    async def _leave(self, caught: BaseException | None) -> BaseException | None:
        """Leave the block's scope and the own pool; return the cancellation to
        propagate (one from outside the group), if any."""
        try:
            if caught is None:
                await self._stack.__aexit__(None, None, None)
                return None
            if await self._stack.__aexit__(type(caught), caught, caught.__traceback__):
                return None
            return caught
        except self._cancel_exc as outer:
            return outer

    def _verdict(self, exc: BaseException | None, caught: BaseException | None,
                 propagate: BaseException | None) -> bool:
        body_error = exc if isinstance(exc, Exception) and caught is None else None
        if verdict(MESSAGE, self._errors, self._base_error, self._timed_out, exc,
                   body_error):
            return False
        if propagate is None:
            return exc is not None  # the group's own cancellation: swallowed
        if propagate is exc:
            return False
        raise propagate

    # -- starting tasks -------------------------------------------------------------------

    async def go(self, fn: Callable[P, Awaitable[T]], /, *args: P.args,
                 **kwargs: P.kwargs) -> AsyncFuture[T]:
        """Start ``fn(*args, **kwargs)`` in the group; return its ``AsyncFuture``.

        Waits while ``limit`` tasks are in flight. Once the group is cancelled, a
        call from the block raises its cancellation; from elsewhere it returns an
        already cancelled future, and *fn* never runs. Tasks may call ``go`` on
        their own group, also while the block is exiting.

        Raises:
            RuntimeError: the group was not entered, or its block has exited.
            TypeError: *fn* is not a coroutine function.
        """
        # The hot path, inline (a call costs as much as the rest): hand the task to
        # the own pool's engine (its queue never fills: it is as long as the limit).
        if self._state != OPEN:
            self._check_state()
        if fn is not self._last_fn:
            _check_coroutine_function(fn)
            self._last_fn = fn
        limit = self._limit
        if limit is not None:
            while self._active >= limit and not self._cancelled:
                await self._space.park()
        if not self._direct:
            if self._cancelled:
                await anyio.lowlevel.checkpoint()  # the block's cancellation, if ours
                return self._refused(fn, args, kwargs)
            return await self._submit(fn, args, kwargs)
        spec = self._spec
        job: AsyncFuture[T] = _new(AsyncFuture)  # new_future(), inline
        job._fn = fn
        job._spec = spec
        job._state = QUEUED
        job._notify = None
        values = self._values
        job._index = len(values)
        values.append(None)
        self._active += 1
        self._engine.put(new_call(fn, args, kwargs, job, 0, spec.timeout, spec.retry, spec),
                         False)
        return job

    def go_nowait(self, fn: Callable[P, Awaitable[T]], /, *args: P.args,
                  **kwargs: P.kwargs) -> AsyncFuture[T]:
        """Like ``go``, but raise ``wp.WouldBlock`` instead of waiting (Go's
        ``TryGo``). Once the group is cancelled it returns a cancelled future.

        Raises:
            WouldBlock: ``limit`` tasks are in flight (or, with a pool, its queue is
                full: ``wp.QueueFull``).
        """
        if self._state != OPEN:
            self._check_state()
        if fn is not self._last_fn:
            _check_coroutine_function(fn)
            self._last_fn = fn
        limit = self._limit
        if limit is not None and self._active >= limit and not self._cancelled:
            raise WouldBlock(f"the group is at its limit ({limit} tasks in flight)")
        if self._cancelled:
            return self._refused(fn, args, kwargs)
        pool = self._pool
        task = pool._task(fn, args, kwargs, self._spec)
        if not self._direct:
            pool._check_open()
            self._active += 1
            try:
                job = pool._put_now(task, 1)
            except BaseException:
                self._release()
                raise
            return self._admitted(job)
        future = task.future
        assert type(future) is AsyncFuture
        future._index = len(self._values)
        self._values.append(None)
        self._active += 1
        self._engine.put(task, False)
        return future

    def _check_state(self) -> None:
        if self._state == NEW:
            raise RuntimeError("AsyncGroup.go() called before the group was entered: use "
                               "'async with wp.AsyncGroup() as g:'")
        if self._state == CLOSED or (self._state == EXITING and not self._active):
            raise RuntimeError("AsyncGroup.go() called after the group's block exited: a "
                               "group takes no new tasks once all of its tasks ended")

    def _refused(self, fn: Callable[..., Any], args: tuple[Any, ...],
                 kwargs: dict[str, Any]) -> AsyncFuture[Any]:
        """The handle ``go`` returns once the group is cancelled: cancelled already
        (its spec has no end hook: it never was in flight)."""
        del args, kwargs  # fn never runs
        job = new_future(fn, self._pool._defaults[ASYNC])
        job._cancelled(NOT_STARTED)
        self._cancelled_tasks += 1
        return job

    async def _submit(self, fn: Callable[..., Any], args: tuple[Any, ...],
                      kwargs: dict[str, Any]) -> AsyncFuture[Any]:
        """Queue a task on the pool passed as ``pool`` (its room, its budget)."""
        pool = self._pool
        self._active += 1
        try:
            job = await pool._put(pool._task(fn, args, kwargs, self._spec), 1, True)
        except BaseException:
            self._release()
            raise
        return self._admitted(job)

    def _admitted(self, job: AsyncFuture[Any]) -> AsyncFuture[Any]:
        """*job* is on the pool passed as ``pool`` (nothing ran since it was queued)."""
        job._index = len(self._values)
        self._values.append(None)
        if self._cancelled:  # cancelled while go() waited for room
            job.cancel()
        return job

    # -- the end of a task, cancellation --------------------------------------------------

    def _ended(self, job: AsyncFuture[Any]) -> None:
        """The spec's end hook: a task of the group ended, however it ended. The first
        failure (a cancellation is none) cancels the group before its slot frees."""
        state = job._state
        if state == VALUE:  # the hot path: _release() inline
            self._values[job._index] = job._value
            active = self._active = self._active - 1
            if self._space_waiters:
                self._space.unpark()
            if not active and self._exiting:
                self._done.unpark()
            return
        if state == CANCELLED or isinstance(job._value, CancelledError):
            self._cancelled_tasks += 1
        else:
            error = job._value
            self._failed += 1
            if isinstance(error, Exception):
                self._errors.append(error)
            elif self._base_error is None:
                self._base_error = error
            self.cancel()
        self._release()

    def _release(self) -> None:
        """A task left the group."""
        self._active -= 1
        if self._space.waiters:
            self._space.unpark()
        if not self._active and self._exiting:
            self._done.unpark()

    def cancel(self) -> None:
        """Cancel the group: queued tasks never start, running ones and the block are
        cancelled at their next ``await`` (as ``tg.cancel_scope.cancel()``), later
        ``go`` calls return cancelled futures. Leaving the block raises only for real
        failures, not for this cancellation."""
        if self._cancelled:
            return
        self._stop()
        if self._scope is not None:
            self._scope.cancel()

    def _stop(self) -> None:
        """Refuse new tasks, cancel those queued and running, wake waiting go()s."""
        self._cancelled = True
        self._direct = False
        spec = self._spec
        self._pool._backend.cancel_where(lambda task: task.payload is spec, NOT_STARTED,
                                         WITH_GROUP)
        self._space.unpark_all()

    # -- results ------------------------------------------------------------------------

    def results(self) -> list[Any]:
        """The tasks' results, in ``go`` order, once the block exited and every task
        succeeded.

        Raises:
            RuntimeError: called before the block exited, or a task failed or was
                cancelled (the message counts them).
        """
        if self._state != CLOSED:
            raise RuntimeError("AsyncGroup.results() called before the group's block "
                               "exited: call it after the 'async with' block")
        if self._failed or self._cancelled_tasks:
            raise RuntimeError(f"AsyncGroup.results() needs every task to succeed: "
                               f"{self._failed} failed, {self._cancelled_tasks} cancelled")
        return list(self._values)

    def _metrics_pool(self) -> AsyncPool | None:
        return self._pool if self._own else None

    def __repr__(self) -> str:
        state = ("new", "open", "exiting", "closed")[self._state]
        return (f"<AsyncGroup {self._name!r} {state} limit={self._limit} "
                f"in_flight={self._active} cancelled={self._cancelled}>")


def _check_coroutine_function(fn: Any) -> None:
    if inspect.iscoroutinefunction(fn):
        return
    if inspect.iscoroutine(fn):
        fn.close()  # no "never awaited" warning: the error says what to do
        raise TypeError(f"go() takes a coroutine function and its arguments, got the "
                        f"coroutine object {fn.__qualname__}(): write "
                        f"go({fn.__qualname__}, *args)")
    if not callable(fn):
        raise TypeError(f"fn must be callable, got {fn!r}")
    if inspect.iscoroutinefunction(type(fn).__call__):
        return  # an object with an async __call__
    name = getattr(fn, "__qualname__", None) or repr(fn)
    raise TypeError(f"{name} is not a coroutine function: AsyncGroup.go() runs 'async "
                    f"def' functions; run a blocking one with "
                    f"go(anyio.to_thread.run_sync, {name}, ...)")

