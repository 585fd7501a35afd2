"""Resumable pipelines: the SQLite journal, at-least-once after a SIGKILL, and the
exactly-once transactional sink."""

from __future__ import annotations

import signal
import sqlite3
import subprocess
import sys
import textwrap
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

import workpool as wp

from . import _pipeline_tasks as t


def finished_keys(db: Path) -> set[int]:
    """The keys the journal has committed (none if it has no table yet)."""
    conn = sqlite3.connect(db, timeout=10)
    try:
        return {key for (key,) in conn.execute("SELECT key FROM workpool_journal")}
    except sqlite3.OperationalError:  # not created yet
        return set()
    finally:
        conn.close()


def committed(db: Path, expected: set[int], timeout: float = 5.0) -> set[int]:
    """The journal's keys once they are *expected* (commits come within 100 ms), or
    what they are when *timeout* runs out."""
    deadline = time.monotonic() + timeout
    while (keys := finished_keys(db)) != expected and time.monotonic() < deadline:
        time.sleep(0.01)
    return keys


# -- in one process -----------------------------------------------------------------------

def test_a_rerun_skips_what_finished(tmp_path: Path) -> None:
    db = tmp_path / "run.sqlite"
    seen: list[int] = []
    first = wp.Pipeline(range(50), journal=db, key=int).map(t.square).each(seen.append).run()
    assert (first.items_read, first.resumed) == (50, 0)
    assert finished_keys(db) == set(range(50))
    again = wp.Pipeline(range(60), journal=db, key=int).map(t.square).each(seen.append).run()
    assert (again.items_read, again.resumed) == (60, 50)
    assert again.stages[0].items_in == 10
    assert sorted(seen) == sorted([x * x for x in range(50)] + [x * x for x in range(50, 60)])


def test_iterated_items_finish_when_the_next_one_is_asked_for(tmp_path: Path) -> None:
    db = tmp_path / "run.sqlite"
    pipe = wp.Pipeline(range(100), journal=db, key=int).map(t.square, workers=2)
    consumed = []
    for x in pipe:
        consumed.append(x)
        if len(consumed) == 30:
            break  # the 30th item's loop body did not finish: it is not recorded
    assert finished_keys(db) == set(range(29))
    rest = list(pipe)
    assert rest == [x * x for x in range(29, 100)]
    assert finished_keys(db) == set(range(100))


def test_failed_items_are_not_recorded_and_run_again(tmp_path: Path) -> None:
    db = tmp_path / "run.sqlite"
    report = (wp.Pipeline(range(20), journal=db, key=int)
              .map(t.fail_on_3, on_error="skip").filter(t.is_even).run())
    assert report.stages[0].skipped == 4
    assert finished_keys(db) == {x for x in range(20) if x % 5 != 3}  # filtered out: done
    again = wp.Pipeline(range(20), journal=db, key=int).map(t.fail_on_3, on_error="skip").run()
    assert (again.resumed, again.stages[0].items_in, again.stages[0].skipped) == (16, 4, 4)


def test_fan_out_and_fan_in_finish_an_item_when_all_its_pieces_did(tmp_path: Path) -> None:
    db = tmp_path / "run.sqlite"
    pipe = (wp.Pipeline(range(10), journal=db, key=int)
            .flat_map(t.twice).batch(3).map(len))
    with iter(pipe) as sizes:
        assert next(sizes) == 3  # pieces 0, 0, 1: item 1 has a piece left in batch 2
        assert next(sizes) == 3  # asking for it finishes batch 1: item 0 only
        assert committed(db, {0}) == {0}
        assert list(sizes) == [3, 3, 3, 3, 2]
    assert finished_keys(db) == set(range(10))


def test_async_source_and_async_iteration_with_a_journal(tmp_path: Path) -> None:
    import anyio

    db = tmp_path / "run.sqlite"

    async def numbers() -> Iterator[int]:  # type: ignore[misc]
        for i in range(10):
            yield i

    async def consume() -> list[int]:
        pipe = wp.Pipeline(numbers(), journal=db, key=int).map(t.asquare, kind="async")
        return [x async for x in pipe]

    assert anyio.run(consume) == [x * x for x in range(10)]
    assert finished_keys(db) == set(range(10))


def test_keys_must_be_str_int_or_bytes(tmp_path: Path) -> None:
    pipe = wp.Pipeline(range(3), journal=tmp_path / "run.sqlite", key=lambda x: [x])  # type: ignore[arg-type, return-value]
    with pytest.raises(TypeError, match=r"key\(\) must return a str, int or bytes, got \[0\]"):
        pipe.run()


def test_transactional_sink_writes_with_the_journal(tmp_path: Path) -> None:
    db = tmp_path / "run.sqlite"

    def save(conn: sqlite3.Connection, rows: list[int]) -> None:
        conn.execute("CREATE TABLE IF NOT EXISTS out (x INTEGER)")
        conn.executemany("INSERT INTO out VALUES (?)", [(r,) for r in rows])
        if 13 in rows:
            raise ValueError("rows with 13 are rejected")

    with pytest.raises(wp.ItemsFailed) as failed:
        (wp.Pipeline(range(40), journal=db, key=int).map(t.same, workers=2).batch(5)
         .each(save, transactional=True, on_error="collect").run())
    assert [e.item for e in failed.value.errors] == [[10, 11, 12, 13, 14]]
    conn = sqlite3.connect(db)
    written = sorted(x for (x,) in conn.execute("SELECT x FROM out"))
    conn.close()
    assert written == [x for x in range(40) if not 10 <= x < 15]  # the savepoint undid it
    assert finished_keys(db) == set(written)


