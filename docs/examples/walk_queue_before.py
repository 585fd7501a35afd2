"""A hand-written walker: a queue.Queue, task_done per node, join."""

import queue
import threading


def expand(n):
    return n, ([2 * n, 2 * n + 1] if n < 512 else [])    # (result, children)


nodes = queue.Queue()                   # unbounded: with a maxsize, every worker may wait
results = []                            # in put() for room that only a worker makes
lock = threading.Lock()


def worker():
    while (node := nodes.get()) is not None:
        try:
            result, children = expand(node)  # an error kills this thread: printed,
            with lock:                       # never raised; the others go on
                results.append(result)
            for child in children:
                nodes.put(child)
        finally:
            nodes.task_done()           # forget it once and join() waits forever


threads = [threading.Thread(target=worker) for _ in range(4)]
for thread in threads:
    thread.start()
nodes.put(1)
nodes.join()                            # every node done: no result comes out before
for _ in threads:
    nodes.put(None)                     # one stop sign per thread
for thread in threads:
    thread.join()
print(len(results), "nodes, sum", sum(results))
