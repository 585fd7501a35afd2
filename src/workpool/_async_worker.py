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

import inspect
import threading
from collections.abc import Callable
from typing import Any, Final

import anyio

from ._async_task import Job, fn_name
from ._core.context import TaskContext, WorkerSlot, install_slot

__all__ = ["StuckThreads", "ThreadCall", "Worker"]


class Worker:
    """A worker task's bookkeeping. ``job`` is what it runs now (None when idle);
    ``call`` the sync call it waits on in a thread, if any."""

    __slots__ = ("call", "ctx", "job", "restart", "scope", "slot")

    def __init__(self, worker_id: int) -> None:
        self.slot = WorkerSlot(worker_id)
        # One context serves every plain task of this worker (a task has no use for
        # it after it ends); a cancelled one is replaced.
        self.ctx = TaskContext(self.slot)
        self.job: Job | None = None
        self.restart = False
        self.scope: anyio.CancelScope | None = None
        self.call: ThreadCall | None = None


def _in_thread(fn: Callable[..., Any], args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
    value = fn(*args, **kwargs)
    if inspect.iscoroutine(value):
        value.close()  # no "never awaited" warning: the error says what to do
        raise TypeError(f"{fn_name(fn)} is not a coroutine function but returned a "
                        f"coroutine: declare it with 'async def'")
    return value


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
