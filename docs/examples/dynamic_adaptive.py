"""Adaptive: find the concurrency a service can take, and back off when it says 429."""

import asyncio
import time
from statistics import median

import workpool as wp

BASE = 0.01                             # seconds a request takes without a queue


class Overloaded(Exception):
    """The service's "429 Too Many Requests", with its Retry-After header."""

    status = 429

    def __init__(self, retry_after):
        super().__init__("429 Too Many Requests")
        self.retry_after = retry_after  # seconds: a retry waits at least this long


class Service:
    """A simulated service: flat latency up to `best` requests in flight, then a
    queue; from 1.5 x best in flight it refuses (429)."""

    def __init__(self, best):
        self.best = best
        self.in_flight = 0
        self.refused = 0

    async def request(self, n):
        if self.in_flight >= 1.5 * self.best:
            self.refused += 1
            await asyncio.sleep(BASE)   # a refusal takes a round trip too
            raise Overloaded(retry_after=0.02)
        self.in_flight += 1
        try:
            await asyncio.sleep(BASE * max(1.0, self.in_flight / self.best))
        finally:
            self.in_flight -= 1
        return n


def overloaded(exc):
    return getattr(exc, "status", None) in (429, 503)


async def main():
    service = Service(best=16)
    policy = wp.Adaptive(min=1, max=64, window=0.05, drop=overloaded)
    retry = wp.Retry(attempts=10, on=Overloaded)
    async with wp.AsyncPool(workers=policy, retry=retry) as pool:
        halved = time.perf_counter() + 0.5     # the clock of limit_history's times
        asyncio.get_running_loop().call_later(0.5, setattr, service, "best", 4)
        # map reads ahead 4 x the limit it starts with by default: let it read more.
        answers = [n async for n in pool.map(service.request, range(700))]
        s = pool.statistics()
    before = [w.limit for w in s.limit_history if w.time < halved]
    after = [w.limit for w in s.limit_history if w.time > halved + 0.3]
    print("answers in order:", answers == list(range(700)))
    print("limit rose to about 16:", 12 <= max(before) <= 24)
    print("then followed the service down to about 4:", 2 <= median(after) <= 6)
    print("every 429 was a drop, and retried:", s.drops == s.retried == service.refused)


asyncio.run(main())
