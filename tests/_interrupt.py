"""Run a script in a fresh interpreter and press Ctrl-C once it says it is ready."""

from __future__ import annotations

import select
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path
from typing import NamedTuple


class Interrupted(NamedTuple):
    ready: str  # the first line the script printed
    returncode: int
    out: str  # what it printed after that line
    err: str
    seconds: float  # from the SIGINT to the script's exit


def interrupt_when_ready(tmp_path: Path, source: str) -> Interrupted:
    """Run *source* (dedented) as a script; send SIGINT after its first line of output.
    Every wait is bounded (30 s); the process is killed if it is still there."""
    script = tmp_path / "ctrl_c.py"
    script.write_text(textwrap.dedent(source))
    proc = subprocess.Popen([sys.executable, str(script)], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    try:
        assert proc.stdout is not None
        readable, _, _ = select.select([proc.stdout], [], [], 30)
        assert readable, "the script never printed its first line"
        ready = proc.stdout.readline()
        sent = time.monotonic()
        proc.send_signal(signal.SIGINT)
        out, err = proc.communicate(timeout=30)
        seconds = time.monotonic() - sent
    finally:
        proc.kill()
        proc.communicate()  # closes the pipes
    return Interrupted(ready, proc.returncode, out, err, seconds)
