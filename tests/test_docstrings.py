"""Every public name has a docstring, and so has each of its public methods and
properties: the API reference (docs/reference/) is generated from them, so a name
without one would be a blank entry. ``make docs`` runs this before building the site.
"""

from __future__ import annotations

import dataclasses
import inspect
from typing import Any

import pytest

import workpool as wp


def _documented(obj: Any) -> bool:
    """Whether *obj* has a docstring of its own (not one inherited, which griffe and
    so the reference would not show, nor the signature a dataclass makes up)."""
    if isinstance(obj, property):
        obj = obj.fget
    doc = (getattr(obj, "__doc__", None) or "").strip()
    if inspect.isclass(obj) and doc.startswith(f"{obj.__name__}("):
        return False
    return bool(doc)


def _public_members(cls: type) -> list[tuple[str, Any]]:
    """The public methods and properties that *cls* and its workpool bases define
    (the stdlib's bases document their own)."""
    members: dict[str, Any] = {}
    for base in reversed(cls.__mro__):
        if not base.__module__.startswith("workpool"):
            continue
        for name, member in vars(base).items():
            if name.startswith("_"):
                continue
            if isinstance(member, staticmethod | classmethod):
                member = member.__func__
            if inspect.isfunction(member) or isinstance(member, property):
                members[name] = member
    return sorted(members.items())


@pytest.mark.parametrize("name", wp.__all__)
def test_public_name_has_a_docstring(name: str) -> None:
    obj = getattr(wp, name)
    assert _documented(obj), f"wp.{name} has no docstring"


@pytest.mark.parametrize("name", [n for n in wp.__all__ if inspect.isclass(getattr(wp, n))])
def test_public_methods_have_docstrings(name: str) -> None:
    cls = getattr(wp, name)
    missing = [member for member, obj in _public_members(cls) if not _documented(obj)]
    assert missing == [], f"wp.{name} lacks docstrings on: {', '.join(missing)}"


def test_the_check_sees_a_missing_docstring() -> None:
    @dataclasses.dataclass
    class Undocumented:
        size: int

        def grow(self) -> None:
            pass

        @property
        def doubled(self) -> int:
            return 2 * self.size

    Undocumented.__module__ = "workpool.example"
    assert not _documented(Undocumented)
    assert [name for name, obj in _public_members(Undocumented)
            if not _documented(obj)] == ["doubled", "grow"]
