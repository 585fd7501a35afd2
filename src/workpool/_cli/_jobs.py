"""The job slots of ``workpool run``: one thread per slot spawns ``sh -c COMMAND``,
waits, captures, stops.

::

    main thread: submit(job) ─> ready queue ─> slot thread k (k = {%}, 1 to -j):
                                   take the next job ─> --rate: its turn
                                   sh -c COMMAND (posix_spawn, own process group)
                                     stdout, stderr -> the slot's two files
                                     (or pipes, streamed by --line-buffer)
                                   wait (--timeout: TERM the group, KILL after a grace)
                                   ended(job, result): counted, --halt decided
    main thread: done() <─ (job, result) ─┘   and the slot takes the next job at once

A slot's thread goes on from one job to the next by itself, so the main thread is
never on a job's path: it reads the input ahead, writes what ended, and handles
signals. A slot owns two anonymous temporary files that every job run in it reuses,
so a job's output is captured whole without a pipe to drain: that keeps the cost per
job near ``xargs``. Every job leads its own process group (``setsid``), so Ctrl-C in a
terminal reaches only ``workpool``, and ``terminate`` stops a job with all its children;
a job's group is killed before its leader is reaped, so that nothing it left behind
outlives a stopped run. A job gets standard input (``/dev/null``), output and error
only, and the default action of the signals Python ignores (as from subprocess).
Imports only the standard library and ``_template``.
"""

from __future__ import annotations

import contextlib
import os
import select
import signal
import threading
import time
from collections import deque
from collections.abc import Callable, Sequence
from queue import SimpleQueue
from typing import IO, TYPE_CHECKING

from ._template import Template

