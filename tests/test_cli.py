"""The ``workpool`` command and the benchmark harness, on fake scenario modules."""

from __future__ import annotations

import importlib.resources
import json
import os
import shutil
import subprocess
import sys
import textwrap
import threading
import tomllib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

import workpool
from workpool._bench import harness, report
from workpool._bench.harness import Target, max_in_window
from workpool._cli import _output, main

FAKE = '''
from workpool._bench.harness import Target, compare, scenario

CALLS = []
QUICK = []


def _seq(name, values):
    it = iter(values)

    def measure():
        CALLS.append(name)
        return next(it)
    return measure


def _boom():
    raise OSError("disk on fire")


def helper(quick):
    """Not marked: ignored, since this module marks its scenarios."""
    raise AssertionError("not a scenario")


@scenario
def speed(quick):
    """Seconds, lower is better."""
    QUICK.append(quick)
    return compare(
        [
            ("base", _seq("base", [4.0, 2.0, 3.0, 100.0, 0.5])),
            ("fast", _seq("fast", [1.0, 0.5, 2.0, 0.25, 1.5])),
            ("missing", None),
            ("broken", _boom),
        ],
        unit="us/task", scale=1e6, baseline="base", title="five rounds",
        targets=[Target("fast", ">=", 2.0), Target("missing", ">=", 1.0)],
    )


@scenario
def mixed(quick):
    """Two metrics per run, one of them higher-is-better."""
    return compare(
        [
            ("base", _seq("b", [{"ops/s": 100.0, "MB": 10.0}] * 5)),
            ("ours", _seq("o", [{"ops/s": 250.0, "MB": 40.0}] * 5)),
        ],
        unit="ops/s", higher_is_better={"ops/s"}, baseline="base",
        targets=[Target("ours", "<", 20.0, on="value", unit="MB")],
    )


@scenario
def crashes(quick):
    raise RuntimeError("scenario bug")
'''

PLAIN = '''
def numbers(quick: bool) -> dict[str, float]:
    """A plain function that measures on its own."""
    return {"asyncio.Queue": 1.5, "ours": 3.0 if quick else 2.0}


def lazy_child(n):
    return {"items": float(n)}
'''

ADOPTED = '''
from workpool._bench.harness import Target, adopt

ROUNDS = iter([
    {"asyncio.Queue": 2.0, "AsyncPool": 1.5},
    {"asyncio.Queue": 4.0, "AsyncPool": 3.0},
    {"asyncio.Queue": 3.0, "AsyncPool": 1.0},
])


def throughput(quick: bool) -> dict[str, float]:
    """Measured without the harness."""
    return next(ROUNDS)


SCENARIOS = [adopt(throughput, unit="Mtasks/s", baseline="asyncio.Queue",
                   higher_is_better=True, targets=[Target("AsyncPool", ">=", 0.5)])]
'''


@pytest.fixture
def suite(tmp_path: Path) -> Iterator[Path]:
    (tmp_path / "bench_fake.py").write_text(textwrap.dedent(FAKE))
    (tmp_path / "bench_plain.py").write_text(textwrap.dedent(PLAIN))
    (tmp_path / "bench_broken.py").write_text("raise ImportError('missing peer')\n")
    (tmp_path / "bench_adopted.py").write_text(textwrap.dedent(ADOPTED))
    (tmp_path / "not_a_bench.py").write_text("raise AssertionError('never imported')\n")
    yield tmp_path
    for name in ("bench_fake", "bench_plain", "bench_broken", "bench_adopted"):
        sys.modules.pop(name, None)


def _run_json(suite: Path, tmp_path: Path, *extra: str) -> tuple[int, dict[str, Any]]:
    out = tmp_path / "out.json"
    status = main(["bench", "--suite", str(suite), "--json", str(out), *extra])
    data: dict[str, Any] = json.loads(out.read_text())
    return status, data


def _scenario(data: dict[str, Any], name: str) -> dict[str, Any]:
    found: dict[str, Any] = next(s for s in data["scenarios"] if s["name"] == name)
    return found


# -- the command -----------------------------------------------------------------------

