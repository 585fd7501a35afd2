"""The public surface: __all__ sorted and complete, every public name documented."""

from __future__ import annotations

import inspect

import workpool as wp


def test_all_is_sorted() -> None:
    assert list(wp.__all__) == sorted(wp.__all__)


def test_all_is_complete() -> None:
    public = {name for name in vars(wp) if not name.startswith("_")}
    public -= {"annotations"}
    assert public == set(wp.__all__)


def test_every_public_name_has_a_docstring() -> None:
    for name in wp.__all__:
        obj = getattr(wp, name)
        assert inspect.getdoc(obj), f"wp.{name} has no docstring"


def test_public_classes_say_workpool_module() -> None:
    for name in wp.__all__:
        obj = getattr(wp, name)
        if inspect.isclass(obj):
            assert obj.__module__ == "workpool", name
