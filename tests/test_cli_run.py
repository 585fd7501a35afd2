"""``workpool run``: real commands through the CLI, compared exactly.

Each test runs ``python -m workpool run ...`` in a fresh interpreter (the way a user
does) with real commands: ``sh -c``, ``sleep``, ``true`` and a script that fails on
some arguments. Joblog lines are compared field by field (Starttime and JobRuntime by
their format), and every wait is bounded.
"""

from __future__ import annotations

import itertools
import os
import re
import select
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path

import pytest

from workpool._cli._joblog import HEADER
from workpool._cli._template import Template

SRC = str(Path(__file__).resolve().parent.parent / "src")
ENV = {**os.environ, "PYTHONPATH": SRC, "WORKPOOL_PLAIN": "1"}
CHECK = """#!/bin/sh
# Writes a line to each stream; fails with status 3 on "bad", 4 on "worse".
echo "out $1"
echo "err $1" >&2
case "$1" in bad) exit 3;; worse) exit 4;; esac
"""


def wp_run(*args: str | Path, cwd: Path, stdin: str | None = None,
           timeout: float = 30) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "workpool", "run", *map(str, args)],
                          cwd=cwd, env=ENV, input=stdin, capture_output=True, text=True,
                          timeout=timeout, stdin=None if stdin is not None else subprocess.DEVNULL)


@pytest.fixture
def check(tmp_path: Path) -> Path:
    script = tmp_path / "check.sh"
    script.write_text(CHECK)
    script.chmod(0o755)
    return script


def joblog(path: Path) -> list[list[str]]:
    """The joblog's lines as fields, sorted by Seq, after checking the header and the
    format of Starttime and JobRuntime."""
    lines = path.read_text().splitlines()
    assert lines[0] == HEADER
    rows = [row.split("\t") for row in lines[1:]]
    for row in rows:
        assert len(row) == 9, row
        assert re.fullmatch(r"\d{10}\.\d{3}", row[2]), row
        assert len(row[3]) == 10, row
        assert re.fullmatch(r" *\d+\.\d{3}", row[3]), row
        assert abs(float(row[2]) - time.time()) < 120
    return sorted(rows, key=lambda row: int(row[0]))


def fields(rows: list[list[str]]) -> list[list[str]]:
    """Rows without Starttime and JobRuntime."""
    return [row[:2] + row[4:] for row in rows]


# -- commands, replacement strings, quoting ---------------------------------------------

def test_replacement_strings_are_quoted_like_gnu_parallel(tmp_path: Path) -> None:
    r = wp_run("--dry-run", "echo {} {.} {/} {//} {/.} {#} {%}", ":::", "a b/c d.txt",
               "plain", cwd=tmp_path)
    assert (r.returncode, r.stderr) == (0, "")
    assert r.stdout.splitlines() == [
        "echo 'a b/c d.txt' 'a b/c d' 'c d.txt' 'a b' 'c d' 1 1",
        "echo plain plain plain . plain 2 1",
    ]


def test_template_positions_and_modifiers() -> None:
    t = Template("cp {1} {2//}/{1/.}.bak {3} # {#}/{%}")
    assert t.expand(["x/y.txt", "out dir/z"], 7, 2) == "cp x/y.txt 'out dir'/y.bak '' # 7/2"
    assert not t.uses_slot or "{%}" in t.text
    assert Template("echo").expand(["a b", "c"], 1, 1) == "echo 'a b' c"
    assert Template("awk '{print}' ${HOME} {0}").expand(["f"], 1, 1) == (
        "awk '{print}' ${HOME} {0} f")


def test_input_never_injects_a_command(tmp_path: Path) -> None:
    r = wp_run("-k", "echo", ":::", "$(touch pwned)", "; touch pwned", "`touch pwned`",
               cwd=tmp_path)
    assert r.returncode == 0
    assert r.stdout.splitlines() == ["$(touch pwned)", "; touch pwned", "`touch pwned`"]
    assert not (tmp_path / "pwned").exists()


def test_sources_combine_and_colsep_splits_columns(tmp_path: Path) -> None:
    r = wp_run("-k", "echo {1}{2}", ":::", "a", "b", ":::", "1", "2", cwd=tmp_path)
    assert r.stdout.splitlines() == ["a1", "a2", "b1", "b2"]
    (tmp_path / "rows.csv").write_text("x,y\nu,v\n")
    r = wp_run("-k", "--colsep", ",", "-a", "rows.csv", "echo {2} {1}", cwd=tmp_path)
    assert r.stdout.splitlines() == ["y x", "v u"]


