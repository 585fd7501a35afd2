"""The benchmark harness behind ``workpool bench``.

A benchmark module is ``_bench/bench_<topic>.py``. Its scenarios are functions
``def name(quick: bool) -> dict[str, float]``, marked with ``@scenario`` (or listed in a
module-level ``SCENARIOS``). A scenario builds its contenders, ``(name, callable)`` pairs
whose callable returns seconds or a metric, and hands them to ``compare``, which runs
them interleaved (A B C, A B C, ...) and keeps each one's median::

    @scenario
    def tiny_map(quick: bool) -> dict[str, float]:
        "200k tiny tasks through map."
        n = 20_000 if quick else 200_000
        return compare(
            [("ThreadPoolExecutor.map", lambda: stdlib(n)), ("ThreadPool.map", lambda: ours(n))],
            unit="us/task", scale=1e6 / n, baseline="ThreadPoolExecutor.map",
            targets=[Target("ThreadPool.map", ">=", 10)],   # >= 10x the baseline
        )

How a run flows::

    run_suite ─> run_scenario ─> fn(quick) ─> compare(contenders) ─> Group (recorded)
                     │                              └─> {row: median} returned to fn
                     └─> ScenarioResult(groups, seconds, error) ─> Report ─> tables, JSON

A function that measures on its own and returns ``{name: number}`` without calling
``compare`` is reported as it is, one row per key; ``adopt`` gives it a unit, baseline,
targets and repeats, in one line of its module's ``SCENARIOS``.
"""

from __future__ import annotations

import contextvars
import functools
import importlib
import importlib.util
import inspect
import json
import math
import os
import platform
import statistics
import subprocess
import sys
import time
import traceback
from collections.abc import Callable, Collection, Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Final, Literal, overload

from .isolation import in_child, isolated, resolve

__all__ = [
    "Contender", "Group", "Report", "Row", "Scenario", "ScenarioResult", "Target",
    "INSTALL_PEERS", "PEERS", "adopt", "compare", "discover", "environment", "isolated",
    "missing_peers", "peer", "run_scenario", "run_suite", "scenario", "select",
]

#: What a contender's callable returns: one number in the group's unit (seconds, to be
#: multiplied by ``scale``), or several metrics of one run keyed by their unit.
Sample = float | Mapping[str, float]
#: A contender: its name and a callable measuring it once; None when not available here.
Contender = tuple[str, Callable[[], Sample] | None]
Op = Literal[">=", ">", "<=", "<", "within"]

FULL_REPEATS = 5
QUICK_REPEATS = 3

#: The peers the ``bench`` extra installs (import names), each imported only where it is
#: measured: without one, its rows say "not installed" and the rest of the suite runs.
PEERS = ("aiometer", "distributed", "joblib", "mpire", "pebble", "pypeln", "trio")
INSTALL_PEERS = "pip install 'workpool[bench]'"


# -- what a scenario reports --------------------------------------------------------------

@dataclass(frozen=True, slots=True)
class Target:
    """A number a contender must reach.

    ``on="ratio"``: its ratio against the baseline (> 1 is better than the baseline,
    whichever way the unit points); ``on="value"``: its median itself. ``unit`` picks a
    metric of a contender that reports several; ``tolerance`` is relative, for "within".
    """

    contender: str
    op: Op
    value: float
    on: Literal["ratio", "value"] = "ratio"
    unit: str | None = None
    tolerance: float = 0.0

    def describe(self, baseline: str | None, unit: str) -> str:
        """The target as the tables print it, e.g. ``>= 10x ThreadPoolExecutor.map``."""
        if self.on == "ratio":
            return f"{self.op} {self.value:g}x {baseline}"
        if self.op == "within":
            return f"{self.value:g} {unit} ±{self.tolerance:.0%}"
        return f"{self.op} {self.value:g} {unit}"

    def check(self, x: float) -> bool:
        """Whether *x* (the ratio or the median, per ``on``) reaches the target."""
        v = self.value
        if self.op == "within":
            return abs(x - v) <= self.tolerance * abs(v)
        return {">=": x >= v, ">": x > v, "<=": x <= v, "<": x < v}[self.op]


