"""The main loop of ``workpool run``: jobs to the slots' threads, results in order.

::

    main thread                          _jobs.Jobs (-j slot threads)
    input ─> Job ─> submit ──────────────> each slot: the next job ─> sh -c ... ─> Result
                                            └─> ended: counted, --halt decided,
                                                --retries: failed, runs left? back
    done() <───────────────────────────────────┘
      ├─ a retry: submitted again after a growing pause (the slot is free meanwhile)
      └─ in completion order (-k: input order): output (grouped) ─> joblog ─> progress

The main thread reads the input a few jobs ahead of the slots, so an endless input
runs in flat memory; while the input has no line ready it still writes what ended.
Only the main thread writes grouped output and the joblog; with ``--line-buffer`` the
slots' threads write whole lines under a lock as they come.

Stopping: the first Ctrl-C (or ``--halt soon``) starts no new job and waits for the
running ones; a second Ctrl-C, SIGTERM or ``--halt now`` also stops the running ones
(``Jobs.terminate``). The run ends with no job process left. May import ``_core`` and
the ``_cli`` modules of ``run``.
"""

from __future__ import annotations

import bisect
import collections
import heapq
import os
import signal
import sys
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from types import FrameType
from typing import TYPE_CHECKING, Literal, NamedTuple, TextIO

from ._jobs import Job, Jobs, Result

if TYPE_CHECKING:
    from .._core.ratelimit import RateLimit
    from ._joblog import Joblog
    from ._progress import Progress
    from ._template import Template

__all__ = ["Halt", "Input", "Options", "Runner", "TimeoutSpec"]

#: The exit status of a run that Ctrl-C stopped (128 + SIGINT, as a shell reports it).
INTERRUPTED = 130
#: The exit status when standard output closed early (128 + SIGPIPE, as a shell reports it).
BROKEN_PIPE = 141


class Halt:
    """``--halt when,what=N`` or ``N%``: stop once *count* jobs (or *percent* of the
    finished ones, at least 3 finished) failed or succeeded."""

    __slots__ = ("count", "percent", "what", "when")

    def __init__(self, when: Literal["now", "soon"], what: Literal["fail", "success"], *,
                 count: int | None = None, percent: float | None = None) -> None:
        self.when = when
        self.what = what
        self.count = count
        self.percent = percent

    def reached(self, matching: int, finished: int) -> bool:
        """Whether *matching* jobs of *finished* reach the threshold."""
        if self.count is not None:
            return matching >= self.count
        assert self.percent is not None
        return finished >= 3 and matching * 100 >= self.percent * finished


class TimeoutSpec(NamedTuple):
    """``--timeout``: *seconds*, or *percent* of the median run time of finished jobs
    (applied once 3 jobs finished)."""

    seconds: float | None = None
    percent: float | None = None


class Options(NamedTuple):
    """What ``workpool run`` was asked, checked by ``_run``."""

    template: Template
    workers: int
    keep_order: bool = False
    line_buffer: bool = False
    tag: bool = False
    joblog: Joblog | None = None
    halt: Halt | None = None
    timeout: TimeoutSpec | None = None
    retries: int = 1
    rate: RateLimit | None = None
    progress: Progress | None = None


class Input:
    """Where input that may block (a pipe, a terminal) waits for its next data: while
    a run goes on, the runner writes what ended meanwhile (and starts retries due)."""

    def __init__(self) -> None:
        #: Set by the running runner: waits until an fd is readable (True) or the run
        #: stops and the input must end (False).
        self.serve: Callable[[int], bool] | None = None

    def wait(self, fd: int) -> bool:
        """Block until *fd* is readable (True) or the run stops (False)."""
        return True if self.serve is None else self.serve(fd)


