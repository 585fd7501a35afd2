"""``workpool run --bar`` / ``--eta``: progress on standard error.

On a terminal with rich installed (the ``cli`` extra) it is a live bar; otherwise
(a pipe, a log file, ``WORKPOOL_PLAIN`` set) a plain line at most once a second and
one at the end, e.g.::

    workpool run: 600/1000 jobs done, 3 failed, 48.2 jobs/s, ETA 0:00:08

While the live bar is drawn, rich takes over ``sys.stdout`` and ``sys.stderr`` and
prints what is written there above the bar: jobs' output must be written through them
then (``_runner`` does). Imports rich only for the live bar.
"""

from __future__ import annotations

import sys
import time
from datetime import timedelta
from typing import TYPE_CHECKING

from ._output import use_rich

if TYPE_CHECKING:
    import rich.progress

__all__ = ["Progress"]

_PLAIN_EVERY = 1.0  # seconds between two plain lines


class Progress:
    """Counts finished jobs against *total* (None when the input's length is not
    known ahead) and shows them, with the estimated time left when the total is known."""

    def __init__(self, total: int | None) -> None:
        self._total = total
        self._t0 = time.monotonic()
        self._shown = 0.0
        self._done = 0
        self._failed = 0
        self._bar: rich.progress.Progress | None = None
        self._task: rich.progress.TaskID | None = None

    def start(self) -> None:
        """Start drawing: the live bar on a terminal with rich, else nothing yet."""
        if not (sys.stderr.isatty() and use_rich()):
            return
        from rich.console import Console
        from rich.progress import (
            BarColumn,
            MofNCompleteColumn,
            TaskProgressColumn,
            TextColumn,
            TimeElapsedColumn,
            TimeRemainingColumn,
        )
        from rich.progress import Progress as Bar

        self._bar = Bar(
            TextColumn("[bold]workpool run"), BarColumn(), MofNCompleteColumn(),
            TaskProgressColumn(), TextColumn("{task.fields[failed]}"),
            TimeElapsedColumn(), TextColumn("ETA"), TimeRemainingColumn(),
            console=Console(stderr=True), redirect_stdout=True, redirect_stderr=True,
        )
        self._task = self._bar.add_task("jobs", total=self._total, failed="")
        self._bar.start()

    @property
    def live(self) -> bool:
        """Whether the live bar is drawn (and rich stands in for stdout and stderr)."""
        return self._bar is not None

    def update(self, done: int, failed: int) -> None:
        """*done* jobs finished so far, *failed* of them failed."""
        self._done, self._failed = done, failed
        if self._bar is not None:
            assert self._task is not None
            self._bar.update(self._task, completed=done,
                             failed=f"[red]{failed} failed" if failed else "")
            return
        now = time.monotonic()
        if now - self._shown >= _PLAIN_EVERY:
            self._shown = now
            self._plain_line(now)

    def stop(self) -> None:
        """Stop drawing, leaving the final state on screen."""
        if self._bar is not None:
            self._bar.stop()
            self._bar = None
        else:
            self._plain_line(time.monotonic())

    def _plain_line(self, now: float) -> None:
        elapsed = now - self._t0
        rate = self._done / elapsed if elapsed > 0 else 0.0
        of = "" if self._total is None else f"/{self._total}"
        text = f"workpool run: {self._done}{of} jobs done, {self._failed} failed, {rate:.1f} jobs/s"
        if self._total is not None and rate > 0:
            left = max(0, self._total - self._done) / rate
            text += f", ETA {timedelta(seconds=round(left))}"
        print(text, file=sys.stderr, flush=True)