if TYPE_CHECKING:
    from .._core.ratelimit import TokenBucket

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
    its runs so far and ``failed`` is the last failed one (``--retries``)."""

    __slots__ = ("args", "command", "failed", "runs", "seq")

    def __init__(self, seq: int, args: Sequence[str], command: str | None = None) -> None:
        self.seq = seq
        self.args = args
        self.command = command
        self.runs = 0
        self.failed: Result | None = None


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


class Jobs:
    """Runs jobs in ``slots`` threads, one per job slot; the main thread submits jobs
    and collects what ended.

    Args:
        template: the command template.
        slots: the job slots (``-j``).
        timeout: a function giving the seconds the next job may run (it or what it
            gives None: no limit).
        ended: called in the slot's thread with each run of a job as it ends, before
            the slot takes another job; returns whether it is the job's last run (else
            it is handed back for a retry). Where ``--halt`` decides whether another
            job may start.
        stream: ``--line-buffer``: called in the slot's thread with each whole line a
            job writes, ``(result_so_far, is_stderr, line)``; the output is then not
            kept.
        rate: ``--rate``/``--delay``: a job starts once the bucket gives it its turn.
    """

    def __init__(self, template: Template, slots: int, *,
                 timeout: Callable[[], float | None] | None,
                 ended: Callable[[Job, Result], bool],
                 stream: Callable[[Result, bool, bytes], None] | None,
                 rate: TokenBucket | None = None) -> None:
        self._template = template
        self._slots = [_Slot(n) for n in range(1, slots + 1)]
        self._threads: list[threading.Thread] = []  # started as jobs come
        self._ready: SimpleQueue[Job | None] = SimpleQueue()
        self._submitted = 0
        self._timeout = timeout
        self._ended = ended
        self._stream = stream
        self._rate = rate
        self._stdin = os.open(os.devnull, os.O_RDONLY)
        self._closes = _inherited()
        self._env = dict(os.environb)  # os.environ would be converted for every job
        # What ended, for the main thread, and a byte on the wake pipe to say so (once
        # until the main thread reads it).
        self._done: deque[tuple[Job, Result | None, bool] | BaseException] = deque()
        self._wake_r, self._wake_w = os.pipe()
        os.set_blocking(self._wake_w, False)
        self._woken = False
        self._lock = threading.Lock()
        self._live: set[int] = set()  # the running jobs' pids (process groups)
        self._stop = threading.Event()  # set: no new job starts (Ctrl-C, --halt)
        self._signal: int | None = None  # set once running jobs are being stopped
        self._killer: threading.Timer | None = None

    @property
    def stopping(self) -> bool:
        """No new job starts: ``stop`` or ``terminate`` was called."""
        return self._stop.is_set()

    # -- the main thread's side --------------------------------------------------------

    def submit(self, job: Job) -> None:
        """Queue *job* for the next free slot."""
        if len(self._threads) < len(self._slots) and self._submitted >= len(self._threads):
            thread = threading.Thread(target=self._work, args=(self._slots[len(self._threads)],),
                                      name=f"workpool-run-{len(self._threads) + 1}")
            self._threads.append(thread)
            thread.start()
        self._submitted += 1
        self._ready.put(job)

    def wait(self, seconds: float | None, fd: int | None = None) -> bool:
        """Wait up to *seconds* (None: no limit) for a job to end (see ``done``), a
        ``wake``, or *fd* to be readable; return whether *fd* is readable."""
        fds = [self._wake_r] if fd is None else [self._wake_r, fd]
        ready = select.select(fds, [], [], seconds)[0]
        if self._wake_r in ready:
            os.read(self._wake_r, 4096)
            self._woken = False  # after the read, before done() looks: an end after
            # this point writes a byte of its own, which no read here swallows
        return fd is not None and fd in ready

    def done(self) -> list[tuple[Job, Result | None, bool]]:
        """The runs that ended since the last call, in the order they ended: ``(job,
        result, last)``, where *last* says it is the job's last run (else it is to be
        retried); ``result`` is None for a job that never started (the run is
        stopping). Raises what a slot's thread raised."""
        ended = []
        while self._done:
            item = self._done.popleft()
            if isinstance(item, BaseException):
                raise item
            ended.append(item)
        self._submitted -= len(ended)
        return ended

    @property
    def pending(self) -> int:
        """Jobs submitted and not yet handed back by ``done``."""
        return self._submitted

    @property
    def wake_fd(self) -> int:
        """The write end of the pipe ``wait`` watches, non-blocking: what
        ``signal.set_wakeup_fd`` takes, so that a signal ends a ``wait`` even when it
        lands just before the wait begins (its handler runs once the wait ends)."""
        return self._wake_w

    def wake(self) -> None:
        """End the current ``wait`` early (safe in a signal handler)."""
        self._woken = True
        with contextlib.suppress(BlockingIOError):
            os.write(self._wake_w, b"\0")

    # -- one slot, in its thread ----------------------------------------------------------

    def _work(self, slot: _Slot) -> None:
        while (job := self._ready.get()) is not None:
            try:
                item: tuple[Job, Result | None, bool] | BaseException = self._one(job, slot)
            except BaseException as exc:  # for the main thread to raise
                self.stop()
                item = exc
            self._done.append(item)
            if not self._woken:
                self.wake()

    def _one(self, job: Job, slot: _Slot) -> tuple[Job, Result | None, bool]:
        if not self.stopping and (self._rate is None or self._rate.acquire(self._stop)):
            result = self._run(job, slot)
            job.runs += 1
            return job, result, self._ended(job, result)
        if job.failed is None:
            return job, None, True
        # A retry that will not run: the job ends with the failure it had.
        return job, job.failed, self._ended(job, job.failed)

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
            pid = os.posix_spawn(_SH, [_SH, "-c", command], self._env,
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
        with self._lock:
            self._live.add(pid)
            stopping = self._signal
        if stopping is not None:  # started as the run was being stopped
            _signal_group(pid, stopping)
        try:
            status = self._wait(pid, result, pipes)
            if self._signal is not None:  # being stopped: what outlived the job too
                _signal_group(pid, signal.SIGKILL)
        finally:
            with self._lock:
                self._live.discard(pid)
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

    def _wait(self, pid: int, result: Result, pipes: _Pipes | None) -> int:
        """Wait for the job *pid* to end, its timeout applied, and reap it; its exit
        status as subprocess's ``returncode``."""
        limit = None if self._timeout is None else self._timeout()
        if pipes is not None:
            if pipes.pump(limit) or limit is None:
                return _reap(pid)
        elif limit is None or _ended_within(pid, limit):
            return _reap(pid)
        result.exitval = -1  # timed out, as GNU parallel logs it
        _signal_group(pid, signal.SIGTERM)
        if pipes is not None:
            pipes.pump(GRACE)
        else:
            _ended_within(pid, GRACE)
        # Whatever is left of the group, the job itself or a child that outlived it
        # (the group lives while its leader is not reaped).
        _signal_group(pid, signal.SIGKILL)
        if pipes is not None:
            pipes.pump(GRACE)  # the last lines; a pipe some other process holds stays
        return _reap(pid)

    # -- stopping ----------------------------------------------------------------------

    def stop(self) -> None:
        """Start no new job; the running ones go on (safe in a signal handler)."""
        self._stop.set()
        self.wake()

    def terminate(self) -> None:
        """Stop every running job: SIGTERM to its process group now, SIGKILL to the
        groups still there after ``GRACE`` seconds; jobs started from now on are
        stopped as they start. Implies ``stop``."""
        self.stop()
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
        """End the slots' threads once the jobs queued are done (or, after ``stop``,
        handed back unstarted), then release the slots' files and the rest."""
        for _ in self._threads:
            self._ready.put(None)
        for thread in self._threads:
            thread.join()
        if self._killer is not None:
            self._killer.cancel()
            self._killer.join()
        for slot in self._slots:
            slot.close()
        for fd in (self._stdin, self._wake_r, self._wake_w):
            os.close(fd)


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


def _reap(pid: int) -> int:
    """Wait for the job *pid* and reap it: its exit status, negative for a signal."""
    return os.waitstatus_to_exitcode(os.waitpid(pid, 0)[1])


def _ended_within(pid: int, seconds: float) -> bool:
    """Whether the job *pid* ends within *seconds* (not reaped). Waits on a pidfd where
    the system has one, else polls."""
    try:
        fd = os.pidfd_open(pid)
    except (AttributeError, OSError):
        return _polled(pid, seconds)
    try:
        return bool(select.select([fd], [], [], max(0.0, seconds))[0])
    finally:
        os.close(fd)


def _polled(pid: int, seconds: float) -> bool:
    deadline = time.monotonic() + seconds
    pause = 0.0005
    while not os.waitid(os.P_PID, pid, os.WEXITED | os.WNOHANG | os.WNOWAIT):
        left = deadline - time.monotonic()
        if left <= 0:
            return False
        time.sleep(min(pause, left))
        pause = min(pause * 2, 0.05)
    return True


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
