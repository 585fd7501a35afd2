"""``workpool tune``: throughput against worker count, and the knee.

::

    workpool tune mymod:fetch --input urls.txt            # a function, on threads
    workpool tune mymod:resize --kind process --input files.txt
    workpool tune --command 'curl -s {} > /dev/null' --input urls.txt

The work (a function applied to each line of ``--input``, or a command run per line)
runs at worker counts growing by about 1.5x (1, 2, 3, 5, 8, 12, 18, ...). A first run
over a tenth of the input is a warm-up and is discarded; each point is then repeated
until the 95% confidence interval of its throughput is within ``--tolerance`` of the
mean (at least 3 runs, at most ``--rounds``). The search stops at ``--max-workers``, or
once two points in a row fall below 95% of the best so far. The knee is the smallest
count whose throughput is within 95% of the peak: more workers than that buy little. A
table reports every point, and a PNG plot (matplotlib, from the ``cli`` extra) shows
throughput and p95 latency against workers. May import the public ``workpool`` API,
``_output`` and ``_template``.
"""

from __future__ import annotations

import argparse
import asyncio
import importlib
import inspect
import math
import os
import statistics
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ._output import Column, Table, echo, fail, positive_int

if TYPE_CHECKING:
    from . import Subcommands

__all__ = ["Point", "counts", "knee", "register", "run", "tight"]

#: A point is within this share of the peak throughput to count as the knee.
KNEE = 0.95
#: Two-sided 95% Student t quantiles by degrees of freedom (runs - 1); 1.96 beyond.
_T95 = {1: 12.71, 2: 4.30, 3: 3.18, 4: 2.78, 5: 2.57, 6: 2.45, 7: 2.36, 8: 2.31, 9: 2.26,
        10: 2.23, 14: 2.14, 19: 2.09, 29: 2.05}

# One measurement: (seconds for all items, each item's latency in seconds).
Measure = Callable[[int, Sequence[str]], tuple[float, list[float]]]


@dataclass(slots=True)
class Point:
    """One worker count: the throughput of each run (items/s) and every latency."""

    workers: int
    throughputs: list[float] = field(default_factory=list)
    latencies: list[float] = field(default_factory=list)

    @property
    def throughput(self) -> float:
        """The mean throughput of the runs."""
        return statistics.fmean(self.throughputs)

    @property
    def half_width(self) -> float:
        """The half-width of the throughput's 95% confidence interval."""
        n = len(self.throughputs)
        if n < 2:
            return math.inf
        t = next((v for df, v in sorted(_T95.items()) if df >= n - 1), 1.96)
        return t * statistics.stdev(self.throughputs) / math.sqrt(n)

    @property
    def p95(self) -> float:
        """The 95th percentile of the items' latencies, in seconds."""
        return statistics.quantiles(self.latencies, n=20)[-1] if len(self.latencies) > 1 \
            else self.latencies[0]


def counts(maximum: int) -> list[int]:
    """Worker counts from 1 to *maximum*, each about 1.5x the last.

    Example::

        >>> counts(20)
        [1, 2, 3, 5, 8, 12, 18, 20]
    """
    out = [1]
    while out[-1] < maximum:
        out.append(min(maximum, max(out[-1] + 1, math.ceil(out[-1] * 1.5))))
    return out


def tight(point: Point, tolerance: float) -> bool:
    """Whether *point*'s 95% confidence interval is within *tolerance* of its mean."""
    return len(point.throughputs) >= 3 and point.half_width <= tolerance * point.throughput


def knee(points: Sequence[Point]) -> Point:
    """The point with the fewest workers whose throughput is within 95% of the peak."""
    peak = max(p.throughput for p in points)
    return min((p for p in points if p.throughput >= KNEE * peak), key=lambda p: p.workers)


