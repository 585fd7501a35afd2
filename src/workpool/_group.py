"""``Group``: Go's errgroup with ``SetLimit``, for threads.

::

    go(fn) ── limit reached? wait for a slot ── group cancelled? ──▶ a cancelled future
                                  │                                  (fn never runs)
                                  ▼
             pool.submit(_call, fn) ──▶ worker thread: task.ctx = wp.current(); fn()
                                  │                                   │
                                  │ the future settles; its done callback frees the
                                  ▼ slot and, on the first failure, cancels the group
    __exit__: wait until no task is in flight, then raise ExceptionGroup(failures)

Cancelling the group cancels the futures of tasks that have not started and the
contexts (``wp.current()``) of those that run, and cancels the groups that those
tasks opened in turn. Tasks run on a private ``ThreadPool`` (or on the executor
passed as ``pool``); the group does its own admission, so it counts and cancels
the same way on any executor.
"""

from __future__ import annotations

import inspect
import itertools
import threading
from collections import deque
from collections.abc import Callable
from concurrent.futures import CancelledError, Executor, Future, ThreadPoolExecutor
from types import TracebackType
from typing import Any, Final, ParamSpec, TypeVar, final

from ._core.context import TaskContext, WorkerSlot, current, install_slot
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
    """A task in flight: its future, the context it runs with, and the groups it
    opened. It is also its future's done callback."""

    __slots__ = ("children", "ctx", "future", "group", "index", "returned")

    def __init__(self, group: Group) -> None:
        self.group = group
        self.index = 0  # its place in go() order, for results()
        self.future: Future[Any] | None = None
        self.ctx: TaskContext | None = None
        self.children: list[Group] | None = None
        # Set by _call once the task returned and its value is in group._values: on
        # the group's own pool (no per-task timeout or retry) the done callback then
        # need not ask the future.
        self.returned = False

    def __call__(self, future: Future[Any]) -> None:
        group = self.group
        if not self.returned or group._own is None:
            group._ended(self, future)
            return
        # The hot path, inline: the task returned on the group's own pool (no per-task
        # timeout or retry there), so its future need not be asked.
        with group._lock:
            group._inflight.discard(self)
            group._active -= 1
            if group._waiters:
                group._waiters.popleft().release()
            if not group._active and group._state == EXITING:
                group._all_done.notify_all()


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

    Cost: a ``go`` is a ``ThreadPool.submit`` plus the group's bookkeeping, a few
    microseconds, about what ``ThreadPoolExecutor.submit`` plus a semaphore costs;
    with a limit, each task that ends hands its slot to a waiting ``go`` (a thread
    switch). The group keeps each task's result (not its future) for ``results()``.

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
        # go() calls waiting for a slot, as locks held until a task's end releases
        # them: lighter than a Condition.
        self._waiters: deque[threading.Lock] = deque()
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
        task = _Task(self)
        with self._lock:
            if self._state != OPEN:
                self._check_state()
            limit = self._limit
            while limit is not None and self._active >= limit and not self._cancelled:
                if not block:
                    raise WouldBlock(f"the group is at its limit ({limit} tasks in flight)")
                self._wait_turn()
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

    def _wait_turn(self) -> None:
        """Wait until a task ends or the group is cancelled; the caller looks again.

        Called and returns with the lock held.
        """
        signal = threading.Lock()
        signal.acquire()
        self._waiters.append(signal)
        self._lock.release()
        try:
            signal.acquire()
        except BaseException:  # Ctrl-C while waiting
            self._lock.acquire()
            if signal in self._waiters:
                self._waiters.remove(signal)
            elif self._waiters:  # its turn had come: pass it on
                self._waiters.popleft().release()
            raise
        self._lock.acquire()

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
        self._values[task.index] = value
        task.returned = True
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
        failed = error is not None and not isinstance(error, CancelledError)
        with self._lock:
            self._inflight.discard(task)
            if failed:
                assert error is not None
                self._failed += 1
                if isinstance(error, Exception):
                    self._errors.append(error)
                elif self._base_error is None:
                    self._base_error = error
            elif error is not None:
                self._cancelled_tasks += 1
            self._release()
        if failed:
            self._cancel()

    def _release(self) -> None:
        # Caller holds the lock: a task left the group.
        self._active -= 1
        if self._waiters:
            self._waiters.popleft().release()
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
                self._waiters.popleft().release()
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
