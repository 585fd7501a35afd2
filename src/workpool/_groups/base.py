"""What both paths of a ``Group`` share, and its path on an executor passed as ``pool``.

``GroupBase`` holds all of a group's state (in ``__init__``, so that the subclasses
see it typed), the bookkeeping that both paths share (admitting a task, counting its
end, handing its slot to a waiting ``go``, cancelling) and the executor path: there
go() waits for a slot itself (``_wait_turn``), then submits the task through
``_call``, which learns its context; the future's done callback (the ``Task`` itself)
counts its end (``_ended``).

The classes build on one another: ``GroupBase`` here, ``OwnThreads`` (the group's own
threads, ``_group_runners``), then ``Group`` (life cycle and public methods,
``_group``).
"""

from __future__ import annotations

import itertools
import threading
from collections import deque
from collections.abc import Callable
from concurrent.futures import CancelledError, Executor, Future, ThreadPoolExecutor
from typing import Any, Final

from .._core.context import TaskContext, WorkerSlot, current, install_slot
from .._core.exceptions import Cancelled, WouldBlock
from .._core.options import check_timeout
from .._core.timer import Timer
from .._pools.executor import ThreadPool

NEW: Final = 0
OPEN: Final = 1
EXITING: Final = 2  # the block has ended; running tasks may still call go()
CLOSED: Final = 3

MESSAGE: Final = "unhandled errors in a Group"
# A group without a limit starts every task at once: its pool may grow to as many
# threads as tasks run at the same time (idle threads are reused).
UNLIMITED: Final = 1 << 16
_COUNTER = itertools.count(1)
CANCELLED_ERROR: Final = CancelledError()  # stands for "the future was cancelled"
NOT_STARTED: Final = object()  # the result of a go() whose submit raised
LOCAL = threading.local()  # .task: the group task this thread runs, for nesting


def check_limit(limit: int | None) -> int | None:
    """Validate a group's ``limit`` (None: no limit)."""
    if limit is None:
        return None
    if isinstance(limit, bool) or not isinstance(limit, int):
        raise TypeError(f"limit must be an int or None, got {limit!r}")
    if limit < 1:
        raise ValueError(f"limit must be >= 1, got {limit}")
    return limit


class Task:
    """A task of a group: its future, the context it runs with, and the groups it
    opened. On another executor it is also its future's done callback."""

    __slots__ = ("admitted", "args", "children", "ctx", "fn", "future", "group", "index",
                 "kwargs", "signal")

    def __init__(self, group: GroupBase) -> None:
        self.group = group
        self.index = 0  # its place in go() order, for results()
        self.future: Future[Any] | None = None
        self.ctx: TaskContext | None = None
        self.children: list[GroupBase] | None = None
        # While its go() waits for a slot: the lock it sleeps on; on the group's own
        # pool, a task's end admits it (admitted=True) and wakes the go().
        self.signal: threading.Lock | None = None
        self.admitted = False
        # The call, kept until a runner of the group's own pool takes the task.
        self.fn: Callable[..., Any] | None = None
        self.args: tuple[Any, ...] = ()
        self.kwargs: dict[str, Any] = {}

    def __call__(self, future: Future[Any]) -> None:
        self.group._ended(self, future)


def cancelled_future() -> Future[Any]:
    future: Future[Any] = Future()
    future.cancel()
    future.set_running_or_notify_cancel()  # done for wait() and as_completed() too
    return future


