"""Fan-in: ``merge`` interleaves blocking iterables, ``amerge`` async ones.

::

    source 0 --> reader 0 --+
    source 1 --> reader 1 --+--> one bounded buffer --> the consumer (for x in merged)
    source N --> reader N --+
                 (a thread each, or a task each for amerge)

Each reader pulls items from its source and puts them in the shared buffer, waiting while
it is full, so memory holds at most ``buffer`` items however fast the sources are. The
first source error stops every reader (each at its next item) and is raised to the
consumer; closing the merge does the same without an error. A reader that stops early
closes its source if it can (generators, another merge).
"""

from __future__ import annotations

import contextlib
import enum
import itertools
import threading
import time
from collections import deque
from collections.abc import AsyncIterable, AsyncIterator, Awaitable, Callable, Iterable, Iterator
from contextlib import AsyncExitStack
from types import TracebackType
from typing import Any, Final, Generic, TypeVar, final

import anyio
from anyio.abc import TaskGroup
from anyio.streams.memory import MemoryObjectReceiveStream, MemoryObjectSendStream

__all__ = ["AsyncMerge", "Merge", "amerge", "merge"]

T = TypeVar("T")

_JOIN_TIMEOUT: Final = 5.0  # how long close() waits for a reader stuck inside its source
_NAMES: Final = itertools.count()


class _End(enum.Enum):
    END = enum.auto()  # what _Buffer.get returns when there is no next item


def _check_buffer(buffer: int) -> None:
    if not isinstance(buffer, int) or buffer < 1:
        raise ValueError(f"buffer must be an int >= 1, got {buffer!r}")


class _Buffer(Generic[T]):
    """The bounded buffer the readers share, with the merge's state under one lock."""

    __slots__ = ("_items", "_not_empty", "_not_full", "_size", "error", "live", "stopped")

    def __init__(self, size: int, live: int) -> None:
        lock = threading.Lock()
        self._not_empty = threading.Condition(lock)
        self._not_full = threading.Condition(lock)
        self._items: deque[T] = deque()
        self._size = size
        self.live = live  # readers still running
        self.stopped = False
        self.error: BaseException | None = None

    def put(self, item: T) -> bool:
        """Add *item*, waiting for room; False (item dropped) once the merge stopped."""
        with self._not_full:
            while len(self._items) >= self._size and not self.stopped:
                self._not_full.wait()
            if self.stopped:
                return False
            self._items.append(item)
            self._not_empty.notify()
            return True

    def get(self) -> T | _End:
        """Wait for the next item, or return ``_End.END`` when there is none: every
        source is done, the merge stopped, or a source failed (see ``take_error``)."""
        with self._not_empty:
            while True:
                if self.error is not None:
                    return _End.END
                if self._items:
                    item = self._items.popleft()
                    self._not_full.notify()
                    return item
                if self.live == 0 or self.stopped:
                    return _End.END
                self._not_empty.wait()

    def take_error(self) -> BaseException | None:
        """The source error that stopped the merge, once (later calls return None)."""
        with self._not_empty:
            error, self.error = self.error, None
            return error

    def finish(self, error: BaseException | None) -> None:
        """A reader is done; a source *error* stops the others, if none stopped them."""
        with self._not_empty:
            self.live -= 1
            if error is not None and not self.stopped:
                self.error = error
                self._stop()
            self._not_empty.notify()

    def stop(self) -> None:
        """Stop every reader at its next item and wake those waiting for room."""
        with self._not_empty:
            self._stop()

    def _stop(self) -> None:
        self.stopped = True
        self._items.clear()
        self._not_full.notify_all()
        self._not_empty.notify_all()


def _read(source: Iterator[T], buffer: _Buffer[T]) -> None:
    # The body of a reader thread. It owns *source*: next() and close() are only ever
    # called here, as a generator cannot be closed while another thread runs it.
    error: BaseException | None = None
    try:
        for item in source:
            if not buffer.put(item):
                _close(source)
                break
    except BaseException as exc:  # handed to the consumer, who raises it
        error = exc
    finally:
        buffer.finish(error)
        del error


def _close(source: object) -> None:
    close = getattr(source, "close", None)
    if callable(close):
        # Stopped early, so the consumer has left: an error in the source's cleanup has
        # nobody to go to.
        with contextlib.suppress(Exception):
            close()


