"""How a CPython executor test module is run against workpool's pools.

CPython tests every executor through mixins (``test_concurrent_futures/util.py``): a
behaviour class (``ExecutorTest``, ``WaitTests``, ...) is combined with one mixin per
executor (``ThreadPoolMixin``, ``ProcessPoolForkMixin``, ...) into concrete
``TestCase`` classes, and the mixin's ``executor_type`` is the class under test.
``adopt`` takes each ``TestCase`` of a CPython module and subclasses it here, under
the same name, with ``executor_type`` set to ``wp.ThreadPool`` or ``wp.ProcessPool``
(the process mixins pass ``mp_context=`` for fork, forkserver and spawn), and skips
the tests that ``skips.SKIPS`` names, with their reasons. pytest collects those
classes as it collects any ``unittest.TestCase``.

A few tests name the stdlib's classes instead of ``executor_type``: they build a
``futures.ThreadPoolExecutor`` themselves, or run a script in a fresh interpreter that
does ``from concurrent.futures import <executor_type.__name__>``. In the adopted
modules, ``futures`` is therefore a view of ``concurrent.futures`` whose two executors
are ours, and such scripts start by making ours importable under those names (in that
child interpreter only). Nothing of the stdlib itself is patched in this process.
"""

from __future__ import annotations

import concurrent.futures
import fnmatch
import importlib
import sys
import types
import unittest
from typing import Any

import pytest

import workpool as wp
from tests.conformance.skips import SKIPS

__all__ = ["MATCHED", "MODULES", "PACKAGE", "adopt", "unsupported"]

PACKAGE = "test.test_concurrent_futures"

#: The CPython modules run here, each by ``tests/conformance/<name>.py``. (The
#: behaviour shared by every executor, ``executor.ExecutorTest``, runs through the
#: first two.)
MODULES = ("test_thread_pool", "test_process_pool", "test_shutdown", "test_wait",
           "test_as_completed", "test_deadlock", "test_init")

# A variable, not a literal: the type checker would call the rest unreachable.
_FIRST_VERSION = (3, 13)

#: The SKIPS patterns that matched a test of an adopted module.
MATCHED: set[str] = set()

# The script of a test that runs a fresh interpreter gets this first line.
_PRELUDE = ("import concurrent.futures as _cf, workpool as _wp; "
            "_cf.ThreadPool = _cf.ThreadPoolExecutor = _wp.ThreadPool; "
            "_cf.ProcessPool = _cf.ProcessPoolExecutor = _wp.ProcessPool\n")


class _Futures(types.ModuleType):
    """``concurrent.futures`` as the adopted tests see it: its executors are ours."""

    ThreadPoolExecutor = wp.ThreadPool
    ProcessPoolExecutor = wp.ProcessPool

    def __getattr__(self, name: str) -> Any:
        return getattr(concurrent.futures, name)


_FUTURES = _Futures("concurrent.futures")


def unsupported() -> str | None:
    """Why CPython's suite cannot run on this Python, or None if it can."""
    if sys.version_info < _FIRST_VERSION:
        return (f"CPython's executor suite is run as shipped with Python 3.13+; "
                f"this is Python {sys.version.split()[0]}")
    try:
        importlib.import_module(f"{PACKAGE}.util")
    except ImportError as exc:
        return (f"this Python ships without CPython's test package ({exc}); "
                f"install its test suite to run CPython's executor tests")
    return None


def _assert_python_ok(*args: str, **env: Any) -> Any:
    """``script_helper.assert_python_ok``, with ``_PRELUDE`` before a ``-c`` script."""
    from test.support import script_helper

    if "-c" in args:
        i = args.index("-c") + 1
        args = (*args[:i], _PRELUDE + args[i], *args[i + 1:])
    return script_helper.assert_python_ok(*args, **env)


def _redirect(module: types.ModuleType) -> None:
    """Point *module*'s names for the stdlib executors at ours (see the docstring)."""
    if hasattr(module, "futures"):
        module.futures = _FUTURES  # type: ignore[attr-defined]
    if hasattr(module, "assert_python_ok"):
        module.assert_python_ok = _assert_python_ok  # type: ignore[attr-defined]


def _skip_reason(test_id: str) -> str | None:
    for pattern, reason in SKIPS.items():
        if fnmatch.fnmatchcase(test_id, pattern):
            MATCHED.add(pattern)
            return reason
    return None


def _retarget(cls: type[unittest.TestCase], short: str, home: str) -> type[Any]:
    """*cls* as a class of module *home*, testing our pool, with the skips applied."""
    util = importlib.import_module(f"{PACKAGE}.util")
    namespace: dict[str, Any] = {"__module__": home, "__qualname__": cls.__name__}
    if issubclass(cls, util.ExecutorMixin):
        # The process mixins are those with a start method (``ctx``).
        namespace["executor_type"] = wp.ProcessPool if hasattr(cls, "ctx") else wp.ThreadPool
    for name in dir(cls):
        if name.startswith("test"):
            reason = _skip_reason(f"{short}.{cls.__name__}.{name}")
            if reason is not None:
                namespace[name] = unittest.skip(reason)(getattr(cls, name))
    return type(cls.__name__, (cls,), namespace)


def adopt(name: str, namespace: dict[str, Any]) -> None:
    """Fill a test module's *namespace* with CPython's module *name*, retargeted.

    Skips the whole module (with the reason) where CPython's suite cannot run.
    """
    reason = unsupported()
    if reason is not None:
        pytest.skip(reason, allow_module_level=True)
    module = importlib.import_module(f"{PACKAGE}.{name}")
    util = importlib.import_module(f"{PACKAGE}.util")
    for source in (module, importlib.import_module(f"{PACKAGE}.executor"), util):
        _redirect(source)
    for attr, obj in list(vars(module).items()):
        if (isinstance(obj, type) and issubclass(obj, unittest.TestCase)
                and obj.__module__ == module.__name__):
            ours = _retarget(obj, name, namespace["__name__"])
            namespace[attr] = ours
            # Tests that name a generated class by its global (test_init does) get ours.
            setattr(module, attr, ours)
    # CPython's module set-up (thread and multiprocessing clean-up checks); pytest
    # calls setup_module/teardown_module but does not run unittest's module cleanups.
    namespace["setup_module"] = util.setup_module
    namespace["teardown_module"] = unittest.doModuleCleanups
