"""The walk on an event loop: ``AsyncWalk``, over the public API of an ``AsyncPool``.

The thread walk's scheme (``_threads``) on one event loop: each pool task awaits one
node, then the children it keeps, depth first; a child becomes a task of its own only
while fewer than ``min(workers, max_pending)`` tasks wait (``submit_nowait``: a full
queue runs it inline). ``running`` (tasks submitted, not finished) is 0 exactly when
nothing runs or waits. Everything happens on the loop's thread: no lock. Imports
``_core``, the pools' API and anyio.
"""

from __future__ import annotations

import inspect
from collections import deque
from collections.abc import Callable, Hashable, Iterator
from types import TracebackType
from typing import Any

import anyio
import anyio.to_thread

from .._core.exceptions import WouldBlock
from ._common import Failure, Outcomes, WalkStatistics, first_time, pair

__all__ = ["AsyncWalk"]

_Frame = tuple[Iterator[Any], int, Any]  # children left, their depth, their parent


class AsyncWalk:
    """A running async walk: ``async for`` over it for the results, in completion
    order. Made by ``wp.awalk``; an async context manager (leaving it stops the walk)
    with ``aclose()`` and ``statistics()``.
    """

    def __init__(self, fn: Callable[[Any], Any], roots: Any, pool: Any,
                 own_pool: bool, max_pending: int, key: Callable[[Any], Hashable] | None,
                 on_error: str, where: str) -> None:
        self._fn = fn
        # A plain callable runs in a worker thread, as an AsyncPool runs one.
        self._in_thread = not (inspect.iscoroutinefunction(fn) or inspect.iscoroutinefunction(
            type(fn).__call__))
        self._roots: Any = roots  # an iterable or an async iterable, until started
        self._pool = pool
        self._own_pool = own_pool
        self._key = key
        self._seen: set[Hashable] = set()
        self._on_error = on_error
        self._outcomes = Outcomes(on_error, where)
        self._hungry = min(max_pending, pool.workers)
        self._out: deque[Any] = deque()
        self._room = 64 * max(1, pool.workers)
        self._wakeup: anyio.Event | None = None  # the consumer waits on it
        self._roomy: anyio.Event | None = None  # producers wait on it
        self._running = self._waiting = 0
        self._started = self._stopped = self._closed = self._entered = False
        self._visited = self._failed = self._max_waiting = self._max_depth = 0

    # -- the consumer -------------------------------------------------------------------

    def __aiter__(self) -> AsyncWalk:
        return self

    async def __anext__(self) -> Any:
        try:
            if not self._started:
                self._start()
            while True:
                while self._out:
                    keep, value = self._outcomes.out(self._out.popleft())
                    self._wake_producers()
                    if keep:
                        return value
                await self._feed()
                if not self._out:
                    if self._running == 0 and (self._roots is None or self._stopped):
                        self._stop()
                        self._outcomes.finish()
                        raise StopAsyncIteration
                    self._wakeup = anyio.Event()
                    await self._wakeup.wait()
        except BaseException:
            # No await here (this may be a cancellation): the tasks see the walk
            # stopped and end; aclose() (leaving ``async with``) waits for them.
            self._stop()
            raise

    def _start(self) -> None:
        if self._own_pool and not self._entered:
            raise RuntimeError("an awalk with a pool of its own runs inside "
                               "`async with wp.awalk(...) as w:` (or pass pool=)")
        self._started = True
        roots = self._roots
        self._roots = roots.__aiter__() if hasattr(roots, "__aiter__") else iter(roots)

    def _stop(self) -> None:
        self._stopped = True
        self._out.clear()
        self._wake_producers()

    async def _feed(self) -> None:
        """Hand roots to the pool while fewer than it wants wait."""
        while self._roots is not None and self._waiting < self._hungry and not self._stopped:
            roots = self._roots
            try:
                root = await anext(roots) if hasattr(roots, "__anext__") else next(roots)
            except (StopIteration, StopAsyncIteration):
                self._roots = None
                return
            if self._key is None or first_time(self._seen, self._key, root):
                self._count_in()
                try:
                    await self._pool.submit(self._task, root, 0)
                except BaseException:
                    self._count_out()
                    raise

    async def aclose(self) -> None:
        """Stop the walk: queued nodes never start, running ones are cancelled (on
        the walk's own pool; on yours they finish their ``fn`` call); return once
        nothing of the walk runs."""
        if self._closed:
            return
        self._closed = True
        self._stop()
        if self._own_pool and self._entered:
            await self._pool.aclose(cancel=True)
            await self._pool.__aexit__(None, None, None)
            self._running = self._waiting = 0  # what was queued never started
        while self._running:
            self._wakeup = anyio.Event()
            await self._wakeup.wait()
        roots, self._roots = self._roots, None
        if hasattr(roots, "aclose"):
            await roots.aclose()

    async def __aenter__(self) -> AsyncWalk:
        if self._own_pool:
            await self._pool.__aenter__()
            self._entered = True
        return self

    async def __aexit__(self, exc_type: type[BaseException] | None,
                        exc: BaseException | None, tb: TracebackType | None) -> None:
        await self.aclose()

    def statistics(self) -> WalkStatistics:
        """A snapshot of the counts (``wp.walk``'s docstring says what each means)."""
        return WalkStatistics(visited=self._visited, failed=self._failed,
                              pending=self._waiting, max_pending=self._max_waiting,
                              max_depth=self._max_depth)

    # -- the pool's tasks -------------------------------------------------------------------

    def _count_in(self) -> None:
        self._running += 1
        self._waiting += 1
        self._max_waiting = max(self._max_waiting, self._waiting)

    def _count_out(self) -> None:
        self._running -= 1
        self._waiting -= 1

    def _wake_consumer(self) -> None:
        if self._wakeup is not None:
            self._wakeup.set()
            self._wakeup = None

    def _wake_producers(self) -> None:
        if self._roomy is not None and (len(self._out) < self._room or self._closed):
            self._roomy.set()
            self._roomy = None

    async def _task(self, item: Any, depth: int) -> None:
        self._waiting -= 1
        try:
            if self._stopped:
                return
            stack: list[_Frame] = []
            frame = await self._visit(item, depth)
            while not self._stopped:
                if frame[0] is not _FAILED:
                    stack.append(frame)
                child = self._next_inline(stack)
                if child is None:
                    break
                frame = await self._visit(*child)
        finally:
            self._running -= 1
            self._wake_consumer()

    def _next_inline(self, stack: list[_Frame]) -> tuple[Any, int] | None:
        """The next child this task runs itself; others go to the pool while fewer
        than it wants wait. None when the task's subtree is done."""
        key = self._key
        while stack:
            children, depth, parent = stack[-1]
            try:
                for child in children:
                    if key is not None and not first_time(self._seen, key, child):
                        continue
                    if self._waiting < self._hungry and self._submit(child, depth):
                        continue
                    return child, depth
            except Exception as exc:  # the children's iterator, or key, raised
                self._fail(parent, exc)
            stack.pop()
        return None

    def _submit(self, item: Any, depth: int) -> bool:
        self._count_in()
        try:
            self._pool.submit_nowait(self._task, item, depth)
        except (WouldBlock, RuntimeError):  # a full queue, or a pool closed
            self._count_out()
            return False
        return True

    async def _visit(self, item: Any, depth: int) -> _Frame:
        self._visited += 1
        self._max_depth = max(self._max_depth, depth)
        try:
            if self._in_thread:
                out = await anyio.to_thread.run_sync(self._fn, item, abandon_on_cancel=True)
            else:
                out = await self._fn(item)
            result, children = pair(out)
            frame = (iter(children), depth + 1, item)
        except Exception as exc:
            self._fail(item, exc)
            return _FAILED, depth + 1, item
        await self._put(result)
        return frame

    def _fail(self, item: Any, exc: Exception) -> None:
        self._failed += 1
        if self._on_error == "skip":
            return
        if not self._closed:
            self._out.append(Failure(item, exc))
            self._wake_consumer()
        if self._on_error == "raise":
            self._stopped = True  # the rest is cancelled; the consumer raises it

    async def _put(self, result: Any) -> None:
        while len(self._out) >= self._room and not self._closed:
            self._roomy = self._roomy or anyio.Event()
            await self._roomy.wait()
        if not self._closed:
            self._out.append(result)
            self._wake_consumer()


_FAILED: Iterator[Any] = iter(())

