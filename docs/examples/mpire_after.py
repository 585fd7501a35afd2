"""workpool: ProcessPool with an initializer's state."""

import workpool as wp


def init():
    # Becomes wp.current().state in each worker.
    return {"factor": 10}


def scale(x):
    return x * wp.current().state["factor"]


def square(x):
    return x * x


if __name__ == "__main__":
    with wp.ProcessPool(2) as pool:
        print(sum(pool.map(square, range(1000))))
    with wp.ProcessPool(2, initializer=init) as pool:
        print(sorted(pool.map(scale, range(5), ordered=False)))
