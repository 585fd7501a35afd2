"""What a pipeline run did: live per-stage counters, and the frozen report made of them.

Each counter has one writer (the stage's own thread), so counting takes no lock; the
report and the live view read them as they are.
"""

from __future__ import annotations

import time
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Final, final

from .._core.failures import CollectedError, CollectedErrors

__all__ = ["CollectedError", "CollectedErrors", "Counters", "PipelineReport", "StageReport"]

_RING: Final = 1024  # latency samples kept per stage
_MASK: Final = _RING - 1


class Counters:
    """One stage's live numbers."""

    __slots__ = ("_n", "_ring", "busy_seconds", "collected", "failed", "items_in",
                 "items_out", "returned", "skipped")

    def __init__(self) -> None:
        self.items_in = 0
        self.items_out = 0
        self.failed = 0  # items whose error stopped the run (on_error="raise")
        self.returned = 0  # passed on as a wp.Error (on_error="return")
        self.skipped = 0
        self.collected = 0
        self.busy_seconds = 0.0
        self._ring = [0.0] * _RING
        self._n = 0

    def sample(self, seconds: float) -> None:
        """Record one item's (or one chunk's per-item) run time."""
        self._ring[self._n & _MASK] = seconds
        self._n += 1

    def percentiles(self) -> tuple[float, float, float]:
        """p50, p95, p99 of the recent samples (zeros without any)."""
        n = min(self._n, _RING)
        if not n:
            return 0.0, 0.0, 0.0
        values = sorted(self._ring[:n])

        def pick(q: float) -> float:
            return values[min(n - 1, round(q * (n - 1)))]

        return pick(0.50), pick(0.95), pick(0.99)

    @property
    def errors(self) -> int:
        """Items that failed in this stage, whatever the policy did with them."""
        return self.failed + self.returned + self.skipped + self.collected


@final
@dataclass(frozen=True, slots=True)
class StageReport:
    """One stage's numbers in a ``PipelineReport``.

    ``items_in`` counts what the stage took from its input, ``items_out`` what it
    passed on (a filter passes fewer, a flat_map or unbatch more, a batch one per
    batch, an ``each`` sink none). ``errors`` counts the items that raised, of which
    ``skipped`` and ``collected`` were dropped by the stage's policy. ``busy`` is the
    share of the stage's capacity the run used: the time its workers spent running
    its function (``busy_seconds``) over ``workers * seconds`` of the run, or, under
    a rate limit, the rate it reached over the limit if that is higher. Near 1, the
    stage limits the pipeline. ``throughput`` is the items it passed on per second;
    for a sink (``sink``), which passes nothing on, the items it took in per second.
    The latencies are the run times of recent items, in seconds.
    """

    name: str
    kind: str
    workers: int
    items_in: int
    items_out: int
    errors: int
    skipped: int
    collected: int
    busy_seconds: float
    busy: float
    throughput: float
    latency_p50: float
    latency_p95: float
    latency_p99: float
    sink: bool = False


