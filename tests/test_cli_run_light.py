"""``workpool run`` stays light: what it imports, and its job slots driven directly.

The command's start-up is most of its cost for short jobs, so the modules it loads are
pinned exactly; the job slots (``_jobs.Jobs``) are also driven directly here, on the
paths the CLI tests cannot choose: no pidfd (a timeout polls), and a run torn down
with jobs still running.
"""

from __future__ import annotations

import errno
import json
import os
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from workpool._cli._jobs import Job, Jobs, Result
from workpool._cli._template import Template

SRC = str(Path(__file__).resolve().parent.parent / "src")
ENV = {**os.environ, "PYTHONPATH": SRC, "WORKPOOL_PLAIN": "1"}

#: What ``workpool run`` must never load: the pools and the rest of the library, the
#: other subcommands, and the standard library's heavier modules they bring.
HEAVY = {"asyncio", "concurrent.futures", "dataclasses", "inspect", "logging", "multiprocessing",
         "pathlib", "rich", "selectors", "statistics", "subprocess"}


def _loaded_by(code: str) -> tuple[list[str], list[str]]:
    """The workpool modules and the HEAVY ones a fresh interpreter has after *code*."""
    probe = (f"import sys, json\n{code}\nprint(json.dumps("
             "[sorted(m for m in sys.modules if m.split('.')[0] == 'workpool'), "
             f"sorted(m for m in {sorted(HEAVY)!r} if m in sys.modules)]))")
    out = subprocess.run([sys.executable, "-c", probe], env=ENV, capture_output=True,
                         text=True, timeout=30, check=True, stdin=subprocess.DEVNULL).stdout
    mine, heavy = json.loads(out.splitlines()[-1])
    return mine, heavy


def test_workpool_run_imports_only_what_it_runs() -> None:
    mine, heavy = _loaded_by("from workpool._cli import main\n"
                             "assert main(['run', '-j', '2', 'true', ':::', 'a', 'b']) == 0")
    assert mine == ["workpool", "workpool._cli", "workpool._cli._jobs", "workpool._cli._run",
                    "workpool._cli._runner", "workpool._cli._template"]
    assert heavy == []


def test_import_workpool_loads_the_package_alone() -> None:
    assert _loaded_by("import workpool") == (["workpool"], [])
    mine, _ = _loaded_by("import workpool as wp\nassert wp.Retry().attempts == 3")
    assert "workpool._core.retry" in mine


def test_other_subcommands_still_parse(capsys: pytest.CaptureFixture[str]) -> None:
    from workpool._cli import main

    assert main(["--help"]) == 0
    out = capsys.readouterr().out
    assert all(name in out for name in ("bench", "demo", "run", "tune"))
    assert main(["tune", "--help"]) == 0
    assert "usage: workpool tune" in capsys.readouterr().out
    assert main(["nope"]) == 2
    assert "invalid choice: 'nope'" in capsys.readouterr().err


def test_a_job_gets_only_the_standard_streams_and_default_signals(tmp_path: Path) -> None:
    read, write = os.pipe()
    os.set_inheritable(write, True)
    try:
        # yes | head: yes ends by SIGPIPE, silently, as from a shell (Python ignores it).
        job = f"[ -e /proc/self/fd/{write} ] && echo leaked {{}}; yes | head -1"
        r = subprocess.run([sys.executable, "-m", "workpool", "run", job, ":::", "a"],
                           cwd=tmp_path, env=ENV, capture_output=True, text=True, timeout=30,
                           stdin=subprocess.DEVNULL, pass_fds=(write,))
    finally:
        os.close(read)
        os.close(write)
    assert (r.returncode, r.stdout, r.stderr) == (0, "y\n", "")


def _results(jobs: Jobs, count: int) -> dict[int, Result | None]:
    """Wait until *count* jobs ended; their last results by sequence number."""
    results: dict[int, Result | None] = {}
    deadline = time.monotonic() + 20
    while len(results) < count:
        assert time.monotonic() < deadline, results
        jobs.wait(1.0)
        results.update((job.seq, result) for job, result, _ in jobs.done())
    return results


