"""workpool: the same code, and what it adds."""

import workpool as wp


def square(x):
    return x * x


if __name__ == "__main__":
    # A ThreadPoolExecutor subclass.
    with wp.ThreadPool(max_workers=8) as pool:
        # As they finish, without futures.
        print(sorted(pool.map(square, range(10), ordered=False)))
        # Lazy: reads a window ahead.
        print(list(pool.map(square, range(10))))

    # chunksize="auto" batches.
    with wp.ProcessPool(max_workers=2) as pool:
        print(sum(pool.map(square, range(1000))))
