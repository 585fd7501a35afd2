"""The layering of src/workpool, read from the source's own imports.

Every module is parsed with ``ast``; every import counts wherever it is written: at the
top, inside a function, under ``TYPE_CHECKING``. Relative imports are resolved, and
``from package import name`` counts as importing the submodule when ``name`` is one.

The rules are the table ``RULES``: change it when the layout changes. Modules are named
inside the package (``_core.context``, ``_pipeline``); the package's own
``__init__`` (the public front, which re-exports every public name) is ``__init__``.
A pattern matches a module and its submodules; ``*`` is a wildcard; ``!pattern``
excludes.
"""

from __future__ import annotations

import ast
import fnmatch
from pathlib import Path
from typing import NamedTuple

import pytest

import workpool

ROOT = Path(workpool.__file__).parent
TOP = "__init__"  # the package itself


class Rule(NamedTuple):
    why: str
    importers: str  # who the rule binds
    forbidden: str  # what they must not import


RULES = [
    Rule("_core is the ground floor: it imports nothing of workpool above it",
         "_core", "* !_core"),
    Rule("the engine schedules; it knows no pool, group, synchronisation primitive, "
         "pipeline or CLI", "_engine", "_pools _groups _sync _pipeline _cli _bench _demo"),
    Rule("backends run one unit of work: they know no pool, group, pipeline or CLI",
         "_backends", "_pools _groups _sync _pipeline _cli _bench _demo"),
    Rule("synchronisation primitives stand beside the pools, not on them",
         "_sync", "_engine _pools _groups _pipeline _cli _bench _demo"),
    Rule("pools are front ends over engine and backend: no group, pipeline or CLI",
         "_pools", "_groups _pipeline _cli _bench _demo"),
    Rule("groups are a limit and an error policy over a pool: no pipeline or CLI",
         "_groups", "_pipeline _cli _bench _demo"),
    Rule("the CLI is an extra: only the CLI (and python -m workpool) imports it",
         "* !_cli !__main__", "_cli"),
    Rule("pipelines are built from pools, not beside them: only the public front, the "
         "CLI, the benchmarks and the demo import them",
         f"* !_pipeline !_cli !_bench !_demo !{TOP}", "_pipeline"),
    Rule("the pipeline reaches pools through their API, never the engine's insides",
         "_pipeline", "_engine.engine _engine.contract _engine.threaded _backends "
         "!_backends.aio"),
    Rule("exporters read what opted in through the public API and _core alone",
         "exporters", f"* !_core !exporters !{TOP}"),
    Rule("exporters are extras: nothing of workpool imports them but the CLI (the "
         "demo's --metrics)", "* !exporters !_cli", "exporters"),
    Rule("walks are a front end, as the pipeline: pools' API, the process pool's pickling "
         "and _core, never the engine's insides", "_walk",
         "_engine _backends !_backends._child !_backends._pickling _groups _sync _pipeline "
         "_cli _bench _demo"),
    Rule("only the public front and the benchmarks import walks",
         f"* !_walk !_bench !{TOP}", "_walk"),
]


# Imports that a rule refuses, let through one by one with the reason. Each must still
# exist (a test checks): delete the line when the import goes.
EXCEPTIONS = {
    ("_bench.report", "_cli._output"): "the body of `workpool bench` draws its tables "
                                       "with the CLI's table renderer",
}


class Import(NamedTuple):
    importer: str
    imported: str
    line: int

    def __str__(self) -> str:
        return f"{_full(self.importer)} -> {_full(self.imported)} (line {self.line})"


def _full(name: str) -> str:
    return "workpool" if name == TOP else f"workpool.{name}"


