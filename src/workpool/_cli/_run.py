"""``workpool run``: run a command per input line, GNU parallel's core.

This module owns the options and the input: it parses and checks them (a bad one is
one line on standard error and exit status 255, as GNU parallel), opens the input
sources, numbers the jobs and skips those a joblog has (``--resume``), and hands over
to ``_runner``. Input sources: ``::: ARGS`` (repeatable), ``:::: FILE`` and
``-a FILE`` (one argument per line, read lazily), else standard input (lazily too:
an endless input runs in flat memory). Several sources combine as every combination,
the first varying slowest, ``{1}``, ``{2}``... naming each. May import ``_core`` and
the ``_cli`` modules of ``run``; what only an option needs is imported when it is given,
so that a plain run starts fast (``tests/test_cli_run_light.py`` pins its imports).
"""

from __future__ import annotations

import argparse
import itertools
import os
import re
import stat
import sys
from collections.abc import Iterator, Sequence
from contextlib import ExitStack
from typing import TYPE_CHECKING, Literal, NoReturn, cast

if TYPE_CHECKING:
    from . import Subcommands
    from ._joblog import Resume
    from ._jobs import Job
    from ._runner import Halt, Input, Options, TimeoutSpec
    from ._template import Template

__all__ = ["register", "run"]

#: The exit status for bad options or input, as GNU parallel.
BAD_INPUT = 255
#: ``-j 0``: as many jobs at once as possible, up to this many.
MAX_JOBS = 256

_DESCRIPTION = """\
Run COMMAND once per input argument, in parallel: GNU parallel's core, faster.
Arguments come from ::: ARGS, :::: FILE or -a FILE (one per line), else from standard
input, read lazily. In COMMAND, {} is the argument, {.} without its extension, {/} its
base name, {//} its directory, {/.} its base name without extension, {#} the job
number, {%} the job slot, {1} {2}... an input source or --colsep column; with none of
these the argument is appended. Arguments are shell-quoted where they replace a string,
so input can never inject a command; COMMAND runs with sh -c. Each job's output comes
out whole, never interleaved with another's. Exit status: the number of failed jobs
(101 when more than 100 failed), 0 when all succeeded; 255 for bad options or input;
130 after Ctrl-C (the first starts no new job and waits for the running ones, the
second stops them)."""

_EXAMPLES = """\
examples:
  workpool run gzip ::: *.log
  find . -name '*.png' | workpool run -j 4 --bar convert {} {.}.jpg
  workpool run --joblog jobs.tsv --retries 3 --timeout 60 ./fetch.sh {} :::: urls.txt
  workpool run --joblog jobs.tsv --resume-failed ./fetch.sh {} :::: urls.txt"""


class BadInput(Exception):
    """An option or input source ``workpool run`` cannot use: exit status 255."""


class _Parser(argparse.ArgumentParser):
    """The ``run`` parser: a usage error is one line and exit status 255, as GNU
    parallel's, an unknown option included (argparse would leave that to the
    ``workpool`` parser, with status 2)."""

    def parse_known_args(  # type: ignore[override]
        self, args: Sequence[str] | None = None, namespace: argparse.Namespace | None = None,
    ) -> tuple[argparse.Namespace, list[str]]:
        parsed, extras = super().parse_known_args(args, namespace)
        if extras:
            self.error(f"unrecognized arguments: {' '.join(extras)}")
        return parsed, extras

    def error(self, message: str) -> NoReturn:
        print(f"workpool run: {message} (see workpool run --help)", file=sys.stderr)
        raise SystemExit(BAD_INPUT)