@final
class Merge(Generic[T]):
    """The iterator ``wp.merge()`` returns; also a context manager. See ``merge``."""

    __slots__ = ("__weakref__", "_buffer", "_closed", "_sources", "_threads")

    def __init__(self, sources: list[Iterator[T]], buffer: int) -> None:
        self._sources = sources
        self._buffer: _Buffer[T] = _Buffer(buffer, live=len(sources))
        self._threads: list[threading.Thread] = []
        self._closed = False

    def __iter__(self) -> Merge[T]:
        return self

    def __next__(self) -> T:
        if self._closed:  # as a closed generator: no more items, and no error
            raise StopIteration
        if not self._threads:
            self._start()
        item = self._buffer.get()
        if not isinstance(item, _End):
            return item
        error = self._buffer.take_error()
        self.close()
        if error is None:
            raise StopIteration
        try:
            raise error
        finally:
            del error

    def _start(self) -> None:
        sources, self._sources = self._sources, []
        for source in sources:
            # Daemon threads: one stuck inside its source must not hang the interpreter.
            thread = threading.Thread(target=_read, args=(source, self._buffer),
                                      name=f"workpool-merge-{next(_NAMES)}", daemon=True)
            self._threads.append(thread)
            thread.start()

    def close(self, timeout: float | None = _JOIN_TIMEOUT) -> None:
        """Stop every reader and wait for their threads to end, *timeout* seconds at most.

        Readers waiting for room in the buffer stop at once, and close their source. A
        reader blocked inside its source's ``next()`` cannot be interrupted: it stops,
        closes the source and ends when that call returns; if that takes longer than
        *timeout* this returns first, leaving it to finish as a daemon thread. Items not
        yet consumed are dropped. Idempotent.
        """
        self._closed = True
        self._buffer.stop()
        for source in self._sources:  # never started: close them here
            _close(source)
        self._sources = []
        deadline = None if timeout is None else time.monotonic() + timeout
        current = threading.current_thread()
        for thread in self._threads:
            if thread is not current:
                thread.join(None if deadline is None else max(0.0, deadline - time.monotonic()))

    def __enter__(self) -> Merge[T]:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.close()

    def __del__(self) -> None:
        if not getattr(self, "_closed", True):
            self.close()


def merge(*iterables: Iterable[T], buffer: int = 64) -> Merge[T]:
    """Interleave the items of several blocking iterables as they come.

    Each iterable is read by its own thread (named ``workpool-merge-N``, started at the
    first ``next()``) into one buffer of at most *buffer* items: a fast source waits
    while the consumer is behind, so memory stays flat. Every item arrives exactly once,
    and each source's items in that source's order; across sources, in arrival order.

    If a source raises, the other readers are stopped and the exception is raised from
    ``next()`` once their threads have ended (waiting at most 5 s for one stuck inside
    its source's ``next()``); items still buffered are dropped. Leaving
    early (``close()``, the end of a ``with`` block, or the iterator being garbage
    collected) stops every reader and joins its thread; a reader that stops early
    closes its source if the source has a ``close()`` method (generators, another
    merge). A reader blocked inside a source's ``next()`` cannot be interrupted: see
    ``Merge.close``.

    Costs a thread per source and a lock hand-off per item: about 3 us an item for
    sources that cost nothing themselves.

    Args:
        *iterables: the sources; none at all yields nothing.
        buffer: the most items held between the readers and the consumer (>= 1).

    Raises:
        ValueError: *buffer* is not an int >= 1.
        TypeError: an argument is not iterable (at the call).

    Example::

        with wp.merge(tail("a.log"), tail("b.log")) as lines:
            for line in lines:
                print(line)
    """
    _check_buffer(buffer)
    sources = [iter(iterable) for iterable in iterables]
    return Merge(sources, buffer)


