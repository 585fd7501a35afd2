"""``Group``: Go's errgroup with ``SetLimit``, for threads.

On the group's own threads::

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
already running (no thread wake-up per task). On an executor passed as ``pool``,
go() waits for a slot itself, then submits the task through ``_call``, which learns
its context; the future's done callback counts its end.

Cancelling the group cancels the futures of tasks that have not started and the
contexts (``wp.current()``) of those that run, and cancels the groups that those
tasks opened in turn.
"""

from __future__ import annotations

import contextlib
import inspect
import itertools
import threading
from collections import deque
from collections.abc import Callable
from concurrent.futures import CancelledError, Executor, Future, ThreadPoolExecutor
from types import TracebackType
from typing import Any, Final, ParamSpec, TypeVar, final

from ._core.context import TaskContext, WorkerSlot, current, current_slot, install_slot
from ._core.exceptions import Cancelled, WouldBlock
from ._core.timer import Timer
from ._pool import ThreadPool, check_timeout

__all__ = ["Group", "check_limit"]

P = ParamSpec("P")
T = TypeVar("T")

NEW: Final = 0
OPEN: Final = 1
EXITING: Final = 2  # the block has ended; running tasks may still call go()
CLOSED: Final = 3

MESSAGE: Final = "unhandled errors in a Group"
# A group without a limit starts every task at once: its pool may grow to as many
# threads as tasks run at the same time (idle threads are reused).
_UNLIMITED: Final = 1 << 16
_COUNTER = itertools.count(1)
_CANCELLED: Final = CancelledError()  # stands for "the future was cancelled"
_NOT_STARTED: Final = object()  # the result of a go() whose submit raised
_LOCAL = threading.local()  # .task: the group task this thread runs, for nesting


def check_limit(limit: int | None) -> int | None:
    """Validate a group's ``limit`` (None: no limit)."""
    if limit is None:
        return None
    if isinstance(limit, bool) or not isinstance(limit, int):
        raise TypeError(f"limit must be an int or None, got {limit!r}")
    if limit < 1:
        raise ValueError(f"limit must be >= 1, got {limit}")
    return limit


class _Task:
    """A task of a group: its future, the context it runs with, and the groups it
    opened. On another executor it is also its future's done callback."""

    __slots__ = ("admitted", "args", "children", "ctx", "fn", "future", "group", "index",
                 "kwargs", "signal")

    def __init__(self, group: Group) -> None:
        self.group = group
        self.index = 0  # its place in go() order, for results()
        self.future: Future[Any] | None = None
        self.ctx: TaskContext | None = None
        self.children: list[Group] | None = None
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


def _cancelled_future() -> Future[Any]:
    future: Future[Any] = Future()
    future.cancel()
    future.set_running_or_notify_cancel()  # done for wait() and as_completed() too
    return future


