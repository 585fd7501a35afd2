"""What ``map(..., progress=...)`` shows: a live bar, plain lines, or a user's callable.

- ``progress=True`` in a terminal, with rich installed (the ``cli`` extra): a bar with
  the count, the rate and the time left (the total when the input has a length),
  redrawn ten times a second on standard error by a thread of its own, and left on the
  screen at the end::

      map(resize) ━━━━━━━━━━━━━━━━━━━━━━━━━━╺━━━━━━━━━━━  7,232/10,000  2,391/s  eta 0:00:01

- ``progress=True`` otherwise (a pipe, a log, no rich, or ``WORKPOOL_PLAIN`` set): one
  short line on standard error every two seconds, and a last one at the end::

      map(resize): 4,781/10,000 (48%) | 2,390/s | eta 2.2 s
      map(resize): 10,000/10,000 (100%) | 2,388/s | 4.2 s, finished

- ``progress=callable``: called with ``wp.ProgressCounts`` in the thread iterating the
  map, at most ten times a second as results come out, and once more at the end
  (``finished=True``).

The counting is ``_core/progress.py``; a map advances it once per chunk it hands out
(an async map: once per chunk its consumer takes), so the cost is per chunk, not per
item.
May import ``_core`` (rich only lazily, when a bar is drawn).
"""

from __future__ import annotations

import contextlib
import importlib.util
import os
import sys
import threading
import time
from collections.abc import Callable
from typing import Any, Final, Protocol, TextIO

from .._core.progress import (
    ProgressArg,
    ProgressCounts,
    ProgressState,
)

__all__ = ["Tracker", "make_tracker", "plain_line"]

_FRAME: Final = 0.1  # seconds between frames of the bar, and between a callable's calls
_LINE: Final = 2.0  # seconds between plain lines

# One rich bar at a time: two would redraw over each other (a map inside a map, maps
# in two threads); the others draw plain lines.
_live_lock = threading.Lock()
_live_bar: Bar | None = None


class Tracker(Protocol):
    """What a map drives: ``start`` at its first result, ``advance`` per chunk (or
    item, straight into ``state``), ``stop`` once, at its end."""

    state: ProgressState

    def start(self) -> None: ...

    def advance(self, done: int, failed: int = 0) -> None: ...

    def stop(self) -> None: ...


def make_tracker(progress: ProgressArg, total: int | None, label: str,
                 out: TextIO | None = None) -> Tracker | None:
    """The tracker for a ``progress=`` argument (None for False): a ``Bar`` drawn on
    *out* (standard error by default), or a ``Callback``."""
    if progress is False:
        return None
    if progress is True:
        return Bar(ProgressState(total), label, out)
    return Callback(ProgressState(total), progress)


class Callback:
    """Hands the counts to a user's callable: at most every ``_FRAME`` seconds as items
    come out, in the thread that iterates, and once at the end."""

    __slots__ = ("_fn", "_next", "_stopped", "state")

    def __init__(self, state: ProgressState, fn: Callable[[ProgressCounts], object]) -> None:
        self.state = state
        self._fn = fn
        self._next = 0.0
        self._stopped = False

    def start(self) -> None:
        """Nothing to start: calls happen as items come out."""

    def advance(self, done: int, failed: int = 0) -> None:
        """Count, and call the callable if it was not called in the last ``_FRAME``."""
        state = self.state
        state.done += done
        state.failed += failed
        self.poll()

    def poll(self) -> None:
        """Call the callable if it was not called in the last ``_FRAME``."""
        now = time.monotonic()
        if now >= self._next:
            self._next = now + _FRAME
            self._fn(self.state.counts())

    def stop(self) -> None:
        """The last call, with ``finished=True`` (once)."""
        if not self._stopped:
            self._stopped = True
            self._fn(self.state.counts(finished=True))