@dataclass(slots=True)
class Row:
    """One contender's metric: its samples in run order, median and ratio."""

    contender: str
    unit: str
    better: Literal["lower", "higher"] = "lower"
    samples: list[float] = field(default_factory=list)
    median: float | None = None
    ratio: float | None = None
    target: str | None = None
    target_on: str | None = None  # "ratio" or "value": which number the target checks
    reached: float | None = None  # that number
    passed: bool | None = None
    note: str = ""  # "not available", or the error that stopped the contender


@dataclass(slots=True)
class Group:
    """Contenders measured side by side by one ``compare`` call."""

    title: str
    unit: str
    baseline: str | None
    repeats: int
    rows: list[Row]


@dataclass(slots=True)
class ScenarioResult:
    """What one scenario measured, how long it took, and the error that stopped it."""

    name: str
    title: str
    groups: list[Group] = field(default_factory=list)
    seconds: float = 0.0
    error: str | None = None

    @property
    def passed(self) -> bool | None:
        """False if a target failed, True if every checked target passed, else None."""
        verdicts = [r.passed for g in self.groups for r in g.rows if r.passed is not None]
        return all(verdicts) if verdicts else None


@dataclass(slots=True)
class Report:
    """A whole run: its scenarios, mode, repeats, duration and environment."""

    quick: bool
    repeats: int
    scenarios: list[ScenarioResult]
    seconds: float = 0.0
    environment: dict[str, Any] = field(default_factory=dict)

    @property
    def passed(self) -> bool | None:
        """False if a target failed, True if every checked target passed, else None."""
        verdicts = [s.passed for s in self.scenarios if s.passed is not None]
        return all(verdicts) if verdicts else None

    def to_json(self) -> dict[str, Any]:
        """Every number of the run, as JSON values (a non-finite number becomes null)."""
        data = asdict(self)
        for scen, result in zip(data["scenarios"], self.scenarios, strict=True):
            scen["passed"] = result.passed
        data["passed"] = self.passed
        cleaned: dict[str, Any] = _finite(data)
        return cleaned

    def write_json(self, path: Path) -> None:
        """Write ``to_json()`` to *path*."""
        path.write_text(json.dumps(self.to_json(), indent=2, allow_nan=False) + "\n")


def _finite(value: Any) -> Any:
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: _finite(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_finite(v) for v in value]
    return value


# -- measuring ----------------------------------------------------------------------------

@dataclass(slots=True)
class _Recording:
    repeats: int
    groups: list[Group] = field(default_factory=list)


_recording: contextvars.ContextVar[_Recording | None] = contextvars.ContextVar(
    "bench_recording", default=None
)


def compare(
    contenders: Sequence[Contender],
    *,
    unit: str,
    baseline: str | None = None,
    scale: float = 1.0,
    higher_is_better: Collection[str] = (),
    targets: Iterable[Target] = (),
    title: str = "",
    repeats: int | None = None,
) -> dict[str, float]:
    """Measure *contenders* interleaved, ``repeats`` rounds; return each row's median.

    A number returned by a contender is in *unit* after multiplying by *scale* (seconds
    for n tasks, ``scale=1e6 / n``: us/task); a mapping is ``{unit: value}``, unscaled.
    Ratios compare each row with the baseline's row of the same unit, oriented so that
    above 1 is better (units in *higher_is_better* grow the good way). A contender that
    raises is reported with its error and not run again; the others go on. Rows are
    keyed by contender name, with `` [unit]`` appended for a unit other than *unit*.
    """
    names = [name for name, _ in contenders]
    if len(set(names)) != len(names):
        raise ValueError(f"contender names must be unique, got {names}")
    rec = _recording.get()
    rounds = repeats or (rec.repeats if rec else FULL_REPEATS)
    rows: dict[tuple[str, str], Row] = {}
    notes: dict[str, str] = {}
    for name, fn in contenders:
        if fn is None:
            notes[name] = "not available"
    for _ in range(rounds):
        for name, fn in contenders:
            if fn is None or name in notes:
                continue
            try:
                sample = fn()
            except ModuleNotFoundError as exc:  # a peer that is not installed here
                notes[name] = f"not installed: {exc.name} ({INSTALL_PEERS})"
                continue
            except Exception as exc:
                notes[name] = f"error: {type(exc).__name__}: {exc}"
                continue
            values = sample.items() if isinstance(sample, Mapping) else [(unit, sample * scale)]
            for u, v in values:
                rows.setdefault((name, u), Row(name, u)).samples.append(float(v))
    ordered = _order(contenders, rows, notes, unit)
    _finish(ordered, baseline, set(higher_is_better), list(targets), unit)
    if rec is not None:
        rec.groups.append(Group(title, unit, baseline, rounds, ordered))
    return {_key(r, unit): r.median for r in ordered if r.median is not None}


