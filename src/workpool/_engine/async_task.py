"""What ``AsyncPool`` hands out and how its tasks are described: ``AsyncFuture`` (the
public handle, and the engine's ``TaskFuture`` of the task) and ``Spec`` (a task's
options, shared by every task submitted with the same ones).

Owns the handle's states; the engine (``engine.py``) and the event-loop backend
(``_backends/async_backend.py``) settle it through the ``TaskFuture`` methods. May
import ``_core`` only (the lot type under ``TYPE_CHECKING``). Its life::

    QUEUED ──set_running_or_notify_cancel──▶ RUNNING ──▶ VALUE | ERROR | CANCELLED
                                               │            (each once)
                                               └─ between retries it stays RUNNING:
                                                  the engine holds its task, no worker

An error that is a ``wp.Cancelled`` ends it CANCELLED (a shutdown, its owner, a user's
``cancel()``); everything else ERROR.
"""

from __future__ import annotations

import inspect
import logging
from collections.abc import Callable, Generator
from concurrent.futures import InvalidStateError
from types import FunctionType, MethodType
from typing import TYPE_CHECKING, Any, Final, Generic, Protocol, TypeVar, final

from .._core.exceptions import Cancelled
from .._core.retry import Retry

if TYPE_CHECKING:
    from .._backends.aio import Lot

__all__ = ["ASYNC", "SYNC", "AsyncFuture", "Failure", "Spec", "TaskOwner", "fn_name",
           "kind_of", "new_future"]

T = TypeVar("T")
LOGGER: Final = logging.getLogger("workpool")

QUEUED: Final = 0  # in the queue, or handed to a worker that has not started it
RUNNING: Final = 1
VALUE: Final = 2
ERROR: Final = 3
CANCELLED: Final = 4

ASYNC: Final = 0  # a coroutine function: awaited on a worker task
SYNC: Final = 1  # a plain callable: run in a worker thread


class TaskOwner(Protocol):
    """What an ``AsyncFuture`` asks of the pool that runs it (the event-loop backend,
    ``_backends/async_backend.py``): a lot to wait in, and to cancel it. The backend
    imports this module, so it names it by this contract, not by import."""

    new_lot: Callable[[], Lot]  # a lot of the running event loop's library

    def cancel_future(self, future: AsyncFuture[Any]) -> None:
        """``AsyncFuture.cancel()`` of a task that has not finished: withdraw it from
        the queue or its retry wait, or interrupt the worker running it, or (handed
        to a worker not started yet) mark it so that it never starts."""


@final
class Spec:
    """Where and how a task runs: shared by every task with the same options, so a
    plain ``submit`` allocates nothing for it. ``fast`` tasks skip the policies.

    ``on_end``, if given, is called with each task of this spec once it ended, however
    it ended (value, error, cancellation; not between retries), right after its
    waiters were woken: how a front end over the pool (``AsyncGroup``) counts its
    tasks without a done callback each. It must not raise."""

    __slots__ = ("fast", "key", "kind", "on_end", "owner", "priority", "retry", "timeout")

    def __init__(self, owner: TaskOwner, kind: int, timeout: float | None,
                 retry: Retry | None, priority: int = 0, key: Any = None,
                 rated: bool = False,
                 on_end: Callable[[AsyncFuture[Any]], None] | None = None) -> None:
        self.owner = owner
        self.on_end = on_end
        self.kind = kind
        self.timeout = timeout
        self.retry = retry
        self.priority = priority
        self.key = key
        self.fast = kind == ASYNC and timeout is None and retry is None and not rated


class _Notify:
    """Who waits for a task: a lot of awaiting tasks, and done callbacks."""

    __slots__ = ("callbacks", "lot")

    def __init__(self) -> None:
        self.lot: Lot | None = None
        self.callbacks: list[Callable[[Any], object]] = []


