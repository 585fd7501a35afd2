"""AsyncGroup: the same errgroup for coroutines, on asyncio or trio."""

import asyncio

import workpool as wp


async def fetch(n):
    await asyncio.sleep(0.01)
    return n * n


async def main():
    async with wp.AsyncGroup(limit=8) as g:
        for n in range(20):
            await g.go(fetch, n)        # waits while 8 tasks are in flight
    print(g.results()[:5])


asyncio.run(main())