def _last(job: Job, result: Result) -> bool:
    return True


def _slot_threads() -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name.startswith("workpool-run-")]


def test_each_slot_runs_its_jobs_in_a_thread_of_its_own() -> None:
    jobs = Jobs(Template("echo {%}; sh -c {}"), 2, timeout=None, ended=_last, stream=None)
    try:
        jobs.submit(Job(1, ["echo a; exit 3"]))
        jobs.submit(Job(2, ["echo b >&2"]))
        jobs.submit(Job(3, ["true"]))
        assert len(_slot_threads()) == 2  # one per slot, started as jobs came
        results = _results(jobs, 3)
    finally:
        jobs.close()
    runs = [results[seq] for seq in (1, 2, 3)]
    assert [(r.exitval, r.signal, r.out[2:], r.err, r.received) for r in runs
            if r is not None] == [(3, 0, b"a\n", b"", 4), (0, 0, b"", b"b\n", 2),
                                  (0, 0, b"", b"", 2)]
    assert {r.out[:2] for r in runs if r is not None} <= {b"1\n", b"2\n"}  # the slot
    assert _slot_threads() == []


def _no_pidfd(pid: int, flags: int = 0) -> int:
    raise OSError(errno.ENOSYS, "no pidfd here")


@pytest.mark.parametrize("line_buffer", [False, True])
def test_without_pidfds_a_timeout_stops_the_job(monkeypatch: pytest.MonkeyPatch,
                                                 line_buffer: bool) -> None:
    monkeypatch.setattr(os, "pidfd_open", _no_pidfd)
    lines: list[tuple[bool, bytes]] = []
    jobs = Jobs(Template("{}"), 1, timeout=lambda: 0.2, ended=_last,
                stream=(lambda result, is_err, line: lines.append((is_err, line)))
                if line_buffer else None)
    t0 = time.monotonic()
    try:
        jobs.submit(Job(1, ["x"], "echo started; exec sleep 20"))
        result = _results(jobs, 1)[1]
    finally:
        jobs.close()
    assert time.monotonic() - t0 < 10
    assert result is not None
    assert (result.exitval, result.signal, result.received) == (-1, 15, 8)
    assert (lines, result.out) == (([(False, b"started\n")], b"") if line_buffer
                                   else ([], b"started\n"))


def test_stop_hands_back_the_jobs_not_started_and_terminate_stops_the_rest(
        tmp_path: Path) -> None:
    jobs = Jobs(Template("{}"), 1, timeout=None, ended=_last, stream=None)
    pidfile = tmp_path / "pid"
    try:
        jobs.submit(Job(1, ["x"], f"echo $$ > {pidfile}.tmp; mv {pidfile}.tmp {pidfile}; "
                                  "exec sleep 20"))
        jobs.submit(Job(2, ["y"], "touch never"))
        deadline = time.monotonic() + 20
        while not pidfile.exists():
            assert time.monotonic() < deadline, "the job never started"
            time.sleep(0.01)
        jobs.stop()
        jobs.terminate()
        t0 = time.monotonic()
        results = _results(jobs, 2)
        assert time.monotonic() - t0 < 5
    finally:
        jobs.close()
    assert results[2] is None
    assert results[1] is not None
    assert results[1].signal == 15
    assert not (tmp_path / "never").exists()
    with pytest.raises(ProcessLookupError):
        os.kill(int(pidfile.read_text()), 0)  # stopped and reaped


def test_many_short_jobs_all_end_and_are_written(tmp_path: Path) -> None:
    # Thousands of results handed from the slots' threads to the main thread: none may
    # be lost on the way (the run would hang) or written twice.
    r = subprocess.run([sys.executable, "-m", "workpool", "run", "-j", "3", "echo"],
                       input="".join(f"{i}\n" for i in range(3000)), cwd=tmp_path, env=ENV,
                       capture_output=True, text=True, timeout=60)
    assert (r.returncode, r.stderr) == (0, "")
    assert sorted(map(int, r.stdout.split())) == list(range(3000))
