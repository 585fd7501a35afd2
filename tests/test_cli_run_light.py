"""``workpool run`` stays light: what it imports, and how its jobs are spawned and waited.

The command's start-up is most of its cost for short jobs, so the modules it loads are
pinned exactly; the job machinery (``_jobs.Jobs``) is also driven directly here, on the
paths the CLI tests cannot choose: no pidfd (a thread per job waits), and a run torn
down with jobs still running.
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
         "pathlib", "rich", "statistics", "subprocess", "threading"}


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


def _results(jobs: Jobs, count: int) -> dict[int, Result]:
    """Serve *jobs* until *count* runs ended; their results by sequence number."""
    results: dict[int, Result] = {}
    deadline = time.monotonic() + 20
    while len(results) < count:
        assert time.monotonic() < deadline, results
        results.update((job.seq, result) for job, result in jobs.wait(1.0)[0])
    return results


def _no_pidfd(pid: int, flags: int = 0) -> int:
    raise OSError(errno.ENOSYS, "no pidfd here")


def _waiters() -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name.startswith("workpool-run-")]


def test_without_pidfds_a_thread_per_job_waits(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(os, "pidfd_open", _no_pidfd)
    jobs = Jobs(Template("sh -c {}"), 2, timeout=None, stream=None)
    try:
        jobs.start(Job(1, ["echo a; exit 3"]))
        jobs.start(Job(2, ["echo b >&2"]))
        assert (jobs.free, jobs.running) == (0, 2)
        results = _results(jobs, 2)
    finally:
        jobs.close()
    assert [(r.exitval, r.signal, r.out, r.err, r.received) for r in
            (results[1], results[2])] == [(3, 0, b"a\n", b"", 2), (0, 0, b"", b"b\n", 0)]
    assert _waiters() == []


def test_without_pidfds_a_timeout_stops_the_job(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(os, "pidfd_open", _no_pidfd)
    lines: list[tuple[bool, bytes]] = []
    jobs = Jobs(Template("{}"), 1, timeout=lambda: 0.2,
                stream=lambda result, is_err, line: lines.append((is_err, line)))
    t0 = time.monotonic()
    try:
        jobs.start(Job(1, ["x"], "echo started; exec sleep 20"))
        result = _results(jobs, 1)[1]
    finally:
        jobs.close()
    assert time.monotonic() - t0 < 10
    assert (result.exitval, result.signal, result.received) == (-1, 15, 8)
    assert lines == [(False, b"started\n")]
    assert _waiters() == []


def test_close_stops_the_running_jobs(tmp_path: Path) -> None:
    jobs = Jobs(Template("{}"), 2, timeout=None, stream=None)
    pidfile = tmp_path / "pid"
    try:
        jobs.start(Job(1, ["x"], f"echo $$ > {pidfile}.tmp; mv {pidfile}.tmp {pidfile}; "
                                 "exec sleep 20"))
        deadline = time.monotonic() + 20
        while not pidfile.exists():
            assert time.monotonic() < deadline, "the job never started"
            time.sleep(0.01)
    finally:
        t0 = time.monotonic()
        jobs.close()
    assert time.monotonic() - t0 < 5
    with pytest.raises(ProcessLookupError):
        os.kill(int(pidfile.read_text()), 0)  # stopped and reaped
