"""concurrent.futures: the stdlib's executors."""

from concurrent.futures import ProcessPoolExecutor, ThreadPoolExecutor, as_completed


def square(x):
    return x * x


if __name__ == "__main__":
    with ThreadPoolExecutor(max_workers=8) as pool:
        futures = [pool.submit(square, n) for n in range(10)]
        print(sorted(f.result() for f in as_completed(futures)))
        # Submits the whole input at once.
        print(list(pool.map(square, range(10))))

    with ProcessPoolExecutor(max_workers=2) as pool:
        print(sum(pool.map(square, range(1000), chunksize=100)))
