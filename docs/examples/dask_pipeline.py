"""Pipeline: a dask stage between thread stages, on the default Dask client."""

from distributed import Client, LocalCluster

import workpool as wp


def fetch(n):
    wp.current().sleep(0.001)                     # stands for I/O: threads, here
    return n


def simulate(n):
    return sum(i * i for i in range(n * 100))     # stands for heavy work: the cluster


if __name__ == "__main__":
    with (LocalCluster(n_workers=2, threads_per_worker=1, processes=False,
                       dashboard_address=":0") as cluster,
          Client(cluster)):                       # the default client from now on
        totals = []
        report = (wp.Pipeline(range(200))
                  .map(fetch, workers=16)
                  .map(simulate, kind="dask", workers=4)   # at most 4 chunks out at once
                  .each(totals.append)
                  .run())
        print(report.status, report.items_read, len(totals), max(totals))
        print([(s.name, s.kind) for s in report.stages])
