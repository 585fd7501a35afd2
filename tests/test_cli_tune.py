"""``workpool tune``: the worker counts, the confidence rule, the knee, and real runs."""

from __future__ import annotations

from pathlib import Path

import pytest

from workpool._cli import main
from workpool._cli._tune import Point, counts, knee, tight

PNG = b"\x89PNG\r\n\x1a\n"


@pytest.fixture
def items(tmp_path: Path) -> Path:
    path = tmp_path / "items.txt"
    path.write_text("".join(f"{i}\n" for i in range(12)))
    return path


def test_counts_grow_by_about_one_and_a_half() -> None:
    assert counts(1) == [1]
    assert counts(20) == [1, 2, 3, 5, 8, 12, 18, 20]
    assert counts(64) == [1, 2, 3, 5, 8, 12, 18, 27, 41, 62, 64]


def test_a_point_is_tight_once_its_interval_is_within_the_tolerance() -> None:
    assert not tight(Point(1, [100.0, 100.0]), 0.05)  # at least 3 runs
    assert tight(Point(1, [100.0, 101.0, 99.0]), 0.05)  # half-width 2.48
    assert not tight(Point(1, [100.0, 110.0, 90.0]), 0.05)  # half-width 24.8


def test_the_knee_is_the_fewest_workers_within_95_percent_of_the_peak() -> None:
    points = [Point(1, [100.0]), Point(2, [190.0]), Point(3, [290.0]), Point(5, [300.0]),
              Point(8, [280.0])]
    assert knee(points).workers == 3  # 290 >= 0.95 * 300


def _tune(*args: str | Path) -> int:
    return main(["tune", *map(str, args)])


@pytest.mark.parametrize(("target", "kind"), [("tests._tune_tasks:wait", "thread"),
                                              ("tests._tune_tasks:await_", "async")])
def test_tune_a_function(tmp_path: Path, items: Path, target: str, kind: str,
                         capsys: pytest.CaptureFixture[str]) -> None:
    plot = tmp_path / "plot.png"
    assert _tune(target, "--kind", kind, "--input", items, "--max-workers", "3",
                 "--rounds", "3", "--plot", plot) == 0
    out = capsys.readouterr().out
    rows = [line.split() for line in out.splitlines() if line.split()[:1] in (["1"], ["2"],
                                                                              ["3"])]
    assert [row[0] for row in rows] == ["1", "2", "3"]
    assert all(row[4] == "3" for row in rows)  # runs per point, --rounds 3 at most
    assert sum(row[-1] == "knee" for row in rows) == 1
    assert f"plot: {plot.resolve()}" in out
    assert plot.read_bytes().startswith(PNG)


def test_tune_a_command(tmp_path: Path, items: Path,
                        capsys: pytest.CaptureFixture[str]) -> None:
    assert _tune("--command", "test -n {}", "--input", items, "--max-workers", "2",
                 "--rounds", "3", "--plot", tmp_path / "c.png") == 0
    assert "knee: " in capsys.readouterr().out


@pytest.mark.parametrize(("args", "message"), [
    (["tests._tune_tasks:wait", "--command", "true"],
     "give either MODULE:FUNCTION or --command 'CMD {}', not both"),
    (["nowhere:fn"], "cannot import nowhere: No module named 'nowhere'"),
    (["tests._tune_tasks:absent"], "tests._tune_tasks has no function 'absent'"),
    (["tests._tune_tasks:wait", "--kind", "async"],
     "--kind async needs an async def function, tests._tune_tasks:wait is not one"),
    (["tests._tune_tasks:wait", "--tolerance", "2"],
     "--tolerance must be between 0 and 1, got 2.0"),
])
def test_bad_options(items: Path, args: list[str], message: str,
                     capsys: pytest.CaptureFixture[str]) -> None:
    assert _tune(*args, "--input", items) == 2
    assert capsys.readouterr().err == f"workpool tune: {message}\n"


def test_work_that_fails_is_reported(tmp_path: Path, items: Path,
                                     capsys: pytest.CaptureFixture[str]) -> None:
    assert _tune("tests._tune_tasks:fails", "--input", items, "--plot",
                 tmp_path / "p.png") == 1
    assert capsys.readouterr().err == ("workpool tune: the work failed: ValueError: "
                                       "no 3\n")
