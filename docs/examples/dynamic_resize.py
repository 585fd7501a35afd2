"""resize: change a running pool's size; queued tasks get the new workers at once."""

import threading
import time

import workpool as wp

release = threading.Event()


def task(n):
    release.wait(5)                     # stands for a slow call
    return n


def wait_for(pool, test):
    deadline = time.monotonic() + 5
    while not test(pool.statistics()) and time.monotonic() < deadline:
        time.sleep(0.01)


with wp.ThreadPool(2) as pool:
    futures = [pool.submit(task, n) for n in range(6)]
    wait_for(pool, lambda s: s.busy == 2)
    print(pool.workers, pool.statistics().queued)   # 2 run, 4 wait
    pool.resize(6)                                  # the 4 start now
    wait_for(pool, lambda s: s.busy == 6)
    print(pool.workers, pool.statistics().queued)
    pool.resize(1)                  # busy workers finish their task, then leave
    s = pool.statistics()
    print(pool.workers, s.workers, s.busy)
    release.set()
    print([f.result() for f in futures])            # no task stopped or lost
    wait_for(pool, lambda s: s.workers == 1)
    print(pool.statistics().workers)
    for bad in (lambda: pool.resize(0), lambda: pool.resize(min=1, max=4)):
        try:
            bad()
        except (ValueError, TypeError) as e:
            print(f"{type(e).__name__}: {e}")

with wp.ThreadPool(workers=wp.Autoscale(min=0, max=4)) as pool:
    pool.resize(min=2, max=16)          # new bounds; resize(16) moves max alone
    s = pool.statistics()
    print(s.min_workers, s.max_workers, s.workers)

with wp.ThreadPool(workers=wp.Adaptive(max=64)) as pool:
    pool.resize(max=8)                  # the limit's bounds; the limit moves itself
    try:
        pool.resize(8)
    except TypeError as e:
        print(f"TypeError: {e}")