def test_stdin_is_read_lazily_an_endless_input_halts(tmp_path: Path) -> None:
    yes = subprocess.Popen(["yes", "x"], stdout=subprocess.PIPE)
    try:
        r = subprocess.run([sys.executable, "-m", "workpool", "run", "-j", "2", "--halt",
                            "soon,success=5", "true"], stdin=yes.stdout, env=ENV,
                           capture_output=True, text=True, timeout=30, cwd=tmp_path)
    finally:
        yes.kill()
        yes.wait()
        assert yes.stdout is not None
        yes.stdout.close()
    assert r.returncode == 0
    assert "--halt soon: job" in r.stderr


def test_slots_and_keep_order(tmp_path: Path) -> None:
    # Without -k the first job, the slowest, would come out last.
    r = wp_run("-k", "-j", "3", "sleep {}; echo {} {%}", ":::", "0.3", "0", "0.1",
               cwd=tmp_path)
    out = [line.split() for line in r.stdout.splitlines()]
    assert [o[0] for o in out] == ["0.3", "0", "0.1"]
    assert sorted(o[1] for o in out) == ["1", "2", "3"]


# -- the joblog and exit status ----------------------------------------------------------

def test_joblog_lines_and_exit_status(tmp_path: Path, check: Path) -> None:
    r = wp_run("--joblog", "log.tsv", "-j", "2", check, ":::", "ok", "bad", "worse",
               cwd=tmp_path)
    assert r.returncode == 2  # the number of failed jobs
    assert fields(joblog(tmp_path / "log.tsv")) == [
        ["1", ":", "0", "7", "0", "0", f"{check} ok"],
        ["2", ":", "0", "8", "3", "0", f"{check} bad"],
        ["3", ":", "0", "10", "4", "0", f"{check} worse"],
    ]
    assert sorted(r.stdout.splitlines()) == ["out bad", "out ok", "out worse"]
    assert sorted(r.stderr.splitlines()) == ["err bad", "err ok", "err worse"]


@pytest.mark.skipif(shutil.which("parallel") is None, reason="GNU parallel not installed")
def test_joblog_matches_gnu_parallels(tmp_path: Path, check: Path) -> None:
    cmd = ["-j", "2", f"{check} {{}}", ":::", "ok", "bad", "x y"]
    ours = wp_run("--joblog", "ours.tsv", *cmd, cwd=tmp_path)
    theirs = subprocess.run(["parallel", "--will-cite", "--joblog", "theirs.tsv", *cmd],
                            cwd=tmp_path, capture_output=True, text=True, timeout=30)
    assert ours.returncode == theirs.returncode == 1
    assert fields(joblog(tmp_path / "ours.tsv")) == fields(joblog(tmp_path / "theirs.tsv"))


def test_exit_status_is_101_above_100_failures(tmp_path: Path) -> None:
    r = wp_run("-j", "0", "exit 1", ":::", *map(str, range(102)), cwd=tmp_path)
    assert r.returncode == 101


def test_signal_and_timeout_in_the_joblog(tmp_path: Path) -> None:
    t0 = time.monotonic()
    job = "case {} in a) sleep 20;; b) trap '' TERM; sleep 20;; c) kill -9 $$;; esac"
    r = wp_run("--joblog", "log.tsv", "--timeout", "0.3", job, ":::", "a", "b", "c", "d",
               cwd=tmp_path)
    assert time.monotonic() - t0 < 10
    assert r.returncode == 3
    assert [row[6:8] for row in joblog(tmp_path / "log.tsv")] == [
        ["-1", "15"],  # timed out, ended by SIGTERM
        ["-1", "9"],  # ignored SIGTERM: SIGKILL after the grace
        ["0", "9"],  # killed itself: GNU parallel logs exit value 0 and the signal
        ["0", "0"],
    ]


def test_a_timeout_in_percent_is_of_the_median_run_time(tmp_path: Path) -> None:
    # Three quick jobs set the median (milliseconds); the fourth runs far past 300% of it.
    r = wp_run("-j", "1", "--timeout", "300%", "--joblog", "log.tsv",
               "case {} in s) sleep 20;; esac", ":::", "a", "b", "c", "s", cwd=tmp_path)
    assert r.returncode == 1
    assert [row[6:8] for row in joblog(tmp_path / "log.tsv")] == [
        ["0", "0"], ["0", "0"], ["0", "0"], ["-1", "15"]]


