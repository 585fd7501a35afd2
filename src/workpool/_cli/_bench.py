"""``workpool bench``: the benchmark suite, workpool against the stdlib and its peers.

The suite ships with the package (``workpool._bench``), so it runs from an installed
wheel as from a checkout; the peers it measures come with the ``bench`` extra. This
module parses the options and hands over to ``_bench/report.py``.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import TYPE_CHECKING

from ._output import fail, positive_int

if TYPE_CHECKING:
    from . import Subcommands

__all__ = ["register", "run"]


def register(commands: Subcommands) -> None:
    """Add the ``bench`` subcommand."""
    parser = commands.add_parser(
        "bench",
        help="run the benchmark suite (workpool against the stdlib and peers)",
        description=(
            "Run the benchmark suite: every contender of a scenario is measured in turn, "
            "interleaved, on this interpreter; each row shows the median of the repeats "
            "and its ratio against the scenario's baseline, and each target PASS or FAIL. "
            "The peers measured come with the bench extra: pip install 'workpool[bench]'."
        ),
    )
    parser.add_argument(
        "--quick", action="store_true",
        help="smaller sizes and 3 repeats: about a minute (the full run: a few minutes)",
    )
    parser.add_argument("--json", metavar="FILE", type=Path, help="also write every number to FILE")
    parser.add_argument(
        "--only", metavar="SUBSTRING", action="append", default=[],
        help="run only scenarios whose name (topic.scenario) contains SUBSTRING; repeatable",
    )
    parser.add_argument(
        "--repeats", metavar="N", type=positive_int,
        help="measurements per contender (default: 5, or 3 with --quick)",
    )
    parser.add_argument("--list", action="store_true", help="list the scenarios and exit")
    parser.add_argument(
        "--suite", metavar="DIR", type=Path,
        help="run the bench_*.py modules of DIR instead of the built-in suite",
    )
    parser.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    """Run the suite as *args* asks; 0 when every scenario ran, 1 if one raised."""
    if args.suite is not None and not args.suite.is_dir():
        return fail("bench", f"--suite {args.suite} is not a folder")
    from .._bench import report

    return report.main(
        quick=args.quick, json_path=args.json, only=args.only, repeats=args.repeats,
        suite=args.suite, list_only=args.list,
    )
