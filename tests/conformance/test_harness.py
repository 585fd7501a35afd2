"""The harness itself: every adopted test targets our pools; the skip table is current."""

from __future__ import annotations

import importlib
import unittest
from types import ModuleType

import pytest

import workpool as wp
from tests.conformance import _harness
from tests.conformance.skips import SKIPS


def _adopted() -> list[ModuleType]:
    reason = _harness.unsupported()
    if reason is not None:
        pytest.skip(reason)
    return [importlib.import_module(f"tests.conformance.{name}") for name in _harness.MODULES]


def test_every_executor_test_runs_against_a_workpool_pool() -> None:
    modules = _adopted()
    util = importlib.import_module(f"{_harness.PACKAGE}.util")
    for module in modules:
        classes = [c for c in vars(module).values()
                   if isinstance(c, type) and issubclass(c, unittest.TestCase)]
        assert classes, f"{module.__name__} adopted no test"
        for cls in classes:
            if issubclass(cls, util.ExecutorMixin):
                assert getattr(cls, "executor_type", None) in (wp.ThreadPool, wp.ProcessPool)


def test_every_skip_names_a_test() -> None:
    _adopted()
    assert set(SKIPS) - _harness.MATCHED == set()
