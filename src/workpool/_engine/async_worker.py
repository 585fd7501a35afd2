"""Who runs ``AsyncPool``'s tasks: a worker's bookkeeping, and the thread of a sync task.

A worker is a task of the pool's task group (``_async_engine``). A sync callable runs in
a worker thread through a ``ThreadCall``, which the pool may give up on (at the task's
timeout, or a shutdown out of time) while the thread, counted in ``StuckThreads``, runs
on until the call returns::

    PENDING ──the thread starts it──▶ RUNNING ──▶ RETURNED
       │                                 │
       └─────── the worker gives up ─────┴──▶ GIVEN_UP (never starts / counted stuck)
"""

from __future__ import annotations

import contextvars
import inspect
import os
import threading
from collections.abc import Callable
from concurrent.futures import Future
from functools import partial
from queue import Empty, SimpleQueue
from typing import Any, Final

import anyio
import anyio.to_thread

from .._core.context import TaskContext, WorkerSlot, install_slot
from .async_task import Job, fn_name

__all__ = ["DAEMON_THREADS", "DaemonThreads", "StuckThreads", "ThreadCall", "Worker",
           "run_in_thread"]


class Worker:
    """A worker task's bookkeeping. ``job`` is what it runs now (None when idle);
    ``call`` the sync call it waits on in a thread, if any; ``reason`` what a task
    interrupted by its owner is cancelled with (None: "cancelled while running")."""

    __slots__ = ("call", "ctx", "job", "reason", "restart", "scope", "slot")

    def __init__(self, worker_id: int) -> None:
        self.slot = WorkerSlot(worker_id)
        # One context serves every plain task of this worker (a task has no use for
        # it after it ends); a cancelled one is replaced.
        self.ctx = TaskContext(self.slot)
        self.job: Job | None = None
        self.restart = False
        self.reason: str | None = None
        self.scope: anyio.CancelScope | None = None
        self.call: ThreadCall | None = None


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


class StuckThreads:
    """How many threads of a pool's sync tasks it gave up on are still running (written
    under ``_THREAD_LOCK``, by those threads too)."""

    __slots__ = ("count",)

    def __init__(self) -> None:
        self.count = 0


_THREAD_LOCK: Final = threading.Lock()
_PENDING: Final = 0
_RUNNING: Final = 1
_GIVEN_UP: Final = 2
_RETURNED: Final = 3


class ThreadCall:
    """A sync call in a worker thread that the pool may give up on."""

    __slots__ = ("args", "by_shutdown", "fn", "kwargs", "scope", "slot", "state", "stuck")

    def __init__(self, stuck: StuckThreads, fn: Callable[..., Any], args: tuple[Any, ...],
                 kwargs: dict[str, Any], ctx: TaskContext) -> None:
        self.stuck = stuck
        self.fn = fn
        self.args = args
        self.kwargs = kwargs
        # The thread's own slot: once the worker has given up on it and moved on,
        # wp.current() in the thread is still this task's (cancelled) context.
        self.slot = WorkerSlot(ctx.worker_id)
        self.slot.ctx = ctx
        self.state = _PENDING
        self.scope: anyio.CancelScope | None = None  # cancelled to give up on the thread
        self.by_shutdown = False

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
                    self.stuck.count -= 1
                self.state = _RETURNED

    def cancel_by_shutdown(self) -> None:
        """A shutdown out of time: the task fails with ``Cancelled`` now."""
        self.by_shutdown = True
        if self.scope is not None:
            self.scope.cancel()

    def give_up(self) -> None:
        """The worker's side, once it gave up: a running call is counted as stuck until
        it returns; one not started yet never starts."""
        with _THREAD_LOCK:
            if self.state == _RUNNING:
                self.stuck.count += 1
            if self.state != _RETURNED:
                self.state = _GIVEN_UP
