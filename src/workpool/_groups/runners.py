"""How a ``Group`` runs tasks on threads of its own ("runners").

Without a ``pool``, the group starts its own ``ThreadPool`` and runs tasks on it::

    go(fn) ── limit reached? ── wait: a task's end admits ours ─┐   group cancelled?
                  │ no                                        │   ──▶ a cancelled future
                  ▼                                           ▼       (fn never runs)
             _ready (admitted tasks) ◀──────────────────────────
                  │ a runner takes the first: one that is awake, else a parked one
                  ▼ woken, else a new one started on the group's ThreadPool
             runner thread: task.ctx = TaskContext; fn(); settle the future
                  │ count the end (the first failure cancels the group), then the
                  ▼ next ready task, or park until go() has one
    __exit__: wait until no task is in flight, then raise ExceptionGroup(failures)

A runner that takes a task while more are ready wakes one more runner, so tasks
that block each get a thread while a burst of short ones is drained by the thread
already running (no thread wake-up per task). Each runner is one task of the pool
that loops over ready tasks (``_next``): a group task costs no trip through the pool
and no future of the pool's.
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Callable
from concurrent.futures import Future
from typing import Any

from .._core.context import TaskContext, current_slot
from .._core.exceptions import Cancelled, WouldBlock
from .base import (
    CANCELLED_ERROR,
    CLOSED,
    EXITING,
    LOCAL,
    OPEN,
    UNLIMITED,
    GroupBase,
    Task,
    cancelled_future,
)


class OwnThreads(GroupBase):
    """A ``GroupBase`` that runs tasks on threads of its own (see the module
    docstring). ``Group`` is the class to use."""

    def _go_own(self, fn: Callable[..., Any], args: tuple[Any, ...],
                kwargs: dict[str, Any], block: bool) -> Future[Any]:
        """go() on the group's own threads: admit the task to _ready (waiting for a
        slot while ``limit`` tasks are in flight) and see that a runner comes."""
        task = Task(self)
        task.fn, task.args, task.kwargs = fn, args, kwargs
        future: Future[Any] = Future()
        task.future = future
        while True:
            with self._lock:
                if self._state != OPEN:
                    self._check_state()
                if self._cancelled:
                    self._cancelled_tasks += 1
                    return cancelled_future()
                limit = self._limit
                if limit is None or self._active < limit:
                    self._admit(task)
                    self._active += 1
                    self._ready.append(task)
                    if not self._dispatch():
                        return future
                    break
                if not block:
                    raise WouldBlock(f"the group is at its limit ({limit} tasks in flight)")
                # A task's end admits this one (task.admitted), or a cancellation
                # wakes us to look again.
                signal = task.signal = threading.Lock()
                signal.acquire()
                self._waiters.append(task)
            try:
                signal.acquire()
            except BaseException:  # Ctrl-C while waiting: unless admitted, never started
                with self._lock:
                    if not task.admitted:
                        self._waiters.remove(task)
                raise
            if task.admitted:
                return future
        try:
            self._start_runner()
        except BaseException:  # no runner (the pool was given up on): not started
            with self._lock:
                if task not in self._ready:
                    return future  # another runner took it
                self._ready.remove(task)
                self._not_started(task)
            raise
        return future

    def _dispatch(self) -> bool:
        """See that a runner comes for the ready tasks: if none is awake (between
        tasks, about to take one), wake a parked one, or return True after counting
        a new one for the caller to start. Caller holds the lock.

        One runner is woken at a time: a runner that takes a task while more are
        ready calls this again, so a burst of short tasks is drained by the threads
        already running instead of waking one thread per task.
        """
        if not self._ready or self._runners > self._busy + len(self._parked):
            return False
        if self._parked:
            self._parked.pop().release()
            return False
        if self._runners >= (self._limit or UNLIMITED):
            return False
        self._runners += 1
        return True

    def _runner(self) -> None:
        """Run the group's ready tasks on a thread of its own pool, one after another,
        parking between them: no trip through the pool and no future of the pool's per
        task, and one thread drains many short tasks in one go (as workers of a
        ``ThreadPoolExecutor`` drain its queue)."""
        slot = current_slot()
        pool_ctx = slot.ctx
        outer = getattr(LOCAL, "task", None)
        signal = threading.Lock()
        signal.acquire()
        task = self._next(None, None, signal)
        try:
            while task is not None:
                fn, args, kwargs = task.fn, task.args, task.kwargs
                task.fn, task.args, task.kwargs = None, (), {}
                future = task.future
                assert future is not None
                assert fn is not None
                error: BaseException | None = None
                if not future.set_running_or_notify_cancel():
                    error = CANCELLED_ERROR
                else:
                    # _cancel() sets _cancelled, then cancels the contexts it sees.
                    task.ctx = slot.ctx = TaskContext(slot)
                    if self._cancelled:  # so: checked after publishing the context
                        error = Cancelled("the group was cancelled before the task started")
                    else:
                        LOCAL.task = task
                        try:
                            value = fn(*args, **kwargs)
                        except BaseException as exc:
                            error = exc
                        finally:
                            LOCAL.task = outer
                    slot.ctx = pool_ctx
                    if error is None:
                        self._values[task.index] = value
                        future.set_result(value)
                    else:
                        future.set_exception(error)
                    value = None
                del fn, args, kwargs
                task = self._next(task, error, signal)
                error = None
        finally:
            slot.ctx = pool_ctx

    def _next(self, task: Task | None, error: BaseException | None,
              signal: threading.Lock) -> Task | None:
        """Count the end of the runner's *task* (None: it starts), then return its
        next ready task, parking on *signal* while there is none; None when the group
        closes."""
        failed = start = False
        nxt = None
        with self._lock:
            if task is not None:
                failed = self._count_end(task, error)
                self._busy -= 1
                self._active -= 1
                if self._waiters and not self._cancelled and not failed:
                    # The slot goes to the longest waiting go(): its task is ready.
                    waiting = self._waiters.popleft()
                    waiting.admitted = True
                    self._admit(waiting)
                    self._active += 1
                    self._ready.append(waiting)
                    assert waiting.signal is not None
                    waiting.signal.release()
                elif not self._active and self._state == EXITING:
                    self._all_done.notify_all()
            if self._ready and not failed:
                nxt, start = self._take()
        if failed:
            self._cancel()  # wakes waiting go() calls: they return cancelled futures
        while nxt is None:
            with self._lock:
                if self._ready:
                    nxt, start = self._take()
                elif self._state == CLOSED:
                    self._runners -= 1
                    return None
                else:
                    self._parked.append(signal)
            if nxt is None:
                signal.acquire()  # released by _dispatch() or _unpark()
        if start:
            # Without a new runner, those running take the tasks, one by one.
            with contextlib.suppress(Exception):
                self._start_runner()
        return nxt

    def _take(self) -> tuple[Task, bool]:
        """Take the first ready task for the calling runner, and whether to start
        another runner for the tasks still ready. Caller holds the lock."""
        self._busy += 1
        return self._ready.popleft(), self._dispatch()

    def _start_runner(self) -> None:
        """Start a runner counted by _dispatch(); without one, those running go on."""
        assert self._own is not None
        try:
            self._own.submit(self._runner)
        except BaseException:
            with self._lock:
                self._runners -= 1
            raise

    def _unpark(self) -> None:
        """Let every parked runner leave. Caller holds the lock."""
        while self._parked:
            self._parked.pop().release()
