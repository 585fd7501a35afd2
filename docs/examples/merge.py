"""merge: fan-in of several blocking iterables; with map, Go's fan-out/fan-in."""

import workpool as wp


def numbers(start):
    yield from range(start, start + 3)


with wp.merge(numbers(0), numbers(10), numbers(20)) as merged:
    print(sorted(merged))                # each source's order kept, interleaved


def parallel(inputs, work, workers=8):
    """Run work(x) for every x of several input streams, results as they finish."""
    with wp.ThreadPool(workers) as pool, wp.merge(*inputs) as merged:
        yield from pool.map(work, merged, ordered=False)


print(sorted(parallel([range(5), range(5, 10)], lambda x: x * 2)))
