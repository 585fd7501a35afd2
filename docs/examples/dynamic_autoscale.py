"""Autoscale: a pool that grows on a burst and shrinks back when it is idle."""

import threading
import time

import workpool as wp

release = threading.Event()


def task(n):
    release.wait(5)                     # stands for I/O: a burst of slow calls
    return n


def show(pool, when):
    s = pool.statistics()
    print(f"{when:<14} workers={s.workers} busy={s.busy} queued={s.queued}")


def wait_for(pool, test):
    deadline = time.monotonic() + 5
    while not test(pool.statistics()) and time.monotonic() < deadline:
        time.sleep(0.01)


with wp.ThreadPool(workers=wp.Autoscale(min=0, max=4, idle_timeout=0.2)) as pool:
    show(pool, "idle")                  # min=0: no thread while nothing runs
    futures = [pool.submit(task, n) for n in range(6)]
    wait_for(pool, lambda s: s.busy == 4)
    show(pool, "burst")                 # grown to max; 2 tasks wait for a worker
    release.set()
    print([f.result() for f in futures])
    wait_for(pool, lambda s: s.workers == 0)
    show(pool, "after idle")            # idle for idle_timeout: gone, down to min
    s = pool.statistics()
    print(s.min_workers, s.max_workers, max(w for _, w in s.workers_history))
