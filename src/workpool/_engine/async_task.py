"""What ``AsyncPool`` queues and runs: tasks (``AsyncFuture``) and ``map`` chunks.

An ``AsyncFuture`` is both the queue entry and the caller's handle, so a submit
allocates one object. Its life::

    QUEUED ──worker takes it──▶ RUNNING ──▶ VALUE | ERROR | CANCELLED   (each once)
      ▲                            │
      └──── retry, after a delay ──┘   (waiting in the pool's retry timer, no worker)
"""

from __future__ import annotations

import inspect
import logging
import time
from collections.abc import Callable, Generator
from concurrent.futures import InvalidStateError
from types import FunctionType, MethodType
from typing import TYPE_CHECKING, Any, Final, Generic, Protocol, TypeVar, final

from .._core.exceptions import Cancelled
from .._core.retry import Retry

if TYPE_CHECKING:
    from .._backends.aio import Lot

__all__ = ["ASYNC", "SYNC", "AsyncFuture", "Chunk", "ChunkOwner", "Failure", "Job", "Spec",
           "TaskOwner", "fn_name", "kind_of", "new_future"]

T = TypeVar("T")
LOGGER: Final = logging.getLogger("workpool")

QUEUED: Final = 0  # in the queue, or waiting for a retry
RUNNING: Final = 1
VALUE: Final = 2
ERROR: Final = 3
CANCELLED: Final = 4

ASYNC: Final = 0  # a coroutine function: awaited on a worker task
SYNC: Final = 1  # a plain callable: run in a worker thread


class TaskOwner(Protocol):
    """What an ``AsyncFuture`` asks of the engine that runs it (``AsyncEngine``): a lot
    to wait in, and to cancel it. The engine imports this module, so it names it by
    this contract, not by import."""

    new_lot: Callable[[], Lot]  # a lot of the running event loop's library

    def cancel_job(self, job: AsyncFuture[Any]) -> None:
        """``AsyncFuture.cancel()`` of a task that has not finished."""


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
    __slots__ = ("_args", "_attempt", "_fn", "_index", "_kwargs", "_notify", "_spec",
                 "_state", "_t0", "_value")

    _fn: Callable[..., Any]
    _args: tuple[Any, ...]
    _kwargs: dict[str, Any]
    _spec: Spec
    _state: int
    _value: Any  # the value, or the exception of a failed or cancelled task
    _notify: _Notify | None
    _attempt: int
    _t0: float  # when it was queued, if its latency is sampled; else 0.0
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
        self._spec.owner.cancel_job(self)
        return True

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


def new_future(fn: Callable[..., Any], args: tuple[Any, ...], kwargs: dict[str, Any],
               spec: Spec, t0: float) -> AsyncFuture[Any]:
    """A queued task. Bypasses ``__init__`` (there is no public constructor)."""
    job: AsyncFuture[Any] = _new(AsyncFuture)
    job._fn = fn
    job._args = args
    job._kwargs = kwargs
    job._spec = spec
    job._state = QUEUED
    job._notify = None
    job._attempt = 1
    job._t0 = t0
    return job


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


class ChunkOwner(Protocol):
    """What a ``map`` run offers the workers that run its chunks."""

    fn: Callable[..., Any]
    spec: Spec
    star: bool
    stopped: bool

    def deliver(self, chunk: Chunk, results: list[Any], seconds: float,
                failed: int = 0) -> None:
        """Take a chunk's results: a value or a ``Failure`` per item that ran (*failed*
        of them failures); items past the end of *results* were cancelled."""


class Failure:
    """An item's error among a chunk's results (a value is stored as itself)."""

    __slots__ = ("error",)

    def __init__(self, error: BaseException) -> None:
        self.error = error


@final
class Chunk:
    """A run of ``map`` items handed to one worker: one queue entry, one wake-up and
    one statistics sample for the lot. Items are argument tuples when ``run.star``."""

    __slots__ = ("_attempt", "_spec", "_t0", "count", "items", "run", "seq")

    def __init__(self, run: ChunkOwner, items: list[Any], seq: int) -> None:
        self.run = run
        self.items = items
        self.seq = seq
        self.count = len(items)
        self._spec = run.spec
        self._attempt = 1
        self._t0 = time.monotonic()


Job = AsyncFuture[Any] | Chunk
