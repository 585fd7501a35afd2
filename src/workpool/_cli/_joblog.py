"""The joblog of ``workpool run``, in GNU parallel's exact format, and resuming from it.

One tab-separated line per finished job, after a header::

    Seq  Host  Starttime       JobRuntime  Send  Receive  Exitval  Signal  Command
    1    :     1796547142.039       0.002  0     2        0        0       echo a

``Starttime`` is epoch seconds with 3 decimals, ``JobRuntime`` seconds right-aligned in
10 columns, ``Receive`` the bytes the job wrote to standard output; ``Exitval`` is -1
for a job stopped by ``--timeout``. Existing tooling for GNU parallel's joblog reads it.

``Resume`` reads a joblog back for ``--resume`` (skip every job it has) and
``--resume-failed`` (skip only the jobs that succeeded). Unlike GNU parallel, which
matches sequence numbers only, a job is matched by its command, so input given in
another order still resumes correctly. A file that is not a joblog raises
``JoblogError`` naming the line: nothing is rerun on a guess. Imports only the standard
library.
"""

from __future__ import annotations

from collections import Counter
from pathlib import Path
from typing import IO

__all__ = ["HEADER", "Joblog", "JoblogError", "Resume", "line"]

HEADER = "Seq\tHost\tStarttime\tJobRuntime\tSend\tReceive\tExitval\tSignal\tCommand"


class JoblogError(ValueError):
    """A joblog that cannot be read or written: the message names the file and line."""


def line(seq: int, start: float, runtime: float, receive: int, exitval: int,
         signal: int, command: str) -> str:
    """One job's joblog line, without its newline.

    Example::

        >>> line(1, 1796547142.0391, 0.0024, 2, 0, 0, "echo a")
        '1\\t:\\t1796547142.039\\t     0.002\\t0\\t2\\t0\\t0\\techo a'
    """
    return f"{seq}\t:\t{start:.3f}\t{runtime:10.3f}\t0\t{receive}\t{exitval}\t{signal}\t{command}"


class Joblog:
    """An open joblog: a new one (header first), or one appended to when resuming.

    Each line is written whole and flushed, so a joblog cut short by a crash holds
    every job that finished before it.
    """

    def __init__(self, path: Path, *, append: bool) -> None:
        try:
            fresh = not append or not path.exists() or path.stat().st_size == 0
            self._file: IO[str] = path.open("a" if append else "w", encoding="utf-8",
                                            errors="surrogateescape", newline="\n")
        except OSError as exc:
            raise JoblogError(f"cannot write the joblog {path}: {exc.strerror}") from None
        if fresh:
            self._file.write(HEADER + "\n")
            self._file.flush()

    def write(self, text: str) -> None:
        """Append the line *text* (from ``line``)."""
        self._file.write(text + "\n")
        self._file.flush()

    def close(self) -> None:
        """Close the file."""
        self._file.close()


class Resume:
    """What a joblog says is done: ``skip(command)`` answers for each new job.

    With *failed_too* False (``--resume-failed``), only jobs that succeeded (exit value
    0, no signal) count as done; failed ones run again. A command logged twice is
    skipped twice: each logged run accounts for one job.

    Raises:
        JoblogError: the file cannot be read, or a line is not a joblog line.
    """

    def __init__(self, path: Path, *, failed_too: bool) -> None:
        self._done: Counter[str] = Counter()
        try:
            text = path.read_text(encoding="utf-8", errors="surrogateescape")
        except FileNotFoundError:
            return  # nothing ran yet: everything runs
        except OSError as exc:
            raise JoblogError(f"cannot read the joblog {path}: {exc.strerror}") from None
        lines = text.split("\n")
        if lines[-1] == "":
            lines.pop()
        if lines and lines[0] != HEADER:
            raise JoblogError(f"{path}:1: not a joblog: the first line must be the "
                              f"header {HEADER!r}")
        for number, text_line in enumerate(lines[1:], start=2):
            fields = text_line.split("\t", 8)
            try:
                if len(fields) != 9:
                    raise ValueError
                int(fields[0]), float(fields[2]), float(fields[3])
                exitval, signal = int(fields[6]), int(fields[7])
            except ValueError:
                raise JoblogError(f"{path}:{number}: not a joblog line (9 tab-separated "
                                  f"fields: {HEADER.replace(chr(9), ' ')}): "
                                  f"{text_line[:80]!r}") from None
            if failed_too or (exitval == 0 and signal == 0):
                self._done[fields[8]] += 1

    def skip(self, *commands: str) -> bool:
        """Whether the job is done already (and counts it as seen): it ran as one of
        *commands* (one per job slot it may have run in, when the command has ``{%}``)."""
        for command in commands:
            if self._done[command] > 0:
                self._done[command] -= 1
                return True
        return False