def _modules() -> dict[str, Path]:
    """{module name inside the package: its file}."""
    found = {}
    for path in sorted(ROOT.rglob("*.py")):
        parts = list(path.relative_to(ROOT).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts.pop()
        found[".".join(parts) or TOP] = path
    return found


MODULES = _modules()


def _target(importer: str, node: ast.Import | ast.ImportFrom) -> list[str]:
    """The absolute names *node*, written in *importer*, imports (``a.b.c`` style)."""
    if isinstance(node, ast.Import):
        return [alias.name for alias in node.names]
    if node.level == 0:
        base = node.module or ""
    else:
        package = "workpool" if importer == TOP else _full(importer)
        parts = package.split(".")
        if MODULES[importer].name != "__init__.py":
            parts.pop()  # a plain module: relative to the package holding it
        if node.level - 1 > len(parts):
            return []
        parts = parts[:len(parts) - (node.level - 1)]
        base = ".".join(parts + ([node.module] if node.module else []))
    # ``from package import name`` imports the submodule when there is one.
    return [f"{base}.{alias.name}" if _inside(f"{base}.{alias.name}") is not None else base
            for alias in node.names]


def _inside(name: str) -> str | None:
    """*name* as a module of the package, or None if it is not one."""
    if name == "workpool":
        return TOP
    if name.startswith("workpool.") and name[len("workpool."):] in MODULES:
        return name[len("workpool."):]
    return None


def _imports() -> list[Import]:
    found: dict[Import, None] = {}  # in order, each once
    for importer, path in MODULES.items():
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), str(path))):
            if isinstance(node, (ast.Import, ast.ImportFrom)):
                for name in _target(importer, node):
                    imported = _inside(name)
                    if imported is not None and imported != importer:
                        found[Import(importer, imported, node.lineno)] = None
    return list(found)


IMPORTS = _imports()


def _matches(module: str, selector: str) -> bool:
    """Whether *module* is selected by *selector*: any pattern, and no ``!pattern``."""
    def hit(pattern: str) -> bool:
        return fnmatch.fnmatchcase(module, pattern) or fnmatch.fnmatchcase(module,
                                                                            pattern + ".*")
    words = selector.split()
    return (any(hit(w) for w in words if not w.startswith("!"))
            and not any(hit(w[1:]) for w in words if w.startswith("!")))


@pytest.mark.parametrize("rule", RULES, ids=[rule.importers for rule in RULES])
def test_rule(rule: Rule) -> None:
    broken = [str(imp) for imp in IMPORTS
              if _matches(imp.importer, rule.importers)
              and _matches(imp.imported, rule.forbidden)
              and (imp.importer, imp.imported) not in EXCEPTIONS]
    assert not broken, f"{rule.why}; broken by:\n  " + "\n  ".join(broken)


def _cycle() -> list[Import] | None:
    """One import cycle among the package's modules (its imports in order), or None."""
    edges: dict[str, list[Import]] = {name: [] for name in MODULES}
    for imp in IMPORTS:
        edges[imp.importer].append(imp)
    done: set[str] = set()
    path: list[Import] = []
    on_path: dict[str, int] = {}  # module -> its index in the path

    def visit(module: str) -> list[Import] | None:
        on_path[module] = len(path)
        for imp in edges[module]:
            if imp.imported in on_path:
                return [*path[on_path[imp.imported]:], imp]
            if imp.imported not in done:
                path.append(imp)
                found = visit(imp.imported)
                if found is not None:
                    return found
                path.pop()
        del on_path[module]
        done.add(module)
        return None

    for module in sorted(MODULES):
        if module not in done:
            found = visit(module)
            if found is not None:
                return found
    return None


def test_no_import_cycle() -> None:
    cycle = _cycle()
    assert cycle is None, "an import cycle among workpool's modules:\n  " + "\n  ".join(
        str(imp) for imp in cycle)


def test_the_rules_name_modules_that_exist() -> None:
    # A rule whose pattern no longer matches anything checks nothing: the layout moved.
    for rule in RULES:
        for word in (rule.importers + " " + rule.forbidden).split():
            pattern = word.removeprefix("!")
            assert any(_matches(module, pattern) for module in MODULES), (rule.why, word)


def test_every_exception_is_still_needed() -> None:
    pairs = {(imp.importer, imp.imported) for imp in IMPORTS}
    for pair, why in EXCEPTIONS.items():
        assert pair in pairs, f"{pair} no longer imports ({why}): delete the exception"


def test_the_import_graph_is_read() -> None:
    # Relative imports at one and two levels, a function-level import, and one under
    # TYPE_CHECKING: the graph sees each, so the rules above do not pass vacuously.
    pairs = {(imp.importer, imp.imported) for imp in IMPORTS}
    assert ("_pools.async_pool", "_backends.async_backend") in pairs
    assert ("_pipeline._channel", "_backends.aio") in pairs
    assert ("_pipeline._async_stage", "_pools.async_pool") in pairs  # inside a method
    assert (TOP, "_pipeline") in pairs  # under TYPE_CHECKING
    assert ("_backends.aio", "_core.aio") in pairs