@final
class Group:
    """Run tasks in threads, at most ``limit`` at once, and stop them all at the
    first failure: Go's ``errgroup`` with ``SetLimit``.

    ``go(fn, *args, **kwargs)`` starts a task and returns its
    ``concurrent.futures.Future``; while ``limit`` tasks are in flight it waits for
    one to end. Leaving the ``with`` block waits for every task.

    The first task that fails cancels the group: tasks not started yet never start
    (their futures are cancelled, and so are those of later ``go`` calls), running
    ones see ``wp.current().cancelled`` (cooperative: ``checkpoint()`` raises
    ``wp.Cancelled``, ``sleep()`` wakes), and groups opened by running tasks are
    cancelled too. Leaving the block then raises
    ``ExceptionGroup("unhandled errors in a Group", [...])`` of every real failure,
    in the order they happened; cancellations (``CancelledError``, which includes
    ``wp.Cancelled``) are not failures. As with ``asyncio.TaskGroup``, an exception
    raised by the block itself cancels the group too and is raised inside that
    ``ExceptionGroup``, after the tasks' failures; ``KeyboardInterrupt`` and
    ``SystemExit`` (from the block or a task) cancel, wait, and are re-raised as
    they are. A second Ctrl-C while waiting gives up on tasks that ignore
    cancellation.

    Args:
        limit: the most tasks in flight at once (None: no limit, every ``go``
            starts its task at once).
        pool: a ``concurrent.futures.Executor`` (``wp.ThreadPool``, a process pool,
            a ``ThreadPoolExecutor``...) to run the tasks on, instead of threads of
            the group's own; the group still applies its limit and cancellation and
            does not shut the pool down. Tasks on another process cannot see the
            group's cancellation while they run. A group nested in a task of a
            group should not share its pool: outer tasks waiting for inner ones
            can fill it.
        timeout: seconds for the whole group, from entering the block; then the
            group is cancelled and leaving the block raises ``TimeoutError``
            (inside the ``ExceptionGroup`` if tasks failed too).
        name: names the group's threads (default ``workpool-group-N``, threads
            ``workpool-group-N_0``, ``_1``...).

    Cost: about what ``ThreadPoolExecutor.submit`` costs, limit or not: tasks go to
    the group's own threads without a trip through a pool, and a task that ends
    hands its slot to a waiting ``go``. The group keeps each task's result (not its
    future) for ``results()``.

    Raises:
        ValueError: *limit* < 1 or *timeout* <= 0.
        TypeError: *limit* is not an int, or *pool* not an executor.

    Example::

        with wp.Group(limit=8) as g:        # 200 calls, 8 at once, stop at the first error
            for url in urls:
                g.go(fetch, url)
        pages = g.results()                 # in go order
    """

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
        self._waiters: deque[_Task] = deque()
        # The group's own pool runs tasks through runners (_runner): admitted tasks
        # wait in _ready for one; runners with nothing to do park on a lock in
        # _parked (the last parked is woken first).
        self._ready: deque[_Task] = deque()
        self._parked: list[threading.Lock] = []
        self._runners = 0
        self._busy = 0
        self._inflight: set[_Task] = set()
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
        self._parent: _Task | None = None
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

    # -- life cycle ---------------------------------------------------------------------

    def __enter__(self) -> Group:
        with self._lock:
            if self._state != NEW:
                raise RuntimeError("a Group can be entered only once")
            self._state = OPEN
        if self._pool is None:
            self._own = ThreadPool(self._limit or _UNLIMITED, name=self._name)
            self._pool = self._own
        if self._timeout is not None:
            self._timer = Timer(f"{self._name}_timer")
            self._timer.call_later(self._timeout, self._expire)
        parent: _Task | None = getattr(_LOCAL, "task", None)
        if parent is not None:  # opened in a task of another group: cancelled with it
            self._parent = parent
            with parent.group._lock:
                if parent.children is None:
                    parent.children = []
                parent.children.append(self)
            if parent.group._cancelled:
                self._cancel(by_parent=True)
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> bool:
        if exc is not None:
            if not isinstance(exc, Exception) and self._base_error is None:
                self._base_error = exc
            self._cancel()
        try:
            self._wait_all()
        finally:
            self._close()
        return self._raise(exc)

    def _wait_all(self) -> None:
        try:
            self._wait()
        except BaseException as interrupt:  # Ctrl-C (or a signal): cancel, wait again
            if self._base_error is None:
                self._base_error = interrupt
            self._cancel()
            try:
                self._wait()
            except BaseException:  # a second one: give up on tasks that do not stop
                if self._own is not None:
                    with self._lock:
                        self._unpark()
                    self._own.shutdown(wait=False, cancel_futures=True)
                    self._own = None
                raise

    def _wait(self) -> None:
        with self._lock:
            self._state = EXITING
            while self._active:
                self._all_done.wait()
            self._state = CLOSED

    def _close(self) -> None:
        with self._lock:
            self._state = CLOSED
            self._unpark()
        if self._timer is not None:
            self._timer.close()
        if self._own is not None:
            self._own.shutdown(wait=True)
        parent = self._parent
        if parent is not None:
            with parent.group._lock:
                if parent.children is not None and self in parent.children:
                    parent.children.remove(self)

    def _raise(self, exc: BaseException | None) -> bool:
        """Raise what leaving the block raises; False lets *exc* propagate as it is."""
        if self._base_error is not None:
            if self._base_error is exc:
                return False
            raise self._base_error
        errors = list(self._errors)
        body_failed = False
        if isinstance(exc, Exception) and not isinstance(exc, CancelledError):
            errors.append(exc)
            body_failed = True
        if len(errors) == 1 and self._timed_out and not body_failed:
            raise errors[0]  # only the deadline: a plain TimeoutError
        if errors:
            raise ExceptionGroup(MESSAGE, errors) from None
        if exc is None and self._by_parent:
            raise Cancelled("the group was cancelled with the task that opened it")
        return False  # no error, or the block's own cancellation, raised as it is

    # -- starting tasks -----------------------------------------------------------------

    def go(self, fn: Callable[P, T], /, *args: P.args, **kwargs: P.kwargs) -> Future[T]:
        """Start ``fn(*args, **kwargs)`` in the group; return its future.

        Waits while ``limit`` tasks are in flight. Once the group is cancelled, returns
        an already cancelled future at once, and *fn* never runs. Tasks may call
        ``go`` on their own group, also while the block is exiting (with a limit,
        a task that waits for a slot holds one: mind the limit).

        Raises:
            RuntimeError: the group was not entered, or its block has exited.
            TypeError: *fn* is not callable, or is a coroutine function (use
                ``AsyncGroup``).
        """
        return self._go(fn, args, kwargs, True)

    def go_nowait(self, fn: Callable[P, T], /, *args: P.args,
                  **kwargs: P.kwargs) -> Future[T]:
        """Like ``go``, but raise ``wp.WouldBlock`` instead of waiting (Go's ``TryGo``).

        On a pool with a bounded queue, a full queue raises ``wp.QueueFull`` (a
        ``WouldBlock``) too.

        Raises:
            WouldBlock: ``limit`` tasks are in flight.
        """
        return self._go(fn, args, kwargs, False)

    def _go(self, fn: Callable[..., Any], args: tuple[Any, ...], kwargs: dict[str, Any],
            block: bool) -> Future[Any]:
        if fn is not self._last_fn:
            _check_fn(fn)
            self._last_fn = fn
        own = self._own
        if own is None:
            return self._go_executor(fn, args, kwargs, block)
        task = _Task(self)
        task.fn, task.args, task.kwargs = fn, args, kwargs
        future: Future[Any] = Future()
        task.future = future
        while True:
            with self._lock:
                if self._state != OPEN:
                    self._check_state()
                if self._cancelled:
                    self._cancelled_tasks += 1
                    return _cancelled_future()
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
                self._inflight.discard(task)
                self._values[task.index] = _NOT_STARTED
                self._release()
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
        if self._runners >= (self._limit or _UNLIMITED):
            return False
        self._runners += 1
        return True

    def _go_executor(self, fn: Callable[..., Any], args: tuple[Any, ...],
                     kwargs: dict[str, Any], block: bool) -> Future[Any]:
        """go() on an executor passed as ``pool`` (or before the block is entered)."""
        task = _Task(self)
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
                return _cancelled_future()
            self._admit(task)
            self._active += 1
        try:
            future = self._submit(task, fn, args, kwargs, block)
        except BaseException:  # not started after all (a full queue, a closed pool)
            with self._lock:
                self._inflight.discard(task)
                self._values[task.index] = _NOT_STARTED
                self._release()
            raise
        task.future = future
        future.add_done_callback(task)
        if self.cancelled:  # meanwhile, when _cancel() could not see the future yet
            _cancel_task(task)
        return future

    def _admit(self, task: _Task) -> None:
        # Caller holds the lock (and counts the task in _active).
        task.index = len(self._values)
        self._values.append(None)
        self._inflight.add(task)

    def _wait_turn(self, task: _Task) -> None:
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

    def _wake_one(self) -> None:
        # Caller holds the lock.
        if self._waiters:
            signal = self._waiters.popleft().signal
            assert signal is not None
            signal.release()

    def _runner(self) -> None:
        """Run the group's ready tasks on a thread of its own pool, one after another,
        parking between them: no trip through the pool and no future of the pool's per
        task, and one thread drains many short tasks in one go (as workers of a
        ``ThreadPoolExecutor`` drain its queue)."""
        slot = current_slot()
        pool_ctx = slot.ctx
        outer = getattr(_LOCAL, "task", None)
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
                    error = _CANCELLED
                else:
                    # _cancel() sets _cancelled, then cancels the contexts it sees.
                    task.ctx = slot.ctx = TaskContext(slot)
                    if self._cancelled:  # so: checked after publishing the context
                        error = Cancelled("the group was cancelled before the task started")
                    else:
                        _LOCAL.task = task
                        try:
                            value = fn(*args, **kwargs)
                        except BaseException as exc:
                            error = exc
                        finally:
                            _LOCAL.task = outer
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

    def _next(self, task: _Task | None, error: BaseException | None,
              signal: threading.Lock) -> _Task | None:
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

    def _take(self) -> tuple[_Task, bool]:
        """Take the first ready task for the calling runner, and whether to start
        another runner for the tasks still ready. Caller holds the lock."""
        self._busy += 1
        task = self._ready.popleft()
        ready = self._ready
        return task, bool(ready) and self._dispatch()

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

    def _check_state(self) -> None:
        if self._state == NEW:
            raise RuntimeError("Group.go() called before the group was entered: use "
                               "'with wp.Group() as g:'")
        if self._state == CLOSED or (self._state == EXITING and not self._active):
            raise RuntimeError("Group.go() called after the group's block exited: a "
                               "group takes no new tasks once all of its tasks ended")

    def _submit(self, task: _Task, fn: Callable[..., Any], args: tuple[Any, ...],
                kwargs: dict[str, Any], block: bool) -> Future[Any]:
        pool = self._pool
        assert pool is not None
        submit = pool.submit if block else getattr(pool, "submit_nowait", pool.submit)
        if self._wrap:
            return submit(self._call, task, fn, args, kwargs)
        return submit(fn, *args, **kwargs)

    def _call(self, task: _Task, fn: Callable[..., Any], args: tuple[Any, ...],
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
        outer = getattr(_LOCAL, "task", None)
        _LOCAL.task = task
        try:
            value = fn(*args, **kwargs)
        finally:
            _LOCAL.task = outer
            if slot is not None:
                slot.ctx = None
        return value

    # -- ends and cancellation ----------------------------------------------------------

    def _ended(self, task: _Task, future: Future[Any]) -> None:
        """The done callback of every task's future (in whichever thread settles it)."""
        error: BaseException | None = None
        if future.cancelled():
            error = _CANCELLED
        else:
            error = future.exception()
            if error is None:
                self._values[task.index] = future.result()
        with self._lock:
            failed = self._count_end(task, error)
            self._release()
        if failed:
            self._cancel()

    def _count_end(self, task: _Task, error: BaseException | None) -> bool:
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

    def cancel(self) -> None:
        """Cancel the group: tasks not started never start, running ones see
        ``wp.current().cancelled``, and later ``go`` calls return cancelled futures.

        Leaving the block raises only for real failures, not for this cancellation.
        """
        self._cancel()

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

    # -- results ------------------------------------------------------------------------

    def results(self) -> list[Any]:
        """The tasks' results, in ``go`` order, once the block exited and every task
        succeeded.

        Raises:
            RuntimeError: called before the block exited, or a task failed or was
                cancelled (the message counts them).
        """
        with self._lock:
            if self._state != CLOSED:
                raise RuntimeError("Group.results() called before the group's block "
                                   "exited: call it after the 'with' block")
            failed, cancelled = self._failed, self._cancelled_tasks
        if failed or cancelled:
            raise RuntimeError(f"Group.results() needs every task to succeed: {failed} "
                               f"failed, {cancelled} cancelled")
        return [value for value in self._values if value is not _NOT_STARTED]

    def __repr__(self) -> str:
        state = ("new", "open", "exiting", "closed")[self._state]
        return (f"<Group {self._name!r} {state} limit={self._limit} "
                f"in_flight={self._active} cancelled={self._cancelled}>")


def _cancel_task(task: _Task) -> None:
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


def _check_fn(fn: Any) -> None:
    if not callable(fn):
        raise TypeError(f"fn must be callable, got {fn!r}")
    if inspect.iscoroutinefunction(fn):
        name = getattr(fn, "__qualname__", repr(fn))
        raise TypeError(f"{name} is a coroutine function: Group runs plain callables "
                        f"in threads; use wp.AsyncGroup for coroutines")