def register(commands: Subcommands) -> None:
    """Add the ``run`` subcommand."""
    parser = commands.add_parser(
        "run", help="run a command per input line in parallel (GNU parallel's core)",
        description=_DESCRIPTION, epilog=_EXAMPLES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
        usage="workpool run [options] COMMAND [::: ARGS... | :::: FILE... | -a FILE]",
    )
    add = parser.add_argument
    add("-j", "--jobs", metavar="N", default=None,
        help="jobs at once: N, N%% of the CPUs, or 0 for as many as possible "
             f"(up to {MAX_JOBS}); default: one per CPU")
    add("-a", "--arg-file", metavar="FILE", action="append", default=[],
        help="read arguments from FILE, one per line (repeatable)")
    add("--colsep", metavar="REGEX",
        help="split each argument into columns {1} {2}... at REGEX")
    add("-k", "--keep-order", action="store_true",
        help="print the jobs' output in input order (default: as they finish)")
    add("--line-buffer", action="store_true",
        help="print whole lines as jobs write them instead of each job's output at its end")
    add("--tag", action="store_true", help="prefix each output line with the arguments and a tab")
    add("--timeout", metavar="SECONDS",
        help="stop a job after SECONDS, or N%% of the median run time of the finished jobs "
             "(once 3 finished): SIGTERM to its process group, SIGKILL 0.5 s later")
    add("--retries", metavar="N", default="1",
        help="run a failed job up to N times in all, with a growing pause between runs")
    add("--delay", metavar="SECONDS", help="start jobs at least SECONDS apart")
    add("--rate", metavar="N/s", help="start at most N jobs per second (or N/m, N/h)")
    add("--halt", metavar="WHEN",
        help="never (default); now,fail=N or soon,fail=N: stop once N jobs failed (now: "
             "stop the running jobs too, soon: let them finish); success=N likewise; N may "
             "be a percentage of the finished jobs, such as fail=10%%")
    add("--joblog", metavar="FILE",
        help="log each finished job to FILE, in GNU parallel's tab-separated format")
    add("--resume", action="store_true",
        help="skip the jobs the joblog has. Unlike GNU parallel, which matches sequence "
             "numbers only, jobs are matched by their command, so input given in another "
             "order still resumes correctly")
    add("--resume-failed", action="store_true",
        help="like --resume, but run again the jobs the joblog has as failed")
    add("--bar", action="store_true",
        help="show progress on standard error (a live bar on a terminal)")
    add("--eta", action="store_true", help="the same as --bar: progress with the time left")
    add("--dry-run", action="store_true", help="print the commands instead of running them")
    add("command", nargs=argparse.REMAINDER, metavar="COMMAND",
        help="the command and its arguments, then the input sources")
    parser.set_defaults(handler=run)
    parser.__class__ = _Parser  # add_parser makes every subcommand's parser one class


def run(args: argparse.Namespace) -> int:
    """Run ``workpool run`` as *args* asks; return its exit status."""
    with ExitStack() as stack:  # the input files and the joblog
        status = _run(args, stack)
    return status


def _run(args: argparse.Namespace, stack: ExitStack) -> int:
    from ._runner import Input, Runner

    source = Input()
    try:
        options, jobs, total = _prepare(args, stack, source)
    except BadInput as exc:
        from ._output import fail

        return fail("run", str(exc), BAD_INPUT)
    if args.dry_run:
        for job in jobs:
            print(job.command or options.template.expand(job.args, job.seq, 1))
        return 0
    if args.bar or args.eta:
        from ._progress import Progress

        options = options._replace(progress=Progress(total))
    return Runner(options, jobs, source).run()


