"""``workpool demo``: the local server, the stages, and a small run then a resume."""

from __future__ import annotations

import io
import sqlite3
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


def test_run_demo_progress_goes_to_the_given_stream(tmp_path: Path) -> None:
    screen = io.StringIO()
    result = _demo.run_demo(pages=30, rate=2000, db=tmp_path / "d.sqlite", out=screen)
    assert result.stored == 30
    assert result.report.stage("write").items_in >= 1
    assert "fetch: 30 out" in screen.getvalue()


def test_demo_options_are_checked(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["demo", "--pages", "0"]) == 2
    assert "must be an int >= 1, got 0" in capsys.readouterr().err
    assert main(["demo", "--rate", "-1"]) == 2
    assert "must be a number > 0, got -1.0" in capsys.readouterr().err
