"""The public surface: __all__ sorted and complete, every public name documented."""

from __future__ import annotations

import inspect
import json
import subprocess
import sys

import pytest

import workpool as wp


def test_all_is_sorted() -> None:
    assert list(wp.__all__) == sorted(wp.__all__)


def test_all_is_complete() -> None:
    public = {name for name in dir(wp) if not name.startswith("_")}
    public -= {"annotations"}
    public -= {"exporters"}  # a subpackage (an extra): an attribute once imported
    assert public == set(wp.__all__)


def test_unknown_names_raise_attribute_error() -> None:
    with pytest.raises(AttributeError, match="module 'workpool' has no attribute 'Nope'"):
        wp.Nope  # type: ignore[attr-defined]  # noqa: B018


def _imported_after(code: str) -> set[str]:
    """The heavy modules loaded by a fresh interpreter after running *code*."""
    heavy = ["anyio", "asyncio", "sqlite3", "rich", "cloudpickle", "trio", "multiprocessing",
             "concurrent.futures.process", "dask", "distributed"]
    probe = f"import sys; {code}; import json; print(json.dumps([m for m in {heavy!r} "
    probe += "if m in sys.modules]))"
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True,
                         timeout=60, check=True).stdout
    return set(json.loads(out))


def test_import_loads_no_heavy_module() -> None:
    assert _imported_after("import workpool") == set()


def test_threads_load_only_what_they_need() -> None:
    for name in ("ThreadPool", "Group", "Semaphore"):
        assert _imported_after(f"import workpool as wp; wp.{name}") == set(), name
    code = "import workpool as wp; wp.ThreadPool; wp.Group; wp.Semaphore"
    assert _imported_after(code) == set()
    processes = {"multiprocessing", "concurrent.futures.process"}
    assert _imported_after("import workpool as wp; wp.ProcessPool") == {"cloudpickle", *processes}
    assert "anyio" in _imported_after("import workpool as wp; wp.AsyncPool")
    assert {"dask", "distributed"} <= _imported_after("import workpool as wp; wp.DaskPool")


def test_walk_loads_no_pool_until_it_runs() -> None:
    assert _imported_after("import workpool as wp; wp.walk; wp.awalk") == set()


def test_lazy_names_are_the_same_objects_as_their_modules() -> None:
    from workpool._pipeline import Pipeline
    from workpool._pools.async_pool import AsyncPool
    from workpool._pools.dask import DaskPool

    assert wp.AsyncPool is AsyncPool
    assert wp.Pipeline is Pipeline
    assert wp.DaskPool is DaskPool
    assert wp.AsyncFuture.__module__ == "workpool"  # loaded with its family


def test_every_public_name_has_a_docstring() -> None:
    for name in wp.__all__:
        obj = getattr(wp, name)
        assert inspect.getdoc(obj), f"wp.{name} has no docstring"


def test_public_classes_say_workpool_module() -> None:
    for name in wp.__all__:
        obj = getattr(wp, name)
        if inspect.isclass(obj):
            assert obj.__module__ == "workpool", name


def test_dynamic_policies_load_nothing_heavy() -> None:
    assert _imported_after("import workpool as wp; wp.Autoscale; wp.Adaptive") == set()
    assert wp.Autoscale.__module__ == wp.Adaptive.__module__ == "workpool"


def test_worker_crashed_loads_with_its_base_alone() -> None:
    # It subclasses BrokenProcessPool, whose module imports multiprocessing.
    assert _imported_after("import workpool as wp; wp.WorkerCrashed") == {
        "multiprocessing", "concurrent.futures.process"}


def test_worker_crashed_says_workpool_however_it_was_loaded() -> None:
    # The process backend raises it without reading wp.WorkerCrashed (which is what
    # renames the lazily loaded names); it pickles by reference, loading it lazily.
    code = ("import pickle, traceback; from workpool._core.process_errors import WorkerCrashed; "
            "print(traceback.format_exception_only(WorkerCrashed('died'))[-1], end=''); "
            "e = pickle.loads(pickle.dumps(WorkerCrashed('died'))); "
            "import workpool; assert type(e) is workpool.WorkerCrashed")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         timeout=60, check=True).stdout
    assert out == "workpool.WorkerCrashed: died\n"


def test_memory_budget_loads_no_heavy_module() -> None:
    assert _imported_after("import workpool as wp; wp.MemoryBudget; wp.memory_limit()") == set()