@final
class AsyncMerge(Generic[T]):
    """The async iterator ``wp.amerge()`` returns, once entered with ``async with``.
    See ``amerge``."""

    __slots__ = ("_buffer", "_closed", "_done", "_error", "_lifetime", "_receive", "_scope",
                 "_sources", "_tg")

    def __init__(self, sources: list[AsyncIterator[T]], buffer: int) -> None:
        self._sources = sources
        self._buffer = buffer
        self._tg: TaskGroup | None = None
        self._lifetime = AsyncExitStack()  # holds the task group from entering to leaving
        self._receive: MemoryObjectReceiveStream[T] | None = None
        self._scope: anyio.CancelScope | None = None  # around the source tasks, not the host
        self._done: anyio.Event | None = None
        self._error: BaseException | None = None
        self._closed = False

    async def __aenter__(self) -> AsyncMerge[T]:
        if self._tg is not None or self._closed:
            raise RuntimeError("a wp.amerge() can be entered only once")
        send, self._receive = anyio.create_memory_object_stream[T](self._buffer)
        self._scope = anyio.CancelScope()
        self._done = anyio.Event()
        tg = self._tg = await self._lifetime.enter_async_context(anyio.create_task_group())
        tg.start_soon(self._supervise, send, name="workpool-amerge")
        return self

    async def __aexit__(self, exc_type: type[BaseException] | None,
                        exc: BaseException | None, tb: TracebackType | None) -> None:
        tg = self._tg
        self._stop()
        if tg is not None:
            tg.cancel_scope.cancel()
            # The body's exception is not handed to the task group, which would wrap it
            # in an ExceptionGroup: it propagates unchanged once the tasks have ended.
            await self._lifetime.aclose()

    def __aiter__(self) -> AsyncMerge[T]:
        return self

    async def __anext__(self) -> T:
        if self._closed:  # as a closed async generator: no more items, and no error
            raise StopAsyncIteration
        if self._receive is None:
            raise RuntimeError("wp.amerge() must be entered before iterating: "
                               "async with wp.amerge(...) as it: async for x in it: ...")
        if self._error is None:
            try:
                return await self._receive.receive()
            except (anyio.EndOfStream, anyio.ClosedResourceError):
                pass
        error, self._error = self._error, None
        if error is None:
            raise StopAsyncIteration
        self._stop()
        try:
            assert self._done is not None
            await self._done.wait()  # the other sources have been cancelled
            raise error
        finally:
            del error

    async def aclose(self) -> None:
        """Cancel every source task and wait for them to end; items not yet consumed are
        dropped and iterating ends. Leaving the ``async with`` block does this too.
        Idempotent."""
        self._stop()
        if self._tg is None:  # never entered: the sources were never started
            for source in self._sources:
                await _aclose(source)
            self._sources = []
        elif self._done is not None:
            await self._done.wait()

    def _stop(self) -> None:
        self._closed = True
        if self._scope is not None:
            self._scope.cancel()
        if self._receive is not None:
            self._receive.close()

    async def _supervise(self, send: MemoryObjectSendStream[T]) -> None:
        assert self._done is not None
        assert self._scope is not None
        try:
            with self._scope:
                async with anyio.create_task_group() as tg:
                    with send:
                        for i, source in enumerate(self._sources):
                            tg.start_soon(self._pump, source, send.clone(),
                                          name=f"workpool-amerge-{i}")
        finally:
            self._sources = []
            self._done.set()

    async def _pump(self, source: AsyncIterator[T], send: MemoryObjectSendStream[T]) -> None:
        # The error is recorded before this task's send stream closes: the consumer,
        # woken by the last one closing, always finds it.
        finished = False
        with send:
            try:
                async for item in source:
                    await send.send(item)
                finished = True
            except Exception as exc:
                if not self._closed:  # else the merge was stopped: nobody to report to
                    finished = True
                    self._fail(exc)
            finally:
                if not finished:
                    await _aclose(source)

    def _fail(self, exc: Exception) -> None:
        # The first source error is handed to the consumer, who raises it; the other
        # sources are cancelled.
        if self._error is None:
            self._error = exc
            assert self._scope is not None
            self._scope.cancel()


async def _aclose(source: object) -> None:
    aclose: Callable[[], Awaitable[Any]] | None = getattr(source, "aclose", None)
    if not callable(aclose):
        return
    # Shielded so that a cancelled reader can still run the source's cleanup; bounded
    # so that a source whose cleanup hangs cannot hang the merge.
    # An error in it has nobody to go to, as for ``_close``.
    with anyio.move_on_after(_JOIN_TIMEOUT, shield=True), contextlib.suppress(Exception):
        await aclose()


def amerge(*aiterables: AsyncIterable[T], buffer: int = 64) -> AsyncMerge[T]:
    """Interleave the items of several async iterables as they come (asyncio or trio).

    Use it as ``async with wp.amerge(a, b) as it: async for x in it: ...``: entering
    starts one task per source in a task group that the block owns, and leaving the
    block cancels them all and waits for them, so no task outlives it. (Iterating
    without ``async with`` raises RuntimeError: a task group held open by a bare
    iterator across ``yield``s would cancel the consumer's own code on a source error.)

    The tasks feed one memory stream of at most *buffer* items. Every item arrives
    exactly once, each source's items in that source's order. If a source raises, the
    other sources are cancelled and the exception is raised from ``__anext__`` once
    their tasks have ended (the same exception, not an ExceptionGroup); items still
    buffered are dropped. ``aclose()`` or leaving the block stops early; a source
    stopped early is closed with its ``aclose()`` if it has one (async generators).
    Costs a task per source and a memory-stream hand-off per item (about 10 us).

    Args:
        *aiterables: the sources; none at all yields nothing.
        buffer: the most items held between the tasks and the consumer (>= 1).

    Raises:
        ValueError: *buffer* is not an int >= 1.
        TypeError: an argument is not an async iterable (at the call).

    Example::

        async with wp.amerge(ticker("a"), ticker("b")) as ticks:
            async for tick in ticks:
                print(tick)
    """
    _check_buffer(buffer)
    sources = [aiter(aiterable) for aiterable in aiterables]
    return AsyncMerge(sources, buffer)
