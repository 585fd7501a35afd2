"""ProcessPool: every core, a crash fails one item, a hung task is killed."""

import os
import time

import workpool as wp


def checksum(n):
    return sum(i * i for i in range(n)) % 1000


def risky(n):
    if n == 3:
        os._exit(1)                     # the worker dies: only this item fails
    return n


def hang(_):
    time.sleep(60)


if __name__ == "__main__":              # workers import this module: guard the work
    with wp.ProcessPool(2) as pool:
        print(list(pool.map(checksum, [10, 100, 1000])))
        print(list(pool.map(risky, range(6), on_error="skip")))
        outcomes = list(pool.map(risky, range(6), chunksize=1, on_error="return"))
        print(type(outcomes[3].error).__name__)

    with wp.ProcessPool(1, timeout=0.5) as pool:
        try:
            pool.submit(hang, None).result()
        except wp.TaskTimeout:
            print("killed after 0.5 s; the pool goes on:", pool.submit(checksum, 10).result())
