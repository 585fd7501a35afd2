"""workpool: ProcessPool and ThreadPool map."""

import workpool as wp


def square(x):
    return x * x


if __name__ == "__main__":
    # Auto-batching, as joblib's batch_size="auto".
    with wp.ProcessPool(2) as pool:
        print(sum(pool.map(square, range(1000))))
    with wp.ThreadPool(4) as pool:
        print(list(pool.map(square, range(5))))
    # map is always a lazy generator.
    with wp.ProcessPool(2) as pool:
        print(list(pool.map(square, range(5))))
