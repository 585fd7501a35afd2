"""workpool: the same code, and what it adds."""

import workpool as wp


def square(x):
    return x * x


if __name__ == "__main__":
    with wp.ThreadPool(max_workers=8) as pool:        # a ThreadPoolExecutor subclass
        print(sorted(pool.map(square, range(10), ordered=False)))  # as they finish
        print(list(pool.map(square, range(10))))      # lazy: reads a window ahead

    with wp.ProcessPool(max_workers=2) as pool:       # chunksize="auto"
        print(sum(pool.map(square, range(1000))))