@final
class AsyncFuture(Generic[T]):
    """The handle of a task submitted to an ``AsyncPool``: await it for the result.

    ``await fut`` returns the task's value or raises its exception (``wp.Cancelled``
    if it was cancelled). Being cancelled while awaiting does not cancel the task:
    the task belongs to the pool (use ``pool.run`` to tie a task to the caller).
    ``AsyncPool.submit`` and ``schedule`` create them; there is no public constructor.

    Example::

        async with wp.AsyncPool(10) as pool:
            fut = await pool.submit(fetch, url)
            ...
            page = await fut
    """

    # Few slots: a program holding many futures pays the garbage collector per slot.
    # The engine's task holds the future, not the other way round: no reference
    # cycle, so a future is freed as soon as its last holder lets go.
    __slots__ = ("_fn", "_index", "_notify", "_spec", "_state", "_value")

    _fn: Callable[..., Any]  # for repr
    _spec: Spec
    _state: int
    _value: Any  # the value, or the exception of a failed or cancelled task
    _notify: _Notify | None
    _index: int  # its place in its spec's owner's order (AsyncGroup: go order); or unset

    def __init__(self) -> None:
        raise TypeError("AsyncFuture has no public constructor: AsyncPool.submit() "
                        "returns one")

    @property
    def key(self) -> Any:
        """The ``key`` given to ``schedule`` (None otherwise)."""
        return self._spec.key

    def done(self) -> bool:
        """True once the task returned, raised or was cancelled."""
        return self._state >= VALUE

    def running(self) -> bool:
        """True while a worker runs the task."""
        return self._state == RUNNING

    def cancelled(self) -> bool:
        """True if the task was cancelled."""
        return self._state == CANCELLED

    def result(self) -> T:
        """The task's value, without waiting.

        Raises:
            InvalidStateError: the task has not finished (``concurrent.futures``').
            Cancelled: the task was cancelled.
            BaseException: whatever the task raised.
        """
        state = self._state
        if state == VALUE:
            value: T = self._value
            return value
        if state < VALUE:
            raise InvalidStateError("task is not done yet")
        raise self._value

    def exception(self) -> BaseException | None:
        """The task's exception (None if it returned), without waiting.

        Raises:
            InvalidStateError: the task has not finished.
            Cancelled: the task was cancelled.
        """
        state = self._state
        if state < VALUE:
            raise InvalidStateError("task is not done yet")
        if state == CANCELLED:
            raise self._value
        error: BaseException | None = self._value if state == ERROR else None
        return error

    def cancel(self) -> bool:
        """Cancel the task: a queued task never runs, a running one is cancelled at its
        next ``await`` (a sync one sees ``wp.current().cancelled``).

        Returns False if the task had already finished, True otherwise.
        """
        if self._state >= VALUE:
            return False
        self._spec.owner.cancel_future(self)
        return True

    # -- the engine's side (``TaskFuture``) ----------------------------------------------

    def set_running_or_notify_cancel(self) -> bool:
        """The task starts on a worker: False if it was cancelled first."""
        if self._state == CANCELLED:
            return False
        self._state = RUNNING
        return True

    def set_result(self, result: T, /) -> None:
        """The task returned *result*.

        Raises:
            InvalidStateError: the future was settled already.
        """
        if self._state >= VALUE:
            raise InvalidStateError(f"{self!r} is settled already")
        self._state = VALUE
        self._value = result
        if self._notify is not None:
            self._notify_all()
        on_end = self._spec.on_end
        if on_end is not None:
            on_end(self)

    def set_exception(self, exception: BaseException | None, /) -> None:
        """The task ended with *exception* (CANCELLED for a ``wp.Cancelled``).

        Raises:
            InvalidStateError: the future was settled already.
        """
        if self._state >= VALUE:
            raise InvalidStateError(f"{self!r} is settled already")
        assert exception is not None
        self._finish(CANCELLED if isinstance(exception, Cancelled) else ERROR, exception)

    def add_done_callback(self, fn: Callable[[AsyncFuture[T]], object]) -> None:
        """Call ``fn(future)`` when the task finishes (now, if it has)."""
        if self._state >= VALUE:
            _call(fn, self)
            return
        if self._notify is None:
            self._notify = _Notify()
        self._notify.callbacks.append(fn)

    def __await__(self) -> Generator[Any, None, T]:
        if self._state < VALUE:
            yield from self._wait().__await__()
        if self._state == VALUE:  # result(), inline for the common case
            value: T = self._value
            return value
        return self.result()

    async def _wait(self) -> None:
        while self._state < VALUE:
            notify = self._notify
            if notify is None:
                notify = self._notify = _Notify()
            if notify.lot is None:
                notify.lot = self._spec.owner.new_lot()
            await notify.lot.park()

    def _finish(self, state: int, value: Any) -> None:
        """End the task (once: the caller checked it was not done)."""
        self._state = state
        self._value = value
        if self._notify is not None:
            self._notify_all()
        on_end = self._spec.on_end
        if on_end is not None:
            on_end(self)

    def _notify_all(self) -> None:
        notify = self._notify
        if notify is None:
            return
        if notify.lot is not None:
            notify.lot.unpark_all()
        callbacks, notify.callbacks = notify.callbacks, []
        for fn in callbacks:
            _call(fn, self)

    def _cancelled(self, message: str) -> None:
        if self._state < VALUE:
            self._finish(CANCELLED, Cancelled(message))

    def __repr__(self) -> str:
        names = {QUEUED: "queued", RUNNING: "running", VALUE: "finished",
                 ERROR: "failed", CANCELLED: "cancelled"}
        name = getattr(self._fn, "__qualname__", repr(self._fn))
        return f"<AsyncFuture {names[self._state]} {name}>"