def test_transactional_sink_rules(tmp_path: Path) -> None:
    pipe = wp.Pipeline(range(3), journal=tmp_path / "j.sqlite", key=int)

    def save(conn: sqlite3.Connection, x: int) -> None:
        pass

    with pytest.raises(ValueError, match="workers must be 1, got 2"):
        pipe.each(save, transactional=True, workers=2)
    with pytest.raises(ValueError, match="timeout must be None"):
        pipe.each(save, transactional=True, timeout=1.0)  # type: ignore[call-overload]
    with pytest.raises(ValueError, match=r"flat_map\(twice\) splits items"):
        pipe.flat_map(t.twice).each(save, transactional=True)


# -- a real process, killed -------------------------------------------------------------------

AT_LEAST_ONCE = """
import sys, time
import workpool as wp

def work(x):
    time.sleep(0.005)
    return x

def main():
    db, log, n = sys.argv[1], sys.argv[2], int(sys.argv[3])
    with open(log, "a") as out:
        def sink(x):
            out.write(f"{x}\\n")
            out.flush()
        (wp.Pipeline(range(n), journal=db, key=int)
           .map(work, workers=2).each(sink).run())
    print("done", flush=True)

if __name__ == "__main__":
    main()
"""

EXACTLY_ONCE = """
import sqlite3, sys, time
import workpool as wp

def work(x):
    time.sleep(0.005)
    return x

def save(conn, rows):
    conn.executemany("INSERT INTO out (x) VALUES (?)", [(x,) for x in rows])

def main():
    db, n = sys.argv[1], int(sys.argv[2])
    conn = sqlite3.connect(db)
    conn.execute("CREATE TABLE IF NOT EXISTS out (x INTEGER)")
    conn.commit()
    conn.close()
    (wp.Pipeline(range(n), journal=db, key=int)
       .map(work, workers=2).batch(7, timeout=0.05)
       .each(save, transactional=True).run())
    print("done", flush=True)

if __name__ == "__main__":
    main()
"""

N = 600


def _kill_when(proc: subprocess.Popen[str], db: Path, at_least: int) -> set[int]:
    """SIGKILL *proc* once the journal has *at_least* keys; return the keys then."""
    deadline = time.monotonic() + 30
    while len(finished_keys(db)) < at_least:
        assert proc.poll() is None, "the run ended before it could be killed"
        assert time.monotonic() < deadline, "the journal never filled"
        time.sleep(0.01)
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=30)
    assert proc.returncode == -signal.SIGKILL
    return finished_keys(db)


def _script(tmp_path: Path, text: str) -> str:
    path = tmp_path / "job.py"
    path.write_text(textwrap.dedent(text))
    return str(path)


def test_sigkill_then_rerun_finishes_everything_and_redoes_nothing_finished(
        tmp_path: Path) -> None:
    script, db = _script(tmp_path, AT_LEAST_ONCE), tmp_path / "run.sqlite"
    first_log, second_log = tmp_path / "first.log", tmp_path / "second.log"
    proc = subprocess.Popen([sys.executable, script, str(db), str(first_log), str(N)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        finished = _kill_when(proc, db, 100)
    finally:
        proc.kill()
        proc.communicate()
    first = [int(x) for x in first_log.read_text().split()]
    assert finished <= set(first)
    assert len(finished) < N
    rerun = subprocess.run([sys.executable, script, str(db), str(second_log), str(N)],
                           capture_output=True, text=True, timeout=60)
    assert rerun.stdout == "done\n", rerun.stderr
    second = [int(x) for x in second_log.read_text().split()]
    assert len(second) == len(set(second))
    assert set(second) == set(range(N)) - finished  # nothing finished ran again
    assert set(first) | set(second) == set(range(N))  # and everything finished
    assert finished_keys(db) == set(range(N))


def test_sigkill_then_rerun_writes_each_item_exactly_once(tmp_path: Path) -> None:
    script, db = _script(tmp_path, EXACTLY_ONCE), tmp_path / "run.sqlite"
    proc = subprocess.Popen([sys.executable, script, str(db), str(N)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        finished = _kill_when(proc, db, 100)
    finally:
        proc.kill()
        proc.communicate()
    assert 100 <= len(finished) < N
    rerun = subprocess.run([sys.executable, script, str(db), str(N)],
                           capture_output=True, text=True, timeout=60)
    assert rerun.stdout == "done\n", rerun.stderr
    conn = sqlite3.connect(db)
    counts = dict(conn.execute("SELECT x, COUNT(*) FROM out GROUP BY x").fetchall())
    conn.close()
    assert counts == dict.fromkeys(range(N), 1)
