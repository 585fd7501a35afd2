"""DaskPool: retries, timeouts, priorities and where a task may run."""

import time

from distributed import Client, LocalCluster, get_worker

import workpool as wp


def flaky(x):
    if wp.current().attempt < 3:                   # fails twice, then succeeds
        raise ConnectionError(f"item {x}: try again")
    return x * 10


def patient(seconds):
    wp.current().sleep(seconds)                    # wakes at once when cancelled
    return "finished"


def label(priority):
    return priority


def where():
    return get_worker().address


if __name__ == "__main__":
    with (LocalCluster(n_workers=2, threads_per_worker=1, processes=False,
                       dashboard_address=":0", resources={"GPU": 1}) as cluster,
          Client(cluster) as client):
        retry = wp.Retry(attempts=3, backoff=0.1, jitter="none", on=(ConnectionError,))
        with wp.DaskPool(client, retry=retry) as pool:
            stuck = pool.schedule(patient, (60,), timeout=0.2)
            print(list(pool.map(flaky, range(4))))      # each waits 0.1 s, then 0.2 s
            try:
                stuck.result()
            except wp.TaskTimeout as exc:
                print("TaskTimeout:", exc)

        with wp.DaskPool(client, workers=1) as one:       # one task on the cluster at once
            order = []
            one.submit(time.sleep, 0.1)                   # holds the one slot
            for priority in (0, 5, 1):                    # wait here, by priority
                task = one.schedule(label, (priority,), priority=priority)
                task.add_done_callback(lambda f: order.append(f.result()))
        print("ran in order:", order)

        with wp.DaskPool(client) as pool:
            address = sorted(client.nthreads())[1]
            pinned = [pool.schedule(where, workers=address) for _ in range(3)]
            print("pinned:", {f.result() for f in pinned} == {address})
            print("GPU task ran:", pool.schedule(where, resources={"GPU": 1}).result()
                  in client.nthreads())
            nowhere = pool.schedule(where, resources={"TPU": 1}, timeout=0.2)
            try:
                nowhere.result()
            except wp.TaskTimeout as exc:
                print("no worker has a TPU:", exc)
            try:
                pool.schedule(where, resources={"GPU": 0})
            except ValueError as exc:
                print("ValueError:", exc)