def adopt(
    fn: ScenarioFn,
    *,
    unit: str,
    baseline: str | None = None,
    higher_is_better: bool = False,
    targets: Iterable[Target] = (),
    title: str = "",
    repeat: bool = True,
) -> ScenarioFn:
    """A scenario from a plain function returning ``{contender: number in unit}``.

    The thin registration for a module written without the harness: list
    ``adopt(fn, unit=..., baseline=..., targets=[...])`` in its ``SCENARIOS``. With
    *repeat* (the default) *fn* is called once per round, as a contender would be; each
    call measures every contender once, so the rounds stay interleaved, and each key's
    median is kept. ``repeat=False`` takes the numbers of one call as they are, for a
    function that already repeats and returns medians.
    """
    wanted = list(targets)

    @functools.wraps(fn)
    def adopted(quick: bool) -> dict[str, float]:
        rec = _recording.get()
        rounds = (rec.repeats if rec else FULL_REPEATS) if repeat else 1
        samples: dict[str, list[float]] = {}
        for _ in range(rounds):
            for key, value in fn(quick).items():
                samples.setdefault(key, []).append(float(value))
        rows = [Row(key, unit, samples=values) for key, values in samples.items()]
        _finish(rows, baseline, {unit} if higher_is_better else set(), wanted, unit)
        if rec is not None:
            rec.groups.append(Group(title, unit, baseline, rounds, rows))
        return {r.contender: r.median for r in rows if r.median is not None}

    return adopted


def peer(module: str, fn: Callable[[], Sample]) -> Callable[[], Sample]:
    """*fn*, when *module* (a peer) is installed; else a contender whose row says
    ``not installed: MODULE (pip install 'workpool[bench]')``."""
    if importlib.util.find_spec(module) is not None:
        return fn

    def not_installed() -> Sample:
        raise ModuleNotFoundError(f"No module named {module!r}", name=module)

    return not_installed


def missing_peers() -> list[str]:
    """The ``PEERS`` not installed in this environment."""
    return [name for name in PEERS if importlib.util.find_spec(name) is None]


def _order(contenders: Sequence[Contender], rows: dict[tuple[str, str], Row],
           notes: dict[str, str], unit: str) -> list[Row]:
    ordered: list[Row] = []
    for name, _ in contenders:
        mine = [r for (n, _u), r in rows.items() if n == name] or [Row(name, unit)]
        for r in mine:
            r.note = notes.get(name, "")
        ordered += mine
    return ordered


def _finish(rows: list[Row], baseline: str | None, higher: set[str],
            targets: list[Target], unit: str) -> None:
    for r in rows:
        r.better = "higher" if r.unit in higher else "lower"
        if r.samples and not r.note:  # a contender stopped by an error has no median
            r.median = statistics.median(r.samples)
    base = {r.unit: r.median for r in rows if r.contender == baseline}
    for r in rows:
        b = base.get(r.unit)
        if r.median is not None and b is not None and r.median > 0 and b > 0:
            r.ratio = r.median / b if r.unit in higher else b / r.median
    for t in targets:
        u = t.unit or unit
        row = next((r for r in rows if r.contender == t.contender and r.unit == u), None)
        if row is None:
            same = [r for r in rows if r.contender == t.contender]
            if not same or not same[0].note:
                raise ValueError(f"target names no row: {t.contender!r} in {u!r}")
            # Not available, or stopped by an error: its target is reported as n/a.
            row = Row(t.contender, u, note=same[0].note)
            rows.insert(rows.index(same[-1]) + 1, row)
        row.target, row.target_on = t.describe(baseline, u), t.on
        row.reached = row.ratio if t.on == "ratio" else row.median
        row.passed = None if row.reached is None else t.check(row.reached)