def _call(fn: Callable[[Any], object], future: AsyncFuture[Any]) -> None:
    try:
        fn(future)
    except Exception:
        LOGGER.exception("exception calling callback for %r", future)


_new = object.__new__


def new_future(fn: Callable[..., Any], spec: Spec) -> AsyncFuture[Any]:
    """The handle of a task of *fn* about to be queued. Bypasses ``__init__`` (there is
    no public constructor)."""
    future: AsyncFuture[Any] = _new(AsyncFuture)
    future._fn = fn
    future._spec = spec
    future._state = QUEUED
    future._notify = None
    return future


def fn_name(fn: Any) -> str:
    """How an error message names a callable."""
    return getattr(fn, "__qualname__", None) or repr(fn)


def kind_of(fn: Any) -> int:
    """ASYNC for a coroutine function, SYNC for another callable.

    Raises:
        TypeError: *fn* is not callable, is a coroutine object (closed here, so
            Python does not warn that it was never awaited) or an async generator
            function.
    """
    target = fn.__func__ if type(fn) is MethodType else fn
    if type(target) is FunctionType:
        flags = target.__code__.co_flags
        if flags & inspect.CO_COROUTINE:
            return ASYNC
        if not flags & inspect.CO_ASYNC_GENERATOR:
            return SYNC
    if inspect.iscoroutine(fn):
        fn.close()
        raise TypeError(f"fn must be a coroutine function or a callable, got the coroutine "
                        f"object {fn.__qualname__}(): pass the function and its arguments, "
                        f"as submit({fn.__qualname__}, *args)")
    if not callable(fn):
        raise TypeError(f"fn must be callable, got {fn!r}")
    if inspect.isasyncgenfunction(fn):
        raise TypeError(f"{fn_name(fn)} is an async generator function: AsyncPool runs "
                        f"coroutine functions and plain callables")
    if inspect.iscoroutinefunction(fn) or inspect.iscoroutinefunction(
            type(fn).__call__):  # an object with an async __call__
        return ASYNC
    return SYNC


class Failure:
    """An item's error among a chunk's results (a value is stored as itself)."""

    __slots__ = ("error",)

    def __init__(self, error: BaseException) -> None:
        self.error = error


class ChunkEnd:
    """How a chunk of quick ``map`` items ended, its chunk's value for the engine: a
    value or ``Failure`` per item that ran (``failed`` of them failures; items past
    the end were cancelled), and the seconds they took."""

    __slots__ = ("failed", "results", "seconds")

    def __init__(self, results: list[Any], failed: int, seconds: float) -> None:
        self.results = results
        self.failed = failed
        self.seconds = seconds
