"""Running work in threads of this process."""

from __future__ import annotations

import time
from typing import Any

from .._core.chunk import Chunk, run_chunk
from .._core.exceptions import Cancelled
from .._engine.engine import TASK_FAILED, TASK_OK, Engine, Task, Worker

__all__ = ["ThreadEngine"]


class ThreadEngine(Engine):
    """Workers are threads that call the task directly.

    A task past its deadline cannot be stopped from outside: its context is
    cancelled, its future fails with ``TaskTimeout``, and the thread is abandoned
    (counted as stuck until the call returns) while a new one takes its place.
    """

    def execute(self, worker: Worker, task: Task) -> tuple[int, Any]:
        bucket = self.bucket
        items = task.items
        if items is not None:
            star, flag = task.args
            if task.retry is None or len(items) != 1:
                return TASK_OK, run_chunk(task.fn, items, star, worker.slot.ctx, flag,
                                     bucket, self.stop)
            # One item under a retry policy runs as a plain task, so the engine's
            # retry machinery sees its error.
            fn, args, kwargs = task.fn, items[0] if star else (items[0],), {}
        else:
            fn, args, kwargs = task.fn, task.args, task.kwargs
        if bucket is not None and not bucket.acquire(self.stop):
            return TASK_FAILED, Cancelled("cancelled by shutdown while waiting for the rate limit")
        started = time.perf_counter()
        try:
            value = fn(*args, **kwargs)
        except BaseException as exc:  # a task's error never kills its worker
            return TASK_FAILED, exc
        if items is not None:
            return TASK_OK, Chunk([value], None, time.perf_counter() - started)
        return TASK_OK, value

    def expire(self, worker: Worker, task: Task) -> None:
        self.abandon(worker, task, self.timed_out(task))
