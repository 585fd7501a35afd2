"""The processes of ``workpool run``: start ``sh -c COMMAND``, watch, capture, stop.

``Jobs`` runs the jobs' processes from one thread, the runner's, with no thread per
job: ``start`` spawns a job in a free slot, ``wait`` serves every running job (their
exits, ``--line-buffer`` pipes and timeouts) until one or more end, and hands back
their results::

    start(job) ─> take a slot ─> sh -c COMMAND (own process group)
                                   stdout, stderr -> the slot's two files
                                   (or pipes, streamed by --line-buffer)
    wait() ─> one select over every job's exit (a pidfd) and pipes ─> Result(s)
              (--timeout: TERM the group, KILL after a grace)

A slot (``{%}``) owns two anonymous temporary files that every job run in it reuses,
so a job's output is captured whole without a pipe to drain: that keeps the cost per
job near ``xargs``. Every job leads its own process group (``start_new_session``), so
Ctrl-C in a terminal reaches only ``workpool``, and ``terminate`` stops a job with all
its children; a job's group is killed before its leader is reaped, so that nothing it
left behind outlives a stopped run. Where the system has no pidfd (not Linux), a small
thread per job waits for its exit instead. Imports only the standard library and
``_template``.
"""

from __future__ import annotations

import contextlib
import os
import selectors
import signal
import time
from collections import deque
from collections.abc import Callable, Sequence
from typing import IO, TYPE_CHECKING

from ._template import Template

if TYPE_CHECKING:
    import threading

__all__ = ["GRACE", "Job", "Jobs", "Result"]

#: Seconds a job stopped with SIGTERM (timeout, Ctrl-C twice) has before SIGKILL.
GRACE = 0.5

_SH = "/bin/sh"
# Python ignores these; a job gets their default action back (as from subprocess).
_DEFAULT_SIGNALS = tuple(getattr(signal, name) for name in ("SIGPIPE", "SIGXFZ", "SIGXFSZ")
                         if hasattr(signal, name))


class Job:
    """One line of input: its sequence number (``{#}``), arguments and command text
    (``None`` until a slot is known when the command uses ``{%}``); ``runs`` counts
    its runs so far (``--retries``)."""

    __slots__ = ("args", "command", "runs", "seq")

    def __init__(self, seq: int, args: Sequence[str], command: str | None = None) -> None:
        self.seq = seq
        self.args = args
        self.command = command
        self.runs = 0


class Result:
    """How one run of a job ended: the fields of its joblog line and its captured
    output. ``received`` is the bytes written to stdout (the joblog's Receive)."""

    __slots__ = ("args", "command", "err", "exitval", "out", "received", "runtime", "seq",
                 "signal", "start")

    def __init__(self, seq: int, args: Sequence[str], command: str) -> None:
        self.seq = seq
        self.args = args
        self.command = command
        self.start = 0.0
        self.runtime = 0.0
        self.exitval = 0
        self.signal = 0
        self.out = b""
        self.err = b""
        self.received = 0

    @property
    def failed(self) -> bool:
        """A nonzero exit value or a signal (a timeout is both)."""
        return self.exitval != 0 or self.signal != 0


class _Slot:
    __slots__ = ("err", "number", "out")

    def __init__(self, number: int) -> None:
        self.number = number
        self.out: IO[bytes] | None = None
        self.err: IO[bytes] | None = None

    def files(self) -> tuple[int, int]:
        if self.out is None or self.err is None:
            import tempfile

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


# The stages of a running job's stop: none yet, SIGTERM sent (a timeout: SIGKILL at
# the deadline), SIGKILL sent (the deadline: when its pipes are given up).
_RUNNING, _TERMED, _KILLED = 0, 1, 2


class _Run:
    """A started job: its process, where its output goes, and what it waits for."""

    __slots__ = ("deadline", "exited", "job", "pid", "pidfd", "pipes", "result", "slot",
                 "stage", "t0", "waiter")

    def __init__(self, job: Job, result: Result, slot: _Slot, pid: int, t0: float,
                 pipes: _Pipes | None) -> None:
        self.job = job
        self.result = result
        self.slot = slot
        self.pid = pid
        self.t0 = t0
        self.pipes = pipes
        self.pidfd: int | None = None
        self.waiter: threading.Thread | None = None  # where there is no pidfd
        self.exited = False  # its process ended (not reaped yet)
        self.stage = _RUNNING
        self.deadline: float | None = None  # monotonic: the next step of its stop

    @property
    def over(self) -> bool:
        """The process ended and its output is all in."""
        return self.exited and (self.pipes is None or self.pipes.closed)


