"""``workpool bench``: the benchmark suite, workpool against the stdlib and its peers.

The suite is the ``bench/`` folder of a source checkout, next to ``src/``; it is not
part of the installed package. This module finds it and hands over to
``bench/report.py``.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from pathlib import Path
from typing import TYPE_CHECKING

from ._output import positive_int

if TYPE_CHECKING:
    from . import Subcommands

__all__ = ["find_suite", "register", "run"]

_NO_SUITE = (
    "workpool bench: the benchmark suite runs from a source checkout of workpool "
    "(installed with `pip install -e .`); no bench/ folder next to src/ was found "
    "(looked for {path})."
)


def register(commands: Subcommands) -> None:
    """Add the ``bench`` subcommand."""
    parser = commands.add_parser(
        "bench",
        help="run the benchmark suite (workpool against the stdlib and peers)",
        description=(
            "Run the benchmark suite: every contender of a scenario is measured in turn, "
            "interleaved, on this interpreter; each row shows the median of the repeats "
            "and its ratio against the scenario's baseline, and each target PASS or FAIL."
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
        help="run the bench_*.py modules of DIR instead of the checkout's bench/",
    )
    parser.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    """Run the suite as *args* asks; 0 when every scenario ran, 1 if one raised."""
    bench_dir = find_suite()
    if bench_dir is None:
        print(_NO_SUITE.format(path=_expected_dir()), file=sys.stderr)
        return 2
    if args.suite is not None and not args.suite.is_dir():
        print(f"workpool bench: --suite {args.suite} is not a folder", file=sys.stderr)
        return 2
    root = str(bench_dir.parent)
    if root not in sys.path:
        sys.path.insert(0, root)
    report = importlib.import_module("bench.report")
    return int(
        report.main(
            quick=args.quick, json_path=args.json, only=args.only, repeats=args.repeats,
            suite=args.suite, list_only=args.list,
        )
    )


def find_suite() -> Path | None:
    """The checkout's ``bench/`` folder, or None when workpool is not run from one."""
    path = _expected_dir()
    return path if (path / "harness.py").is_file() else None


def _expected_dir() -> Path:
    import workpool

    # src/workpool/__init__.py -> parents[2] is the checkout (an editable install).
    return Path(workpool.__file__).resolve().parents[2] / "bench"