class Bar:
    """Draws the counts from a thread of its own: rich's bar in a terminal, plain lines
    otherwise (see the module docstring); the last frame is drawn by ``stop()``."""

    def __init__(self, state: ProgressState, label: str, out: TextIO | None = None,
                 interval: float | None = None) -> None:
        self.state = state
        self.label = label
        self.out = out
        self.interval = interval
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._rich: Any = None  # rich's Progress, while it is drawn
        self._task: Any = None

    def advance(self, done: int, failed: int = 0) -> None:
        """Count (the drawing thread reads the counts)."""
        state = self.state
        state.done += done
        state.failed += failed

    def start(self) -> None:
        """Start drawing (once)."""
        if self._thread is not None:
            return
        out = sys.stderr if self.out is None else self.out
        self.out = out
        if _use_rich(out):
            self._start_rich(out)
        interval = self.interval or (_FRAME if self._rich is not None else _LINE)
        self._thread = threading.Thread(target=self._main, args=(interval,),
                                        name=f"workpool-progress {self.label}", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        """Draw the final frame and stop drawing (once)."""
        thread = self._thread
        if thread is None or self._stop.is_set():
            return
        self._stop.set()
        if thread is not threading.current_thread():
            thread.join()
        counts = self.state.counts(finished=True)
        if self._rich is not None:
            self._stop_rich(counts)
        else:
            self._print(plain_line(self.label, counts))

    def _main(self, interval: float) -> None:
        while not self._stop.wait(interval):
            counts = self.state.counts()
            if self._rich is not None:
                self._update(counts)
            else:
                self._print(plain_line(self.label, counts))

    def _start_rich(self, out: TextIO) -> None:
        global _live_bar
        from rich.console import Console
        from rich.progress import BarColumn, Progress, TextColumn

        with _live_lock:
            if _live_bar is not None:
                return  # another bar is drawn: plain lines
            _live_bar = self
        # While the bar is drawn, what the program prints on the same terminal goes
        # above it; printed into a file or a pipe, it stays there.
        progress = Progress(
            TextColumn("{task.description}"), BarColumn(), TextColumn("{task.fields[count]}"),
            TextColumn("{task.fields[rate]}"), TextColumn("{task.fields[eta]}"),
            console=Console(file=out, highlight=False), auto_refresh=False,
            redirect_stdout=_isatty(sys.stdout), redirect_stderr=out is sys.stderr)
        self._task = progress.add_task(self.label, total=self.state.total, count="",
                                       rate="", eta="")
        progress.start()
        self._rich = progress

    def _stop_rich(self, counts: ProgressCounts) -> None:
        global _live_bar
        self._update(counts)
        self._rich.stop()
        self._rich = None
        with _live_lock:
            _live_bar = None

    def _update(self, counts: ProgressCounts) -> None:
        count = (f"{counts.done:,}" if counts.total is None
                 else f"{counts.done:,}/{counts.total:,}")
        if counts.failed:
            count += f" [red]{counts.failed:,} failed[/red]"
        if counts.finished:
            when = f"in {_clock(counts.elapsed)}"
        else:
            when = "eta -:--:--" if counts.eta is None else f"eta {_clock(counts.eta)}"
        self._rich.update(self._task, completed=counts.done, count=count,
                          rate=f"{counts.rate:,.0f}/s", eta=when)
        self._rich.refresh()

    def _print(self, line: str) -> None:
        out = self.out
        assert out is not None
        with contextlib.suppress(OSError, ValueError):  # a stream closed under us
            print(line, file=out, flush=True)


def plain_line(label: str, counts: ProgressCounts) -> str:
    """One short line of *counts*, such as
    ``map(f): 4,781/10,000 (48%) | 2,390/s | eta 2.2 s`` (the last one ends with the
    seconds taken and ``finished`` instead of the time left)."""
    if counts.total is None:
        parts = [f"{label}: {counts.done:,}"]
    else:
        fraction = counts.fraction
        assert fraction is not None
        parts = [f"{label}: {counts.done:,}/{counts.total:,} ({fraction:.0%})"]
    if counts.failed:
        parts.append(f"{counts.failed:,} failed")
    parts.append(f"{counts.rate:,.0f}/s")
    if counts.finished:
        parts.append(f"{counts.elapsed:.1f} s, finished")
    elif counts.eta is not None:
        parts.append(f"eta {counts.eta:.1f} s")
    return " | ".join(parts)


def _clock(seconds: float) -> str:
    whole = int(seconds + 0.5)
    return f"{whole // 3600}:{whole // 60 % 60:02d}:{whole % 60:02d}"


def _use_rich(out: TextIO) -> bool:
    if os.environ.get("WORKPOOL_PLAIN") or importlib.util.find_spec("rich") is None:
        return False
    return _isatty(out)


def _isatty(out: TextIO) -> bool:
    try:
        return out.isatty()
    except (AttributeError, ValueError):
        return False
