"""``AsyncGroup``: Go's errgroup with ``SetLimit``, for coroutines, on asyncio and trio.

The front end: argument checks, ``go`` and the ``async with`` life cycle. The queue,
the worker tasks and the group's end are the ``GroupEngine``'s
(``async_engine.py``); the verdict is ``policy.py``'s, shared with ``Group``.
"""

from __future__ import annotations

import inspect
import itertools
from collections.abc import Awaitable, Callable
from types import TracebackType
from typing import Any, ParamSpec, TypeVar, final

import anyio.lowlevel

from .._core.exceptions import WouldBlock
from .._core.options import check_timeout
from .._engine.async_task import AsyncFuture, new_future
from .._pools.async_pool import AsyncPool
from .async_engine import CLOSED, OPEN, GroupEngine
from .policy import check_limit

__all__ = ["AsyncGroup"]

P = ParamSpec("P")
T = TypeVar("T")
_COUNTER = itertools.count(1)


@final
class AsyncGroup:
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
            starts its task at once).
        pool: a ``wp.AsyncPool`` to run the tasks on, instead of worker tasks of the
            group's own; the group still applies its limit and cancellation and does
            not close the pool.
        timeout: seconds for the whole group, from entering the block; then the
            group is cancelled and leaving the block raises ``TimeoutError``
            (inside the ``ExceptionGroup`` if tasks failed too).
        name: names the group's worker tasks (default ``workpool-agroup-N``).

    Cost: a ``go`` creates no task, a few microseconds, about a third of
    ``asyncio.TaskGroup.create_task`` with a semaphore: the group keeps up to
    ``limit`` worker tasks (as many as run at once without a limit), which take
    queued jobs in turn. It keeps each task's result for ``results()``.

    Raises:
        ValueError: *limit* < 1 or *timeout* <= 0.
        TypeError: *limit* is not an int, or *pool* not an ``AsyncPool``.

    Example::

        async with wp.AsyncGroup(limit=8) as g:  # 200 calls, 8 at once, stop at the first error
            for url in urls:
                await g.go(fetch, url)
        pages = g.results()                      # in go order
    """

    def __init__(self, limit: int | None = None, *, pool: AsyncPool | None = None,
                 timeout: float | None = None, name: str | None = None) -> None:
        limit = check_limit(limit)
        if pool is not None and not isinstance(pool, AsyncPool):
            raise TypeError(f"pool must be a wp.AsyncPool or None, got {pool!r}")
        self._r = GroupEngine(limit, pool, check_timeout(timeout),
                              name or f"workpool-agroup-{next(_COUNTER)}")

    @property
    def limit(self) -> int | None:
        """The most tasks in flight at once (None: no limit)."""
        return self._r.limit

    @property
    def cancelled(self) -> bool:
        """True once the group was cancelled (a failure, the deadline, ``cancel()``)."""
        return self._r.cancelled

    async def __aenter__(self) -> AsyncGroup:
        await self._r.open()
        return self

    async def __aexit__(self, exc_type: type[BaseException] | None,
                        exc: BaseException | None, tb: TracebackType | None) -> bool:
        return await self._r.close(exc)

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
        # The hot path, inline (a call costs as much as the rest): queue the job and
        # make sure a worker is on its way (GroupEngine.queue).
        r = self._r
        if r.state != OPEN:
            r.check_state()
        if fn is not r.last_fn:
            _check_coroutine_function(fn)
            r.last_fn = fn
        limit = r.limit
        if limit is not None and r.active >= limit and not r.cancelled:
            await r.wait_slot(limit)
        if r.cancelled:
            await anyio.lowlevel.checkpoint()  # the block's cancellation, if it is ours
            return r.refused(fn, args, kwargs)
        if r.pool is not None:
            return await r.submit(fn, args, kwargs)
        job: AsyncFuture[T] = new_future(fn, args, kwargs, r.spec, 0.0)
        values = r.values
        r.q.append((job, len(values)))
        values.append(None)
        r.active += 1
        if not r.woken:
            r.dispatch()
        return job

    def go_nowait(self, fn: Callable[P, Awaitable[T]], /, *args: P.args,
                  **kwargs: P.kwargs) -> AsyncFuture[T]:
        """Like ``go``, but raise ``wp.WouldBlock`` instead of waiting (Go's
        ``TryGo``). Once the group is cancelled it returns a cancelled future.

        Raises:
            WouldBlock: ``limit`` tasks are in flight (or, with a pool, its queue is
                full: ``wp.QueueFull``).
        """
        r = self._r
        if r.state != OPEN:
            r.check_state()
        if fn is not r.last_fn:
            _check_coroutine_function(fn)
            r.last_fn = fn
        limit = r.limit
        if limit is not None and r.active >= limit and not r.cancelled:
            raise WouldBlock(f"the group is at its limit ({limit} tasks in flight)")
        if r.cancelled:
            return r.refused(fn, args, kwargs)
        if r.pool is not None:
            return r.submit_nowait(fn, args, kwargs)
        return r.queue(fn, args, kwargs)

    def cancel(self) -> None:
        """Cancel the group: queued tasks never start, running ones and the block are
        cancelled at their next ``await`` (as ``tg.cancel_scope.cancel()``), later
        ``go`` calls return cancelled futures. Leaving the block raises only for real
        failures, not for this cancellation."""
        self._r.cancel()

    def results(self) -> list[Any]:
        """The tasks' results, in ``go`` order, once the block exited and every task
        succeeded.

        Raises:
            RuntimeError: called before the block exited, or a task failed or was
                cancelled (the message counts them).
        """
        r = self._r
        if r.state != CLOSED:
            raise RuntimeError("AsyncGroup.results() called before the group's block "
                               "exited: call it after the 'async with' block")
        if r.failed or r.cancelled_jobs:
            raise RuntimeError(f"AsyncGroup.results() needs every task to succeed: "
                               f"{r.failed} failed, {r.cancelled_jobs} cancelled")
        return list(r.values)

    def __repr__(self) -> str:
        r = self._r
        state = ("new", "open", "exiting", "closed")[r.state]
        return (f"<AsyncGroup {r.name!r} {state} limit={r.limit} in_flight={r.active} "
                f"cancelled={r.cancelled}>")


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

