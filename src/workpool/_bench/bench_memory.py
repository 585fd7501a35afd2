"""Memory-aware admission: a pipeline of 50 MB items on 8 workers, with and without a
300 MB ``wp.MemoryBudget``: the run's peak resident memory and its throughput, side by
side.

Each item is made in the worker (``bytearray``: zero-filled, so every page is resident),
held for ``RECEIVE`` seconds as while it is read from the network (the GIL let go), then
hashed (hashlib lets go of the GIL too), so without a budget all 8 workers hold one at
once. The peak is the kernel's own high-water mark of this process's resident memory
(``VmHWM``), reset before each run by writing 5 to /proc/self/clear_refs: exact, with no
sampling to miss a short peak, and less the resident memory at the start of the run.
"""

from __future__ import annotations

import hashlib
import re
import time
from pathlib import Path

import workpool as wp

from .harness import Target, compare, scenario

ITEM = 50 * 2**20  # bytes per item
BUDGET = 300 * 2**20
WORKERS = 8
RECEIVE = 0.05  # seconds an item is held before it is hashed
_MB = 2**20
_STATUS = Path("/proc/self/status")


def _work(size: int) -> bytes:
    data = bytearray(size)
    time.sleep(RECEIVE)
    return hashlib.sha1(data).digest()


def _size(size: int) -> int:
    """An item's cost: the bytes it will take (the item is its size)."""
    return size


def _status(field: str) -> int:
    match = re.search(rf"^{field}:\s+(\d+) kB$", _STATUS.read_text(), re.MULTILINE)
    if match is None:
        raise RuntimeError(f"/proc/self/status has no {field}")
    return int(match.group(1)) * 1024


def can_measure_peak() -> bool:
    """Whether this process's peak resident memory can be reset (Linux 4.0+)."""
    try:
        Path("/proc/self/clear_refs").write_text("5")
    except OSError:
        return False
    return _STATUS.exists()


def run(items: int, budget: wp.MemoryBudget | None) -> tuple[float, int, list[bytes]]:
    """Run *items* items of ``ITEM`` bytes through an 8-worker stage, under *budget*
    (``cost`` = the item's size) if any. Returns the seconds, the peak resident bytes
    above the start's, and the digests in input order."""
    Path("/proc/self/clear_refs").write_text("5")  # VmHWM := VmRSS
    start = _status("VmRSS")
    t0 = time.perf_counter()
    pipe = wp.Pipeline([ITEM] * items)
    if budget is None:
        stage = pipe.map(_work, workers=WORKERS)
    else:
        stage = pipe.map(_work, workers=WORKERS, budget=budget, cost=_size)
    digests = list(stage)
    return time.perf_counter() - t0, _status("VmHWM") - start, digests


def _measure(items: int, limit: int | None) -> dict[str, float]:
    budget = None if limit is None else wp.MemoryBudget(limit)
    seconds, peak, digests = run(items, budget)
    if len(digests) != items:
        raise RuntimeError(f"{items - len(digests)} items lost")
    return {"items/s": items / seconds, "MB peak": peak / _MB}


@scenario
def memory(quick: bool) -> dict[str, float]:
    """50 MB items, 8 workers: a 300 MB MemoryBudget against none (peak RSS, items/s)."""
    if not can_measure_peak():
        raise RuntimeError("this kernel cannot reset the peak resident memory "
                           "(/proc/self/clear_refs)")
    items = 16 if quick else 48
    return compare(
        [("no budget", lambda: _measure(items, None)),
         ("MemoryBudget(300 MB)", lambda: _measure(items, BUDGET))],
        unit="MB peak", baseline="no budget", higher_is_better={"items/s"},
        targets=[Target("MemoryBudget(300 MB)", "<", (BUDGET + ITEM) / _MB, on="value",
                        unit="MB peak")],
        title="a pipeline of 50 MB items on 8 threads",
    )