def _prepare(args: argparse.Namespace, stack: ExitStack,
             source: Input) -> tuple[Options, Iterator[Job], int | None]:
    """The checked options, the jobs to run, and their number when known ahead; input
    that may block waits through *source*."""
    from ._runner import Options
    from ._template import Template

    words, sources = _split(args.command, args.arg_file, stack, source)
    if not words:
        raise BadInput("a COMMAND is needed (see workpool run --help)")
    template = Template(" ".join(words))
    workers = _workers(args.jobs)
    colsep = None
    if args.colsep is not None:
        try:
            colsep = re.compile(args.colsep)
        except re.error as exc:
            raise BadInput(f"--colsep must be a regular expression: {exc}") from None
    log = None
    if args.joblog is not None:
        from pathlib import Path

        log = Path(args.joblog)
    resume = None
    if args.resume or args.resume_failed:
        if log is None:
            raise BadInput("--resume and --resume-failed need --joblog FILE")
        from ._joblog import JoblogError, Resume

        try:
            resume = Resume(log, failed_too=not args.resume_failed)
        except JoblogError as exc:
            raise BadInput(str(exc)) from None
    if args.line_buffer and args.keep_order:
        raise BadInput("--line-buffer prints lines as they come: it cannot keep the "
                       "order (-k)")
    rates = [r for r in (_rate(args.rate), _delay(args.delay)) if r is not None]
    rate = None
    if rates:
        from .._core.ratelimit import RateLimit

        rate = RateLimit(per_second=min(rates))
    options = Options(
        template=template, workers=workers, keep_order=args.keep_order,
        line_buffer=args.line_buffer, tag=args.tag, halt=_halt(args.halt),
        timeout=_timeout(args.timeout), retries=_retries(args.retries), rate=rate,
    )
    if log is not None and not args.dry_run:
        from ._joblog import Joblog, JoblogError

        try:
            joblog = Joblog(log, append=resume is not None)
        except JoblogError as exc:
            raise BadInput(str(exc)) from None
        stack.callback(joblog.close)
        options = options._replace(joblog=joblog)
    total = None if resume is not None else _total(sources)
    return options, _jobs(sources, colsep, template, resume, options.workers), total


# -- input sources -------------------------------------------------------------------

class _Lines:
    """A file's lines, read lazily, without their newline (undecodable bytes kept as
    surrogates, as the file system's names are). Input that may block (a pipe, a
    terminal) waits for data through *source*: the running jobs are served meanwhile,
    and the input ends when the run stops."""

    def __init__(self, fd: int, path: str | None, source: Input) -> None:
        self.fd = fd
        self.path = path  # None: standard input, whose length is not known ahead
        self._source = source

    def __iter__(self) -> Iterator[str]:
        fd, rest = self.fd, b""
        may_block = not stat.S_ISREG(os.fstat(fd).st_mode)
        while not may_block or self._source.wait(fd):
            data = os.read(fd, 65536)
            if not data:
                if rest:
                    yield os.fsdecode(rest)
                return
            *lines, rest = (rest + data).split(b"\n")
            for raw in lines:
                yield os.fsdecode(raw)


Source = list[str] | _Lines


def _split(words: Sequence[str], arg_files: Sequence[str], stack: ExitStack,
           source: Input) -> tuple[list[str], list[Source]]:
    """COMMAND's words, and the input sources: -a files, then ::: and :::: groups."""
    command: list[str] = []
    groups: list[tuple[str, list[str]]] = []
    for word in words:
        if word in (":::", "::::"):
            groups.append((word, []))
        elif groups:
            groups[-1][1].append(word)
        else:
            command.append(word)
    sources: list[Source] = [_open(path, stack, source) for path in arg_files]
    for marker, values in groups:
        if not values:
            raise BadInput(f"{marker} must be followed by at least one "
                           f"{'argument' if marker == ':::' else 'file'}")
        if marker == ":::":
            sources.append(values)
        else:
            sources += [_open(path, stack, source) for path in values]
    if not sources:
        sources.append(_Lines(sys.stdin.fileno(), None, source))
    return command, sources


def _open(path: str, stack: ExitStack, source: Input) -> _Lines:
    if path == "-":
        return _Lines(sys.stdin.fileno(), None, source)
    try:
        stream = stack.enter_context(open(path, "rb"))  # noqa: SIM115 (closed by the stack)
    except OSError as exc:
        raise BadInput(f"cannot open input file {path!r}: {exc.strerror}") from None
    return _Lines(stream.fileno(), path, source)


def _total(sources: Sequence[Source]) -> int | None:
    """How many jobs the sources make, when that is known without reading stdin."""
    total = 1
    for source in sources:
        if isinstance(source, list):
            total *= len(source)
        elif source.path is None:
            return None
        else:
            with open(source.path, "rb") as f:
                total *= sum(1 for _ in f)
    return total


