"""Walks: tasks that spawn tasks (``wp.walk``, ``wp.awalk``).

``fn(item)`` returns ``(result, children)``; the walk yields every result, in
completion order, and visits every child. A front end, as the pipeline is: it stands
on the pools' public API (``submit``, ``submit_nowait``, futures) and ``_core``; the
process walk runs its own worker processes on ``_backends._child``'s pickling. Never
the engine's insides::

    wp.walk(kind="thread") ── ThreadRun (_threads)  ──▶ ThreadPool.submit_nowait
    wp.walk(kind="process") ─ ProcessRun (_process) ─▶ worker processes (_worker):
                                                        local deques, work stealing
    wp.walk(pool=ProcessPool) SliceRun (_slices)    ──▶ ProcessPool.submit: slices
    wp.awalk() ────────────── AsyncWalk (_async)     ──▶ AsyncPool.submit_nowait

Three rules hold on every kind: a worker never blocks on a full queue (a child that
finds no room runs inline, depth first, on the worker that made it); the frontier
never holds more than ``max_pending`` children; and the walk ends exactly when no node
runs and none waits, by a count raised before a child is queued and lowered after its
parent finished.
"""

from __future__ import annotations

from collections.abc import AsyncIterable, Awaitable, Callable, Hashable, Iterable
from typing import TYPE_CHECKING, Any

from .._core.options import pool_workers
from ._common import Walk, WalkStatistics, check_walk_args, describe

if TYPE_CHECKING:  # anyio loads with the async walk only
    from ._async import AsyncWalk

__all__ = ["WalkStatistics", "awalk", "walk"]

_KINDS = ("thread", "process")


def walk(fn: Callable[[Any], tuple[Any, Iterable[Any]]], roots: Iterable[Any], *,
         pool: Any = None, workers: int | None = None, kind: str = "thread",
         max_pending: int = 10_000, key: Callable[[Any], Hashable] | None = None,
         on_error: str = "raise") -> Walk:
    """Visit *roots* and every child ``fn`` finds, on a pool; yield the results.

    ``fn(item)`` returns a pair ``(result, children)``: *result* comes out of the
    walk, *children* (any iterable, maybe empty) are visited next. The walk is a lazy
    iterator of results in completion order; it ends once no node runs and none
    waits. It never deadlocks on a bounded pool: a worker that finds no room for a
    child (``max_pending`` children wait, or the pool's queue is full) runs it
    inline, depth first, so the frontier stays within ``max_pending``. Results come
    out as they are made (in batches, even from a subtree run inline), and the
    workers run only a bounded way ahead of the consumer: an endless tree works on
    every kind, until you stop it (``break``, ``close()``).

    Args:
        fn: called once per node, on a worker.
        roots: the first nodes (read lazily, at depth 0).
        pool: a ``wp.ThreadPool`` or a ``wp.ProcessPool`` to run on (it stays open;
            *kind* is the pool's); default: workers of the walk's own, made from
            *workers* and *kind*, stopped at the end. On a ``ProcessPool`` a task
            cannot keep a deque or answer a steal: each task runs a slice (a few
            nodes and their descendants, depth first, for up to 50 ms or 8,192
            results) and hands back what it did not run, which the walk shares
            out again.
        workers: threads or processes of the walk's own pool (the pools' defaults).
        kind: ``"thread"`` or ``"process"``. On processes, *fn*, *key*, the nodes
            and the results are pickled as for ``wp.ProcessPool`` (functions of
            ``__main__`` by reference, lambdas by value); each worker keeps the
            children it finds in a deque of its own and runs the newest first, and
            an idle worker steals the oldest half of a busy one's deque, so a node
            costs no message (results travel in batches).
        max_pending: the most children that may wait at once (>= 1; on processes
            at least one per worker: each keeps ``max_pending // workers``).
        key: deduplicate: a node whose ``key(node)`` was seen before is not visited
            again (graphs with cycles end). On processes the parent keeps the keys;
            each node's children cost one round trip to it.
        on_error: what a node that raises does (its children are not visited):
            ``"raise"`` (default: the walk stops, nothing of it is left running, and
            the error is raised), ``"return"`` (every result comes as ``wp.Value``,
            failures as ``wp.Error``), ``"skip"`` (counted in ``failed``), or
            ``"collect"`` (``wp.ItemsFailed`` at the end, listing each).

    Returns:
        An iterator of results, also a context manager: leaving the block, or
        ``close()``, stops the walk. ``statistics()`` returns a ``WalkStatistics``:
        ``visited``, ``failed``, ``pending`` (children waiting now), ``max_pending``,
        ``max_depth``, and on processes ``steals`` and ``messages``.

    Raises:
        TypeError: *fn* or *key* is not callable, *pool* is not a ``wp.ThreadPool``
            or a ``wp.ProcessPool``, or (processes) *fn* or *key* cannot be pickled.
        ValueError: *max_pending* < 1, an unknown *kind* or *on_error*, or both
            *pool* and *workers*.

    Example::

        def crawl(path):                       # a directory tree, 8 threads
            entries = list(os.scandir(path))
            return path, [e.path for e in entries if e.is_dir(follow_symlinks=False)]

        with wp.walk(crawl, ["/srv"], workers=8) as dirs:
            for d in dirs:
                print(d)
    """
    check_walk_args(fn, max_pending, key, on_error, kind, _KINDS)
    where = describe(fn)
    if pool is not None:
        from .._pools.executor import ExecutorPool, ThreadPool

        _check_pool(pool, workers, ExecutorPool, "wp.walk", "a wp.ThreadPool or a "
                    "wp.ProcessPool")
        if isinstance(pool, ThreadPool):
            from ._threads import ThreadRun

            return Walk(ThreadRun(fn, roots, pool, False, max_pending, key, on_error),
                        on_error, where)
        from ._slices import SliceRun

        return Walk(SliceRun(fn, roots, pool, max_pending, key, on_error), on_error, where)
    if kind == "process":
        from .._core.sizing import cpus
        from ._process import ProcessRun

        count, dynamic = pool_workers(workers, None, cpus())
        if dynamic is not None:
            raise TypeError(f"a process walk keeps a fixed number of worker processes (each "
                            f"holds its deque of work): workers must be an int, got "
                            f"{workers!r}")
        return Walk(ProcessRun(fn, roots, count, max_pending, key, on_error), on_error, where)
    from .._pools.executor import ThreadPool
    from ._threads import ThreadRun

    own = ThreadPool(workers, name="walk")
    return Walk(ThreadRun(fn, roots, own, True, max_pending, key, on_error), on_error, where)


