"""multiprocessing: Pool with an initializer, imap_unordered and starmap."""

import multiprocessing

factor = None


def init(value):
    # Per-worker state lives in a global.
    global factor
    factor = value


def scale(x):
    return x * factor


def add(a, b):
    return a + b


if __name__ == "__main__":
    with multiprocessing.Pool(2, initializer=init, initargs=(10,)) as pool:
        print(sorted(pool.imap_unordered(scale, range(5))))
        print(pool.starmap(add, [(1, 2), (3, 4)]))
