"""walk on processes: split a range until it is small, count its primes on every core."""

import workpool as wp


def count_primes(span):
    lo, hi = span
    if hi - lo > 5_000:                 # too big: split it, count nothing here
        mid = (lo + hi) // 2
        return 0, [(lo, mid), (mid, hi)]
    found = sum(all(n % d for d in range(2, int(n**0.5) + 1)) for n in range(max(lo, 2), hi))
    return found, []


if __name__ == "__main__":              # workers may import this module: guard the work
    with wp.walk(count_primes, [(0, 200_000)], kind="process", workers=2) as counts:
        print("primes below 200,000:", sum(counts))
    stats = counts.statistics()
    print("ranges:", stats.visited, "deepest:", stats.max_depth)

    # A pool of yours: the walk runs on it in slices, and leaves it open.
    with wp.ProcessPool(2) as pool, wp.walk(count_primes, [(0, 200_000)], pool=pool) as counts:
        print("on a ProcessPool:", sum(counts))
