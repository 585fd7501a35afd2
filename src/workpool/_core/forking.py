"""Whether this process may fork now: the one check both the process backend and the
process walk make before forking their workers (forking is what makes a pool start
fast, and it is safe only while no other thread can hold a lock). Imports nothing of
workpool.
"""

from __future__ import annotations

import multiprocessing
import threading
import time

__all__ = ["can_fork_safely", "kernel_threads"]

# How long a thread Python has joined may still count in the kernel (it ends
# microseconds after its join returns): a pool started right after another shut down
# waits that long for its fork, at most.
_SETTLE = 0.05
# A thread Python does not know of (a C library's) outlived one such wait: the later
# checks do not wait for it again.
_foreign_threads: list[bool] = [False]


def kernel_threads() -> int | None:
    """This process's threads as the kernel counts them (C libraries' too); None
    where /proc does not tell."""
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("Threads:"):
                    return int(line.split()[1])
    except OSError:
        pass
    return None


def can_fork_safely() -> bool:
    """True on Linux while this process has exactly one thread (as the kernel counts
    them, so threads started by C libraries count too)."""
    if "fork" not in multiprocessing.get_all_start_methods():
        return False
    if threading.active_count() != 1:
        return False
    deadline = time.monotonic() + _SETTLE
    while True:
        threads = kernel_threads()
        if threads is None:
            return False
        if threads == 1:
            return True
        if _foreign_threads[0]:
            return False
        if time.monotonic() >= deadline:
            _foreign_threads[0] = True
            return False
        time.sleep(0.0005)
