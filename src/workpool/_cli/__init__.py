"""The ``workpool`` command line (``workpool ...`` or ``python -m workpool ...``).

One subcommand is one small module, ``_cli/_<name>.py``, with two functions::

    def register(commands: Subcommands) -> None:   # add its parser; set_defaults(handler=run)
    def run(args: argparse.Namespace) -> int:       # do the work, return the exit status

and a line in ``SUBCOMMANDS`` below. Parsing needs only the standard library; modules
import what they need inside ``run``, so ``workpool --help`` stays fast and rich (the
``cli`` extra) is only ever needed to draw output (``_output`` falls back to plain text).
``workpool NAME ...`` registers subcommand NAME alone: it imports no other's module.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Sequence
from typing import TYPE_CHECKING, TypeAlias

if TYPE_CHECKING:
    Subcommands: TypeAlias = "argparse._SubParsersAction[argparse.ArgumentParser]"

__all__ = ["SUBCOMMANDS", "build_parser", "main"]

#: Subcommand modules, in the order ``--help`` lists them.
SUBCOMMANDS: tuple[str, ...] = ("bench", "demo", "run", "tune")


def build_parser(only: str | None = None) -> argparse.ArgumentParser:
    """The ``workpool`` parser with every subcommand registered, or only the one named
    *only* when it names one."""
    from .. import __version__

    parser = argparse.ArgumentParser(
        prog="workpool",
        description="Bounded concurrent work: worker pools, task groups and pipelines.",
    )
    parser.add_argument("--version", action="version", version=f"workpool {__version__}")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for name in (only,) if only in SUBCOMMANDS else SUBCOMMANDS:
        module = importlib.import_module(f"{__name__}._{name}")
        module.register(commands)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run the ``workpool`` command; return its exit status (2 for a usage error)."""
    words = sys.argv[1:] if argv is None else argv
    parser = build_parser(words[0] if words else None)
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:  # --help, --version and usage errors end here
        return _status(exc.code)
    try:
        return int(args.handler(args))
    except KeyboardInterrupt:
        print("workpool: interrupted", file=sys.stderr)
        return 130


def _status(code: object) -> int:
    if code is None:
        return 0
    if isinstance(code, int):
        return code
    print(code, file=sys.stderr)
    return 1
