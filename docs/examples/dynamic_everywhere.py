"""Autoscale and Adaptive wherever a worker count goes: groups, pipeline stages."""

import asyncio

import workpool as wp

scaled = wp.Autoscale(min=0, max=8, idle_timeout=1.0)


def fetch(n):
    wp.current().sleep(0.001)           # stands for I/O
    return n * n


with wp.Group(limit=scaled) as g:       # the group's own threads come and go
    for n in range(20):
        g.go(fetch, n)
print(sum(g.results()))

pipe = (wp.Pipeline(range(100))
        .map(fetch, workers=scaled)     # a dynamic stage
        .filter(lambda n: n % 2 == 0))
print(sum(pipe))


async def call(n):
    await asyncio.sleep(0.001)          # stands for a request
    return n


async def main():
    async with wp.AsyncPool(workers=wp.Adaptive(min=2, max=50)) as pool:
        print(sum([x async for x in pool.map(call, range(30))]))
        print(2 <= pool.statistics().limit <= 50)


asyncio.run(main())
