"""Running work in threads of this process: the thread backend.

Owns ``ThreadBackend``: a worker is a thread (``_engine.threaded``) that calls the
task directly. May import ``_core`` and ``_engine``.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from queue import Empty, SimpleQueue
from typing import Any

from .._core.chunk import Chunk, run_chunk
from .._core.context import install_slot
from .._core.exceptions import Cancelled
from .._engine.contract import TASK_FAILED, TASK_OK, Scheduler, Task, Worker
from .._engine.engine import LOGGER
from .._engine.threaded import ThreadedBackend, ThreadWorker

__all__ = ["ThreadBackend"]


class ThreadBackend(ThreadedBackend):
    """Workers are threads that call the task directly.

    A task past its deadline cannot be stopped from outside: its context is
    cancelled, its future fails with ``TaskTimeout``, and the thread is abandoned
    (counted as stuck until the call returns) while a new one takes its place.

    In an Autoscale pool a parked thread waits for work at most ``idle_timeout`` at a
    time, then asks the engine whether it may leave (``_IdleInbox``): idle threads
    retire themselves, as Go's and the stdlib's pools do, and no timer thread runs
    for it.
    """

    broken_message = "A thread initializer failed, the thread pool is not usable anymore"
    times_idle = True

    def __init__(self, initializer: Callable[..., Any] | None,
                 initargs: tuple[Any, ...]) -> None:
        self.initializer = initializer
        self.initargs = initargs

    def new_worker(self, worker_id: int) -> Worker:
        worker = ThreadWorker(worker_id)
        scaler = self.engine.scaler
        if scaler is not None:
            worker.inbox = _IdleInbox(self.engine, worker, scaler.idle_timeout)
        return worker

    def initialize(self, worker: Worker) -> bool:
        install_slot(worker.slot)
        if self.initializer is None:
            return True
        try:
            worker.slot.state = self.initializer(*self.initargs)
        except BaseException:
            LOGGER.critical("Exception in initializer:", exc_info=True)
            return False
        return True

    def execute(self, worker: Worker, task: Task) -> tuple[int, Any]:
        engine = self.engine
        bucket = engine.bucket
        items = task.items
        if items is not None:
            if task.retry is None or len(items) != 1:
                return TASK_OK, run_chunk(task.fn, items, task.star, worker.slot.ctx,
                                          task.flag, bucket, engine.stop)
            # One item under a retry policy runs as a plain task, so the engine's
            # retry machinery sees its error.
            fn, args, kwargs = task.fn, items[0] if task.star else (items[0],), {}
        else:
            fn, args, kwargs = task.fn, task.args, task.kwargs
        if bucket is not None and not bucket.acquire(engine.stop):
            return TASK_FAILED, Cancelled("cancelled by shutdown while waiting for the rate limit")
        if items is None:  # a call: the hot path
            try:
                # fn(*args): 40 ns less than fn(*args, **{}), which copies the dict
                return TASK_OK, fn(*args, **kwargs) if kwargs else fn(*args)
            except BaseException as exc:  # a task's error never kills its worker
                return TASK_FAILED, exc
        started = time.perf_counter()
        try:
            value = fn(*args, **kwargs)
        except BaseException as exc:
            return TASK_FAILED, exc
        return TASK_OK, Chunk([value], None, time.perf_counter() - started)


class _IdleInbox(SimpleQueue["Task | None"]):
    """The inbox of a thread of an Autoscale pool: parked, it waits for work at most
    *timeout* seconds at a time, then asks the engine whether it may leave
    (``Engine.idle_timed_out``, which releases it: None comes next)."""

    __slots__ = ("_engine", "_timeout", "_worker")

    def __init__(self, engine: Scheduler, worker: Worker, timeout: float) -> None:
        self._engine = engine
        self._worker = worker
        self._timeout = timeout

    def get(self, block: bool = True, timeout: float | None = None) -> Task | None:
        if not block or timeout is not None:
            return super().get(block, timeout)
        wait: float | None = self._timeout
        while wait is not None:
            try:
                return super().get(timeout=wait)
            except Empty:
                wait = self._engine.idle_timed_out(self._worker)
        return super().get()
