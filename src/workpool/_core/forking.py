"""Whether this process may fork now: the one check both the process backend and the
process walk make before forking their workers (forking is what makes a pool start
fast, and it is safe only while no other thread can hold a lock). Imports nothing of
workpool.
"""

from __future__ import annotations

import multiprocessing
import threading

__all__ = ["can_fork_safely"]


def can_fork_safely() -> bool:
    """True on Linux while this process has exactly one thread (as the kernel counts
    them, so threads started by C libraries count too)."""
    if "fork" not in multiprocessing.get_all_start_methods():
        return False
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("Threads:"):
                    return int(line.split()[1]) == 1 and threading.active_count() == 1
    except OSError:
        pass
    return False