def test_retries_run_a_failed_job_again_and_keep_the_last_run(tmp_path: Path) -> None:
    flaky = "n=$(cat n 2>/dev/null || echo 0); echo $((n + 1)) > n; echo run $n {}; [ $n -ge 1 ]"
    r = wp_run("--joblog", "log.tsv", "--retries", "3", flaky, ":::", "a", cwd=tmp_path)
    assert (r.returncode, r.stdout) == (0, "run 1 a\n")  # the second run's output only
    assert [row[6] for row in joblog(tmp_path / "log.tsv")] == ["0"]
    r = wp_run("--retries", "2", "echo x {} >> runs; exit 5", ":::", "a", cwd=tmp_path)
    assert r.returncode == 1
    assert (tmp_path / "runs").read_text() == "x a\nx a\n"


def test_halt(tmp_path: Path, check: Path) -> None:
    r = wp_run("-j", "1", "--halt", "now,fail=1", "--joblog", "log.tsv", check, ":::",
               "ok", "bad", "ok2", cwd=tmp_path)
    assert r.returncode == 3  # the failing job's exit status, as GNU parallel
    assert r.stdout.splitlines() == ["out ok", "out bad"]
    assert [row[8] for row in joblog(tmp_path / "log.tsv")] == [f"{check} ok",
                                                                f"{check} bad"]
    r = wp_run("-j", "1", "--halt", "soon,success=1", check, ":::", "bad", "ok", "x",
               cwd=tmp_path)
    assert (r.returncode, r.stdout) == (0, "out bad\nout ok\n")


def test_rate_and_delay_space_the_starts(tmp_path: Path) -> None:
    wp_run("--joblog", "log.tsv", "-j", "3", "--delay", "0.2", "true", ":::", "a", "b",
           "c", cwd=tmp_path)
    starts = sorted(float(row[2]) for row in joblog(tmp_path / "log.tsv"))
    assert all(b - a >= 0.15 for a, b in itertools.pairwise(starts)), starts
    r = wp_run("--rate", "10/s", "--dry-run", "true", ":::", "a", cwd=tmp_path)
    assert r.returncode == 0


# -- resume ------------------------------------------------------------------------------

def test_resume_and_resume_failed(tmp_path: Path, check: Path) -> None:
    log = tmp_path / "log.tsv"
    wp_run("--joblog", log, check, ":::", "ok", "bad", "x", cwd=tmp_path)
    # Reordered input and a new argument: jobs are matched by command, not number.
    r = wp_run("--joblog", log, "--resume", "-k", check, ":::", "x", "new", "bad", "ok",
               cwd=tmp_path)
    assert (r.returncode, r.stdout) == (0, "out new\n")
    r = wp_run("--joblog", log, "--resume-failed", "-k", check, ":::", "ok", "bad", "x",
               "new", cwd=tmp_path)
    assert (r.returncode, r.stdout) == (1, "out bad\n")
    lines = log.read_text().splitlines()
    assert lines.count(HEADER) == 1
    assert [(row[0], row[6], row[8].split()[-1]) for row in
            (line.split("\t") for line in lines[1:])][3:] == [("2", "0", "new"),
                                                             ("2", "3", "bad")]
    r = wp_run("--joblog", log, "--resume", "--dry-run", check, ":::", "ok", "more",
               cwd=tmp_path)
    assert r.stdout == f"{check} more\n"


def test_resume_of_a_command_with_the_slot_runs_nothing_twice(tmp_path: Path) -> None:
    log = tmp_path / "log.tsv"
    r = wp_run("--joblog", log, "-j", "2", "-k", "echo", "{%}", "{}", ":::", "a", "b", "c",
               "d", cwd=tmp_path)
    assert r.returncode == 0
    # Slots are numbered from 1, and each of the two was used.
    assert {line.split()[0] for line in r.stdout.splitlines()} == {"1", "2"}
    r = wp_run("--joblog", log, "--resume", "-j", "2", "-k", "echo", "{%}", "{}", ":::",
               "a", "b", "c", "d", "e", cwd=tmp_path)
    assert (r.returncode, r.stdout.split()[1:]) == (0, ["e"])


