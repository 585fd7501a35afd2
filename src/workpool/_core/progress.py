"""The counts behind ``map(..., progress=...)``: items done and failed, the total when
the input has a length, a recent rate and the time left. No terminal code here (the
bar is drawn by ``_pools/progress.py``). Imports nothing of workpool.

One thread writes (the one consuming the map's results, once per chunk where the map
has chunks), another may read (the thread drawing the bar): each count is a plain int,
written by one thread, so no lock is needed.
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any, Final, final

__all__ = ["ProgressCounts", "ProgressState", "ProgressArg", "check_progress", "input_total"]

_WINDOW: Final = 3.0  # seconds over which the live rate is measured


@final
@dataclass(frozen=True, slots=True)
class ProgressCounts:
    """Where a ``map`` stands, as ``map(..., progress=callable)`` receives it.

    Attributes:
        done: items that came out (failed ones included).
        total: items in the input, when it has a length (a list, a range); else None.
        failed: items that failed, of those done: the ``wp.Error`` values returned
            (``on_error="return"``), the items dropped (``"skip"``, ``"collect"``; an
            ``AsyncPool`` map counts collected ones at the end, and cannot see skipped
            ones). Under ``"raise"`` the first failure ends the map, uncounted.
        rate: items per second over the last few seconds (over the whole map in the
            final counts).
        eta: seconds left at that rate, when the total is known and the rate is not 0;
            else None.
        elapsed: seconds since the map was called.
        finished: True for the last counts of the map (ended, failed or closed).

    Example::

        def show(c: wp.ProgressCounts) -> None:
            print(f"{c.done}/{c.total or '?'} at {c.rate:.0f}/s")

        list(pool.map(work, items, progress=show))
    """

    done: int
    total: int | None
    failed: int
    rate: float
    eta: float | None
    elapsed: float
    finished: bool = False

    @property
    def fraction(self) -> float | None:
        """``done / total`` (0.0 to 1.0), or None when the total is not known."""
        if self.total is None:
            return None
        return 1.0 if self.total == 0 else min(1.0, self.done / self.total)


ProgressArg = bool | Callable[[ProgressCounts], object]


def check_progress(progress: object) -> None:
    """Validate a ``progress=`` argument: True (a live bar), False (none), or a
    callable that receives ``wp.ProgressCounts``.

    Raises:
        TypeError: anything else.
    """
    if isinstance(progress, bool) or callable(progress):
        return
    raise TypeError("progress must be True, False or a callable taking "
                    f"wp.ProgressCounts, got {progress!r}")


def input_total(iterables: Iterable[Any]) -> int | None:
    """The number of items ``map`` reads from *iterables* (zipped: the shortest), when
    every one has a length; else None. Only ``len()`` counts: a length hint is a guess.
    """
    lengths = []
    for iterable in iterables:
        try:
            lengths.append(len(iterable))
        except TypeError:
            return None
    return min(lengths) if lengths else None


class ProgressState:
    """The counts of one map: ``advance`` by the consuming thread, ``counts`` by
    whoever shows them (the rate's samples belong to that reader)."""

    __slots__ = ("_samples", "done", "failed", "started", "total")

    def __init__(self, total: int | None) -> None:
        self.total = total
        self.done = 0
        self.failed = 0
        self.started = time.monotonic()
        self._samples: deque[tuple[float, int]] = deque([(self.started, 0)])

    def advance(self, done: int, failed: int = 0) -> None:
        """*done* more items came out, *failed* of them failed."""
        self.done += done
        self.failed += failed

    def counts(self, finished: bool = False) -> ProgressCounts:
        """The counts now, with the rate over the last few seconds (over the whole run
        once *finished*) and the time left at that rate."""
        now = time.monotonic()
        done = self.done
        elapsed = now - self.started
        if finished:
            rate = done / elapsed if elapsed > 0 else 0.0
        else:
            samples = self._samples
            while len(samples) > 1 and now - samples[1][0] >= _WINDOW:
                samples.popleft()
            then, before = samples[0]
            samples.append((now, done))
            rate = (done - before) / (now - then) if now > then else 0.0
        total = self.total
        eta = None
        if total is not None and rate > 0:
            eta = max(0, total - done) / rate
        elif total is not None and done >= total:
            eta = 0.0
        return ProgressCounts(done, total, self.failed, rate, eta, elapsed, finished)
