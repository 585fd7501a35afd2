"""``workpool run`` against ``xargs -P`` and GNU parallel: 1,000 ``true`` jobs, ``-j 2``.

Each contender is a whole command, timed from its start to its exit (interpreter
start-up included), reading the 1,000 arguments on standard input::

    seq 1000 | xargs -P 2 -n 1 true
    seq 1000 | python -m workpool run -j 2 true
    seq 1000 | parallel --will-cite -j 2 true

Targets (DESIGN.md): at most 2x the wall time of ``xargs -P 2`` (a ratio >= 0.5) and
at least 5x faster than GNU parallel. GNU parallel is the Debian package ``parallel``
(``apt-get install -y parallel``); without it, its row says so and the rest runs.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path

import workpool

from .harness import Target, compare, scenario

JOBS = 1000
XARGS = "xargs -P 2"
OURS = "workpool run -j 2"
PARALLEL = "GNU parallel -j 2"


def _timed(argv: Sequence[str], stdin: bytes) -> Callable[[], float]:
    src = str(Path(workpool.__file__).resolve().parent.parent)
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(
        [src, *filter(None, [os.environ.get("PYTHONPATH")])])}

    def run() -> float:
        t0 = time.perf_counter()
        done = subprocess.run(argv, input=stdin, stdout=subprocess.DEVNULL,
                              stderr=subprocess.PIPE, env=env, check=False)
        seconds = time.perf_counter() - t0
        if done.returncode != 0:
            raise RuntimeError(f"{argv[0]} exited with {done.returncode}: "
                               f"{done.stderr.decode(errors='replace')[-200:]}")
        return seconds

    return run


def _missing(what: str) -> Callable[[], float]:
    def run() -> float:
        raise FileNotFoundError(f"{what} not installed (apt-get install -y parallel)")
    return run


@scenario
def true_jobs(quick: bool) -> dict[str, float]:
    """1,000 true jobs, -j 2: workpool run against xargs -P 2 and GNU parallel"""
    stdin = "".join(f"{i}\n" for i in range(JOBS)).encode()
    ours = _timed([sys.executable, "-m", "workpool", "run", "-j", "2", "true"], stdin)
    xargs = _timed(["xargs", "-P", "2", "-n", "1", "true"], stdin)
    parallel = (_timed(["parallel", "--will-cite", "-j", "2", "true"], stdin)
                if shutil.which("parallel") else _missing("GNU parallel"))
    result = compare(
        [(XARGS, xargs), (OURS, ours)], unit="s", baseline=XARGS,
        targets=[Target(OURS, ">=", 0.5)], title=f"{JOBS:,} true jobs: against xargs",
    )
    result |= compare(
        [(PARALLEL, parallel), (OURS, ours)], unit="s", baseline=PARALLEL,
        targets=[Target(OURS, ">=", 5)], title=f"{JOBS:,} true jobs: against GNU parallel",
    )
    return result
