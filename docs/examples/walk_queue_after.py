"""The same walk with wp.walk: bounded, results as they come, errors raised."""

import workpool as wp


def expand(n):
    return n, ([2 * n, 2 * n + 1] if n < 512 else [])    # (result, children)


with wp.walk(expand, [1], workers=4) as nodes:
    results = list(nodes)
print(len(results), "nodes, sum", sum(results))
