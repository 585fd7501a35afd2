"""The walk on threads: ``ThreadRun``, over the public API of a ``ThreadPool``.

Each pool task runs one node and then, depth first, the children it keeps; a child
is handed to the pool as a task of its own only while the pool is hungry (fewer than
``workers`` tasks wait for a thread) and fewer than ``max_pending`` wait. So a worker
never blocks on a full queue (``submit_nowait``: when it is full the child runs
inline), the frontier never grows past the bound, and on a busy pool a node costs a
call and an append, not a hand-off::

    consumer (next())                      worker thread: one task
      │ feeds roots while the pool is        visit(node): fn(node) -> (result, children)
      │ hungry                                 for child in children (newest frame first):
      ▼                                          key seen? skip it
    pool.submit_nowait(task, root) ──▶           pool hungry? submit_nowait(task, child)
                                                 else visit(child) inline (depth first)
      ◀── results, a batch at a time ───     the task ends: running -= 1
    StopIteration once running == 0 and the roots are spent

``running`` (tasks submitted and not finished) is raised before a task is submitted
and lowered after it finished, its children handed off or visited: it is 0 exactly
when nothing runs or waits. Imports ``_core`` and the pools' API.
"""

from __future__ import annotations

import threading
import time
from collections import deque
from collections.abc import Callable, Hashable, Iterable, Iterator
from concurrent.futures import Future
from typing import Any

from .._core.exceptions import WouldBlock
from ._common import BATCH, BATCH_SECONDS, Failure, WalkStatistics, pair

__all__ = ["ThreadRun"]

_Frame = tuple[Iterator[Any], int, Any]  # children left, their depth, their parent


