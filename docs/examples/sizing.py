"""Sizing: usable CPUs, and Little's law for I/O-bound work."""

import os

import workpool as wp

print("usable CPUs:", wp.cpus() <= (os.cpu_count() or 1))   # affinity and cgroup quota

# 200 requests a second that take 250 ms each keep 50 in flight: 50 workers.
print(wp.io_workers(throughput=200, latency=0.25))
# 10 ms tasks at 1,000 a second: 10 workers.
print(wp.io_workers(throughput=1000, latency=0.010))

try:
    wp.io_workers(throughput=0, latency=0.1)
except ValueError as exc:
    print(exc)

with wp.ProcessPool() as pool:           # default: wp.cpus() workers
    print(pool.workers == wp.cpus())
with wp.ThreadPool() as pool:            # default: min(32, wp.cpus() + 4), as the stdlib
    print(pool.workers == min(32, wp.cpus() + 4))
