"""Walks: ``wp.walk`` against hand-written walkers (issue 14).

- ``heavy_tail``: a tree whose node times follow a Pareto distribution (a few seconds
  of CPU in all) on 2 processes: makespan against the ideal (total work / workers),
  for the stealing walk, the same walk with stealing off (every child through the
  parent: a central queue), the walk on a ``wp.ProcessPool`` passed in (time slices),
  and level-by-level ``multiprocessing.Pool.map``. Also the messages through the
  parent per node, stealing on and off.
- ``tiny_threads``: 1,000,000 tiny nodes on threads: throughput against a hand-written
  ``queue.Queue`` walker (``task_done``/``join``).

The trees are deterministic (``Tree``): a node's children come from a hash of the node
and the seed, so any process regenerates them; the functions sent to worker processes
are module-level.
"""

from __future__ import annotations

import multiprocessing
import queue
import threading
import time
from collections.abc import Callable, Iterable
from typing import Final

from .harness import Target, compare, scenario

__all__ = ["TimedTree", "Tree", "heavy_tail", "tiny_threads"]

_MASK: Final = (1 << 64) - 1
_DEPTH_BITS: Final = 5


def _mix(x: int) -> int:
    """splitmix64's finaliser: a well-spread 64-bit hash of *x*."""
    x = ((x ^ (x >> 30)) * 0xBF58476D1CE4E5B9) & _MASK
    x = ((x ^ (x >> 27)) * 0x94D049BB133111EB) & _MASK
    return x ^ (x >> 31)


class Tree:
    """A random tree, the same in every process: ``Tree(seed, depth)(node)`` returns
    ``(node, children)``, the shape of a walk's ``fn``.

    A node is an int: its id (children of id ``i`` are ``8 * i + 1`` ... ``8 * i + k``,
    so ids are unique) and its depth in the low bits. The fan-out of a node, 0 to
    ``fanout - 1`` (by default 0 to 4, mean 2), comes from a hash of its id and the
    seed; below *depth* nothing has children. With *work*, a node also burns CPU:
    ``work * x`` rounds of a loop, x drawn from a Pareto distribution of shape *alpha*
    (heavy-tailed: a few nodes take most of the time).
    """

    def __init__(self, seed: int, depth: int, work: int = 0, alpha: float = 1.5,
                 fanout: int = 5) -> None:
        if not 1 <= fanout <= 8:
            raise ValueError(f"fanout must be 1 to 8 (ids leave room for 8 children), "
                             f"got {fanout}")
        self.seed = _mix(seed)
        self.depth = depth
        self.work = work
        self.alpha = alpha
        self.fanout = fanout

    def children(self, node: int) -> list[int]:
        """The children of *node*."""
        ident, depth = node >> _DEPTH_BITS, node & ((1 << _DEPTH_BITS) - 1)
        if depth >= self.depth:
            return []
        k = _mix(ident ^ self.seed) % self.fanout
        base = (ident * 8 + 1) << _DEPTH_BITS | (depth + 1)
        return [base + (i << _DEPTH_BITS) for i in range(k)]

    def cost(self, node: int) -> int:
        """Loop rounds *node* burns (0 without *work*)."""
        if not self.work:
            return 0
        u = (_mix(node ^ ~self.seed & _MASK) >> 11) / float(1 << 53)  # (0, 1]
        return int(self.work * (1.0 - u) ** (-1.0 / self.alpha))

    def __call__(self, node: int) -> tuple[int, list[int]]:
        rounds = self.cost(node)
        if rounds:
            _burn(rounds)
        return node, self.children(node)

    def nodes(self, roots: Iterable[int] = (0,)) -> list[int]:
        """Every node below *roots*, in this process (depth first)."""
        out: list[int] = []
        stack = list(roots)
        while stack:
            node = stack.pop()
            out.append(node)
            stack.extend(self.children(node))
        return out


def _burn(k: int) -> int:
    s = 0
    for i in range(k):
        s += i * i % 7
    return s


class TimedTree(Tree):
    """A ``Tree`` whose result is the seconds the node took where it ran (the
    workers' busy time, summed by the benchmark)."""

    def __call__(self, node: int) -> tuple[float, list[int]]:  # type: ignore[override]
        t0 = time.perf_counter()
        rounds = self.cost(node)
        if rounds:
            _burn(rounds)
        return time.perf_counter() - t0, self.children(node)


# -- heavy tails on processes ---------------------------------------------------------------

_WORKERS: Final = 2
_IDEAL: Final = "x ideal"  # makespan / (busy time / workers): 1.0 is perfect
_MESSAGES: Final = "messages/node"


