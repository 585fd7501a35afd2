"""Tables for a benchmark run, and ``main``, the body of ``workpool bench``.

One table per scenario (each row a contender: median, ratio against the baseline, the
spread of its repeats, its target and PASS/FAIL), then a summary of every target. Drawn
with rich when it is installed, as plain text otherwise.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence
from pathlib import Path

from workpool._cli._output import Cell, Column, Table, echo

from .harness import (
    FULL_REPEATS,
    INSTALL_PEERS,
    Group,
    Report,
    Scenario,
    ScenarioResult,
    discover,
    environment,
    missing_peers,
    run_suite,
    select,
)

__all__ = ["main", "scenario_tables", "summary_table"]


def main(
    *, quick: bool = False, json_path: Path | None = None, only: Sequence[str] = (),
    repeats: int | None = None, suite: Path | None = None, list_only: bool = False,
) -> int:
    """Run the suite (or the ``bench_*.py`` modules of *suite*) and print its tables.

    Returns 0 when every scenario ran (whatever its targets), 1 if one raised, and 2
    when *only* matches no scenario.
    """
    here = Path(__file__).resolve().parent
    found = discover(suite, package=None) if suite else discover(here, package=__package__)
    chosen = select(found, only)
    if not chosen:
        print(f"workpool bench: no scenario matches {list(only)}; "
              f"there are: {', '.join(s.name for s in found)}", file=sys.stderr)
        return 2
    if list_only:
        for sc in chosen:
            print(f"{sc.name:32} {sc.title}")
        return 0
    env = environment()
    echo(f"workpool {env['workpool']} benchmarks · {env['implementation']} {env['python']} · "
         f"{env['platform']} · {env['usable_cpus']} usable CPUs"
         f"{' · --quick' if quick else ''}", style="bold")
    missing = [] if suite else missing_peers()
    if missing:
        echo(f"workpool bench: peers not installed: {', '.join(missing)} (their rows say "
             f"so; {INSTALL_PEERS} adds them)", style="yellow", file=sys.stderr)
    report = run_suite(chosen, quick=quick, repeats=repeats, on_start=_starting,
                       on_result=_print_result)
    summary_table(report).print()
    if json_path is not None:
        report.write_json(json_path)
        echo(f"numbers written to {json_path}")
    return 1 if any(s.error for s in report.scenarios) else 0


def _starting(sc: Scenario) -> None:
    echo(f"running {sc.name} ...", style="dim", file=sys.stderr)


def _print_result(result: ScenarioResult) -> None:
    for table in scenario_tables(result):
        table.print()
    if result.error:
        echo(f"{result.name} failed:\n{result.error}", style="red")


def scenario_tables(result: ScenarioResult) -> list[Table]:
    """One table per group the scenario compared."""
    return [_group_table(result, g, i) for i, g in enumerate(result.groups)]


def _group_table(result: ScenarioResult, group: Group, index: int) -> Table:
    title = f"{result.name}: {result.title}"
    if group.title:
        title += f" ({group.title})"
    table = Table(title, [
        Column("contender"), Column("median", right=True), Column("unit"),
        Column("ratio", right=True), Column("spread", right=True), Column("target"),
        Column("result"),
    ], caption=_caption(result, group, last=index == len(result.groups) - 1))
    for row in group.rows:
        median: Cell = _number(row.median) if row.median is not None else (
            _shorten(row.note or "no sample"), "yellow")
        ratio = "" if row.ratio is None else _ratio(row.ratio)
        if row.contender == group.baseline and row.ratio is not None:
            ratio = "baseline"
        target = row.target or ""
        if row.target_on == "ratio" and group.baseline:
            target = target.removesuffix(f" {group.baseline}")
        spread = ""
        if row.median and len(row.samples) > 1:
            spread = f"{(max(row.samples) - min(row.samples)) / abs(row.median):.0%}"
        table.add_row(row.contender, median, row.unit, ratio, spread, target,
                      _verdict(row.passed, row.target))
    return table


def _caption(result: ScenarioResult, group: Group, *, last: bool) -> str:
    text = f"median of {group.repeats} interleaved repeats"
    if group.repeats < FULL_REPEATS:
        text += f" (fewer than the {FULL_REPEATS} of a full run)"
    if group.baseline:
        text += f"; ratio: against {group.baseline}, > 1 is better"
    text += "; spread: (max - min) / median"
    if last:
        text += f"; {result.seconds:.1f} s"
    return text


def summary_table(report: Report) -> Table:
    """Every scenario with its targets and verdicts, and the run's duration."""
    mode = "--quick, " if report.quick else ""
    table = Table("summary", [
        Column("scenario"), Column("target"), Column("reached", right=True),
        Column("result"), Column("seconds", right=True),
    ], caption=f"{mode}{report.repeats} repeats, {report.seconds:.1f} s in all")
    for s in report.scenarios:
        targeted = [r for g in s.groups for r in g.rows if r.target]
        if s.error:
            table.add_row(s.name, "", "", ("ERROR", "bold red"), f"{s.seconds:.1f}")
        for i, r in enumerate(targeted):
            shown = "" if r.reached is None else (
                _ratio(r.reached) if r.target_on == "ratio" else _number(r.reached))
            table.add_row(s.name if i == 0 else "", f"{r.contender} {r.target}", shown,
                          _verdict(r.passed, r.target),
                          f"{s.seconds:.1f}" if i == 0 else "")
        if not targeted and not s.error:
            table.add_row(s.name, "(no target)", "", "", f"{s.seconds:.1f}")
    return table


def _verdict(passed: bool | None, target: str | None) -> Cell:
    if target is None:
        return ""
    if passed is None:
        return ("n/a", "yellow")
    return ("PASS", "bold green") if passed else ("FAIL", "bold red")


def _number(x: float) -> str:
    if abs(x) >= 1000:
        return f"{x:,.0f}"
    if abs(x) >= 100:
        return f"{x:.1f}"
    if abs(x) >= 1:
        return f"{x:.2f}"
    return f"{x:.3g}" if abs(x) < 0.1 else f"{x:.4f}"


def _ratio(r: float) -> str:
    return f"{r:.1f}x" if r >= 10 else f"{r:.2f}x"


def _shorten(text: str, width: int = 60) -> str:
    return text if len(text) <= width else text[: width - 3] + "..."
