"""Running one ``workpool run`` job: spawn ``sh -c COMMAND``, wait, capture, stop.

``Jobs`` is the function the pool's workers call, one job per call::

    worker thread: Jobs(job) ─> take a slot ─> sh -c COMMAND (own process group)
                                   │             stdout, stderr -> the slot's two files
                                   │             (or pipes, streamed by --line-buffer)
                                   └─> wait (--timeout: TERM the group, KILL after a
                                       grace) ─> Result(exit value, signal, output)

A slot (``{%}``) owns two anonymous temporary files that every job run in it reuses,
so a job's output is captured whole without a pipe to drain: that keeps the cost per
job near ``xargs``. Every job leads its own process group (``start_new_session``), so
Ctrl-C in a terminal reaches only ``workpool``, and ``terminate`` stops a job with all
its children. ``Jobs`` keeps the running groups, so that no job outlives the run.
Imports only the standard library and ``_template``.
"""

from __future__ import annotations

import contextlib
import os
import select
import signal
import subprocess
import tempfile
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from queue import SimpleQueue
from typing import IO

from ._template import Template

__all__ = ["GRACE", "Job", "JobFailed", "Jobs", "Result"]

#: Seconds a job stopped with SIGTERM (timeout, Ctrl-C twice) has before SIGKILL.
GRACE = 0.5


@dataclass(slots=True)
class Job:
    """One line of input: its sequence number (``{#}``), arguments and command text
    (``None`` until a slot is known when the command uses ``{%}``)."""

    seq: int
    args: Sequence[str]
    command: str | None = None
    runs: int = 0
    failed: Result | None = None  # the last failed run, when retries are allowed


@dataclass(slots=True)
class Result:
    """How one job ended: the fields of its joblog line and its captured output.

    ``started`` is False for a job that never ran (stopped before its start)."""

    seq: int
    args: Sequence[str]
    command: str
    start: float = 0.0
    runtime: float = 0.0
    exitval: int = 0
    signal: int = 0
    out: bytes = b""
    err: bytes = b""
    received: int = 0  # bytes written to stdout (the joblog's Receive)
    started: bool = True

    @property
    def failed(self) -> bool:
        """A nonzero exit value or a signal (a timeout is both)."""
        return self.exitval != 0 or self.signal != 0


class JobFailed(Exception):
    """Raised by a failed job when ``--retries`` allows another run."""

    def __init__(self, result: Result) -> None:
        super().__init__(result.command)
        self.result = result


class _Slot:
    __slots__ = ("err", "number", "out")

    def __init__(self, number: int) -> None:
        self.number = number
        self.out: IO[bytes] | None = None
        self.err: IO[bytes] | None = None

    def files(self) -> tuple[int, int]:
        if self.out is None or self.err is None:
            # Kept open for the whole run, closed by close().
            self.out = tempfile.TemporaryFile()  # noqa: SIM115
            self.err = tempfile.TemporaryFile()  # noqa: SIM115
        return self.out.fileno(), self.err.fileno()

    def close(self) -> None:
        for f in (self.out, self.err):
            if f is not None:
                f.close()


def _take(fd: int) -> bytes:
    """What a job wrote into the slot file *fd*; the file is emptied for the next job."""
    size = os.lseek(fd, 0, os.SEEK_CUR)  # the job shared the offset: it is the size
    if not size:
        return b""
    data = os.pread(fd, size, 0)
    os.ftruncate(fd, 0)
    os.lseek(fd, 0, os.SEEK_SET)
    return data


