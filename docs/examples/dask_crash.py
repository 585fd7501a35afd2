"""DaskPool: a task whose worker process dies fails with wp.WorkerCrashed."""

import logging
import os

import dask
from distributed import Client, LocalCluster

import workpool as wp


def crash():
    os._exit(1)                                   # the worker process dies


def square(x):
    return x * x


if __name__ == "__main__":
    logging.getLogger("distributed").setLevel(logging.CRITICAL)  # Dask logs the death
    # By default Dask runs a task again on 3 more workers if its workers die; here none.
    with (dask.config.set({"distributed.scheduler.allowed-failures": 0}),
          LocalCluster(n_workers=1, threads_per_worker=1, dashboard_address=":0") as cluster,
          Client(cluster) as client,
          wp.DaskPool(client) as pool):
        try:
            pool.submit(crash).result()
        except wp.WorkerCrashed as exc:
            print("WorkerCrashed, caused by", type(exc.__cause__).__name__)
        print(pool.submit(square, 7).result())    # the nanny started a fresh worker
        print(pool.statistics().failed, "failed")