class GroupBase:
    """The state of a ``Group``, its bookkeeping, and its path on an executor passed as
    ``pool`` (see the module docstring). ``Group`` is the class to use."""

    def __init__(self, limit: int | None = None, *, pool: Executor | None = None,
                 timeout: float | None = None, name: str | None = None) -> None:
        self._limit = check_limit(limit)
        if pool is not None and not isinstance(pool, Executor):
            raise TypeError(f"pool must be a concurrent.futures.Executor (such as "
                            f"wp.ThreadPool) or None, got {pool!r}")
        self._timeout = check_timeout(timeout)
        self._name = name or f"workpool-group-{next(_COUNTER)}"
        self._pool: Executor | None = pool
        # In-process threads run tasks through _call, which learns their context.
        self._wrap = pool is None or isinstance(pool, ThreadPool | ThreadPoolExecutor)
        self._own: ThreadPool | None = None
        self._lock = threading.Lock()
        self._all_done = threading.Condition(self._lock)
        self._state = NEW
        self._active = 0  # tasks started by go() and not ended
        # The tasks of go() calls waiting for a slot, each with a lock held until a
        # task's end releases it: lighter than a Condition.
        self._waiters: deque[Task] = deque()
        # The group's own pool runs tasks through runners (_runner): admitted tasks
        # wait in _ready for one; runners with nothing to do park on a lock in
        # _parked (the last parked is woken first).
        self._ready: deque[Task] = deque()
        self._parked: list[threading.Lock] = []
        self._runners = 0
        self._busy = 0
        self._inflight: set[Task] = set()
        # Results, not futures, are kept for results(): holding every future (and its
        # condition variable) alive doubles the cost of a go() through the collector.
        self._values: list[Any] = []
        self._errors: list[Exception] = []
        self._base_error: BaseException | None = None
        self._failed = 0
        self._cancelled_tasks = 0
        self._cancelled = False
        self._by_parent = False
        self._timed_out = False
        self._parent: Task | None = None
        self._timer: Timer | None = None
        self._last_fn: Any = None

    @property
    def limit(self) -> int | None:
        """The most tasks in flight at once (None: no limit)."""
        return self._limit

    @property
    def cancelled(self) -> bool:
        """True once the group was cancelled (a failure, the deadline, ``cancel()``)."""
        return self._cancelled

    # -- shared bookkeeping -------------------------------------------------------------

    def _not_started(self, task: Task) -> None:
        """An admitted task that never started after all leaves the group (and its
        place in ``results()``). Caller holds the lock."""
        self._inflight.discard(task)
        self._values[task.index] = NOT_STARTED
        self._release()

    def _admit(self, task: Task) -> None:
        # Caller holds the lock (and counts the task in _active).
        task.index = len(self._values)
        self._values.append(None)
        self._inflight.add(task)

    def _wake_one(self) -> None:
        # Caller holds the lock.
        if self._waiters:
            signal = self._waiters.popleft().signal
            assert signal is not None
            signal.release()

    def _check_state(self) -> None:
        if self._state == NEW:
            raise RuntimeError("Group.go() called before the group was entered: use "
                               "'with wp.Group() as g:'")
        if self._state == CLOSED or (self._state == EXITING and not self._active):
            raise RuntimeError("Group.go() called after the group's block exited: a "
                               "group takes no new tasks once all of its tasks ended")

    def _count_end(self, task: Task, error: BaseException | None) -> bool:
        """Count how *task* ended; True if it failed (a cancellation is no failure).

        Caller holds the lock.
        """
        self._inflight.discard(task)
        if error is None:
            return False
        if isinstance(error, CancelledError):
            self._cancelled_tasks += 1
            return False
        self._failed += 1
        if isinstance(error, Exception):
            self._errors.append(error)
        elif self._base_error is None:
            self._base_error = error
        return True

    def _release(self) -> None:
        # Caller holds the lock: a task left the group.
        self._active -= 1
        self._wake_one()
        if not self._active and self._state == EXITING:
            self._all_done.notify_all()

    def _cancel(self, *, by_parent: bool = False) -> None:
        with self._lock:
            if self._cancelled:
                return
            self._cancelled = True
            self._by_parent = by_parent
            tasks = list(self._inflight)
            while self._waiters:
                self._wake_one()
        for task in tasks:
            _cancel_task(task)

    def _expire(self) -> None:
        """The group's deadline passed (on the timer thread)."""
        with self._lock:
            if self._cancelled or self._state == CLOSED:
                return
            self._errors.append(TimeoutError(f"group timed out after {self._timeout:g} s"))
            self._timed_out = True
        self._cancel()

    # -- the path on an executor passed as pool -----------------------------------------

    def _go_executor(self, fn: Callable[..., Any], args: tuple[Any, ...],
                     kwargs: dict[str, Any], block: bool) -> Future[Any]:
        """go() on an executor passed as ``pool`` (or before the block is entered)."""
        task = Task(self)
        with self._lock:
            if self._state != OPEN:
                self._check_state()
            limit = self._limit
            while limit is not None and self._active >= limit and not self._cancelled:
                if not block:
                    raise WouldBlock(f"the group is at its limit ({limit} tasks in flight)")
                self._wait_turn(task)
            if self._cancelled:
                self._cancelled_tasks += 1
                return cancelled_future()
            self._admit(task)
            self._active += 1
        try:
            future = self._submit(task, fn, args, kwargs, block)
        except BaseException:  # not started after all (a full queue, a closed pool)
            with self._lock:
                self._not_started(task)
            raise
        task.future = future
        future.add_done_callback(task)
        if self.cancelled:  # meanwhile, when _cancel() could not see the future yet
            _cancel_task(task)
        return future

    def _wait_turn(self, task: Task) -> None:
        """Wait until a task ends or the group is cancelled; the caller looks again.

        Called and returns with the lock held.
        """
        signal = task.signal = threading.Lock()
        signal.acquire()
        self._waiters.append(task)
        self._lock.release()
        try:
            signal.acquire()
        except BaseException:  # Ctrl-C while waiting
            self._lock.acquire()
            if task in self._waiters:
                self._waiters.remove(task)
            else:  # its turn had come: pass it on
                self._wake_one()
            raise
        self._lock.acquire()

    def _submit(self, task: Task, fn: Callable[..., Any], args: tuple[Any, ...],
                kwargs: dict[str, Any], block: bool) -> Future[Any]:
        pool = self._pool
        assert pool is not None
        submit = pool.submit if block else getattr(pool, "submit_nowait", pool.submit)
        if self._wrap:
            return submit(self._call, task, fn, args, kwargs)
        return submit(fn, *args, **kwargs)

    def _call(self, task: Task, fn: Callable[..., Any], args: tuple[Any, ...],
              kwargs: dict[str, Any]) -> Any:
        """Run *fn* in a worker thread, publishing its context for cancellation."""
        slot: WorkerSlot | None = None
        try:
            ctx = current()
        except RuntimeError:  # a thread of a foreign executor: give it a context
            slot = WorkerSlot(-1)
            install_slot(slot)
            ctx = slot.ctx = TaskContext(slot)
        task.ctx = ctx
        if self._cancelled:  # after publishing ctx: _cancel() sees one or the other
            raise Cancelled("the group was cancelled before the task started")
        outer = getattr(LOCAL, "task", None)
        LOCAL.task = task
        try:
            value = fn(*args, **kwargs)
        finally:
            LOCAL.task = outer
            if slot is not None:
                slot.ctx = None
        return value

    def _ended(self, task: Task, future: Future[Any]) -> None:
        """The done callback of every task's future (in whichever thread settles it)."""
        error: BaseException | None = None
        if future.cancelled():
            error = CANCELLED_ERROR
        else:
            error = future.exception()
            if error is None:
                self._values[task.index] = future.result()
        with self._lock:
            failed = self._count_end(task, error)
            self._release()
        if failed:
            self._cancel()


def _cancel_task(task: Task) -> None:
    future = task.future
    if future is None or future.cancel():  # not started: it never will
        return
    ctx = task.ctx
    if ctx is not None:
        ctx.cancel()
    children = task.children
    if children:
        for child in list(children):
            child._cancel(by_parent=True)

