"""walk: an endless tree, a small frontier; leaving the block stops the walk."""

import itertools

import workpool as wp


def expand(n):
    return n, [2 * n, 2 * n + 1]        # every node has two children: it never ends


with wp.walk(expand, [1], workers=4, max_pending=100) as nodes:
    first = list(itertools.islice(nodes, 10_000))   # then the block stops the walk
stats = nodes.statistics()
print("results:", len(first), "all different:", len(set(first)) == len(first))
print("waiting at most:", stats.max_pending <= 100, "- waiting now:", stats.pending)
print("deep, not wide:", stats.max_depth > 100)