def _combinations(sources: Sequence[Source]) -> Iterator[tuple[str, ...]]:
    """Every combination of the sources' values, the first source read lazily."""
    first, rest = sources[0], [list(s) for s in sources[1:]]
    if not rest:
        for value in first:
            yield (value,)
        return
    for value in first:
        for others in itertools.product(*rest):
            yield (value, *others)


def _jobs(sources: Sequence[Source], colsep: re.Pattern[str] | None,
          template: Template, resume: Resume | None, slots: int) -> Iterator[Job]:
    from ._jobs import Job

    for seq, values in enumerate(_combinations(sources), start=1):
        args: Sequence[str] = values
        if colsep is not None:
            args = [column for value in values for column in colsep.split(value)]
        command = None if template.uses_slot else template.expand(args, seq, 0)
        if resume is not None and resume.skip(
                *([command] if command is not None else
                  [template.expand(args, seq, slot) for slot in range(1, slots + 1)])):
            continue  # a command with {%} ran in any of the slots
        yield Job(seq, args, command)


# -- option checks: each raises BadInput with the rule -------------------------------

def _workers(text: str | None) -> int:
    if text is None:
        return _cpus()
    match = re.fullmatch(r"(\d+)(%?)", text.strip())
    if match is None:
        raise BadInput(f"-j must be N (jobs at once), N% (of the CPUs) or 0 (as many as "
                       f"possible), got {text!r}")
    n = int(match[1])
    if match[2]:
        return max(1, _cpus() * n // 100)
    return n if n > 0 else MAX_JOBS


def _cpus() -> int:
    from .._core.sizing import cpus  # loaded only when needed: it takes a moment

    return cpus()


def _number(option: str, text: str, *, zero: bool = False) -> float:
    try:
        value = float(text)
    except ValueError:
        value = float("nan")
    if not (value >= 0 if zero else value > 0) or value == float("inf"):
        raise BadInput(f"{option} must be a number {'>=' if zero else '>'} 0, got {text!r}")
    return value


def _timeout(text: str | None) -> TimeoutSpec | None:
    from ._runner import TimeoutSpec

    if text is None:
        return None
    if text.endswith("%"):
        return TimeoutSpec(percent=_number("--timeout N%", text[:-1]))
    return TimeoutSpec(seconds=_number("--timeout", text))


def _retries(text: str) -> int:
    if not text.isdigit():
        raise BadInput(f"--retries must be an int >= 0 (runs in all), got {text!r}")
    return max(1, int(text))


def _delay(text: str | None) -> float | None:
    if text is None:
        return None
    seconds = _number("--delay", text, zero=True)
    return 1 / seconds if seconds else None


def _rate(text: str | None) -> float | None:
    if text is None:
        return None
    match = re.fullmatch(r"([0-9.]+)(?:/([smh]))?", text.strip())
    if match is None:
        raise BadInput(f"--rate must be N/s, N/m or N/h with N > 0, got {text!r}")
    per = {"s": 1, "m": 60, "h": 3600}[match[2] or "s"]
    return _number("--rate", match[1]) / per


def _halt(text: str | None) -> Halt | None:
    from ._runner import Halt

    if text is None or text == "never":
        return None
    legacy = {"0": None, "1": "soon,fail=1", "2": "now,fail=1"}  # GNU parallel's old form
    if text in legacy:
        text = legacy[text]
        if text is None:
            return None
    match = re.fullmatch(r"(now|soon),(fail|success)=(\d+(?:\.\d+)?)(%?)", text)
    if match is None or (not match[4] and not match[3].isdigit()) or float(match[3]) <= 0:
        raise BadInput("--halt must be never, or now|soon,fail|success=N with N an int "
                       f">= 1 or a percentage such as 10%, got {text!r}")
    when = cast(Literal["now", "soon"], match[1])
    what = cast(Literal["fail", "success"], match[2])
    if match[4]:
        return Halt(when, what, percent=float(match[3]))
    return Halt(when, what, count=int(match[3]))