def test_a_corrupt_joblog_is_an_error_not_a_rerun(tmp_path: Path) -> None:
    (tmp_path / "log.tsv").write_text(HEADER + "\n1\t:\tnot a time\n")
    r = wp_run("--joblog", "log.tsv", "--resume", "echo", ":::", "a", cwd=tmp_path)
    assert r.returncode == 255
    assert r.stderr == ("workpool run: log.tsv:2: not a joblog line (9 tab-separated "
                        "fields: " + HEADER.replace("\t", " ") + "): '1\\t:\\tnot a time'\n")
    assert r.stdout == ""


# -- bad input ---------------------------------------------------------------------------

@pytest.mark.parametrize(("args", "message"), [
    (["-j", "-1", "true"], "-j must be N (jobs at once), N% (of the CPUs) or 0 (as many "
                           "as possible), got '-1'"),
    (["--halt", "later", "true"], "--halt must be never, or now|soon,fail|success=N "
                                  "with N an int >= 1 or a percentage such as 10%, got "
                                  "'later'"),
    (["-a", "missing.txt", "true"], "cannot open input file 'missing.txt': No such file "
                                    "or directory"),
    (["--timeout", "0", "true"], "--timeout must be a number > 0, got '0'"),
    (["--rate", "fast", "true"], "--rate must be N/s, N/m or N/h with N > 0, got 'fast'"),
    (["--resume", "true"], "--resume and --resume-failed need --joblog FILE"),
    (["--colsep", "(", "true"], "--colsep must be a regular expression: missing ), "
                                "unterminated subpattern at position 0"),
    ([], "a COMMAND is needed (see workpool run --help)"),
    (["--frobnicate", "true"], "unrecognized arguments: --frobnicate (see workpool run "
                               "--help)"),
])
def test_bad_input_is_one_line_and_status_255(tmp_path: Path, args: Sequence[str],
                                              message: str) -> None:
    r = wp_run(*args, ":::", "a", cwd=tmp_path)
    assert (r.returncode, r.stdout, r.stderr) == (255, "", f"workpool run: {message}\n")


# -- output ------------------------------------------------------------------------------

WAIT_FOR = "i=0; while [ ! -e {0} ] && [ $i -lt 1000 ]; do sleep 0.01; i=$((i+1)); done"


def test_output_is_grouped_per_job(tmp_path: Path) -> None:
    # a writes a line, lets b write both of its lines, then writes its second: streamed,
    # the lines would interleave (a1 b1 b2 a2).
    jobs = {
        "a": f"echo a1; touch a.1; {WAIT_FOR.format('b.done')}; echo a2 >&2; echo a3",
        "b": f"{WAIT_FOR.format('a.1')}; echo b1; echo b2 >&2; touch b.done",
    }
    r = wp_run("-j", "2", "sh -c {}", ":::", *jobs.values(), cwd=tmp_path)
    assert r.returncode == 0
    assert r.stdout in ("a1\na3\nb1\n", "b1\na1\na3\n")
    assert sorted(r.stderr.splitlines()) == ["a2", "b2"]


def test_line_buffer_streams_lines_and_tag_prefixes_them(tmp_path: Path) -> None:
    job = f"echo first; {WAIT_FOR.format('go')}; echo second {{}}"
    proc = subprocess.Popen([sys.executable, "-m", "workpool", "run", "--line-buffer",
                             "--tag", job, ":::", "x"], cwd=tmp_path, env=ENV,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            stdin=subprocess.DEVNULL, text=True)
    try:
        assert proc.stdout is not None
        assert select.select([proc.stdout], [], [], 20)[0]
        assert proc.stdout.readline() == "x\tfirst\n"  # before the job ended
        (tmp_path / "go").touch()
        out, err = proc.communicate(timeout=20)
    finally:
        proc.kill()
        proc.communicate()
    assert (proc.returncode, out, err) == (0, "x\tsecond x\n", "")


def test_bar_prints_plain_progress_off_a_terminal(tmp_path: Path) -> None:
    r = wp_run("--bar", "true", ":::", "a", "b", "c", cwd=tmp_path)
    assert r.returncode == 0
    assert r.stderr.splitlines()[-1].startswith("workpool run: 3/3 jobs done, 0 failed, ")