@final
@dataclass(frozen=True, slots=True, init=False)
class PipelineReport:
    """What one run of a ``wp.Pipeline`` did, stage by stage; ``str()`` is a table.

    ``status`` is "finished" (the source ended and everything went through),
    "failed" (an error stopped the run), "cancelled" (the consumer stopped early) or
    "running" (a snapshot taken during the run). ``items_read`` counts the source's
    items, of which ``resumed`` were skipped as finished by an earlier run (the
    journal); ``items`` counts what the last stage delivered to the consumer.
    ``errors`` holds the items that stages with ``on_error="collect"`` dropped (a
    ``CollectedErrors`` tuple: printed, a short summary; ``errors.tracebacks()``, the
    tracebacks).

    Example::

        report = pipe.run()
        print(report)                       # the per-stage table
        print(report.bottleneck.name)       # e.g. "map(parse)"
        print(report.errors)                # what on_error="collect" kept, one line each
    """

    status: str
    seconds: float
    items_read: int
    resumed: int
    items: int
    stages: tuple[StageReport, ...]
    errors: CollectedErrors

    def __init__(self, *, status: str, seconds: float, items_read: int, resumed: int,
                 items: int, stages: tuple[StageReport, ...],
                 errors: Iterable[CollectedError] = ()) -> None:
        # Frozen: fields are set the way dataclasses set them in their own __init__.
        for name, value in (("status", status), ("seconds", seconds),
                            ("items_read", items_read), ("resumed", resumed),
                            ("items", items), ("stages", stages),
                            ("errors", CollectedErrors(errors))):
            object.__setattr__(self, name, value)

    @property
    def bottleneck(self) -> StageReport | None:
        """The stage whose workers were busiest (the highest ``busy``), or None when
        no stage ran anything."""
        busiest = max(self.stages, key=lambda s: s.busy, default=None)
        return busiest if busiest is not None and busiest.busy > 0 else None

    def stage(self, name: str) -> StageReport:
        """The report of the stage called *name*.

        Raises:
            KeyError: no stage has that name.
        """
        for stage in self.stages:
            if stage.name == name:
                return stage
        raise KeyError(name)

    def __str__(self) -> str:
        neck = self.bottleneck
        head = (f"pipeline {self.status} in {self.seconds:.2f} s: {self.items_read:,} read"
                + (f" ({self.resumed:,} already finished)" if self.resumed else "")
                + ("" if self.stages and self.stages[-1].sink else f", {self.items:,} out")
                + (f", {len(self.errors):,} errors collected" if self.errors else "")
                + (f"; bottleneck: {neck.name}" if neck is not None else ""))
        headers = ("stage", "kind", "workers", "in", "out", "errors", "items/s", "busy",
                   "p50", "p95", "p99")
        rows = [headers] + [
            (s.name + (" *" if s is neck else ""), s.kind, str(s.workers), f"{s.items_in:,}",
             "-" if s.sink else f"{s.items_out:,}", f"{s.errors:,}", f"{s.throughput:,.1f}",
             f"{s.busy:.0%}",
             _duration(s.latency_p50), _duration(s.latency_p95), _duration(s.latency_p99))
            for s in self.stages]
        widths = [max(len(row[i]) for row in rows) for i in range(len(headers))]
        lines = [head]
        for n, row in enumerate(rows):
            cells = [cell.ljust(w) if i < 2 else cell.rjust(w)
                     for i, (cell, w) in enumerate(zip(row, widths, strict=True))]
            lines.append("  ".join(cells).rstrip())
            if n == 0:
                lines.append("  ".join("-" * w for w in widths))
        return "\n".join(lines)


def _duration(seconds: float) -> str:
    if seconds <= 0:
        return "-"
    if seconds < 1e-6:
        return f"{seconds * 1e9:.0f} ns"
    if seconds < 1e-3:
        return f"{seconds * 1e6:.0f} us"
    if seconds < 1:
        return f"{seconds * 1e3:.1f} ms"
    return f"{seconds:.2f} s"


def stage_report(name: str, kind: str, workers: int, counters: Counters,
                 seconds: float, rate: float | None = None, *,
                 sink: bool = False) -> StageReport:
    """Freeze *counters* of a run that has lasted *seconds* (*rate*: the stage's rate
    limit, items per second, which caps its throughput as its workers do; *sink*: the
    stage passes nothing on, so its throughput is what it took in)."""
    p50, p95, p99 = counters.percentiles()
    busy = counters.busy_seconds / (workers * seconds) if seconds > 0 and workers else 0.0
    if rate and seconds > 0:
        busy = max(busy, counters.items_in / seconds / rate)
    return StageReport(
        name=name, kind=kind, workers=workers, items_in=counters.items_in,
        items_out=counters.items_out, errors=counters.errors, skipped=counters.skipped,
        collected=counters.collected, busy_seconds=counters.busy_seconds,
        busy=min(1.0, busy),
        throughput=(counters.items_in if sink else counters.items_out) / seconds
        if seconds > 0 else 0.0,
        latency_p50=p50, latency_p95=p95, latency_p99=p99, sink=sink)


def elapsed(started: float, ended: float | None) -> float:
    """Seconds from *started* to *ended* (or now), on the perf_counter clock."""
    return (time.perf_counter() if ended is None else ended) - started