def _key(row: Row, unit: str) -> str:
    return row.contender if row.unit == unit else f"{row.contender} [{row.unit}]"


# -- scenarios ------------------------------------------------------------------------------

ScenarioFn = Callable[[bool], Mapping[str, float]]


@overload
def scenario(fn: ScenarioFn, /) -> ScenarioFn: ...
@overload
def scenario(*, own_process: bool = False) -> Callable[[ScenarioFn], ScenarioFn]: ...


def scenario(fn: ScenarioFn | None = None, /, *, own_process: bool = False
             ) -> ScenarioFn | Callable[[ScenarioFn], ScenarioFn]:
    """Mark *fn* (``def name(quick: bool) -> dict[str, float]``) as a scenario.

    ``@scenario(own_process=True)``: the scenario runs in a fresh interpreter, for one
    that leaves the process changed for those after it (a library's threads that live
    as long as the process: with a thread more, a ``ProcessPool`` no longer forks).
    """
    def mark(f: ScenarioFn) -> ScenarioFn:
        f.__bench_scenario__ = True  # type: ignore[attr-defined]
        f.__bench_own_process__ = own_process  # type: ignore[attr-defined]
        return f

    return mark if fn is None else mark(fn)


@dataclass(frozen=True, slots=True)
class Scenario:
    """A scenario found in a module: ``topic.function`` and its first docstring line."""

    name: str
    title: str
    fn: ScenarioFn | None
    error: str | None = None  # the module could not be imported


def discover(directory: Path, *, package: str | None = None) -> list[Scenario]:
    """The scenarios of every ``bench_*.py`` module in *directory*, by file name.

    Modules are imported as ``package.stem`` when *package* is given (the suite's own
    folder), else by path under their bare stem, so that ``isolated`` can reach them.
    Per module: its ``SCENARIOS`` list if it has one, else its ``@scenario`` functions,
    else every public function of the form ``name(quick)`` defined there.
    """
    found: list[Scenario] = []
    for path in sorted(directory.glob("bench_*.py")):
        topic = path.stem.removeprefix("bench_")
        try:
            module = _load(path, package)
        except Exception as exc:
            found.append(Scenario(f"{topic}.*", f"import {path.name}", None,
                                  error=f"{type(exc).__name__}: {exc}"))
            continue
        for fn in _scenarios_of(module):
            found.append(Scenario(f"{topic}.{fn.__name__}", _first_line(fn), fn))
    return found


def _load(path: Path, package: str | None) -> Any:
    if package is not None:
        return importlib.import_module(f"{package}.{path.stem}")
    if path.stem in sys.modules and getattr(sys.modules[path.stem], "__file__", None) == str(
        path
    ):
        return sys.modules[path.stem]
    spec = importlib.util.spec_from_file_location(path.stem, path)
    if spec is None or spec.loader is None:
        raise ImportError(f"cannot import {path}")
    module = importlib.util.module_from_spec(spec)
    sys.modules[path.stem] = module
    try:
        spec.loader.exec_module(module)
    except BaseException:
        del sys.modules[path.stem]
        raise
    return module


def _scenarios_of(module: Any) -> list[ScenarioFn]:
    listed = getattr(module, "SCENARIOS", None)
    if listed is not None:
        return list(listed)
    functions: list[ScenarioFn] = [
        f for name, f in vars(module).items()
        if inspect.isfunction(f) and f.__module__ == module.__name__ and name[0] != "_"
    ]
    marked = [f for f in functions if getattr(f, "__bench_scenario__", False)]
    if marked:
        return marked
    return [f for f in functions if list(inspect.signature(f).parameters) == ["quick"]]


def _first_line(fn: Callable[..., object]) -> str:
    doc = inspect.getdoc(fn) or fn.__name__
    return doc.strip().splitlines()[0].rstrip(".")


