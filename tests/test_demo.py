"""``workpool demo``: the local server, the stages, and a small run then a resume."""

from __future__ import annotations

import io
import re
import shutil
import sqlite3
import subprocess
import tomllib
import urllib.error
import urllib.request
from pathlib import Path

import pytest

from workpool import _demo
from workpool._cli import main


def test_server_serves_pages_404s_and_503s() -> None:
    with _demo.serve(10, seed=3, unavailable=0.0) as (base, stats):
        url, html = _demo.fetch(f"{base}/page/4")
        assert url.startswith("http://127.0.0.1:")
        assert html == _demo.page_html(4, 3, 10)
        with pytest.raises(urllib.error.HTTPError, match="404") as missing:
            urllib.request.urlopen(f"{base}/page/10", timeout=10)
        missing.value.close()
    assert stats.requests == 1
    with (_demo.serve(10, unavailable=1.0) as (base, stats),
          pytest.raises(_demo.ServiceUnavailable, match="503")):
        _demo.fetch(f"{base}/page/0")
    assert stats.unavailable == 1


def test_parse_extracts_what_the_page_has() -> None:
    html = _demo.page_html(7, 1, 100)
    page_id, title, words, links, top, digest = _demo.parse(("http://x/page/7", html))
    assert page_id == 7
    assert title.startswith("Page 7: ")
    assert words > 100
    assert links == html.count('href="/page/')
    assert top in html
    assert len(digest) == 16


def test_demo_runs_then_resumes(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    db = tmp_path / "demo.sqlite"
    args = ["demo", "--pages", "120", "--rate", "2000", "--db", str(db)]
    assert main([*args, "--no-progress"]) == 0
    out = capsys.readouterr().out
    assert "pipeline finished" in out
    assert f"120 of 120 pages in {db} (0 already there)" in out
    conn = sqlite3.connect(db)
    assert conn.execute("SELECT COUNT(*), COUNT(DISTINCT id) FROM pages").fetchone() == (120, 120)
    conn.close()

    assert main([*args, "--resume"]) == 0  # with the (plain, not a terminal) live view
    out = capsys.readouterr().out
    assert "120 of 120 pages" in out
    assert "(120 already there); the server answered 0 requests" in out
    # The live view's last line, then the report: the final numbers once, not twice.
    assert out.count("pipeline finished") == 1
    progress = [line for line in out.splitlines() if line.startswith("progress ")]
    assert re.fullmatch(r"progress \d+\.\d s, finished: 120 read \(120 skipped\) \| fetch 0 "
                        r"\| parse 0 \| batch 0 \| write 0 in \| 0/s", progress[-1]), progress
    assert all(len(line) < 100 for line in progress)


def test_run_demo_progress_goes_to_the_given_stream(tmp_path: Path) -> None:
    screen = io.StringIO()
    result = _demo.run_demo(pages=30, rate=2000, db=tmp_path / "d.sqlite", out=screen)
    assert result.stored == 30
    batches = result.report.stage("write").items_in
    assert batches >= 1
    lines = screen.getvalue().splitlines()
    assert all(len(line) < 100 for line in lines), lines
    # The sink shows the batches it took in, not "0 out".
    assert re.fullmatch(rf"progress \d+\.\d s, finished: 30 read \| fetch 30 \| parse 30 "
                        rf"\| batch {batches} \| write {batches} in \| [\d,]+/s", lines[-1])


@pytest.mark.parametrize("resume", [False, True])
def test_demo_database_in_a_missing_folder_is_a_one_line_error(
        tmp_path: Path, resume: bool, capsys: pytest.CaptureFixture[str]) -> None:
    db = tmp_path / "missing" / "x.sqlite"
    assert main(["demo", "--db", str(db), *(["--resume"] if resume else [])]) == 2
    out, err = capsys.readouterr()
    assert (out, err) == (
        "", f"workpool demo: cannot open database {db}: no such directory {db.parent}\n")
    assert not db.parent.exists()


def test_demo_database_that_is_not_sqlite_is_a_one_line_error(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    db = tmp_path / "notes.sqlite"
    db.write_text("not a database, and kept as it is\n" * 100)
    assert main(["demo", "--db", str(db), "--resume"]) == 2
    assert capsys.readouterr() == (
        "", f"workpool demo: cannot open database {db}: file is not a database\n")
    assert db.read_text() == "not a database, and kept as it is\n" * 100
    assert main(["demo", "--db", str(tmp_path)]) == 2  # a folder
    assert capsys.readouterr().err == (
        f"workpool demo: cannot open database {tmp_path}: Is a directory\n")


# -- what `make demo` installs, and the licence ---------------------------------------------

ROOT = Path(__file__).resolve().parents[1]


def make_dry_run(target: str, venv: Path) -> list[str]:
    """The commands ``make TARGET`` runs in a checkout with no virtualenv yet."""
    make = shutil.which("make")
    if make is None or not (ROOT / "Makefile").is_file():
        pytest.skip("needs make and a checkout")
    run = subprocess.run([make, "-n", "-B", "-C", str(ROOT), target, f"VENV={venv}"],
                         capture_output=True, text=True, timeout=30, check=True)
    return run.stdout.splitlines()


def test_make_demo_installs_the_cli_extra_only(tmp_path: Path) -> None:
    venv = tmp_path / "venv"
    installs = [line for line in make_dry_run("demo", venv) if " -e " in line]
    assert installs == [f"{venv}/bin/python -m pip install -q -e '.[cli]'"]
    with (ROOT / "pyproject.toml").open("rb") as f:
        extras = tomllib.load(f)["project"]["optional-dependencies"]
    # rich draws the live view, matplotlib the plot of `workpool tune`; no benchmark peer
    assert extras["cli"] == ["rich>=13", "matplotlib>=3.7"]


def test_make_bench_still_installs_the_peers(tmp_path: Path) -> None:
    venv = tmp_path / "venv"
    installs = [line for line in make_dry_run("bench", venv) if " -e " in line]
    assert installs == [f"{venv}/bin/python -m pip install -q -e '.[bench,cli]'"]


def test_the_licence_is_mit_as_pyproject_says() -> None:
    if not (ROOT / "pyproject.toml").is_file():
        pytest.skip("needs a checkout")
    lines = (ROOT / "LICENSE").read_text().splitlines()
    assert lines[:3] == ["MIT License", "", "Copyright (c) 2026 the workpool authors"]
    assert "Permission is hereby granted, free of charge, to any person obtaining a copy" in (
        lines)
    with (ROOT / "pyproject.toml").open("rb") as f:
        assert tomllib.load(f)["project"]["license"] == "MIT"


def test_demo_options_are_checked(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["demo", "--pages", "0"]) == 2
    assert "must be an int >= 1, got 0" in capsys.readouterr().err
    assert main(["demo", "--rate", "-1"]) == 2
    assert "must be a number > 0, got -1.0" in capsys.readouterr().err