def test_help_lists_the_subcommands(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--help"]) == 0
    out = capsys.readouterr().out
    assert "usage: workpool" in out
    assert "bench" in out


def test_bench_help(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["bench", "--help"]) == 0
    out = capsys.readouterr().out
    for option in ("--quick", "--json FILE", "--only SUBSTRING", "--repeats N"):
        assert option in out


def test_unknown_subcommand_exits_2_with_a_message(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["frobnicate"]) == 2
    assert "invalid choice: 'frobnicate'" in capsys.readouterr().err


def test_no_subcommand_exits_2(capsys: pytest.CaptureFixture[str]) -> None:
    assert main([]) == 2
    assert "required" in capsys.readouterr().err


@pytest.mark.parametrize("bad", ["0", "-1", "two"])
def test_repeats_must_be_a_positive_int(bad: str, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["bench", "--repeats", bad]) == 2
    assert "must be an int >= 1" in capsys.readouterr().err


def test_demo_help_and_its_usage_errors(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["demo", "--help"]) == 0
    assert "--db FILE" in capsys.readouterr().out
    # A bad --db is a usage error as a bad option is: one line, status 2, no traceback.
    assert main(["demo", "--db", "/nonexistent-folder-of-workpool/x.sqlite"]) == _output.USAGE
    assert capsys.readouterr() == ("", "workpool demo: cannot open database "
                                   "/nonexistent-folder-of-workpool/x.sqlite: no such "
                                   "directory /nonexistent-folder-of-workpool\n")


def test_fail_prints_one_line_on_stderr(capsys: pytest.CaptureFixture[str]) -> None:
    assert _output.fail("demo", "cannot open database x: why") == 2
    assert _output.fail("bench", "no", status=1) == 1
    assert capsys.readouterr() == (
        "", "workpool demo: cannot open database x: why\nworkpool bench: no\n")


def test_python_dash_m_workpool() -> None:
    proc = subprocess.run([sys.executable, "-m", "workpool", "--help"],
                          capture_output=True, text=True, timeout=30)
    assert proc.returncode == 0
    assert "usage: workpool" in proc.stdout


def test_suite_must_be_a_folder(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    nope = tmp_path / "nope"
    assert main(["bench", "--suite", str(nope)]) == 2
    assert capsys.readouterr().err == f"workpool bench: --suite {nope} is not a folder\n"


# -- the suite ships with the package ------------------------------------------------

PACKAGE = Path(workpool.__file__).resolve().parent
ROOT = PACKAGE.parents[1]  # the checkout, when the tests run from one


def test_the_suite_is_a_subpackage_of_workpool() -> None:
    suite = importlib.resources.files("workpool._bench")
    assert Path(str(suite)).resolve().parent == PACKAGE
    names = {entry.name for entry in suite.iterdir()}
    assert {"__init__.py", "harness.py", "isolation.py", "report.py"} <= names
    topics = {n for n in names if n.startswith("bench_") and n.endswith(".py")}
    assert {"bench_async.py", "bench_groups.py", "bench_pipeline.py", "bench_processes.py",
            "bench_threads.py"} <= topics


def test_the_wheel_ships_the_whole_package() -> None:
    """The wheel is src/workpool, nothing left out: the suite travels with it."""
    if not (ROOT / "pyproject.toml").is_file():
        pytest.skip("needs a checkout")
    with (ROOT / "pyproject.toml").open("rb") as f:
        build = tomllib.load(f)["tool"]["hatch"]["build"]
    assert build["targets"]["wheel"] == {"packages": ["src/workpool"]}
    assert set(build) == {"targets"}  # no exclude or only-include that could drop _bench
    assert not (ROOT / "bench").exists()  # one suite, inside the package


def test_the_peers_are_the_bench_extra() -> None:
    if not (ROOT / "pyproject.toml").is_file():
        pytest.skip("needs a checkout")
    with (ROOT / "pyproject.toml").open("rb") as f:
        extra = tomllib.load(f)["project"]["optional-dependencies"]["bench"]
    names = {req.split(">")[0].split("=")[0] for req in extra}
    assert names - {"rich", "psutil", "matplotlib"} == set(harness.PEERS)


def test_a_missing_peer_says_how_to_install_it() -> None:
    def measure(quick: bool) -> dict[str, float]:
        return harness.compare(
            [("a", lambda: 1.0), ("peer", harness.peer("workpool_no_such_peer", lambda: 2.0)),
             ("imports", lambda: float(bool(__import__("workpool_no_such_module"))))],
            unit="s", baseline="a")

    result = harness.run_scenario(harness.Scenario("t.s", "t", measure), quick=True, repeats=2)
    notes = {r.contender: r.note for g in result.groups for r in g.rows}
    assert notes == {
        "a": "",
        "peer": "not installed: workpool_no_such_peer (pip install 'workpool[bench]')",
        "imports": "not installed: workpool_no_such_module (pip install 'workpool[bench]')",
    }
    assert harness.peer("json", lambda: 2.0)() == 2.0  # installed: the contender itself


def test_the_run_names_the_missing_peers(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("WORKPOOL_PLAIN", "1")
    monkeypatch.setattr(harness, "PEERS", ("json", "workpool_no_such_peer"))
    monkeypatch.setattr(report, "run_suite", lambda *a, **k: harness.Report(True, 1, []))
    assert main(["bench", "--only", "threads.tiny_map", "--quick"]) == 0
    assert ("workpool bench: peers not installed: workpool_no_such_peer (their rows say so; "
            "pip install 'workpool[bench]' adds them)") in capsys.readouterr().err


def test_bench_runs_from_a_copy_of_the_package_outside_the_checkout(tmp_path: Path) -> None:
    """As from an installed wheel: the package alone, in a folder of its own, run from
    another folder; a scenario that measures in a fresh interpreter finds it too."""
    site, elsewhere = tmp_path / "site", tmp_path / "elsewhere"
    shutil.copytree(PACKAGE, site / "workpool",
                    ignore=shutil.ignore_patterns("__pycache__"))
    elsewhere.mkdir()
    env = {**os.environ, "PYTHONPATH": str(site), "WORKPOOL_PLAIN": "1"}
    out = tmp_path / "out.json"
    code = ("import sys, workpool; from workpool._cli import main; "
            "print(workpool.__file__); sys.exit(main(sys.argv[1:]))")
    proc = subprocess.run(
        [sys.executable, "-c", code, "bench", "--only", "groups.semaphore_threads",
         "--only", "threads.lazy_map_memory", "--quick", "--repeats", "1", "--json", str(out)],
        cwd=elsewhere, env=env, capture_output=True, text=True, timeout=50)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.splitlines()[0] == str(site / "workpool" / "__init__.py")
    data = json.loads(out.read_text())
    assert [s["name"] for s in data["scenarios"]] == ["groups.semaphore_threads",
                                                      "threads.lazy_map_memory"]
    for scen in data["scenarios"]:
        assert scen["error"] is None
        ours = [r for g in scen["groups"] for r in g["rows"] if "ThreadPool" in r["contender"]
                or "wp." in r["contender"]]
        assert ours
        assert all(r["median"] is not None for r in ours), ours


# -- a run through the harness --------------------------------------------------------

def test_json_structure_and_arithmetic(
    suite: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    monkeypatch.setenv("WORKPOOL_PLAIN", "1")
    status, data = _run_json(suite, tmp_path, "--repeats", "5", "--only", "fake.",
                             "--only", "plain", "--only", "broken")
    assert status == 1  # a scenario raised
    assert {"quick", "repeats", "scenarios", "seconds", "environment", "passed"} <= set(data)
    assert data["quick"] is False
    assert data["repeats"] == 5
    assert data["environment"]["python"] == ".".join(map(str, sys.version_info[:3]))
    names = [s["name"] for s in data["scenarios"]]
    assert names == ["broken.*", "fake.speed", "fake.mixed", "fake.crashes", "plain.numbers"]

    speed = _scenario(data, "fake.speed")
    [group] = speed["groups"]
    assert group["title"] == "five rounds"
    assert group["baseline"] == "base"
    assert group["repeats"] == 5
    rows = {r["contender"]: r for r in group["rows"]}
    assert list(rows) == ["base", "fast", "missing", "broken"]
    # Interleaved: one sample of each contender per round, in contender order.
    calls = sys.modules["bench_fake"].CALLS
    assert calls[:10] == ["base", "fast"] * 5
    assert rows["base"]["samples"] == [4e6, 2e6, 3e6, 100e6, 0.5e6]  # seconds * scale
    assert rows["base"]["median"] == 3e6
    assert rows["fast"]["median"] == 1e6
    assert rows["base"]["ratio"] == 1.0
    assert rows["fast"]["ratio"] == 3.0  # lower is better: baseline / contender
    assert rows["fast"]["target"] == ">= 2x base"
    assert rows["fast"]["passed"] is True
    assert rows["missing"]["note"] == "not available"
    assert rows["missing"]["median"] is None
    assert rows["missing"]["passed"] is None
    assert rows["broken"]["note"] == "error: OSError: disk on fire"
    assert speed["passed"] is True

    mixed = _scenario(data, "fake.mixed")
    got = {(r["contender"], r["unit"]): r for r in mixed["groups"][0]["rows"]}
    assert got["ours", "ops/s"]["ratio"] == 2.5  # higher is better: contender / baseline
    assert got["ours", "ops/s"]["better"] == "higher"
    assert got["ours", "MB"]["ratio"] == 0.25
    assert got["ours", "MB"]["target"] == "< 20 MB"
    assert got["ours", "MB"]["passed"] is False
    assert mixed["passed"] is False
    assert data["passed"] is False

    assert "RuntimeError: scenario bug" in _scenario(data, "fake.crashes")["error"]
    assert "missing peer" in _scenario(data, "broken.*")["error"]
    plain = _scenario(data, "plain.numbers")["groups"][0]["rows"]
    assert [(r["contender"], r["median"]) for r in plain] == [("asyncio.Queue", 1.5), ("ours", 2.0)]

    out = capsys.readouterr().out
    assert "fake.speed: Seconds, lower is better (five rounds)" in out
    assert "FAIL" in out
    assert "PASS" in out
    assert "not available" in out


def test_quick_means_three_repeats_and_small_sizes(
    suite: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    status, data = _run_json(suite, tmp_path, "--quick", "--only", "speed", "--only", "PLAIN")
    assert status == 0
    assert data["quick"] is True
    assert data["repeats"] == 3
    assert [s["name"] for s in data["scenarios"]] == ["fake.speed", "plain.numbers"]
    assert sys.modules["bench_fake"].QUICK == [True]
    rows = {r["contender"]: r for r in data["scenarios"][0]["groups"][0]["rows"]}
    assert rows["base"]["median"] == 3e6  # median of 4, 2, 3
    assert rows["fast"]["median"] == 1e6  # median of 1, 0.5, 2
    assert data["scenarios"][1]["groups"][0]["rows"][1]["median"] == 3.0
    assert "fewer than the 5 of a full run" in capsys.readouterr().out


def test_adopted_plain_function(suite: Path, tmp_path: Path) -> None:
    status, data = _run_json(suite, tmp_path, "--only", "adopted", "--repeats", "3")
    assert status == 0
    [scen] = data["scenarios"]
    assert scen["name"] == "adopted.throughput"
    assert scen["title"] == "Measured without the harness"
    rows = {r["contender"]: r for r in scen["groups"][0]["rows"]}
    assert rows["asyncio.Queue"]["samples"] == [2.0, 4.0, 3.0]
    assert rows["asyncio.Queue"]["median"] == 3.0
    assert rows["AsyncPool"]["median"] == 1.5
    assert rows["AsyncPool"]["ratio"] == 0.5  # higher is better: contender / baseline
    assert rows["AsyncPool"]["target"] == ">= 0.5x asyncio.Queue"
    assert rows["AsyncPool"]["passed"] is True
    assert scen["passed"] is True


def test_only_matching_nothing_exits_2(suite: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["bench", "--suite", str(suite), "--only", "nothing-like-this"]) == 2
    assert "no scenario matches" in capsys.readouterr().err


def test_list(suite: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["bench", "--suite", str(suite), "--list"]) == 0
    out = capsys.readouterr().out
    assert "fake.speed" in out
    assert "Two metrics per run" in out
    assert "helper" not in out


def test_isolated_runs_in_a_fresh_interpreter(suite: Path) -> None:
    [sc] = harness.select(harness.discover(suite), ["plain"])
    assert sc.fn is not None
    child = sys.modules["bench_plain"].lazy_child
    out = harness.isolated(child, 7)
    assert out["items"] == 7.0
    assert out["seconds"] >= 0.0
    assert out["rss_growth_mb"] >= 0.0


APART = '''
import os
import threading

from workpool._bench.harness import Target, compare, scenario

PARENT = []  # the parent appends to it: a scenario in a fresh interpreter sees it empty


@scenario(own_process=True)
def apart(quick):
    """Runs in an interpreter of its own."""
    threading.Thread(target=threading.Event().wait, daemon=True).start()  # left behind
    rounds = iter([3.0, 1.0, 2.0])
    return compare(
        [("base", lambda: 2.0), ("ours", lambda: next(rounds)),
         ("where", lambda: {"pid": float(os.getpid()), "marks": float(len(PARENT))})],
        unit="s", baseline="base", title="apart" if quick else "apart, full",
        targets=[Target("ours", ">=", 1.0)],
    )


@scenario(own_process=True)
def apart_crashes(quick):
    os._exit(3)


@scenario
def here(quick):
    """In the bench's own process."""
    return compare([("threads", lambda: float(threading.active_count()))], unit="n")
'''


def test_an_own_process_scenario_runs_in_a_fresh_interpreter(tmp_path: Path) -> None:
    (tmp_path / "bench_apart.py").write_text(textwrap.dedent(APART))
    try:
        scenarios = harness.discover(tmp_path)
        sys.modules["bench_apart"].PARENT.append("parent")
        results = [harness.run_scenario(sc, quick=True, repeats=3) for sc in scenarios]
    finally:
        sys.modules.pop("bench_apart", None)
    apart, crashes, here = results
    assert (apart.name, apart.title, apart.error) == ("apart.apart",
                                                       "Runs in an interpreter of its own",
                                                       None)
    [group] = apart.groups
    assert (group.title, group.unit, group.baseline, group.repeats) == ("apart", "s", "base", 3)
    rows = {(row.contender, row.unit): row for row in group.rows}
    assert rows["ours", "s"].samples == [3.0, 1.0, 2.0]
    assert (rows["ours", "s"].median, rows["ours", "s"].ratio) == (2.0, 1.0)
    assert (rows["ours", "s"].target, rows["ours", "s"].passed) == (">= 1x base", True)
    assert rows["where", "pid"].median != os.getpid()
    assert rows["where", "marks"].median == 0.0  # not the parent's module
    assert apart.passed is True
    assert crashes.groups == []
    assert crashes.error == "isolated apart_crashes failed: exit status 3"
    # The thread the fresh interpreter left went with it.
    [row] = here.groups[0].rows
    assert row.median == threading.active_count()


# -- pieces -----------------------------------------------------------------------------

@pytest.mark.parametrize(
    ("target", "x", "ok"),
    [
        (Target("a", ">=", 10), 10.0, True),
        (Target("a", ">=", 10), 9.99, False),
        (Target("a", ">", 1), 1.0, False),
        (Target("a", "<", 20, on="value"), 19.9, True),
        (Target("a", "<=", 201, on="value"), 201.0, True),
        (Target("a", "within", 200, on="value", tolerance=0.01), 198.0, True),
        (Target("a", "within", 200, on="value", tolerance=0.01), 202.1, False),
    ],
)
def test_target_checks(target: Target, x: float, ok: bool) -> None:
    assert target.check(x) is ok


def test_target_must_name_a_row() -> None:
    with pytest.raises(ValueError, match="target names no row"):
        harness.compare([("a", lambda: 1.0)], unit="s", targets=[Target("b", ">=", 1)],
                        repeats=1)


def test_contender_names_are_unique() -> None:
    with pytest.raises(ValueError, match="unique"):
        harness.compare([("a", lambda: 1.0), ("a", lambda: 2.0)], unit="s", repeats=1)


def test_max_in_window() -> None:
    assert max_in_window([]) == 0
    assert max_in_window([0.0, 0.5, 0.999, 1.0, 1.5]) == 3  # [t, t + 1) is half-open
    assert max_in_window([i / 256 for i in range(600)]) == 256  # exact binary fractions
