"""``Group``: Go's errgroup with ``SetLimit``, for threads: a pool, a limit and a
fail-fast error policy. May import ``_core`` and ``_pools``.

A group runs its tasks on a pool, and schedules nothing itself::

    go(fn) ── block over? ── limit reached? wait for a task's end ── group cancelled?
                                  │ no                                ──▶ a cancelled future
                                  ▼
       the group's own ThreadPool(limit) ── or ── the executor passed as pool=
         task = _run(fn): counts its end             task = _call(fn): publishes its
         before its worker takes the next one        context; the future's done
         (a failure cancels the group first)         callback counts its end
                                  │
                                  ▼
    the first failure: futures not started are cancelled, running tasks' contexts
    (wp.current()) and the groups they opened are cancelled, waiting go() calls
    return cancelled futures
    __exit__: wait until no task is in flight, then raise the verdict (``policy.py``)

On its own pool a task costs the group a future of its own (whose ``cancel()`` tells
the group that the task will never run), a lock round when it is admitted and one when
it ends. At the limit, the task that ends hands its slot and its worker to the longest
waiting ``go``, whose task it queued for that worker (``ThreadPool._put_future``,
``after_me``): the waiting caller is woken only to return, and no worker parks or
wakes. The pool's workers publish, once each (the pool's initializer), their slot,
through which a cancellation reaches the running tasks' contexts, and the group, which
a group opened in one of its tasks is cancelled with.
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

from .._core.context import TaskContext, WorkerSlot, current, current_slot, install_slot
from .._core.dynamic import Adaptive, Autoscale
from .._core.exceptions import Cancelled, WouldBlock
from .._core.future import LeanFuture
from .._core.metrics import register
from .._core.options import check_timeout
from .._core.timer import Timer
from .._pools.executor import ThreadPool
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

__all__ = ["Group"]

P = ParamSpec("P")
T = TypeVar("T")

MESSAGE: Final = "unhandled errors in a Group"
# A group without a limit starts every task at once: its pool may grow to as many
# threads as tasks run at the same time (idle threads are reused).
UNLIMITED: Final = 1 << 16
NOT_STARTED: Final = object()  # the result of a go() whose submit raised
_COUNTER = itertools.count(1)
_CANCELLED_ERROR: Final = CancelledError()  # stands for "the future was cancelled"
# .group: the group whose task this thread runs (set once per thread of a group's own
# pool, around each task on another executor): a group opened there is its child.
_LOCAL = threading.local()


class _OwnFuture(LeanFuture[Any]):
    """The future of a task on the group's own pool: cancelling it before it runs
    tells the group that the task left."""

    _group: Group
    _index: int

    def cancel(self) -> bool:
        if not super().cancel():
            return False
        self._group._dropped(self._index)
        return True


class _Task:
    """A task on an executor passed as ``pool``: its future, the context it runs
    with (in-process executors), and its place in ``go`` order. It is also its
    future's done callback."""

    __slots__ = ("ctx", "future", "group", "index")

    def __init__(self, group: Group, index: int) -> None:
        self.group = group
        self.index = index
        self.future: Future[Any] | None = None
        self.ctx: TaskContext | None = None

    def __call__(self, future: Future[Any]) -> None:
        self.group._ended(self, future)

    def cancel(self) -> None:
        future = self.future
        if future is None or future.cancel():  # not started: it never will
            return
        ctx = self.ctx
        if ctx is not None:
            ctx.cancel()


class _Waiter:
    """A ``go`` waiting for a slot, on *signal* (held until a task's end or a
    cancellation releases it). On the own pool it carries its task: the worker whose
    task ended admits it and runs it next, with no wake-up of another worker
    (``admitted``; ``error``: the pool refused it)."""

    __slots__ = ("admitted", "args", "error", "fn", "future", "kwargs", "signal")

    def __init__(self, future: _OwnFuture | None = None, fn: Callable[..., Any] | None = None,
                 args: tuple[Any, ...] = (), kwargs: dict[str, Any] | None = None) -> None:
        self.signal = threading.Lock()
        self.signal.acquire()
        self.future = future
        self.fn = fn
        self.args = args
        self.kwargs = kwargs
        self.admitted = False
        self.error: BaseException | None = None


