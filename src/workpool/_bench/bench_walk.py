"""Walks: ``wp.walk`` against hand-written walkers (issue 14).

- ``heavy_tail``: a tree whose node times follow a Pareto distribution (a few seconds
  of CPU in all) on 2 processes: makespan against the ideal (total work / workers),
  for the stealing walk, the same walk with stealing off (every child through the
  parent: a central queue), and level-by-level ``multiprocessing.Pool.map``. Also the
  messages through the parent per node, stealing on and off.
- ``tiny_threads``: 1,000,000 tiny nodes on threads: throughput against a hand-written
  ``queue.Queue`` walker (``task_done``/``join``).

The trees are deterministic (``Tree``): a node's children come from a hash of the node
and the seed, so any process regenerates them; the functions sent to worker processes
are module-level.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Final

__all__ = ["Tree"]

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