class ThreadRun:
    """A walk on a ``ThreadPool`` (the ``Run`` behind ``wp.walk``'s iterator)."""

    def __init__(self, fn: Callable[[Any], Any], roots: Iterable[Any], pool: Any,
                 own_pool: bool, max_pending: int, key: Callable[[Any], Hashable] | None,
                 on_error: str) -> None:
        self._fn = fn
        self._roots: Iterator[Any] | None = iter(roots)
        self._pool = pool
        self._own_pool = own_pool
        self._key = key
        self._seen: set[Hashable] = set()
        self._on_error = on_error
        self._hungry = min(max_pending, pool.workers)
        self._lock = threading.Lock()
        self._has_output = threading.Condition(self._lock)
        self._has_room = threading.Condition(self._lock)
        self._out: deque[list[Any]] = deque()  # batches for the consumer
        self._room = max(4, pool.workers)  # batches that may wait for the consumer
        self._running = 0
        self._waiting = 0
        self._stopped = False
        self._closed = False
        self._visited = self._failed = self._max_waiting = self._max_depth = 0

    # -- the consumer ---------------------------------------------------------------------

    def next_batch(self) -> list[Any] | None:
        """Wait for the next batch of results; None once the walk is over."""
        while True:
            self._feed()
            with self._lock:
                while not self._out:
                    if self._running == 0 and (self._roots is None or self._stopped):
                        return None
                    if self._roots is not None and not self._stopped and (
                            self._waiting < self._hungry):
                        break  # room for roots
                    self._has_output.wait()
                if self._out:
                    self._has_room.notify()
                    return self._out.popleft()

    def _feed(self) -> None:
        """Hand roots to the pool while it is hungry."""
        while self._roots is not None and self._waiting < self._hungry and not self._stopped:
            root = next(self._roots, _END)
            if root is _END:
                self._roots = None
            elif self._key is None or self._first(root):
                # The consumer may wait for room in the pool's queue: only a worker
                # must never block there.
                self._submit(root, 0, block=True)

    def close(self) -> None:
        """Stop: queued nodes never start, running ones finish their ``fn`` call;
        return once nothing of the walk runs (and its own pool is shut down). As
        a pool's Ctrl-C: a Ctrl-C while running nodes finish gives up on them."""
        with self._lock:
            if self._closed:
                return
            self._closed = self._stopped = True
            self._roots = None
            self._has_room.notify_all()
        try:
            with self._lock:
                while self._running:
                    self._out.clear()
                    self._has_room.notify_all()
                    self._has_output.wait()
                self._out.clear()
        except KeyboardInterrupt:
            if self._own_pool:
                self._pool.shutdown(wait=True, timeout=0)  # running threads given up on
            raise
        if self._own_pool:
            self._pool.shutdown(wait=True)

    def statistics(self) -> WalkStatistics:
        """A snapshot of the counts."""
        with self._lock:
            return WalkStatistics(visited=self._visited, failed=self._failed,
                                  pending=self._waiting, max_pending=self._max_waiting,
                                  max_depth=self._max_depth)

    # -- the workers ----------------------------------------------------------------------

    def _first(self, item: Any) -> bool:
        assert self._key is not None
        k = self._key(item)
        with self._lock:
            if k in self._seen:
                return False
            self._seen.add(k)
            return True

    def _submit(self, item: Any, depth: int, block: bool = False) -> bool:
        """Hand *item* to the pool as a task; False if the pool is not hungry or
        (unless *block*) its queue is full."""
        with self._lock:
            if self._waiting >= self._hungry:
                return False
            self._running += 1
            self._waiting += 1
            if self._waiting > self._max_waiting:
                self._max_waiting = self._waiting
        try:
            if block:
                future = self._pool.submit(self._task, item, depth)
            else:
                future = self._pool.submit_nowait(self._task, item, depth)
        except BaseException as exc:  # a full queue, or a pool shut down
            with self._lock:
                self._running -= 1
                self._waiting -= 1
            if block or not isinstance(exc, (WouldBlock, RuntimeError)):
                raise  # the consumer's wait interrupted, or the pool shut down
            return False  # a full queue, or a pool shut down: the worker runs it
        future.add_done_callback(self._forget_if_cancelled)
        return True

    def _forget_if_cancelled(self, future: Future[None]) -> None:
        # A task cancelled before it started (the pool's shutdown, on a pool passed
        # in) never runs: it counts as ended.
        if future.cancelled():
            with self._lock:
                self._running -= 1
                self._waiting -= 1
                self._has_output.notify()

    def _task(self, item: Any, depth: int) -> None:
        batch: list[Any] = []
        visited = deepest = 0
        with self._lock:
            self._waiting -= 1
        try:
            if self._stopped:
                return
            stack: list[_Frame] = []
            since = time.perf_counter()
            frame = self._visit(item, depth, batch)
            while True:
                visited += 1
                deepest = max(deepest, frame[1] - 1)
                if frame[0] is not _FAILED:
                    stack.append(frame)
                if len(batch) >= BATCH or (batch and time.perf_counter() - since > BATCH_SECONDS):
                    self._hand_over(batch)
                    batch = []
                    since = time.perf_counter()
                child = self._next_inline(stack, batch)
                if child is None or self._stopped:
                    break
                frame = self._visit(child[0], child[1], batch)
        finally:
            with self._lock:
                if batch and not self._closed:
                    self._out.append(batch)
                self._visited += visited
                self._max_depth = max(self._max_depth, deepest)
                self._running -= 1
                self._has_output.notify()

    def _next_inline(self, stack: list[_Frame], batch: list[Any]) -> tuple[Any, int] | None:
        """The next child this task runs itself, handing others to the pool while it is
        hungry; None when the task's subtree is done."""
        key = self._key
        while stack:
            children, depth, parent = stack[-1]
            try:
                for child in children:
                    if key is not None and not self._first(child):
                        continue
                    # Read without the lock first: on a busy pool a child costs no lock.
                    if self._waiting < self._hungry and self._submit(child, depth):
                        continue
                    return child, depth
            except BaseException as exc:  # the children's iterator, or key, raised
                self._fail(parent, exc, batch)
            stack.pop()
        return None

    def _visit(self, item: Any, depth: int, batch: list[Any]) -> _Frame:
        """Run *item*: its result joins *batch*; returns its children's frame."""
        try:
            result, children = pair(self._fn(item))
            frame = (iter(children), depth + 1, item)
        except BaseException as exc:  # even SystemExit fails its node alone, as in a pool
            self._fail(item, exc, batch)
            return _FAILED, depth + 1, item
        batch.append(result)
        return frame

    def _fail(self, item: Any, exc: BaseException, batch: list[Any]) -> None:
        with self._lock:
            self._failed += 1
        if self._on_error == "skip":
            return
        batch.append(Failure(item, exc))
        if self._on_error == "raise":
            self._stopped = True  # the rest is cancelled; the consumer raises it

    def _hand_over(self, batch: list[Any]) -> None:
        with self._lock:
            while len(self._out) >= self._room and not self._closed:
                self._has_room.wait()
            if not self._closed:
                self._out.append(batch)
                self._has_output.notify()


_END = object()
_FAILED: Iterator[Any] = iter(())
