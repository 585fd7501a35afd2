"""ThreadPool: a task past its timeout fails with wp.TaskTimeout; shutdown flavours."""

import threading

import workpool as wp

release = threading.Event()


def slow():
    ctx = wp.current()
    # A thread cannot be killed: a long task checks its context instead.
    while not ctx.cancelled:
        ctx.sleep(0.01)                 # wakes at once when the task is cancelled
    return "stopped"


with wp.ThreadPool(2, timeout=0.1) as pool:
    try:
        pool.submit(slow).result()
    except wp.TaskTimeout as exc:
        print("TaskTimeout:", isinstance(exc, TimeoutError))

pool = wp.ThreadPool(1)
running = pool.submit(release.wait)
queued = [pool.submit(print, "never printed") for _ in range(3)]
pool.shutdown(wait=False, cancel_futures=True)    # cancel the queue, let running finish
release.set()
pool.shutdown()
print("running:", running.result(), "queued cancelled:", all(f.cancelled() for f in queued))
print("unfinished:", len(pool.unfinished))