def select(scenarios: Sequence[Scenario], only: Sequence[str]) -> list[Scenario]:
    """The scenarios whose name contains one of *only* (all of them when it is empty)."""
    wanted = [s.lower() for s in only]
    return [s for s in scenarios if not wanted or any(w in s.name.lower() for w in wanted)]


# -- running --------------------------------------------------------------------------------

def run_scenario(sc: Scenario, *, quick: bool, repeats: int) -> ScenarioResult:
    """Run one scenario, recording what it compares (in a fresh interpreter if it was
    marked ``own_process``); an error is reported, not raised."""
    if sc.fn is not None and getattr(sc.fn, "__bench_own_process__", False):
        try:
            data = in_child(_scenario_child, sc.fn, [sc.name, sc.title, quick, repeats],
                            timeout=_OWN_PROCESS_TIMEOUT)
        except (RuntimeError, subprocess.TimeoutExpired) as exc:
            return ScenarioResult(sc.name, sc.title, error=str(exc))
        return _result_from(data)
    return _run_here(sc, quick=quick, repeats=repeats)


def _run_here(sc: Scenario, *, quick: bool, repeats: int) -> ScenarioResult:
    """``run_scenario`` in this process."""
    result = ScenarioResult(sc.name, sc.title, error=sc.error)
    if sc.fn is None:
        return result
    rec = _Recording(repeats)
    token = _recording.set(rec)
    t0 = time.perf_counter()
    try:
        returned = sc.fn(quick)
    except Exception:
        result.error = traceback.format_exc(limit=-3).strip()
        returned = {}
    finally:
        _recording.reset(token)
        result.seconds = time.perf_counter() - t0
    result.groups = rec.groups
    if not rec.groups and returned:
        # A plain function that measured on its own: its numbers, as reported.
        rows = [Row(k, "", samples=[float(v)], median=float(v)) for k, v in returned.items()]
        result.groups = [Group("as reported by the scenario", "", None, 1, rows)]
    return result


_OWN_PROCESS_TIMEOUT: Final = 1800.0


def _scenario_child(payload: list[Any]) -> None:
    """In a fresh interpreter: run the scenario *payload* names, print its result."""
    fn, (name, title, quick, repeats) = resolve(payload)
    result = _run_here(Scenario(name, title, fn), quick=quick, repeats=repeats)
    print(json.dumps(asdict(result)))


def _result_from(data: dict[str, Any]) -> ScenarioResult:
    """A ``ScenarioResult`` again, from its ``asdict`` in JSON."""
    groups = [Group(**{**g, "rows": [Row(**row) for row in g["rows"]]})
              for g in data["groups"]]
    return ScenarioResult(**{**data, "groups": groups})


def run_suite(
    scenarios: Sequence[Scenario], *, quick: bool, repeats: int | None = None,
    on_start: Callable[[Scenario], None] | None = None,
    on_result: Callable[[ScenarioResult], None] | None = None,
) -> Report:
    """Run *scenarios* in order, telling *on_start* and *on_result* as each goes."""
    rounds = repeats or (QUICK_REPEATS if quick else FULL_REPEATS)
    report = Report(quick, rounds, [], environment=environment())
    t0 = time.perf_counter()
    for sc in scenarios:
        if on_start is not None:
            on_start(sc)
        result = run_scenario(sc, quick=quick, repeats=rounds)
        report.scenarios.append(result)
        if on_result is not None:
            on_result(result)
    report.seconds = time.perf_counter() - t0
    return report


def environment() -> dict[str, Any]:
    """The interpreter and machine a run measured."""
    import workpool

    return {
        "workpool": getattr(workpool, "__version__", "?"),
        "python": platform.python_version(),
        "implementation": platform.python_implementation(),
        "executable": sys.executable,
        "platform": platform.platform(),
        "cpus": os.cpu_count(),
        "usable_cpus": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity")
        else os.cpu_count(),
        "started": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    }


def max_in_window(starts: Iterable[float], window: float = 1.0) -> int:
    """The most of *starts* that fall in any half-open window ``[t, t + window)``."""
    s = sorted(starts)
    best, j = 0, 0
    for i, t in enumerate(s):
        j = max(j, i)
        while j < len(s) and s[j] - t < window:
            j += 1
        best = max(best, j - i)
    return best