def register(commands: Subcommands) -> None:
    """Add the ``tune`` subcommand."""
    parser = commands.add_parser(
        "tune", help="find the worker count past which more workers buy little (the knee)",
        description=(
            "Run the work (a function applied to each line of --input, or a command run "
            "per line) at worker counts growing by about 1.5x, discard a warm-up, repeat "
            "each point until its 95% confidence interval is tight, and report the knee: "
            "the fewest workers within 95% of the peak throughput. Writes a PNG plot of "
            "throughput and p95 latency against workers (matplotlib, from the cli extra)."
        ),
        usage="workpool tune (MODULE:FUNCTION | --command 'CMD {}') --input FILE [options]",
    )
    parser.add_argument("target", nargs="?", metavar="MODULE:FUNCTION",
                        help="the function to call with each input line (a str)")
    parser.add_argument("--command", metavar="CMD",
                        help="a shell command run per input line instead ({} is the line, "
                             "quoted, as with workpool run)")
    parser.add_argument("--input", metavar="FILE", type=Path, required=True,
                        help="the work: one argument per line")
    parser.add_argument("--kind", choices=("thread", "process", "async"), default="thread",
                        help="the pool that runs the function (default: thread); async "
                             "needs an async def function")
    parser.add_argument("--max-workers", metavar="N", type=positive_int, default=64,
                        help="the largest worker count tried (default: 64)")
    parser.add_argument("--rounds", metavar="N", type=positive_int, default=10,
                        help="the most runs per worker count (default: 10)")
    parser.add_argument("--tolerance", metavar="SHARE", type=float, default=0.05,
                        help="stop repeating a point once its 95%% confidence interval "
                             "is within SHARE of its mean (default: 0.05)")
    parser.add_argument("--plot", metavar="FILE", type=Path, default=Path("workpool-tune.png"),
                        help="where to write the plot (default: workpool-tune.png)")
    parser.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    """Run ``workpool tune``; 0 on success, 2 for a bad option, 1 if the work failed."""
    if (args.target is None) == (args.command is None):
        return fail("tune", "give either MODULE:FUNCTION or --command 'CMD {}', not both")
    if not 0 < args.tolerance < 1:
        return fail("tune", f"--tolerance must be between 0 and 1, got {args.tolerance}")
    try:
        items = args.input.read_text().splitlines()
    except OSError as exc:
        return fail("tune", f"cannot read --input {args.input}: {exc.strerror}")
    if not items:
        return fail("tune", f"--input {args.input} has no lines")
    try:
        measure, what = _measure(args)
    except ValueError as exc:
        return fail("tune", str(exc))
    echo(f"workpool tune: {what}, {len(items):,} items per run, up to {args.max_workers} "
         f"workers", style="bold")
    try:
        points = _search(measure, items, args.max_workers, args.rounds, args.tolerance)
    except Exception as exc:
        return fail("tune", f"the work failed: {type(exc).__name__}: {exc}", status=1)
    best = knee(points)
    _table(points, best).print()
    peak = max(points, key=lambda p: p.throughput)
    echo(f"knee: {_workers(best.workers)}, {best.throughput:,.1f} items/s "
         f"({best.throughput / peak.throughput:.0%} of the peak {peak.throughput:,.1f} "
         f"items/s at {_workers(peak.workers)})", style="bold green")
    echo(_plot(points, best, args.plot, what))
    return 0


