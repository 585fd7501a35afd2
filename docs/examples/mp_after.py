"""workpool: the same with ProcessPool."""

import workpool as wp


def init(value):
    # Becomes wp.current().state in the worker.
    return value


def scale(x):
    return x * wp.current().state


def add(a, b):
    return a + b


if __name__ == "__main__":
    with wp.ProcessPool(2, initializer=init, initargs=(10,)) as pool:
        print(sorted(pool.map(scale, range(5), ordered=False)))
        # Several iterables are zipped, as the builtin map.
        print(list(pool.map(add, [1, 3], [2, 4])))
