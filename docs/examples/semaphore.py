"""Semaphore: weighted and FIFO-fair; a pool's budget bounds bytes in flight."""

import workpool as wp

sem = wp.Semaphore(10)
with sem.hold(7):                        # 7 of the 10 tokens, released on exit
    print("free while held:", sem.statistics().available)
    print("try 4:", sem.try_acquire(4))  # does not fit: False at once
    print("wait 4 for 10 ms:", sem.acquire(4, timeout=0.01))
print("free again:", sem.statistics().available)


def upload(blob):
    return len(blob)


budget = wp.Semaphore(1 << 20)           # at most 1 MiB of blobs queued or running
blobs = [bytes(300_000) for _ in range(8)]
with wp.ThreadPool(4, budget=budget) as pool:
    futures = [pool.schedule(upload, (b,), cost=len(b)) for b in blobs]
    print("uploaded", sum(f.result() for f in futures), "bytes")
