"""DaskPool: a bounded, lazy, auto-batching executor on a Dask cluster."""

import itertools
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
          wp.DaskPool(client) as pool):
        print("in flight at most:", pool.workers)         # twice the cluster's 4 threads
        print(pool.submit(square, 12).result())
        print("ran twice:", pool.submit(token).result() != pool.submit(token).result())

        squares = pool.map(square, itertools.count())     # endless: read a window ahead
        print(list(itertools.islice(squares, 5)))
        squares.close()                                   # cancels what is queued

        # 100,000 tiny tasks travel to the cluster as a few dozen chunks
        print(sum(pool.map(square, range(100_000))))
