"""The walk on a ``ProcessPool`` of yours: ``SliceRun``, work shared in time slices.

A pool's worker runs tasks, calls that return; it cannot keep a deque between them or
answer a steal. So on a pool passed as ``pool=`` each task is a slice: a few nodes,
run with their descendants depth first (children in a deque of the task's own while
it holds fewer than ``cap``, inline beyond) for up to ``SLICE_SECONDS``; what is left
of the deque comes back with the results and is shared out again, oldest first::

    consumer (next())                          pool task (a worker process)
      frontier: roots, and what slices left      run_slice(fn, nodes, cap, seconds)
      up to 2 x workers slices in flight ──▶      LIFO over its deque, inline beyond
      ◀── results, the deque left, counts ──      cap; stops after `seconds`

With ``key=`` a slice runs only the nodes it is given and returns their children:
the parent, which keeps the keys, decides which are new. The walk ends when no slice
is in flight and the frontier is empty. Imports ``_core`` and ``_walk._common``; the
pool is reached only through ``submit`` and its futures.
"""

from __future__ import annotations

import queue
import time
from collections import deque
from collections.abc import Callable, Hashable, Iterable, Iterator
from concurrent.futures import Future
from concurrent.futures import wait as wait_all
from typing import Any, Final

from ._common import Failure, WalkStatistics, first_time, pair

__all__ = ["SliceRun", "run_slice"]

SLICE_SECONDS: Final = 0.05  # how long a slice runs before it hands back its deque

_Node = tuple[Any, int]  # an item and its depth
_Sliced = tuple[list[Any], list[_Node], list[_Node], tuple[int, int, int]]


def run_slice(fn: Callable[[Any], Any], nodes: list[_Node], cap: int, seconds: float,
              expand: bool, skip: bool) -> _Sliced:
    """Run in a worker: *nodes*, and (if *expand*) their descendants depth first, for
    up to *seconds* (children the deque has no room for run inline, to the end).
    Returns the results and failures, the nodes not run (at most *cap*), the children
    not run (without *expand*), and (visited, failed, deepest).
    """
    from .._backends._child import with_traceback

    local: deque[_Node] = deque(nodes)
    entries: list[Any] = []
    up: list[_Node] = []
    counts = [0, 0, 0]  # visited, failed, deepest
    stop_at = time.perf_counter() + seconds

    def visit(item: Any, depth: int) -> Iterator[Any]:
        counts[0] += 1
        counts[2] = max(counts[2], depth)
        try:
            result, children = pair(fn(item))
            children = list(children)
        except BaseException as exc:  # even sys.exit() fails its node alone
            counts[1] += 1
            if not skip:
                entries.append(Failure(item, with_traceback(exc)))
            return iter(())
        entries.append(result)
        if not expand:
            up.extend((child, depth + 1) for child in children)
            return iter(())
        room = max(0, cap - len(local))
        local.extend((child, depth + 1) for child in children[:room])
        return iter(children[room:])

    while local and (not expand or time.perf_counter() < stop_at):
        item, depth = local.pop()
        stack = [(visit(item, depth), depth + 1)]
        while stack:
            rest, d = stack[-1]
            child = next(rest, _END)
            if child is _END:
                stack.pop()
            elif len(local) < cap and time.perf_counter() >= stop_at:
                local.appendleft((child, d))  # out of time: it goes back, if there is room
            else:
                stack.append((visit(child, d), d + 1))
    return entries, list(local), up, (counts[0], counts[1], counts[2])


class SliceRun:
    """A walk on a ``ProcessPool`` passed in (the ``Run`` behind ``wp.walk(pool=)``)."""

    def __init__(self, fn: Callable[[Any], Any], roots: Iterable[Any], pool: Any,
                 max_pending: int, key: Callable[[Any], Hashable] | None,
                 on_error: str) -> None:
        self._fn = fn
        self._roots: Iterator[Any] | None = iter(roots)
        self._pool = pool
        self._key = key
        self._seen: set[Hashable] = set()
        self._skip = on_error == "skip"
        self._slots = 2 * pool.workers  # slices in flight
        self._cap = max(1, max_pending // self._slots)
        self._frontier: deque[_Node] = deque()
        self._flying: set[Future[_Sliced]] = set()
        self._landed: queue.SimpleQueue[Future[_Sliced]] = queue.SimpleQueue()
        self._closed = False
        self._visited = self._failed = self._max_pending = self._max_depth = 0
        self._slices = 0

    def next_batch(self) -> list[Any] | None:
        """Wait for the next slice; its results (None once the walk is over)."""
        if self._closed:
            return None
        self._dispatch()
        if not self._flying:
            return None
        future = self._landed.get()
        self._flying.discard(future)
        entries, left, up, (visited, failed, deepest) = future.result()
        self._visited += visited
        self._failed += failed
        self._max_depth = max(self._max_depth, deepest)
        self._frontier.extend(left)
        if up:
            key, seen = self._key, self._seen
            assert key is not None
            self._frontier.extend(node for node in up if first_time(seen, key, node[0]))
        return entries

    def _dispatch(self) -> None:
        """Keep ``2 x workers`` slices in flight while there is work."""
        while len(self._flying) < self._slots:
            nodes = self._take()
            if not nodes:
                return
            future = self._pool.submit(run_slice, self._fn, nodes, self._cap, SLICE_SECONDS,
                                       self._key is None, self._skip)
            self._slices += 1
            self._flying.add(future)
            future.add_done_callback(self._landed.put)
            self._max_pending = max(self._max_pending, len(self._frontier) + len(nodes))

    def _take(self) -> list[_Node]:
        """Up to ``cap`` nodes: the oldest of the frontier, else roots."""
        frontier = self._frontier
        if frontier:
            share = -(-len(frontier) // (self._slots - len(self._flying)))
            return [frontier.popleft() for _ in range(min(share, self._cap))]
        nodes: list[_Node] = []
        while self._roots is not None and len(nodes) < self._cap:
            root = next(self._roots, _END)
            if root is _END:
                self._roots = None
            elif self._key is None or first_time(self._seen, self._key, root):
                nodes.append((root, 0))
        return nodes

    def close(self) -> None:
        """Stop: slices not started are cancelled, running ones finish (within
        ``SLICE_SECONDS`` of their current node); the pool stays open."""
        if self._closed:
            return
        self._closed = True
        self._roots = None
        self._frontier.clear()
        for future in self._flying:
            future.cancel()
        wait_all(self._flying)
        self._flying.clear()

    def statistics(self) -> WalkStatistics:
        """A snapshot of the counts."""
        return WalkStatistics(visited=self._visited, failed=self._failed,
                              pending=len(self._frontier), max_pending=self._max_pending,
                              max_depth=self._max_depth, messages=2 * self._slices)


_END = object()
