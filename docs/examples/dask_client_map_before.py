"""Dask: Client.map, Client.submit and as_completed."""

import os

from distributed import Client, LocalCluster, as_completed


def square(x):
    return x * x


def token():
    return os.urandom(8)


if __name__ == "__main__":
    with (LocalCluster(n_workers=2, threads_per_worker=2, processes=False,
                       dashboard_address=":0") as cluster,
          Client(cluster) as client):
        futures = client.map(square, range(1_000))     # 1,000 tasks on the scheduler
        print(sum(client.gather(futures)))
        first, second = client.submit(token, pure=False), client.submit(token, pure=False)
        print(first.result() != second.result())
        print(sorted(f.result() for f in as_completed(client.map(square, range(5)))))