class Jobs:
    """Runs jobs' processes for the runner, all from its thread.

    Args:
        template: the command template.
        slots: the job slots (``-j``).
        timeout: a function giving the seconds the next job may run (it or what it
            gives None: no limit).
        stream: ``--line-buffer``: called with each whole line a job writes,
            ``(result_so_far, is_stderr, line)``; the output is then not kept.
    """

    def __init__(self, template: Template, slots: int, *,
                 timeout: Callable[[], float | None] | None,
                 stream: Callable[[Result, bool, bytes], None] | None) -> None:
        self._template = template
        self._all = [_Slot(n) for n in range(1, slots + 1)]
        self._free = deque(self._all)  # a FIFO: slot 1 is taken first
        self._timeout = timeout
        self._stream = stream
        self._stdin = os.open(os.devnull, os.O_RDONLY)
        self._closes = _inherited()
        self._selector = selectors.DefaultSelector()
        # A byte on the wake pipe ends a wait: a signal handler's, or a waiter
        # thread's where there is no pidfd.
        self._wake_r, self._wake_w = os.pipe()
        os.set_blocking(self._wake_w, False)
        self._selector.register(self._wake_r, selectors.EVENT_READ)
        self._live: dict[int, _Run] = {}  # pid -> its run
        self._timed: set[_Run] = set()  # the runs with a deadline
        self._exited: deque[_Run] = deque()  # ended, seen by a waiter thread
        self._signal: int | None = None  # set once running jobs are being stopped
        self._kill_at: float | None = None  # terminate(): SIGKILL for all then

    @property
    def free(self) -> int:
        """Slots free for a job to start in."""
        return len(self._free)

    @property
    def running(self) -> int:
        """Jobs started and not yet handed back by ``wait``."""
        return len(self._live)

    # -- starting ----------------------------------------------------------------------

    def start(self, job: Job) -> None:
        """Start a run of *job* in the first free slot (there must be one)."""
        slot = self._free.popleft()
        try:
            self._start(job, slot)
        except BaseException:
            self._free.appendleft(slot)
            raise

    def _start(self, job: Job, slot: _Slot) -> None:
        command = job.command
        if command is None:
            command = self._template.expand(job.args, job.seq, slot.number)
        result = Result(job.seq, job.args, command)
        pipes = None if self._stream is None else _Pipes(result, self._stream)
        out, err = slot.files() if pipes is None else pipes.ends()
        result.start = time.time()
        t0 = time.monotonic()
        try:
            pid = os.posix_spawn(_SH, [_SH, "-c", command], os.environ,
                                 file_actions=[(os.POSIX_SPAWN_DUP2, self._stdin, 0),
                                               (os.POSIX_SPAWN_DUP2, out, 1),
                                               (os.POSIX_SPAWN_DUP2, err, 2), *self._closes],
                                 setsid=True, setsigdef=_DEFAULT_SIGNALS)
        except BaseException:
            if pipes is not None:
                pipes.close()
            raise
        finally:
            if pipes is not None:
                pipes.close_ends()
        run = _Run(job, result, slot, pid, t0, pipes)
        self._live[pid] = run
        limit = None if self._timeout is None else self._timeout()
        if limit is not None:
            run.deadline = t0 + limit
            self._timed.add(run)
        self._watch(run)
        if pipes is not None:
            for fd in pipes.open:
                self._selector.register(fd, selectors.EVENT_READ, (run, fd))
        if self._signal is not None:  # started as the run is being stopped
            _signal_group(pid, self._signal)

    def _watch(self, run: _Run) -> None:
        """Have ``wait`` learn when *run*'s process ends: its pidfd, else a thread."""
        try:
            run.pidfd = os.pidfd_open(run.pid)
        except (AttributeError, OSError):
            import threading

            run.waiter = threading.Thread(target=self._waiter, args=(run,), daemon=True,
                                          name=f"workpool-run-{run.pid}")
            run.waiter.start()
            return
        self._selector.register(run.pidfd, selectors.EVENT_READ, run)

    def _waiter(self, run: _Run) -> None:
        # Waits without reaping: the job's group is killed before its leader is reaped.
        os.waitid(os.P_PID, run.pid, os.WEXITED | os.WNOWAIT)
        self._exited.append(run)
        self.wake()

    # -- serving the running jobs ----------------------------------------------------------

    def wait(self, seconds: float | None,
             fd: int | None = None) -> tuple[list[tuple[Job, Result]], bool]:
        """Serve the running jobs for up to *seconds* (None: until something happens):
        their output, exits and timeouts. Returns the jobs whose run ended, with its
        result (their slots free again), and whether *fd* became readable."""
        now = time.monotonic()
        deadline = None if seconds is None else now + seconds
        if self._timed or self._kill_at is not None:
            for when in (self._kill_at, *(run.deadline for run in self._timed)):
                if when is not None and (deadline is None or when < deadline):
                    deadline = when
        if fd is not None:
            try:
                self._selector.register(fd, selectors.EVENT_READ)
            except PermissionError:  # epoll refuses files that never block (/dev/null)
                return [], True
        try:
            events = self._selector.select(None if deadline is None
                                           else max(0.0, deadline - now))
        finally:
            if fd is not None:
                self._selector.unregister(fd)
        ready = False
        changed: list[_Run] = []  # runs that may be over
        for key, _ in events:
            data = key.data
            if key.fd == fd:
                ready = True
            elif data is None:  # the wake pipe
                with contextlib.suppress(BlockingIOError):
                    os.read(self._wake_r, 4096)
            elif isinstance(data, _Run):
                data.exited = True
                self._forget_pidfd(data)
                changed.append(data)
            else:
                run, pipe = data
                assert run.pipes is not None
                if not run.pipes.pump(pipe):
                    self._selector.unregister(pipe)
                    run.pipes.close_one(pipe)
                    changed.append(run)
        while self._exited:
            run = self._exited.popleft()
            run.exited = True
            changed.append(run)
        if self._timed or self._kill_at is not None:
            changed += self._stop_steps(time.monotonic())
        return [self._reap(run) for run in dict.fromkeys(changed) if run.over], ready

    def _stop_steps(self, now: float) -> list[_Run]:
        """Timeouts and ``terminate``'s SIGKILL, when their time came; returns the runs
        whose pipes it closed."""
        if self._kill_at is not None and now >= self._kill_at:
            self._kill_at = None
            self._signal = signal.SIGKILL
            for run in self._live.values():
                _signal_group(run.pid, signal.SIGKILL)
                run.stage, run.deadline = _KILLED, now + GRACE
                self._timed.add(run)
        closed = []
        for run in list(self._timed):
            if run.deadline is None or now < run.deadline:
                continue
            if run.stage == _RUNNING and not run.over:  # timed out, as GNU parallel logs it
                run.result.exitval = -1
                _signal_group(run.pid, signal.SIGTERM)
                run.stage, run.deadline = _TERMED, now + GRACE
            elif run.stage == _TERMED and not run.over:
                _signal_group(run.pid, signal.SIGKILL)
                run.stage, run.deadline = _KILLED, now + GRACE
            else:
                if run.stage == _KILLED and run.pipes is not None:
                    # The last lines are in; a pipe some other process holds stays.
                    self._close_pipes(run)
                    closed.append(run)
                run.deadline = None
                self._timed.discard(run)
        return closed

    def _reap(self, run: _Run) -> tuple[Job, Result]:
        pid, result = run.pid, run.result
        if run.stage != _RUNNING or self._signal is not None:
            # Whatever is left of the group, after a timeout or while being stopped: a
            # child that outlived the job (the group lives while its leader is not reaped).
            _signal_group(pid, signal.SIGKILL)
        status = os.waitstatus_to_exitcode(os.waitpid(pid, 0)[1])
        if run.waiter is not None:
            run.waiter.join()  # it ends as it saw the exit
        result.runtime = time.monotonic() - run.t0
        del self._live[pid]
        self._timed.discard(run)
        self._free.append(run.slot)
        if status < 0:  # ended by a signal: GNU parallel logs exit value 0 then
            result.signal = -status
        elif result.exitval == 0:
            result.exitval = status
        if run.pipes is None:
            out, err = run.slot.files()
            result.out, result.err = _take(out), _take(err)
            result.received = len(result.out)
        return run.job, result

    def _forget_pidfd(self, run: _Run) -> None:
        if run.pidfd is not None:
            self._selector.unregister(run.pidfd)
            os.close(run.pidfd)
            run.pidfd = None

    def _close_pipes(self, run: _Run) -> None:
        assert run.pipes is not None
        for pipe in list(run.pipes.open):
            self._selector.unregister(pipe)
            run.pipes.close_one(pipe)

    # -- stopping ----------------------------------------------------------------------------

    def wake(self) -> None:
        """End the current ``wait`` early (safe in a signal handler)."""
        with contextlib.suppress(BlockingIOError):
            os.write(self._wake_w, b"\0")

    def terminate(self) -> None:
        """Stop every running job: SIGTERM to its process group now, SIGKILL to the
        groups still there ``GRACE`` seconds later (in ``wait``); jobs started from now
        on are stopped as they start. Safe in a signal handler."""
        if self._signal is not None:
            return
        self._signal = signal.SIGTERM
        self._kill_at = time.monotonic() + GRACE
        for pid in list(self._live):
            _signal_group(pid, signal.SIGTERM)
        self.wake()

    def close(self) -> None:
        """Stop and reap every job still running (their output dropped), then release
        the slots' files and the rest."""
        self._stream = None
        if self._live:
            self.terminate()
            for run in self._live.values():
                if run.pipes is not None:
                    run.pipes.drop()
            while self._live:
                self.wait(None)
        for slot in self._all:
            slot.close()
        self._selector.close()
        for fd in (self._stdin, self._wake_r, self._wake_w):
            os.close(fd)