def _walk_processes(tree: TimedTree, steal: bool) -> dict[str, float]:
    from .._walk._common import Walk
    from .._walk._process import ProcessRun

    t0 = time.perf_counter()
    run = ProcessRun(tree, [0], _WORKERS, 10_000, None, "raise", steal=steal)
    with Walk(run, "raise", "heavy_tail") as w:
        busy = sum(w)
    makespan = time.perf_counter() - t0
    stats = w.statistics()
    return {_IDEAL: makespan / (busy / _WORKERS), _MESSAGES: stats.messages / stats.visited}


def _walk_on_pool(tree: TimedTree) -> dict[str, float]:
    import workpool as wp

    t0 = time.perf_counter()
    with wp.ProcessPool(_WORKERS) as pool, wp.walk(tree, [0], pool=pool) as w:
        busy = sum(w)
    makespan = time.perf_counter() - t0
    stats = w.statistics()
    return {_IDEAL: makespan / (busy / _WORKERS), _MESSAGES: stats.messages / stats.visited}


def _levels_pool_map(tree: TimedTree) -> dict[str, float]:
    """Level by level: map over one depth's nodes, then over all their children."""
    t0 = time.perf_counter()
    busy = 0.0
    with multiprocessing.get_context("fork").Pool(_WORKERS) as pool:
        level = [0]
        while level:
            ends = pool.map(tree, level)
            busy += sum(seconds for seconds, _ in ends)
            level = [child for _, children in ends for child in children]
    return {_IDEAL: (time.perf_counter() - t0) / (busy / _WORKERS)}


@scenario
def heavy_tail(quick: bool) -> dict[str, float]:
    """a tree of Pareto-timed nodes on 2 processes: makespan against the ideal"""
    # 2,546 nodes, Pareto(1.5) times: about 3 s of CPU in all (1 s when quick).
    tree = TimedTree(17, 11, work=3_000 if quick else 10_000, alpha=1.5)
    stealing, central = "wp.walk (stealing)", "wp.walk (stealing off: central queue)"
    return compare(
        [("multiprocessing.Pool.map, level by level", lambda: _levels_pool_map(tree)),
         (central, lambda: _walk_processes(tree, steal=False)),
         ("wp.walk(pool=ProcessPool) (slices)", lambda: _walk_on_pool(tree)),
         (stealing, lambda: _walk_processes(tree, steal=True))],
        unit=_IDEAL, baseline="multiprocessing.Pool.map, level by level",
        targets=[Target(stealing, "<=", 1.10, on="value")], repeats=3 if quick else 5,
        title=f"{len(tree.nodes()):,} nodes, {_WORKERS} processes")


# -- a million tiny nodes on threads --------------------------------------------------------

_THREADS: Final = 4


def _walk_threads(tree: Tree) -> dict[str, float]:
    import workpool as wp

    t0 = time.perf_counter()
    with wp.walk(tree, [0], workers=_THREADS) as w:
        count = sum(1 for _ in w)
    seconds = time.perf_counter() - t0
    assert count == w.statistics().visited
    return {"nodes/s": count / seconds}


def _queue_walker(tree: Callable[[int], tuple[int, list[int]]]) -> dict[str, float]:
    """The hand-written walker: a ``queue.Queue``, ``task_done`` per node, ``join``."""
    t0 = time.perf_counter()
    q: queue.Queue[int | None] = queue.Queue()
    results: list[int] = []

    def work() -> None:
        while True:
            node = q.get()
            if node is None:
                return
            result, children = tree(node)
            results.append(result)
            for child in children:
                q.put(child)
            q.task_done()

    threads = [threading.Thread(target=work) for _ in range(_THREADS)]
    for thread in threads:
        thread.start()
    q.put(0)
    q.join()
    for _ in threads:
        q.put(None)
    for thread in threads:
        thread.join()
    return {"nodes/s": len(results) / (time.perf_counter() - t0)}


@scenario
def tiny_threads(quick: bool) -> dict[str, float]:
    """1,000,000 tiny nodes on 4 threads: against a queue.Queue walker"""
    tree = Tree(5, 17 if quick else 19)
    n = len(tree.nodes())
    return compare(
        [("queue.Queue + task_done/join walker", lambda: _queue_walker(tree)),
         ("wp.walk", lambda: _walk_threads(tree))],
        unit="nodes/s", higher_is_better={"nodes/s"},
        baseline="queue.Queue + task_done/join walker",
        targets=[Target("wp.walk", ">=", 1.0)], title=f"{n:,} nodes, {_THREADS} threads")
