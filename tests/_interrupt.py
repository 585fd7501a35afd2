"""Run a script in a fresh interpreter and press Ctrl-C once it says it is ready."""

from __future__ import annotations

import contextlib
import os
import select
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path
from typing import NamedTuple

import psutil

_DEFAULT_SIGINT = "import signal; signal.signal(signal.SIGINT, signal.default_int_handler)\n"


class Interrupted(NamedTuple):
    ready: str  # the first line the script printed
    returncode: int
    out: str  # what it printed after that line
    err: str
    seconds: float  # from the SIGINT to the script's exit
    # With group=True: the processes of its group still alive a while after it exited.
    left: list[int]


def interrupt_when_ready(tmp_path: Path, source: str, *, group: bool = False,
                         within: float = 30) -> Interrupted:
    """Run *source* (dedented) as a script; send SIGINT after its first line of output:
    to the script alone, or with *group* to its whole process group (a session of its
    own: its children too), as a terminal's Ctrl-C does.

    Every wait is bounded: 30 s for the first line, *within* for the exit, 5 s for the
    group's other processes to leave. Then whatever is left is killed (with *group*,
    the whole group: a child left behind would hold the pipes open) and the pipes are
    closed, so a script that does not stop fails its test instead of hanging it."""
    script = tmp_path / "ctrl_c.py"
    # Ctrl-C as from a terminal, whatever the test runner ignores: a runner started in
    # the background of a non-interactive shell ignores SIGINT, and so, inherited,
    # would the script.
    script.write_text(_DEFAULT_SIGINT + textwrap.dedent(source))
    proc = subprocess.Popen([sys.executable, str(script)], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, start_new_session=group)
    left: list[int] = []
    try:
        assert proc.stdout is not None
        readable, _, _ = select.select([proc.stdout], [], [], 30)
        assert readable, "the script never printed its first line"
        ready = proc.stdout.readline()
        sent = time.monotonic()
        if group:
            os.killpg(proc.pid, signal.SIGINT)
        else:
            proc.send_signal(signal.SIGINT)
        out, err = proc.communicate(timeout=within)
        seconds = time.monotonic() - sent
        if group:
            deadline = time.monotonic() + 5
            while (left := group_members(proc.pid)) and time.monotonic() < deadline:
                time.sleep(0.05)
    finally:
        _end(proc, group)
    return Interrupted(ready, proc.returncode, out, err, seconds, left)


def group_members(pgid: int) -> list[int]:
    """The processes of the process group *pgid* that are alive (not zombies)."""
    found = []
    for process in psutil.process_iter(["status"]):
        with contextlib.suppress(OSError, psutil.Error):  # it just left
            if (os.getpgid(process.pid) == pgid
                    and process.info["status"] != psutil.STATUS_ZOMBIE):
                found.append(process.pid)
    return found


def _end(proc: subprocess.Popen[str], group: bool) -> None:
    """Kill what is left of the script (its group, with *group*); close the pipes."""
    with contextlib.suppress(ProcessLookupError):
        if group:
            os.killpg(proc.pid, signal.SIGKILL)
        else:
            proc.kill()
    try:
        proc.communicate(timeout=10)
    except subprocess.TimeoutExpired:  # a process out of reach holds the pipes open
        for pipe in (proc.stdout, proc.stderr):
            if pipe is not None:
                pipe.close()
        proc.wait(10)