class _Pipes:
    """--line-buffer: a job's stdout and stderr pipes, each whole line handed to
    ``stream`` as the job writes it."""

    def __init__(self, result: Result, stream: Callable[[Result, bool, bytes], None]) -> None:
        self._result = result
        self._stream: Callable[[Result, bool, bytes], None] | None = stream
        (self._out, self._out_w), (self._err, self._err_w) = os.pipe(), os.pipe()
        self.open = {self._out: b"", self._err: b""}  # open read ends: partial line

    @property
    def closed(self) -> bool:
        """Both read ends are closed."""
        return not self.open

    def ends(self) -> tuple[int, int]:
        """The write ends, for the job."""
        return self._out_w, self._err_w

    def close_ends(self) -> None:
        """Close the write ends once the job has its copies."""
        os.close(self._out_w)
        os.close(self._err_w)

    def drop(self) -> None:
        """Drop the output from now on (the run is being torn down)."""
        self._stream = None

    def pump(self, fd: int) -> bool:
        """Read what the pipe *fd* holds and stream its whole lines; False at its end."""
        data = os.read(fd, 65536)
        if not data:
            return False
        if fd == self._out:
            self._result.received += len(data)
        *lines, self.open[fd] = (self.open[fd] + data).split(b"\n")
        if self._stream is not None:
            for text in lines:
                self._stream(self._result, fd == self._err, text + b"\n")
        return True

    def close_one(self, fd: int) -> None:
        """Close the read end *fd*, streaming its last partial line."""
        rest = self.open.pop(fd)
        os.close(fd)
        if rest and self._stream is not None:
            self._stream(self._result, fd == self._err, rest)

    def close(self) -> None:
        """Close the read ends still open (the job never started)."""
        for fd in self.open:
            os.close(fd)
        self.open.clear()


def _inherited() -> list[tuple[int, int]]:
    """Spawn actions that close the descriptors above 2 that this process inherited and
    would pass on: a job gets standard input, output and error only (as with
    subprocess's ``close_fds``). Descriptors this process opens are not inheritable."""
    try:
        fds = [int(name) for name in os.listdir("/dev/fd")]
    except OSError:
        return []
    closes = []
    for fd in fds:
        with contextlib.suppress(OSError):  # the listing's own descriptor, closed since
            if fd > 2 and os.get_inheritable(fd):
                closes.append((os.POSIX_SPAWN_CLOSE, fd))
    return closes


def _signal_group(pid: int, sig: int) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):  # the group is gone
        os.killpg(pid, sig)
