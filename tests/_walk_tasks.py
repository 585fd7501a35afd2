"""Walk functions for the process tests: module-level, so they travel by reference."""

from __future__ import annotations

import os
import sys
import time
from typing import Any

GRAPH_SIZE = 500


def graph(n: int) -> tuple[int, list[int]]:
    """A graph with cycles over 0 .. GRAPH_SIZE - 1: each node links to itself, to two
    others and back to 0."""
    return n, [n, (n * 3 + 1) % GRAPH_SIZE, (n * 7 + 2) % GRAPH_SIZE, 0]


def reachable(fn: Any, roots: list[Any], key: Any = None) -> set[Any]:
    """Every node a walk of *fn* from *roots* visits, computed in this process."""
    key = key or (lambda x: x)
    seen: dict[Any, Any] = {}
    stack = list(roots)
    while stack:
        node = stack.pop()
        if key(node) not in seen:
            seen[key(node)] = node
            stack.extend(fn(node)[1])
    return set(seen.values())


def key_of_pair(node: tuple[int, str]) -> int:
    """The key of a node ``(n, label)``: the label does not count."""
    return node[0]


def labelled(node: tuple[int, str]) -> tuple[int, list[tuple[int, str]]]:
    """``graph`` over nodes that carry a label: the same node comes with several."""
    n, label = node
    return n, [((n * 3 + 1) % GRAPH_SIZE, label + "a"), ((n * 5 + 3) % GRAPH_SIZE, "b")]


def fail_at_7(n: int) -> tuple[int, list[int]]:
    """A binary tree of 0 .. 62 whose node 7 raises."""
    if n == 7:
        raise ValueError("node 7 is bad")
    return n, [c for c in (2 * n + 1, 2 * n + 2) if c < 63]


def slow(n: int) -> tuple[int, list[int]]:
    """A node that takes a while: for stopping a walk in the middle."""
    time.sleep(0.05)
    return n, [n + 1]


def die_at_3(n: int) -> tuple[int, list[int]]:
    """Node 3 kills its worker process."""
    if n == 3:
        os._exit(9)
    return n, [n + 1] if n < 10 else []


def not_a_pair(n: int) -> int:
    return n


def wide(n: int) -> tuple[int, list[int]]:
    """Root 0 has 2,000 children, each of them 3 leaves: 8,001 nodes, a frontier of
    thousands unless it is bounded."""
    if n == 0:
        return 0, list(range(1, 2001))
    if n <= 2000:
        return n, [n * 10_000 + i for i in range(3)]
    return n, []


class FailsToLoad:
    """A walk function that pickles here but cannot be unpickled in a worker."""

    def __call__(self, n: int) -> tuple[int, list[int]]:
        return n, []

    def __reduce__(self) -> tuple[Any, ...]:
        return _refuse, ()


def _refuse() -> None:
    raise RuntimeError("cannot be unpickled")


def in_tree(tree: dict[int, list[int]], failing: frozenset[int],
            n: int) -> tuple[int, list[int]]:
    """A node of *tree* (a ``functools.partial`` of this travels by reference); the
    nodes in *failing* raise."""
    if n in failing:
        raise KeyError(n)
    return n, tree[n]


def exits_at_2(n: int) -> tuple[int, list[int]]:
    """Node 2 calls sys.exit(): it fails alone, as a pool's task does."""
    if n == 2:
        sys.exit(3)
    return n, [c for c in (2 * n + 1, 2 * n + 2) if c < 7]


def big(node: tuple[int, bytes]) -> tuple[bytes, list[tuple[int, bytes]]]:
    """Nodes and results of 200 kB, more than a pipe holds, both ways."""
    n, payload = node
    fresh = [(c, payload[:-1] + bytes([c % 256])) for c in (2 * n + 1, 2 * n + 2) if c < 60]
    return payload, fresh  # new objects: pickle cannot share one copy among them


class LoadsOnlyInWorkers:
    """A result that pickles in a worker but cannot be unpickled in the parent."""

    def __reduce__(self) -> tuple[Any, ...]:
        return _load_in_worker, (os.getpid(),)


def _load_in_worker(pid: int) -> LoadsOnlyInWorkers:
    if os.getpid() != pid:
        raise RuntimeError("not here")
    return LoadsOnlyInWorkers()


def strange_result(n: int) -> tuple[Any, list[int]]:
    return LoadsOnlyInWorkers(), []
