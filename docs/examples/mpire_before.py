"""mpire: WorkerPool with worker state."""

from mpire import WorkerPool


def init(worker_state):
    worker_state["factor"] = 10


def scale(worker_state, x):
    return x * worker_state["factor"]


def square(x):
    return x * x


if __name__ == "__main__":
    with WorkerPool(n_jobs=2) as pool:
        print(sum(pool.map(square, range(1000))))
    with WorkerPool(n_jobs=2, use_worker_state=True) as pool:
        print(sorted(pool.imap_unordered(scale, range(5), worker_init=init)))