class _Median:
    """The median of the last 1001 run times, kept sorted (flat memory)."""

    def __init__(self, size: int = 1001) -> None:
        self._recent: collections.deque[float] = collections.deque()
        self._sorted: list[float] = []
        self._size = size
        self.value: float | None = None

    def add(self, x: float) -> None:
        if len(self._recent) == self._size:
            del self._sorted[bisect.bisect_left(self._sorted, self._recent.popleft())]
        self._recent.append(x)
        bisect.insort(self._sorted, x)
        if len(self._sorted) >= 3:
            self.value = self._sorted[len(self._sorted) // 2]


class Runner:
    """Runs the jobs of *jobs* as *options* say; ``run()`` returns the exit status.
    *source* is where the jobs' input waits for data (see ``Input``)."""

    def __init__(self, options: Options, jobs: Iterable[Job], source: Input) -> None:
        o = options
        self._o = o
        self._input: Iterator[Job] | None = iter(jobs)  # None once it ended
        self._source = source
        self._ahead = 2 * o.workers  # jobs submitted and not done, at most
        self._median = _Median()
        self._lock = threading.Lock()  # the counts below
        self._out_lock = threading.Lock()  # --line-buffer: one line at a time
        self._jobs = Jobs(o.template, o.workers,
                          timeout=None if o.timeout is None else self._limit,
                          ended=self._ended, stream=self._stream if o.line_buffer else None,
                          rate=None if o.rate is None else o.rate.bucket())
        # --retries: (when, seq, job), soonest first.
        self._retries: list[tuple[float, int, Job]] = []
        self._order: dict[int, int] = {}  # -k: id(job) -> its place in the input
        self._read = 0
        self._waiting: dict[int, Result | None] = {}  # -k: results waiting for earlier ones
        self._next = 0  # -k: the place of the next result to show
        # Counted by the slots' threads, as each job ends (under _lock).
        self._finished = 0
        self._failed = 0
        self._succeeded = 0
        self._halted_by: Result | None = None
        self._halt_status: int | None = None
        self._shown = 0  # jobs the main thread has written out
        self._interrupted = False

    def run(self) -> int:
        """Run every job; the exit status as GNU parallel's (see ``_run``)."""
        o = self._o
        previous = {s: signal.signal(s, self._on_signal) for s in (signal.SIGINT,
                                                                    signal.SIGTERM)}
        # A signal that lands as the main thread is about to wait would run its
        # handler only once the wait ends (a job's end: maybe never): it writes a byte
        # that ends the wait at once.
        previous_fd = signal.set_wakeup_fd(self._jobs.wake_fd, warn_on_full_buffer=False)
        self._source.serve = self._wait_input
        if o.progress is not None:
            o.progress.start()
        try:
            try:
                self._loop()
            except BaseException:
                self._jobs.terminate()
                raise
            finally:
                signal.set_wakeup_fd(previous_fd)  # before the pipe closes
                self._jobs.close()
        except BrokenPipeError:  # the reader left (| head): stop quietly, as on SIGPIPE
            devnull = os.open(os.devnull, os.O_WRONLY)
            os.dup2(devnull, sys.stdout.fileno())  # the flush at exit must not fail too
            os.close(devnull)
            return BROKEN_PIPE
        finally:
            self._source.serve = None
            if o.progress is not None:
                o.progress.stop()
            if o.joblog is not None:
                o.joblog.close()
            for s, handler in previous.items():
                signal.signal(s, handler)
        if self._interrupted:
            return INTERRUPTED
        if self._halt_status is not None:
            return self._halt_status
        return min(self._failed, 101)

    def _loop(self) -> None:
        jobs = self._jobs
        while True:
            seconds = self._feed(read=True)
            if jobs.stopping:
                self._drop_retries()
            if not (jobs.pending or self._retries) and (jobs.stopping or self._input is None):
                return
            jobs.wait(seconds)
            self._collect()

    def _feed(self, *, read: bool) -> float | None:
        """Submit the retries due, then (when *read*) jobs from the input, up to
        ``_ahead`` pending; return the seconds until the next retry is due."""
        jobs = self._jobs
        while jobs.pending < self._ahead and not jobs.stopping:
            if self._retries and self._retries[0][0] <= time.monotonic():
                jobs.submit(heapq.heappop(self._retries)[2])
            elif read and self._input is not None:
                job = self._next_job()  # may serve the running jobs while it waits
                if job is not None:
                    jobs.submit(job)
            else:
                break
        if not self._retries:
            return None
        return max(0.0, self._retries[0][0] - time.monotonic())

    def _next_job(self) -> Job | None:
        assert self._input is not None
        job = next(self._input, None)
        if job is None:
            self._input = None
        elif self._o.keep_order:
            self._order[id(job)] = self._read
            self._read += 1
        return job

    def _wait_input(self, fd: int) -> bool:
        """Write what ended until *fd* has input (True) or the run stops (False)."""
        while not self._jobs.stopping:
            ready = self._jobs.wait(self._feed(read=False), fd)
            self._collect()
            if ready:
                return True
        return False

    def _limit(self) -> float | None:
        """The seconds the job starting now may run (--timeout)."""
        spec = self._o.timeout
        assert spec is not None
        if spec.seconds is not None:
            return spec.seconds
        assert spec.percent is not None
        return None if self._median.value is None else spec.percent / 100 * self._median.value

    # -- what ended, in the main thread -------------------------------------------------

    def _collect(self) -> None:
        for job, result, last in self._jobs.done():
            if last:
                self._finish(job, result)
                continue
            from .._core.retry import Retry

            # A growing pause before the next run, as the pool's policy has it; the
            # slot is free meanwhile.
            pause = Retry(attempts=self._o.retries, backoff=0.1, max_backoff=10.0).delay(
                job.runs)
            heapq.heappush(self._retries, (time.monotonic() + pause, job.seq, job))

    def _drop_retries(self) -> None:
        """The run stops: a job waiting to run again ends with the failure it had."""
        while self._retries:
            job = heapq.heappop(self._retries)[2]
            assert job.failed is not None
            self._ended(job, job.failed)
            self._finish(job, job.failed)

    def _finish(self, job: Job, result: Result | None) -> None:
        """Show a job's last run (None: it never started), in input order with -k."""
        if not self._o.keep_order:
            if result is not None:
                self._show(result)
            return
        self._waiting[self._order.pop(id(job))] = result
        while self._next in self._waiting:
            shown = self._waiting.pop(self._next)
            self._next += 1
            if shown is not None:
                self._show(shown)

    # -- each ended run, in its slot's thread, before the slot takes another job ----------

    def _ended(self, job: Job, result: Result) -> bool:
        o = self._o
        if result.failed and job.runs < o.retries and not self._jobs.stopping:
            job.failed = result
            return False
        with self._lock:
            self._count(result)
        return True

    def _count(self, result: Result) -> None:
        o = self._o
        self._finished += 1
        if result.failed:
            self._failed += 1
        else:
            self._succeeded += 1
        if o.timeout is not None and o.timeout.percent is not None:
            self._median.add(result.runtime)
        halt = o.halt
        if (halt is None or self._halted_by is not None
                or result.failed != (halt.what == "fail")):
            return
        matching = self._failed if halt.what == "fail" else self._succeeded
        if not halt.reached(matching, self._finished):
            return
        self._halted_by = result
        self._halt_status = max(1, result.exitval) if halt.what == "fail" else 0
        if halt.when == "now":
            self._jobs.terminate()
        else:
            self._jobs.stop()

    def _show(self, result: Result) -> None:
        o = self._o
        if not o.line_buffer:
            self._write(sys.stdout, result.out, result)
            self._write(sys.stderr, result.err, result)
        if o.joblog is not None:
            from ._joblog import line

            o.joblog.write(line(result.seq, result.start, result.runtime, result.received,
                                result.exitval, result.signal, result.command))
        if result is self._halted_by:
            assert o.halt is not None
            print(f"workpool run: --halt {o.halt.when}: job {result.seq} "
                  f"{'failed' if result.failed else 'succeeded'}: {result.command}; "
                  + ("stopping the running jobs" if o.halt.when == "now"
                     else "waiting for the running jobs"), file=sys.stderr, flush=True)
        self._shown += 1
        if o.progress is not None:
            o.progress.update(self._shown, self._failed)

    def _write(self, stream: TextIO, data: bytes, result: Result) -> None:
        if not data:
            return
        if self._o.tag:
            prefix = " ".join(result.args).encode(errors="surrogateescape") + b"\t"
            data = b"".join(prefix + text for text in data.splitlines(keepends=True))
        progress = self._o.progress
        if progress is not None and progress.live:
            # rich's stand-in for the stream prints text above the bar (its .buffer
            # would be the real stream's, under the bar).
            stream.write(data.decode(errors="replace"))
            stream.flush()
        else:
            stream.flush()
            stream.buffer.write(data)
            stream.buffer.flush()

    def _stream(self, result: Result, is_err: bool, text: bytes) -> None:
        with self._out_lock:
            self._write(sys.stderr if is_err else sys.stdout, text, result)

    # -- signals -----------------------------------------------------------------------

    def _on_signal(self, signum: int, frame: FrameType | None) -> None:
        first = not self._interrupted and signum == signal.SIGINT
        self._interrupted = True
        # os.write: print() could find sys.stderr in the middle of a write of the main
        # thread, which this handler interrupted.
        if first:
            self._jobs.stop()
            os.write(2, b"\nworkpool run: interrupted: starting no new job, waiting for "
                        b"the running ones (Ctrl-C again stops them)\n")
        else:
            self._jobs.terminate()
            os.write(2, b"\nworkpool run: stopping the running jobs\n")