def awalk(fn: Callable[[Any], Awaitable[tuple[Any, Iterable[Any]]]]
          | Callable[[Any], tuple[Any, Iterable[Any]]],
          roots: Iterable[Any] | AsyncIterable[Any], *, pool: Any = None,
          workers: int | None = None, max_pending: int = 10_000,
          key: Callable[[Any], Hashable] | None = None,
          on_error: str = "raise") -> AsyncWalk:
    """``wp.walk`` for async code: ``async for`` over the result.

    ``fn`` is a coroutine function, or a plain callable, which runs in a worker thread
    (as an ``AsyncPool`` runs one).

    The nodes run as tasks of an ``AsyncPool``: *pool* (entered already; it stays
    open) or one of the walk's own with *workers* tasks (default 100). *roots* may be
    an iterable or an async iterable. The rest is ``wp.walk``'s, and so are the
    errors; the walk is an async context manager (``aclose()`` stops it: queued nodes
    never start, running ones of its own pool are cancelled).

    Example::

        async def fetch(url):
            page = await client.get(url)
            return url, [link for link in links(page) if link.startswith(site)]

        async with wp.awalk(fetch, [site], workers=20, key=str) as pages:
            async for url in pages:
                print(url)
    """
    check_walk_args(fn, max_pending, key, on_error, "async", ("async",))
    from .._pools.async_pool import AsyncPool
    from ._async import AsyncWalk

    if pool is not None:
        _check_pool(pool, workers, AsyncPool, "wp.awalk", "a wp.AsyncPool")
        return AsyncWalk(fn, roots, pool, False, max_pending, key, on_error, describe(fn))
    own = AsyncPool(workers, name="awalk")
    return AsyncWalk(fn, roots, own, True, max_pending, key, on_error, describe(fn))


def _check_pool(pool: object, workers: int | None, kind: type, name: str, what: str) -> None:
    if not isinstance(pool, kind):
        raise TypeError(f"{name}'s pool must be {what}, got {pool!r}")
    if workers is not None:
        raise ValueError(f"{name} takes pool= or workers=, not both: the pool has its "
                         "workers")