def _search(measure: Measure, items: Sequence[str], maximum: int, rounds: int,
            tolerance: float) -> list[Point]:
    measure(1, items[:max(1, len(items) // 10)])  # warm-up (imports, caches): discarded
    points: list[Point] = []
    for n in counts(maximum):
        point = Point(n)
        while len(point.throughputs) < rounds and not tight(point, tolerance):
            seconds, latencies = measure(n, items)
            point.throughputs.append(len(items) / seconds)
            point.latencies += latencies
        points.append(point)
        peak = max(p.throughput for p in points)
        if len(points) >= 3 and all(p.throughput < KNEE * peak for p in points[-2:]):
            break  # past the knee for good
    return points


def _measure(args: argparse.Namespace) -> tuple[Measure, str]:
    """How to run the work once at n workers, and a description of it."""
    if args.command is not None:
        from ._template import Template

        template = Template(args.command)
        return (lambda n, items: _threads(_Command(template), n, items),
                f"command {args.command!r} on threads")
    fn = _load(args.target)
    if args.kind == "async":
        if not inspect.iscoroutinefunction(fn):
            raise ValueError(f"--kind async needs an async def function, {args.target} "
                             "is not one")
        return lambda n, items: _async(fn, n, items), f"{args.target} on an AsyncPool"
    if inspect.iscoroutinefunction(fn):
        raise ValueError(f"{args.target} is an async def function: use --kind async")
    if args.kind == "process":
        return lambda n, items: _processes(fn, n, items), f"{args.target} on a ProcessPool"
    return lambda n, items: _threads(_Timed(fn), n, items), f"{args.target} on a ThreadPool"


def _load(target: str) -> Callable[..., Any]:
    module_name, _, name = target.partition(":")
    if not module_name or not name:
        raise ValueError(f"the target must be MODULE:FUNCTION, got {target!r}")
    if "" not in sys.path and os.getcwd() not in sys.path:
        sys.path.insert(0, os.getcwd())  # a module next to the user, as python -m finds it
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        raise ValueError(f"cannot import {module_name}: {exc}") from None
    fn = getattr(module, name, None)
    if not callable(fn):
        raise ValueError(f"{module_name} has no function {name!r}")
    return fn  # type: ignore[no-any-return]


class _Timed:
    """Calls the function, returns its run time (a class: it pickles to processes)."""

    def __init__(self, fn: Callable[[str], object]) -> None:
        self.fn = fn

    def __call__(self, item: str) -> float:
        t0 = time.perf_counter()
        self.fn(item)
        return time.perf_counter() - t0


class _Command:
    """Runs the command for one line with ``sh -c``; returns its run time."""

    def __init__(self, template: Any) -> None:
        self.template = template

    def __call__(self, item: str) -> float:
        t0 = time.perf_counter()
        done = subprocess.run(["/bin/sh", "-c", self.template.expand([item], 1, 1)],
                              stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                              stderr=subprocess.PIPE, check=False)
        if done.returncode != 0:
            raise RuntimeError(f"the command exited with {done.returncode} for {item!r}: "
                               f"{done.stderr.decode(errors='replace').strip()[-200:]}")
        return time.perf_counter() - t0


def _threads(timed: Callable[[str], float], n: int, items: Sequence[str]) -> tuple[
        float, list[float]]:
    from .. import ThreadPool

    with ThreadPool(n) as pool:
        t0 = time.perf_counter()
        latencies = list(pool.map(timed, items, chunksize=1))
        return time.perf_counter() - t0, latencies


def _processes(fn: Callable[[str], object], n: int, items: Sequence[str]) -> tuple[
        float, list[float]]:
    from .. import ProcessPool

    with ProcessPool(n) as pool:
        list(pool.map(abs, range(n)))  # the workers start outside the timing
        t0 = time.perf_counter()
        latencies = list(pool.map(_Timed(fn), items))
        return time.perf_counter() - t0, latencies


def _async(fn: Callable[[str], Any], n: int, items: Sequence[str]) -> tuple[float, list[float]]:
    from .. import AsyncPool

    async def timed(item: str) -> float:
        t0 = time.perf_counter()
        await fn(item)
        return time.perf_counter() - t0

    async def main() -> tuple[float, list[float]]:
        async with AsyncPool(n) as pool:
            t0 = time.perf_counter()
            latencies = [x async for x in pool.map(timed, items)]
            return time.perf_counter() - t0, latencies

    return asyncio.run(main())


def _workers(n: int) -> str:
    return f"{n} worker{'s' if n != 1 else ''}"


def _table(points: Sequence[Point], best: Point) -> Table:
    table = Table("throughput against workers", [
        Column("workers", right=True), Column("items/s", right=True),
        Column("±95%", right=True), Column("p95 latency ms", right=True),
        Column("runs", right=True), Column(""),
    ], caption=f"the knee: the fewest workers within {KNEE:.0%} of the peak throughput")
    for p in points:
        table.add_row(str(p.workers), f"{p.throughput:,.1f}", f"{p.half_width:,.1f}",
                      f"{p.p95 * 1e3:,.2f}", str(len(p.throughputs)),
                      ("knee", "bold green") if p is best else "")
    return table


def _plot(points: Sequence[Point], best: Point, path: Path, what: str) -> str:
    """Write the plot to *path*; return the line that says where (or why not)."""
    try:
        import matplotlib
    except ImportError:
        return "plot skipped: matplotlib is not installed (pip install 'workpool[cli]')"
    matplotlib.use("Agg")  # files only: no display needed
    import matplotlib.pyplot as plt

    workers = [p.workers for p in points]
    fig, left = plt.subplots(figsize=(8, 4.5))
    try:
        left.errorbar(workers, [p.throughput for p in points],
                      yerr=[p.half_width for p in points], marker="o", color="tab:blue",
                      capsize=3, label="throughput")
        left.set_xscale("log", base=2)
        left.set_xticks(workers, [str(n) for n in workers])
        left.set_xlabel("workers")
        left.set_ylabel("throughput (items/s)", color="tab:blue")
        left.set_ylim(bottom=0)
        right = left.twinx()
        right.plot(workers, [p.p95 * 1e3 for p in points], marker="s", color="tab:red",
                   label="p95 latency")
        right.set_ylabel("p95 latency (ms)", color="tab:red")
        right.set_ylim(bottom=0)
        left.axvline(best.workers, color="tab:green", linestyle="--",
                     label=f"knee: {_workers(best.workers)}")
        handles = [h for ax in (left, right) for h in ax.get_legend_handles_labels()[0]]
        left.legend(handles=handles, loc="lower right")
        left.set_title(f"workpool tune: {what}")
        fig.tight_layout()
        fig.savefig(path, dpi=100)
    except OSError as exc:
        return f"plot not written: {path}: {exc.strerror}"
    finally:
        plt.close(fig)
    return f"plot: {path.resolve()}"

