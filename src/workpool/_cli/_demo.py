"""``workpool demo``: a multi-stage pipeline over an embedded local HTTP server into SQLite.

The job itself is ``workpool._demo``; this module parses the options, runs it with the
live view, and prints the report and a summary.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import TYPE_CHECKING

from ._output import echo, fail, positive_int

if TYPE_CHECKING:
    from . import Subcommands

__all__ = ["register", "run"]

_DEFAULT_DB = "workpool-demo.sqlite"


def register(commands: Subcommands) -> None:
    """Add the ``demo`` subcommand."""
    parser = commands.add_parser(
        "demo",
        help="run a demo pipeline: local HTTP server -> fetch -> parse -> SQLite",
        description=(
            "Serve generated pages on 127.0.0.1 (some slow, some answering 503 at random) "
            "and run fetch (threads, rate limit, retry with backoff) -> parse (processes) "
            "-> batch -> write (one SQLite writer, exactly-once) over them, with a live "
            "per-stage view and a report at the end. Interrupt it with Ctrl-C and finish "
            "with --resume: pages already written are skipped."
        ),
    )
    parser.add_argument("--pages", metavar="N", type=positive_int, default=3000,
                        help="pages to serve and process (default: 3000)")
    parser.add_argument("--rate", metavar="PER_SECOND", type=_positive_float, default=250.0,
                        help="fetch requests per second at most (default: 250)")
    parser.add_argument("--db", metavar="FILE", type=Path, default=Path(_DEFAULT_DB),
                        help=f"the SQLite database for pages and journal (default: {_DEFAULT_DB})")
    parser.add_argument("--resume", action="store_true",
                        help="keep the database and skip the pages it already has")
    parser.add_argument("--seed", metavar="N", type=int, default=1,
                        help="seed of the generated pages and 503s (default: 1)")
    parser.add_argument("--no-progress", action="store_true", help="no live view")
    parser.add_argument("--metrics", metavar="PORT", type=_port, default=None,
                        help="serve the stages' Prometheus metrics at "
                             "http://127.0.0.1:PORT/metrics while it runs (0: a free port; "
                             "needs the prometheus extra)")
    parser.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    """Run the demo; 0 when every page was stored, 1 when some are missing, 2 when the
    database cannot be opened (one line on standard error), 130 on Ctrl-C."""
    from .._demo import DatabaseError, prepare, run_demo

    try:
        prepare(args.db, args.resume)  # before the banner: a bad --db is a usage error
    except DatabaseError as exc:
        return fail("demo", str(exc))
    served = None  # the metrics server and its thread
    if args.metrics is not None:
        try:
            from ..exporters import prometheus
        except ImportError:
            return fail("demo", "--metrics needs prometheus-client: "
                                "pip install 'workpool[prometheus]'")
        try:
            served = prometheus.start_http_server(args.metrics)
        except OSError as exc:
            return fail("demo", f"cannot serve metrics on 127.0.0.1:{args.metrics}: "
                                f"{exc.strerror or exc}")
    echo(f"workpool demo: {args.pages:,} pages from a local server, fetch -> parse -> "
         f"batch -> write into {args.db}{' (resuming)' if args.resume else ''}", style="bold")
    if served is not None:
        echo(f"metrics: http://127.0.0.1:{served[0].server_port}/metrics "
             "(stages demo/fetch and demo/parse)")
    try:
        result = run_demo(pages=args.pages, rate=args.rate, db=args.db, resume=args.resume,
                          seed=args.seed, progress=not args.no_progress,
                          metrics=served is not None)
    except KeyboardInterrupt:
        print(f"\nworkpool demo: interrupted; what was written stays in {args.db}. "
              f"Finish with: workpool demo --resume --db {args.db}", file=sys.stderr)
        return 130
    finally:
        if served is not None:
            server, thread = served
            server.shutdown()
            server.server_close()
            thread.join()
    report = result.report
    echo()
    echo(str(report))
    echo()
    neck = report.bottleneck
    echo(f"{result.stored:,} of {args.pages:,} pages in {args.db} "
         f"({report.resumed:,} already there); the server answered {result.requests:,} "
         f"requests, {result.unavailable:,} of them 503 (retried), {result.slow:,} slowly"
         + (f"; bottleneck: {neck.name}" if neck is not None else ""))
    if result.stored != args.pages:
        echo(f"workpool demo: {args.pages - result.stored:,} pages missing", style="red")
        return 1
    return 0


def _port(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be a port number, got {text!r}") from None
    if not 0 <= value <= 65535:
        raise argparse.ArgumentTypeError(f"must be a port in 0..65535, got {value}")
    return value


def _positive_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be a number > 0, got {text!r}") from None
    if not value > 0:
        raise argparse.ArgumentTypeError(f"must be a number > 0, got {value}")
    return value
