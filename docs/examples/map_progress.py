"""map(progress=callable): the counts of a map, handed to your function as it runs."""

import workpool as wp


def work(n):
    if n % 25 == 0:
        raise ValueError(f"bad item {n}")
    wp.current().sleep(0.001)
    return n


def show(counts: wp.ProgressCounts) -> None:
    # Called in the thread iterating the map, at most ten times a second, and once
    # more at the end with finished=True.
    if counts.finished:
        print(f"done {counts.done} of {counts.total}, failed {counts.failed}, "
              f"fraction {counts.fraction}, eta {counts.eta}")


with wp.ThreadPool(8) as pool:
    outcomes = list(pool.map(work, range(200), on_error="return", progress=show))
    print(sum(isinstance(o, wp.Error) for o in outcomes), "errors returned")

    # A generator has no len(): the total and the time left are then None.
    kept = list(pool.map(work, (n for n in range(100)), on_error="skip", progress=show))
