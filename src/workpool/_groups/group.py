"""``Group``: Go's errgroup with ``SetLimit``, for threads.

A group runs its tasks on threads of its own (``_group_runners``, where a diagram
shows how go() hands tasks to them) or on an executor passed as ``pool``
(``_group_base``, with the state and bookkeeping both paths share). This module holds
the public class: its life cycle (``with``), ``go``, ``cancel`` and ``results``.

Cancelling the group cancels the futures of tasks that have not started and the
contexts (``wp.current()``) of those that run, and cancels the groups that those
tasks opened in turn.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from concurrent.futures import CancelledError, Future
from types import TracebackType
from typing import Any, ParamSpec, TypeVar, final

from .._core.exceptions import Cancelled
from .._core.timer import Timer
from .._pools.executor import ThreadPool
from .base import (
    CLOSED,
    EXITING,
    LOCAL,
    MESSAGE,
    NEW,
    NOT_STARTED,
    OPEN,
    UNLIMITED,
    Task,
    check_limit,
)
from .runners import OwnThreads

__all__ = ["Group", "check_limit"]

P = ParamSpec("P")
T = TypeVar("T")


@final
class Group(OwnThreads):
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

    # -- life cycle ---------------------------------------------------------------------

    def __enter__(self) -> Group:
        with self._lock:
            if self._state != NEW:
                raise RuntimeError("a Group can be entered only once")
            self._state = OPEN
        if self._pool is None:
            self._own = ThreadPool(self._limit or UNLIMITED, name=self._name)
            self._pool = self._own
        if self._timeout is not None:
            self._timer = Timer(f"{self._name}_timer")
            self._timer.call_later(self._timeout, self._expire)
        parent: Task | None = getattr(LOCAL, "task", None)
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
        if self._own is None:
            return self._go_executor(fn, args, kwargs, block)
        return self._go_own(fn, args, kwargs, block)

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