# -- Ctrl-C ------------------------------------------------------------------------------

def _alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except FileNotFoundError:
        return False


def _start_and_wait(tmp_path: Path, job: str, names: Sequence[str]) -> subprocess.Popen[str]:
    """Start ``workpool run -j 2 JOB ::: NAMES`` and return once two jobs started."""
    proc = subprocess.Popen([sys.executable, "-m", "workpool", "run", "-j", "2",
                             "--joblog", "log.tsv", job, ":::", *names], cwd=tmp_path,
                            env=ENV, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            stdin=subprocess.DEVNULL, text=True)
    deadline = time.monotonic() + 20
    while len(list(tmp_path.glob("*.pid"))) < 2:
        assert time.monotonic() < deadline, "the jobs never started"
        assert proc.poll() is None, proc.communicate()
        time.sleep(0.01)
    return proc


def _wait_stderr(proc: subprocess.Popen[str], text: str) -> None:
    """Wait until *proc* wrote *text* on stderr (read unbuffered, so communicate()
    still gets whatever comes after)."""
    assert proc.stderr is not None
    fd, seen = proc.stderr.fileno(), b""
    while text.encode() not in seen:
        assert select.select([fd], [], [], 20)[0], seen
        chunk = os.read(fd, 4096)
        assert chunk, seen
        seen += chunk


def test_first_ctrl_c_starts_no_new_job_and_waits_for_the_running(tmp_path: Path) -> None:
    job = f"echo $$ > {{}}.pid; {WAIT_FOR.format('release')}; echo done {{}}"
    proc = _start_and_wait(tmp_path, job, ["a", "b", "c"])
    try:
        proc.send_signal(signal.SIGINT)
        _wait_stderr(proc, "starting no new job")
        (tmp_path / "release").touch()
        out, _ = proc.communicate(timeout=20)
    finally:
        proc.kill()
        proc.communicate()
    assert proc.returncode == 130
    assert sorted(out.splitlines()) == ["done a", "done b"]
    assert not (tmp_path / "c.pid").exists()
    assert [row[6:] for row in joblog(tmp_path / "log.tsv")] == [
        ["0", "0", "echo $$ > a.pid; " + WAIT_FOR.format("release") + "; echo done a"],
        ["0", "0", "echo $$ > b.pid; " + WAIT_FOR.format("release") + "; echo done b"]]


def test_ctrl_c_while_waiting_for_input_ends_the_input(tmp_path: Path) -> None:
    proc = subprocess.Popen([sys.executable, "-m", "workpool", "run", "touch"], cwd=tmp_path,
                            env=ENV, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    try:
        assert proc.stdin is not None
        proc.stdin.write("ran\n")
        proc.stdin.flush()  # and no more input, nor its end
        deadline = time.monotonic() + 20
        while not (tmp_path / "ran").exists():
            assert time.monotonic() < deadline, "the job never ran"
            time.sleep(0.01)
        proc.send_signal(signal.SIGINT)
        out, err = proc.communicate(timeout=20)
    finally:
        proc.kill()
        proc.communicate()
    assert (proc.returncode, out) == (130, "")
    assert "starting no new job" in err


def test_second_ctrl_c_stops_the_running_jobs_and_their_children(tmp_path: Path) -> None:
    job = "sleep 30 & echo $! > {}.child; echo $$ > {}.pid; wait"
    proc = _start_and_wait(tmp_path, job, ["a", "b", "c"])
    pids = [int(p.read_text()) for p in (*tmp_path.glob("*.pid"), *tmp_path.glob("*.child"))]
    t0 = time.monotonic()
    try:
        proc.send_signal(signal.SIGINT)
        _wait_stderr(proc, "starting no new job")  # the first Ctrl-C was handled
        proc.send_signal(signal.SIGINT)
        proc.communicate(timeout=20)
    finally:
        proc.kill()
        proc.communicate()
    assert time.monotonic() - t0 < 10
    assert proc.returncode == 130
    assert [row[6:8] for row in joblog(tmp_path / "log.tsv")] == [["0", "15"], ["0", "15"]]
    deadline = time.monotonic() + 5  # an orphaned grandchild is reaped by init
    while any(_alive(pid) for pid in pids) and time.monotonic() < deadline:
        time.sleep(0.01)
    assert not [pid for pid in pids if _alive(pid)]
