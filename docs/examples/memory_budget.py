"""MemoryBudget: bound the bytes in flight, sized from the memory this process may use."""

import threading

import workpool as wp

print(wp.memory_limit() > 0)             # bytes: the cgroup limit, else physical memory
print(wp.MemoryBudget("80%").capacity == int(wp.memory_limit() * 0.8))
print(wp.MemoryBudget("300MB").capacity, wp.MemoryBudget("2GiB").capacity)

# Tokens: each task holds its size (cost=) from admission to its end.
budget = wp.MemoryBudget("1MB")          # 1,000,000 bytes in flight at most
lock = threading.Lock()
in_flight = peak = 0
beside_large = None


def load(size):
    global in_flight, peak, beside_large
    with lock:
        if size > budget.capacity:
            beside_large = in_flight     # what else ran beside the oversized task
        else:
            in_flight += size
            peak = max(peak, in_flight)
    wp.current().sleep(0.01)             # stands for reading and using `size` bytes
    with lock:
        if size <= budget.capacity:
            in_flight -= size
    return size


sizes = [300_000] * 8 + [2_500_000]      # the last one is larger than the whole budget
with wp.ThreadPool(8, budget=budget) as pool:
    total = sum(pool.map(load, sizes, cost=lambda size: size))

stats = budget.statistics()
print(total, "bytes; at most 1 MB at once:", peak <= 1_000_000)
print("oversized:", stats.oversized, "ran beside", beside_large, "bytes; held now:", stats.held)

# Watermarks: admission pauses while the memory in use is above high x capacity.
used = 0
watched = wp.MemoryBudget(1000, high=0.9, low=0.8, usage=lambda: used, interval=0)
used = 950                               # above 900: paused
with watched.hold(100):                  # nothing else in flight: let in, alone
    print("paused:", watched.statistics().paused, "| another:", watched.try_acquire(100))
used = 700                               # at or below 800: admitting again
print("another:", watched.try_acquire(100), "|", watched.statistics())
watched.release(100)

try:
    wp.MemoryBudget("80")                # a bare number: likely a slip for "80%"
except TypeError as error:
    print(error)
