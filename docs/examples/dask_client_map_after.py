"""workpool: the same with wp.DaskPool over the same client."""

import os

from distributed import Client, LocalCluster

import workpool as wp


def square(x):
    return x * x


def token():
    return os.urandom(8)


if __name__ == "__main__":
    with (LocalCluster(n_workers=2, threads_per_worker=2, processes=False,
                       dashboard_address=":0") as cluster,
          Client(cluster) as client,
          wp.DaskPool(client) as pool):                # at most 8 tasks out at once
        print(sum(pool.map(square, range(1_000))))     # lazy, batched into chunks
        first, second = pool.submit(token), pool.submit(token)   # every call runs
        print(first.result() != second.result())
        print(sorted(pool.map(square, range(5), ordered=False)))
