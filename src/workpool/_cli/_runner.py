"""The main loop of ``workpool run``: jobs through a ``wp.ThreadPool``, results in order.

::

    main thread                          wp.ThreadPool (-j workers)
    input ─> Job ─> pool.map(Jobs, ...) ─> Jobs(job): sh -c ... ─> Result
                        │  (--rate/--delay: wp.RateLimit; --retries: wp.Retry)
                        └─> for each Result, in completion order (-k: input order):
                              output (grouped) ─> joblog line ─> progress ─> --halt

The map reads the input lazily, a few jobs ahead of the workers, so an endless input
runs in flat memory. Only the main thread writes grouped output and the joblog; with
``--line-buffer`` workers write whole lines under a lock as they come.

Stopping: the first Ctrl-C (or ``--halt soon``) starts no new job and waits for the
running ones; a second Ctrl-C, SIGTERM or ``--halt now`` also stops the running ones
(``Jobs.terminate``). The run ends with no job process left. May import the public
``workpool`` API and the ``_cli`` modules of ``run``.
"""

from __future__ import annotations

import bisect
import collections
import os
import signal
import sys
import threading
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from types import FrameType
from typing import Literal, TextIO

from .. import Error, RateLimit, Retry, ThreadPool, Value
from ._joblog import Joblog, line
from ._jobs import Job, JobFailed, Jobs, Result
from ._progress import Progress
from ._template import Template

__all__ = ["Halt", "Options", "Runner", "TimeoutSpec"]

#: The exit status of a run that Ctrl-C stopped (128 + SIGINT, as a shell reports it).
INTERRUPTED = 130
#: The exit status when standard output closed early (128 + SIGPIPE, as a shell reports it).
BROKEN_PIPE = 141


@dataclass(frozen=True, slots=True)
class Halt:
    """``--halt when,what=N`` or ``N%``: stop once *count* jobs (or *percent* of the
    finished ones, at least 3 finished) failed or succeeded."""

    when: Literal["now", "soon"]
    what: Literal["fail", "success"]
    count: int | None = None
    percent: float | None = None

    def reached(self, matching: int, finished: int) -> bool:
        """Whether *matching* jobs of *finished* reach the threshold."""
        if self.count is not None:
            return matching >= self.count
        assert self.percent is not None
        return finished >= 3 and matching * 100 >= self.percent * finished


@dataclass(frozen=True, slots=True)
class TimeoutSpec:
    """``--timeout``: *seconds*, or *percent* of the median run time of finished jobs
    (applied once 3 jobs finished)."""

    seconds: float | None = None
    percent: float | None = None


@dataclass(frozen=True, slots=True)
class Options:
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
    """Runs the jobs of *jobs* as *options* say; ``run()`` returns the exit status."""

    def __init__(self, options: Options, jobs: Iterable[Job]) -> None:
        self._o = options
        self._input = jobs
        self._median = _Median()
        self._lock = threading.Lock()  # the counts below
        self._out_lock = threading.Lock()  # --line-buffer: one line at a time
        self._jobs = Jobs(options.template, options.workers, timeout=self._timeout_fn(),
                          runs=options.retries, ended=self._ended,
                          stream=self._stream if options.line_buffer else None)
        # Counted by the workers, as each job ends (under _lock).
        self._finished = 0
        self._failed = 0
        self._succeeded = 0
        self._halted_by: Result | None = None
        self._halt_status: int | None = None
        self._interrupted = False
        self._reading = False  # the main thread waits for the next input line
        self._shown = 0  # jobs the main thread has written out

    def run(self) -> int:
        """Run every job; the exit status as GNU parallel's (see ``_run``)."""
        o = self._o
        # Jobs raises JobFailed only for a run before the last: the pool's policy
        # brings the pause that grows between runs.
        retry = None if o.retries <= 1 else Retry(attempts=o.retries, backoff=0.1,
                                                   max_backoff=10.0, on=JobFailed)
        previous = {s: signal.signal(s, self._on_signal) for s in (signal.SIGINT,
                                                                    signal.SIGTERM)}
        if o.progress is not None:
            o.progress.start()
        try:
            with ThreadPool(o.workers, rate=o.rate, retry=retry,
                            name="workpool-run") as pool:
                try:
                    for outcome in pool.map(self._jobs, self._source(), chunksize=1,
                                            ordered=o.keep_order, on_error="return"):
                        self._done(_result(outcome))
                except BaseException:
                    self._jobs.terminate()
                    raise
        except BrokenPipeError:  # the reader left (| head): stop quietly, as on SIGPIPE
            devnull = os.open(os.devnull, os.O_WRONLY)
            os.dup2(devnull, sys.stdout.fileno())  # the flush at exit must not fail too
            os.close(devnull)
            return BROKEN_PIPE
        finally:
            self._jobs.close()
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

    def _source(self) -> Iterator[Job]:
        jobs = iter(self._input)
        while not self._jobs.stopping:
            try:
                self._reading = True
                job = next(jobs)
            except StopIteration:
                return
            except KeyboardInterrupt:  # Ctrl-C while waiting for input: the input ends
                return
            finally:
                self._reading = False
            yield job

    def _timeout_fn(self) -> Callable[[], float | None]:
        spec = self._o.timeout
        if spec is None:
            return lambda: None
        if spec.seconds is not None:
            seconds = spec.seconds
            return lambda: seconds
        assert spec.percent is not None
        share, median = spec.percent / 100, self._median
        return lambda: None if median.value is None else share * median.value

    # -- each finished job, in the main thread --------------------------------------------

    def _done(self, result: Result) -> None:
        if not result.started:
            return
        o = self._o
        if not o.line_buffer:
            self._write(sys.stdout, result.out, result)
            self._write(sys.stderr, result.err, result)
        if o.joblog is not None:
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
            with self._lock:
                failed = self._failed
            o.progress.update(self._shown, failed)

    # -- each ended job, in its worker thread, before the worker takes another ---------

    def _ended(self, result: Result) -> None:
        o = self._o
        with self._lock:
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
            self._jobs.stopping = True

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
            self._jobs.stopping = True
            os.write(2, b"\nworkpool run: interrupted: starting no new job, waiting for "
                        b"the running ones (Ctrl-C again stops them)\n")
            if self._reading:  # blocked on input (a terminal, a pipe): stop waiting
                raise KeyboardInterrupt
        else:
            self._jobs.terminate()
            os.write(2, b"\nworkpool run: stopping the running jobs\n")


def _result(outcome: Value[Result] | Error) -> Result:
    if isinstance(outcome, Value):
        return outcome.value
    if isinstance(outcome.error, JobFailed):  # failed its last run (--retries)
        return outcome.error.result
    raise outcome.error
