"""ThreadPool: retry, a rate limit and per-task options."""

import workpool as wp


def flaky(x):
    # Fails on its first attempt, succeeds on the second: Retry runs it again.
    if wp.current().attempt == 1:
        raise ConnectionError(f"item {x}: try again")
    return x * 10


retry = wp.Retry(attempts=3, backoff=0.01, on=(ConnectionError,))
with wp.ThreadPool(4, retry=retry, rate=wp.RateLimit(per_second=200)) as pool:
    print(list(pool.map(flaky, range(5))))
    urgent = pool.schedule(flaky, (99,), priority=10, timeout=5.0)
    print(urgent.result())
    stats = pool.statistics()
    print(f"completed={stats.completed} failed={stats.failed} retried={stats.retried}")
