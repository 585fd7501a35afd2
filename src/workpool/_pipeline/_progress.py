"""The live view of ``Pipeline.run(progress=True)``.

In a terminal with rich installed (the ``cli`` extra): a table redrawn a few times a
second, one row per stage with its items in and out, rate, errors, how full its input
queue is and how many of its workers are busy. Otherwise (a pipe, a log file, no rich,
or ``WORKPOOL_PLAIN`` set): one short line every few seconds, such as::

    progress 12.3 s: 2,758 read | fetch 2,689 | parse 2,689 | batch 26 | write 25 in | 224/s

(items read from the source, each stage's items passed on or, for a sink, taken in,
and the rate at which the source is read), and one last line at the end, which says
how the run ended: ``progress 13.5 s, finished: ...``. Either way the final frame is
drawn once, by ``stop()``: the drawing thread draws nothing once the run has ended.
"""

from __future__ import annotations

import importlib.util
import os
import sys
import threading
import time
from collections import deque
from typing import TYPE_CHECKING, Any, Final, TextIO

from ._report import elapsed
from ._spec import EACH

if TYPE_CHECKING:
    from ._run import Run
    from ._stages import StageRuntime

__all__ = ["Progress"]

_WINDOW: Final = 3.0  # seconds over which a live rate is measured
_LINE: Final = 100  # a plain line longer than this leaves out middle stages
_NAME: Final = 16  # ...and then shortens stage names to this


class _Rate:
    """Items per second over the last few seconds (a window of samples)."""

    __slots__ = ("_samples",)

    def __init__(self) -> None:
        self._samples = deque([(time.perf_counter(), 0)])

    def update(self, count: int) -> float:
        now = time.perf_counter()
        samples = self._samples
        while len(samples) > 1 and now - samples[1][0] >= _WINDOW:
            samples.popleft()
        then, before = samples[0]
        samples.append((now, count))
        return (count - before) / (now - then) if now > then else 0.0


def _sink(stage: StageRuntime) -> bool:
    return stage.spec.op == EACH


def _done(stage: StageRuntime) -> int:
    """What the stage did so far: items passed on, or, for a sink, items taken in."""
    c = stage.counters
    return c.items_in if _sink(stage) else c.items_out


