"""Getting started: a ThreadPool, map and submit."""

import workpool as wp


def square(x):
    return x * x


with wp.ThreadPool(4) as pool:
    print(list(pool.map(square, range(10))))      # lazy, in input order
    future = pool.submit(square, 12)               # the concurrent.futures contract
    print(future.result())
    print(sorted(pool.map(square, range(5), ordered=False)))  # as they finish