def _cancelled_future() -> Future[Any]:
    future: Future[Any] = Future()
    future.cancel()
    future.set_running_or_notify_cancel()  # done for wait() and as_completed() too
    return future


@final
class Group(GroupBase):
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
            starts its task at once); or a ``wp.Autoscale`` (threads of the group's
            own pool come and go between its bounds, ``go`` blocks at its ``max``) or
            a ``wp.Adaptive`` (the tasks running at once follow its limit, those
            beyond wait in the pool's queue; ``go`` blocks at its ``max``).
        pool: a ``concurrent.futures.Executor`` (``wp.ThreadPool``, a process pool,
            a ``ThreadPoolExecutor``...) to run the tasks on, instead of a
            ``wp.ThreadPool`` of the group's own; the group still applies its limit
            and cancellation and does not shut the pool down. Tasks on another
            process cannot see the group's cancellation while they run. A group
            nested in a task of a group should not share its pool: outer tasks
            waiting for inner ones can fill it.
        timeout: seconds for the whole group, from entering the block; then the
            group is cancelled and leaving the block raises ``TimeoutError``
            (inside the ``ExceptionGroup`` if tasks failed too).
        name: names the group's threads (default ``workpool-group-N``, threads
            ``workpool-group-N_0``, ``_1``...).
        metrics: True (under the group's name) or a name: show the statistics of the
            group's own pool to ``workpool.exporters.prometheus`` while the group
            lives (not with *pool*: opt that pool in instead).

    Cost: about what ``ThreadPoolExecutor.submit`` costs, limit or not: a task goes
    straight to the group's own ``wp.ThreadPool`` of ``limit`` threads, and the
    group adds two lock rounds. It keeps each task's result (not its future) for
    ``results()``.

    Raises:
        ValueError: *limit* < 1 or *timeout* <= 0.
        TypeError: *limit* is not an int, or *pool* not an executor.

    Example::

        with wp.Group(limit=8) as g:        # 200 calls, 8 at once, stop at the first error
            for url in urls:
                g.go(fetch, url)
        pages = g.results()                 # in go order
    """

    def __init__(self, limit: int | Autoscale | Adaptive | None = None, *,
                 pool: Executor | None = None,
                 timeout: float | None = None, name: str | None = None,
                 metrics: bool | str = False) -> None:
        if pool is not None and not isinstance(pool, Executor):
            raise TypeError(f"pool must be a concurrent.futures.Executor (such as "
                            f"wp.ThreadPool) or None, got {pool!r}")
        self._limit, self._dynamic = check_limit(limit, pool)
        check_group_metrics(metrics, pool)
        self._timeout = check_timeout(timeout)
        self._name = name or f"workpool-group-{next(_COUNTER)}"
        self._pool: Executor | None = pool
        # In-process threads run tasks through _call, which learns their context.
        self._wrap = isinstance(pool, ThreadPool | ThreadPoolExecutor)
        self._own: ThreadPool | None = None  # the group's own pool
        self._given_up = False  # on its threads, at a second Ctrl-C
        self._lock = threading.Lock()
        self._all_done = threading.Condition(self._lock)
        self._state = NEW
        self._active = 0  # tasks admitted by go() and not ended
        # go() calls waiting for a slot, each on a lock held until a task's end (or a
        # cancellation) releases it: lighter than a Condition.
        self._waiters: deque[_Waiter] = deque()
        # Tasks not known to have started, by index: _OwnFuture (own pool) or _Task.
        self._inflight: dict[int, Any] = {}
        self._slots: list[WorkerSlot] = []  # of the own pool's workers
        self._children: set[Group] = set()  # groups opened by running tasks
        self._parent: Group | None = None
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
        self._timer: Timer | None = None
        self._last_fn: Any = None
        self._run_task = self._run  # bound once: each go() hands it to the pool
        register(self, metrics, self._name, group_samples)

    # -- life cycle ---------------------------------------------------------------------

    def __enter__(self) -> Group:
        with self._lock:
            if self._state != NEW:
                raise RuntimeError("a Group can be entered only once")
            self._state = OPEN
        if self._pool is None:
            self._own = ThreadPool(self._dynamic or self._limit or UNLIMITED, name=self._name,
                                   initializer=self._worker_started)
        if self._timeout is not None:
            self._timer = Timer(f"{self._name}_timer")
            self._timer.call_later(self._timeout, self._expire)
        parent: Group | None = getattr(_LOCAL, "group", None)
        if parent is not None:  # opened in a task of another group: cancelled with it
            self._parent = parent
            with parent._lock:
                parent._children.add(self)
                cancelled = parent._cancelled
            if cancelled:
                self._cancel(by_parent=True)
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        if exc is not None:
            if not isinstance(exc, Exception) and self._base_error is None:
                self._base_error = exc
            self._cancel()
        try:
            self._wait_all()
        finally:
            self._close()
        body_error = exc if isinstance(exc, Exception) and not isinstance(
            exc, CancelledError) else None
        # Unless the verdict raises, the block's own exception, if any (a
        # KeyboardInterrupt, a cancellation), propagates as it is.
        if (not verdict(MESSAGE, self._errors, self._base_error, self._timed_out, exc,
                        body_error)
                and exc is None and self._by_parent):
            raise Cancelled("the group was cancelled with the task that opened it")

    def _worker_started(self) -> None:
        """The own pool's initializer, once in each of its threads."""
        _LOCAL.group = self
        with self._lock:
            self._slots.append(current_slot())

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
                    self._given_up = True
                    self._own.shutdown(wait=False, cancel_futures=True)
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
        if self._own is not None and not self._given_up:
            self._own.shutdown(wait=True)
        parent = self._parent
        if parent is not None:
            with parent._lock:
                parent._children.discard(self)

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
        # The hot path: admit the task, hand it to the own pool.
        future = _OwnFuture()
        future._group = self
        with self._lock:  # "with": a Ctrl-C cannot leave it held (see Engine.put)
            if self._state != OPEN:
                self._check_state()
            if self._cancelled or (self._limit is not None and self._active >= self._limit):
                waiter = _Waiter(future, fn, args, kwargs)
                index = self._admit(block, waiter)
                if waiter.admitted:  # a task's end put it on the pool
                    if waiter.error is not None:
                        raise waiter.error
                    return future
                if index < 0:
                    return _cancelled_future()
            else:
                self._active += 1
                index = len(self._values)
                self._values.append(None)
            future._index = index
            self._inflight[index] = future
        try:
            own._put_future(future, self._run_task, (index, fn, args, kwargs))
        except BaseException:  # not started after all (the pool was given up on)
            self._dropped(index, NOT_STARTED)
            raise
        return future

    def _admit(self, block: bool, waiter: _Waiter | None = None) -> int:
        """Wait for a slot (unless cancelled); return the task's index, or -1 once
        the group is cancelled or *waiter* was admitted by a task's end (its
        ``admitted``). Caller holds the lock."""
        limit = self._limit
        while limit is not None and self._active >= limit and not self._cancelled:
            if not block:
                raise WouldBlock(f"the group is at its limit ({limit} tasks in flight)")
            self._wait_turn(waiter or _Waiter())
            if waiter is not None and waiter.admitted:
                return -1
        if self._cancelled:
            self._cancelled_tasks += 1
            return -1
        self._active += 1
        self._values.append(None)
        return len(self._values) - 1

    def _wait_turn(self, waiter: _Waiter) -> None:
        """Wait until a task ends or the group is cancelled; the caller looks again,
        unless a task's end admitted *waiter* (``waiter.admitted``).

        Called and returns with the lock held.
        """
        signal = waiter.signal
        self._waiters.append(waiter)
        self._lock.release()
        try:
            signal.acquire()
        except BaseException:  # Ctrl-C while waiting
            self._lock.acquire()
            if waiter in self._waiters:
                self._waiters.remove(waiter)
            elif self._waiters and not waiter.admitted:  # its turn had come: pass it on
                self._waiters.popleft().signal.release()
            raise
        self._lock.acquire()  # (signal is held again: ready for the caller's next wait)

    def _check_state(self) -> None:
        if self._state == NEW:
            raise RuntimeError("Group.go() called before the group was entered: use "
                               "'with wp.Group() as g:'")
        if self._state == CLOSED or (self._state == EXITING and not self._active):
            raise RuntimeError("Group.go() called after the group's block exited: a "
                               "group takes no new tasks once all of its tasks ended")

    # -- a task on the group's own pool ---------------------------------------------------

    def _run(self, index: int, fn: Callable[..., Any], args: tuple[Any, ...],
             kwargs: dict[str, Any]) -> Any:
        """Run a task on a thread of the own pool, and count its end before the
        thread takes another task: a failure cancels the group before its slot frees.
        The pool published the task's context before: a cancellation from now on
        reaches it."""
        self._inflight.pop(index, None)
        if self._cancelled:
            error = Cancelled("the group was cancelled before the task started")
            self._end(error)
            raise error
        try:
            # fn(*args): 40 ns less than fn(*args, **{}), which copies the dict
            value = fn(*args, **kwargs) if kwargs else fn(*args)
        except BaseException as exc:
            self._end(exc)
            raise
        self._values[index] = value
        handoff = None
        # acquire/release, not "with" (50 ns less): this runs in a thread of the own
        # pool, never the main thread, where alone a signal handler (a Ctrl-C) could
        # raise between the acquire and the try.
        lock = self._lock
        lock.acquire()
        try:
            self._active -= 1
            if self._waiters:
                waiter = self._waiters.popleft()
                if waiter.future is not None and not self._cancelled:
                    # The slot and this worker go to the waiting go()'s task.
                    handoff, waiter.admitted = waiter, True
                    self._active += 1
                    index = len(self._values)
                    self._values.append(None)
                    waiter.future._index = index
                    self._inflight[index] = waiter.future
                else:
                    waiter.signal.release()
            if not self._active and self._state == EXITING:
                self._all_done.notify_all()
        finally:
            lock.release()
        if handoff is not None:
            self._hand_off(handoff, index)
        return value

    def _hand_off(self, waiter: _Waiter, index: int) -> None:
        """Put the task of *waiter*, admitted at *index* by the task ending on this
        worker, on the own pool, for this worker to run next; then let its go()
        return."""
        assert self._own is not None
        assert waiter.future is not None
        try:
            self._own._put_future(waiter.future, self._run_task,
                                  (index, waiter.fn, waiter.args, waiter.kwargs),
                                  after_me=True)
        except BaseException as exc:  # not started after all (the pool was given up on)
            waiter.error = exc
            self._dropped(index, NOT_STARTED)
        finally:
            waiter.fn, waiter.args, waiter.kwargs = None, (), None
            waiter.signal.release()

    def _dropped(self, index: int, value: Any = None) -> None:
        """The task at *index* on the own pool will never run (its future was
        cancelled, or the pool refused it: *value* is NOT_STARTED)."""
        with self._lock:
            if self._inflight.pop(index, None) is None:
                return
            if value is NOT_STARTED:
                self._values[index] = value
            else:
                self._cancelled_tasks += 1
            self._release()

    # -- a task on an executor passed as pool ---------------------------------------------

    def _go_executor(self, fn: Callable[..., Any], args: tuple[Any, ...],
                     kwargs: dict[str, Any], block: bool) -> Future[Any]:
        with self._lock:
            if self._state != OPEN:
                self._check_state()
            index = self._admit(block)
            if index < 0:
                return _cancelled_future()
            task = _Task(self, index)
            self._inflight[index] = task
        try:
            future = self._submit(task, fn, args, kwargs, block)
        except BaseException:  # not started after all (a full queue, a closed pool)
            with self._lock:
                del self._inflight[index]
                self._values[index] = NOT_STARTED
                self._release()
            raise
        task.future = future
        future.add_done_callback(task)
        if self._cancelled:  # meanwhile, when _cancel() could not see the future yet
            task.cancel()
        return future

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
        """Run *fn* in a thread of the executor, publishing its context for
        cancellation and the group for the groups it opens."""
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
        outer = getattr(_LOCAL, "group", None)
        _LOCAL.group = self
        try:
            return fn(*args, **kwargs)
        finally:
            _LOCAL.group = outer
            if slot is not None:
                slot.ctx = None

    def _ended(self, task: _Task, future: Future[Any]) -> None:
        """The done callback of every task's future (in whichever thread settles it)."""
        error: BaseException | None = None
        if future.cancelled():
            error = _CANCELLED_ERROR
        else:
            error = future.exception()
            if error is None:
                self._values[task.index] = future.result()
        self._inflight.pop(task.index, None)
        self._end(error)

    # -- the end of a task, cancellation ----------------------------------------------------

    def _end(self, error: BaseException | None) -> None:
        """Count the end of a task; the first failure (a cancellation is none)
        cancels the group, before a waiting go() can take the slot."""
        tasks = None
        with self._lock:
            if error is not None:
                if isinstance(error, CancelledError):
                    self._cancelled_tasks += 1
                else:
                    self._failed += 1
                    if isinstance(error, Exception):
                        self._errors.append(error)
                    elif self._base_error is None:
                        self._base_error = error
                    tasks = self._stop(False)
            self._release()
        if tasks is not None:
            self._cancel_tasks(tasks)

    def _release(self) -> None:
        # Caller holds the lock: a task left the group.
        self._active -= 1
        if self._waiters:
            self._waiters.popleft().signal.release()
        if not self._active and self._state == EXITING:
            self._all_done.notify_all()

    def _cancel(self, *, by_parent: bool = False) -> None:
        with self._lock:
            tasks = self._stop(by_parent)
        if tasks is not None:
            self._cancel_tasks(tasks)

    def _stop(self, by_parent: bool) -> list[Any] | None:
        """Mark the group cancelled and wake every waiting go(); return the tasks to
        cancel (None if it was cancelled already). Caller holds the lock."""
        if self._cancelled:
            return None
        self._cancelled = True
        self._by_parent = by_parent
        while self._waiters:
            self._waiters.popleft().signal.release()
        return list(self._inflight.values())

    def _cancel_tasks(self, tasks: list[Any]) -> None:
        """Cancel the tasks not started, the contexts of those running, and the
        groups they opened."""
        for task in tasks:
            task.cancel()
        for slot in list(self._slots):
            ctx = slot.ctx
            if ctx is not None:
                ctx.cancel()
        with self._lock:
            children = list(self._children)
        for child in children:
            child._cancel(by_parent=True)

    def _expire(self) -> None:
        """The group's deadline passed (on the timer thread)."""
        with self._lock:
            if self._cancelled or self._state == CLOSED:
                return
            self._errors.append(TimeoutError(f"group timed out after {self._timeout:g} s"))
            self._timed_out = True
        self._cancel()

    def cancel(self) -> None:
        """Cancel the group: tasks not started never start, running ones see
        ``wp.current().cancelled``, and later ``go`` calls return cancelled futures.

        Leaving the block raises only for real failures, not for this cancellation.
        """
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
        return [value for value in self._values if value is not NOT_STARTED]

    def _metrics_pool(self) -> ThreadPool | None:
        return self._own

    def __repr__(self) -> str:
        state = ("new", "open", "exiting", "closed")[self._state]
        return (f"<Group {self._name!r} {state} limit={self._limit} "
                f"in_flight={self._active} cancelled={self._cancelled}>")


def _check_fn(fn: Any) -> None:
    if not callable(fn):
        raise TypeError(f"fn must be callable, got {fn!r}")
    if inspect.iscoroutinefunction(fn):
        name = getattr(fn, "__qualname__", repr(fn))
        raise TypeError(f"{name} is a coroutine function: Group runs plain callables "
                        f"in threads; use wp.AsyncGroup for coroutines")
