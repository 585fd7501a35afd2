"""The live view of ``Pipeline.run(progress=True)``.

In a terminal with rich installed (the ``cli`` extra): a table redrawn a few times a
second, one row per stage with its items in and out, rate, errors, how full its input
queue is and how many of its workers are busy. Otherwise (a pipe, a log file, no rich,
or ``WORKPOOL_PLAIN`` set): one plain line every few seconds, and a last one at the end.
"""

from __future__ import annotations

import importlib.util
import os
import sys
import threading
import time
from typing import TYPE_CHECKING, Any, TextIO

if TYPE_CHECKING:
    from ._run import Run

__all__ = ["Progress"]


class _Rate:
    """Items per second, smoothed over the last few samples."""

    __slots__ = ("_count", "_time", "rate")

    def __init__(self) -> None:
        self._count = 0
        self._time = time.perf_counter()
        self.rate = 0.0

    def update(self, count: int) -> float:
        now = time.perf_counter()
        span = now - self._time
        if span > 0:
            instant = (count - self._count) / span
            self.rate = instant if not self.rate else 0.5 * self.rate + 0.5 * instant
        self._count, self._time = count, now
        return self.rate


class Progress:
    """A thread that draws the live view of *run* until ``stop()``."""

    def __init__(self, run: Run, out: TextIO | None = None, interval: float | None = None) -> None:
        self.run = run
        self.out = sys.stdout if out is None else out
        self.rich = (_isatty(self.out) and not os.environ.get("WORKPOOL_PLAIN")
                     and importlib.util.find_spec("rich") is not None)
        self.interval = interval if interval is not None else (0.25 if self.rich else 2.0)
        self._rates = [_Rate() for _ in run.stages]
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._main, name="pipeline-progress")
        self._live: Any = None

    def start(self) -> None:
        """Start drawing."""
        if self.rich:
            from rich.console import Console
            from rich.live import Live

            console = Console(file=self.out, highlight=False)
            self._live = Live(self._table(), console=console, auto_refresh=False,
                              redirect_stdout=False, redirect_stderr=False)
            self._live.start()
        self._thread.start()

    def stop(self) -> None:
        """Draw one last time and stop."""
        self._stop.set()
        if self._thread.ident is not None:
            self._thread.join()
        if self._live is not None:
            self._live.update(self._table(), refresh=True)
            self._live.stop()
        else:
            self._line()

    def _main(self) -> None:
        while not self._stop.wait(self.interval):
            if self._live is not None:
                self._live.update(self._table(), refresh=True)
            else:
                self._line()

    def rows(self) -> list[tuple[str, ...]]:
        """One row of text cells per stage (and a header)."""
        rows: list[tuple[str, ...]] = [
            ("stage", "kind", "in", "out", "items/s", "errors", "queue", "busy")]
        for stage, rate in zip(self.run.stages, self._rates, strict=True):
            c = stage.counters
            queue = stage.input
            rows.append((stage.spec.name, stage.kind, f"{c.items_in:,}", f"{c.items_out:,}",
                         f"{rate.update(c.items_out):,.1f}", f"{c.errors:,}",
                         f"{len(queue)}/{queue.capacity}",
                         f"{stage.busy()}/{stage.workers}" if stage.spec.pooled else "-"))
        return rows

    def _header(self) -> str:
        run = self.run
        report = run.report()
        resumed = f", {report.resumed:,} already finished" if report.resumed else ""
        return (f"pipeline {report.status} {report.seconds:6.1f} s: "
                f"{report.items_read:,} read{resumed}, {report.items:,} out")

    def _table(self) -> Any:
        from rich.console import Group
        from rich.table import Table
        from rich.text import Text

        rows = self.rows()
        table = Table(box=None, header_style="bold")
        for i, header in enumerate(rows[0]):
            table.add_column(header, justify="left" if i < 2 else "right")
        for row in rows[1:]:
            table.add_row(*row)
        return Group(Text(self._header(), style="bold"), table)

    def _line(self) -> None:
        parts = [self._header()]
        for row in self.rows()[1:]:
            name, _, _, out, rate, errors, queue, busy = row
            parts.append(f"{name}: {out} out, {rate}/s, {errors} errors, "
                         f"queue {queue}, busy {busy}")
        print(" | ".join(parts), file=self.out, flush=True)


def _isatty(out: TextIO) -> bool:
    try:
        return out.isatty()
    except (AttributeError, ValueError):
        return False
