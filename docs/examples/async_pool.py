"""AsyncPool: the same pool contract for coroutines, on asyncio or trio."""

import asyncio
import time

import workpool as wp


async def fetch(n):
    await asyncio.sleep(0.01)           # stands for an HTTP request
    return n * 2


def blocking(n):
    time.sleep(0.01)                    # a plain function runs in a worker thread
    return -n


async def main():
    async with wp.AsyncPool(50, timeout=5, retry=wp.Retry(attempts=3)) as pool:
        print([x async for x in pool.map(fetch, range(10))])
        future = await pool.submit(fetch, 21)   # waits only while the queue is full
        print(await future)
        print(await pool.run(blocking, 7))      # submit and wait in one call
        done = sorted([x async for x in pool.map(fetch, range(100), ordered=False)])
        print(len(done), pool.statistics().completed)


asyncio.run(main())