class Jobs:
    """Runs jobs for the pool's workers: ``Jobs(...)(job)`` returns a ``Result``.

    Args:
        template: the command template.
        slots: the job slots (``-j``).
        timeout: a function giving the seconds the next job may run (None: no limit).
        runs: runs a job may have in all (``--retries``): a failed run before the last
            raises ``JobFailed``, for the pool's ``wp.Retry`` to run it again.
        ended: called in the worker with each job's final result, before the worker
            takes another job: where ``--halt`` decides whether another may start.
        stream: ``--line-buffer``: called in the worker with each whole line a job
            writes, ``(result_so_far, is_stderr, line)``; the output is then not kept.
    """

    def __init__(self, template: Template, slots: int, *,
                 timeout: Callable[[], float | None], runs: int,
                 ended: Callable[[Result], None],
                 stream: Callable[[Result, bool, bytes], None] | None) -> None:
        self._template = template
        self._slots: SimpleQueue[_Slot] = SimpleQueue()
        self._all = [_Slot(n) for n in range(1, slots + 1)]
        for slot in self._all:  # a FIFO: slot 1 is taken first
            self._slots.put(slot)
        self._timeout = timeout
        self._runs = runs
        self._ended = ended
        self._stream = stream
        self._stdin = os.open(os.devnull, os.O_RDONLY)
        self._lock = threading.Lock()
        self._live: dict[int, subprocess.Popen[bytes]] = {}
        self.stopping = False  # no new job starts (Ctrl-C, --halt)
        self._signal: int | None = None  # set once running jobs are being stopped
        self._killer: threading.Timer | None = None

    # -- one job, in a worker thread -------------------------------------------------

    def __call__(self, job: Job) -> Result:
        if self.stopping:
            if job.failed is None:
                return Result(job.seq, job.args, job.command or "", started=False)
            self._ended(job.failed)  # a retry: the run reports the failure it had
            return job.failed
        slot = self._slots.get()
        try:
            result = self._run(job, slot)
        finally:
            self._slots.put(slot)
        job.runs += 1
        if result.failed and job.runs < self._runs:
            job.failed = result
            raise JobFailed(result)
        self._ended(result)
        return result

    def _run(self, job: Job, slot: _Slot) -> Result:
        command = job.command
        if command is None:
            command = self._template.expand(job.args, job.seq, slot.number)
        result = Result(job.seq, job.args, command)
        pipes = None if self._stream is None else _Pipes(result, self._stream)
        out, err = slot.files() if pipes is None else pipes.ends()
        result.start = time.time()
        t0 = time.monotonic()
        try:
            proc = subprocess.Popen(["/bin/sh", "-c", command], stdin=self._stdin,
                                    stdout=out, stderr=err, start_new_session=True)
        except BaseException:
            if pipes is not None:
                pipes.close()
            raise
        finally:
            if pipes is not None:
                pipes.close_ends()
        with self._lock:
            self._live[proc.pid] = proc
            stopping = self._signal
        if stopping is not None:  # started as the run was being stopped
            _signal_group(proc.pid, stopping)
        try:
            status = self._wait(proc, result, pipes)
            if self._signal is not None:  # being stopped: what outlived the job too
                _signal_group(proc.pid, signal.SIGKILL)
        finally:
            with self._lock:
                del self._live[proc.pid]
            if pipes is not None:
                pipes.close()
        result.runtime = time.monotonic() - t0
        if status < 0:  # ended by a signal: GNU parallel logs exit value 0 then
            result.signal = -status
        elif result.exitval == 0:
            result.exitval = status
        if pipes is None:
            result.out, result.err = _take(out), _take(err)
            result.received = len(result.out)
        return result

    def _wait(self, proc: subprocess.Popen[bytes], result: Result,
              pipes: _Pipes | None) -> int:
        limit = self._timeout()
        if pipes is not None:
            if pipes.pump(limit) or limit is None:
                return proc.wait()
        elif limit is None or _ended_within(proc, limit):
            return proc.wait()
        result.exitval = -1  # timed out, as GNU parallel logs it
        _signal_group(proc.pid, signal.SIGTERM)
        if pipes is not None:
            pipes.pump(GRACE)
        else:
            _ended_within(proc, GRACE)
        # Whatever is left of the group, the job itself or a child that outlived it
        # (the group lives while its leader is not reaped).
        _signal_group(proc.pid, signal.SIGKILL)
        if pipes is not None:
            pipes.pump(GRACE)  # the last lines; a pipe some other process holds stays
        return proc.wait()

    # -- stopping, from the main thread ----------------------------------------------

    def terminate(self) -> None:
        """Stop every running job: SIGTERM to its process group now, SIGKILL to the
        groups still there after ``GRACE`` seconds; jobs started from now on are
        stopped as they start. Implies ``stopping``."""
        self.stopping = True
        with self._lock:
            if self._signal is not None:
                return
            self._signal = signal.SIGTERM
            pids = list(self._live)
        for pid in pids:
            _signal_group(pid, signal.SIGTERM)
        self._killer = threading.Timer(GRACE, self._kill)
        self._killer.start()

    def _kill(self) -> None:
        with self._lock:
            self._signal = signal.SIGKILL
            pids = list(self._live)
        for pid in pids:
            _signal_group(pid, signal.SIGKILL)

    def close(self) -> None:
        """Release the slots' files; call once no job runs any more."""
        if self._killer is not None:
            self._killer.cancel()
            self._killer.join()
        for slot in self._all:
            slot.close()
        os.close(self._stdin)


class _Pipes:
    """--line-buffer: a job's stdout and stderr pipes, each whole line handed to
    ``stream`` as the job writes it."""

    def __init__(self, result: Result, stream: Callable[[Result, bool, bytes], None]) -> None:
        self._result = result
        self._stream = stream
        (self._out, self._out_w), (self._err, self._err_w) = os.pipe(), os.pipe()
        self._pending = {self._out: b"", self._err: b""}  # open read ends: partial line

    def ends(self) -> tuple[int, int]:
        """The write ends, for the job."""
        return self._out_w, self._err_w

    def close_ends(self) -> None:
        """Close the write ends once the job has its copies."""
        os.close(self._out_w)
        os.close(self._err_w)

    def pump(self, seconds: float | None) -> bool:
        """Stream lines until both pipes close (True) or *seconds* pass (False)."""
        deadline = None if seconds is None else time.monotonic() + seconds
        pending = self._pending
        while pending:
            wait = None if deadline is None else max(0.0, deadline - time.monotonic())
            ready = select.select(list(pending), [], [], wait)[0]
            if not ready:
                return False
            for fd in ready:
                data = os.read(fd, 65536)
                if not data:
                    if pending[fd]:
                        self._stream(self._result, fd == self._err, pending[fd])
                    del pending[fd]
                    os.close(fd)
                    continue
                if fd == self._out:
                    self._result.received += len(data)
                *lines, pending[fd] = (pending[fd] + data).split(b"\n")
                for text in lines:
                    self._stream(self._result, fd == self._err, text + b"\n")
        return True

    def close(self) -> None:
        """Close the read ends still open."""
        for fd in self._pending:
            os.close(fd)
        self._pending.clear()


def _ended_within(proc: subprocess.Popen[bytes], seconds: float) -> bool:
    """Whether *proc* ends within *seconds* (not reaped). Waits on a pidfd where the
    system has one: ``Popen.wait(timeout)`` polls, adding up to 50 ms to each job."""
    try:
        fd = os.pidfd_open(proc.pid)
    except (AttributeError, OSError):
        try:
            proc.wait(seconds)
        except subprocess.TimeoutExpired:
            return False
        return True
    try:
        return bool(select.select([fd], [], [], max(0.0, seconds))[0])
    finally:
        os.close(fd)


def _signal_group(pid: int, sig: int) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):  # the group is gone
        os.killpg(pid, sig)
