"""ProcessPool: load something once per worker with an initializer."""

import os

import workpool as wp


def load_model(scale):
    # Runs once in each worker process; what it returns is that worker's state.
    return {"scale": scale, "pid": os.getpid()}


def predict(x):
    model = wp.current().state
    return x * model["scale"]


if __name__ == "__main__":
    with wp.ProcessPool(2, initializer=load_model, initargs=(3,),
                        max_tasks_per_worker=100) as pool:   # a fresh worker every 100
        print(list(pool.map(predict, range(8))))