class Progress:
    """A thread that draws the live view of *run* until ``stop()``.

    Args:
        run: the run to watch.
        out: where to draw (standard output by default); rich's live table if it is
            a terminal and rich is installed, short plain lines otherwise.
        interval: seconds between frames (0.25 for the table, 2.0 for plain lines).
    """

    def __init__(self, run: Run, out: TextIO | None = None, interval: float | None = None) -> None:
        self.run = run
        self.out = sys.stdout if out is None else out
        self.rich = (_isatty(self.out) and not os.environ.get("WORKPOOL_PLAIN")
                     and importlib.util.find_spec("rich") is not None)
        self.interval = interval if interval is not None else (0.25 if self.rich else 2.0)
        self._rates = [_Rate() for _ in run.stages]
        self._read = _Rate()
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
        """Draw the final frame, once, and stop."""
        self._stop.set()
        if self._thread.ident is not None:
            self._thread.join()
        if self._live is not None:
            self._live.update(self._table(final=True))  # drawn by stop(), not twice
            self._live.stop()
        else:
            self._line(final=True)

    def _main(self) -> None:
        while not self._stop.wait(self.interval):
            if self.run.status != "running":
                continue  # the run ended: its final frame is stop()'s to draw
            if self._live is not None:
                self._live.update(self._table(), refresh=True)
            else:
                self._line()

    def rows(self, final: bool = False) -> list[tuple[str, ...]]:
        """One row of text cells per stage (and a header). A sink passes nothing on:
        its "out" is "-" and its rate is of the items it took in. Rates are over the
        last few seconds, or, in the *final* frame, over the whole run."""
        seconds = elapsed(self.run.started, self.run.ended)
        rows: list[tuple[str, ...]] = [
            ("stage", "kind", "in", "out", "items/s", "errors", "queue", "busy")]
        for stage, rate in zip(self.run.stages, self._rates, strict=True):
            c = stage.counters
            queue = stage.input
            rows.append((stage.spec.name, stage.kind, f"{c.items_in:,}",
                         "-" if _sink(stage) else f"{c.items_out:,}",
                         f"{self._rate(rate, _done(stage), seconds, final):,.1f}",
                         f"{c.errors:,}", f"{len(queue)}/{queue.capacity}",
                         f"{stage.busy()}/{stage.workers}" if stage.spec.pooled else "-"))
        return rows

    def line(self, final: bool = False) -> str:
        """The plain view: one short line, for a log (the *final* one says how the run
        ended, and its rate is over the whole run). A long pipeline's middle stages
        are left out ("...") to keep it under 100 characters."""
        report = self.run.report()
        stages = self.run.stages
        head = f"progress {report.seconds:.1f} s" + (f", {report.status}" if final else "")
        read = (f"{report.items_read:,} read"
                + (f" ({report.resumed:,} skipped)" if report.resumed else ""))
        done = [(stage.spec.name, f"{_done(stage):,}" + (" in" if _sink(stage) else ""))
                for stage in stages]
        fresh = report.items_read - report.resumed  # skipped items cost next to nothing
        tail = [f"{self._rate(self._read, fresh, report.seconds, final):,.0f}/s"]
        errors = sum(stage.counters.errors for stage in stages)
        if errors:
            tail.append(f"{errors:,} errors")
        return _fit(head, read, done, tail)

    def _rate(self, rate: _Rate, count: int, seconds: float, final: bool) -> float:
        if final:
            return count / seconds if seconds > 0 else 0.0
        return rate.update(count)

    def _header(self) -> str:
        report = self.run.report()
        resumed = f", {report.resumed:,} already finished" if report.resumed else ""
        sink = bool(self.run.stages) and _sink(self.run.stages[-1])
        return (f"pipeline {report.status} {report.seconds:6.1f} s: "
                f"{report.items_read:,} read{resumed}"
                + ("" if sink else f", {report.items:,} out"))

    def _table(self, final: bool = False) -> Any:
        from rich.console import Group
        from rich.table import Table
        from rich.text import Text

        rows = self.rows(final)
        table = Table(box=None, header_style="bold")
        for i, header in enumerate(rows[0]):
            table.add_column(header, justify="left" if i < 2 else "right")
        for row in rows[1:]:
            table.add_row(*row)
        return Group(Text(self._header(), style="bold"), table)

    def _line(self, final: bool = False) -> None:
        print(self.line(final), file=self.out, flush=True)


def _fit(head: str, read: str, done: list[tuple[str, str]], tail: list[str]) -> str:
    """``head: read | stage count | ... | tail``, under ``_LINE`` characters if it can:
    leaves out stages from the middle (one "..." for them), keeping the first and the
    last, then shortens the names of those left."""
    def join(width: int | None = None) -> str:
        parts = [f"{name if width is None else _clip(name, width)} {count}"
                 for name, count in done]
        if gap is not None:
            parts.insert(gap, "...")
        return f"{head}: " + " | ".join([read, *parts, *tail])

    gap: int | None = None
    text = join()
    while len(text) > _LINE and len(done) > 2:
        gap = len(done) // 2 if gap is None else min(gap, len(done) - 2)
        del done[gap]
        text = join()
    return text if len(text) <= _LINE else join(_NAME)


def _clip(name: str, width: int) -> str:
    """*name* in *width* characters: its start and its end (where names of similar
    stages differ, as "map(f)#2" from "map(f)#3"), "~" for what is left out."""
    if len(name) <= width:
        return name
    end = (width - 1) // 2
    return f"{name[:width - 1 - end]}~{name[-end:]}"


def _isatty(out: TextIO) -> bool:
    try:
        return out.isatty()
    except (AttributeError, ValueError):
        return False
