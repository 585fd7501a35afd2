"""The README's runnable examples run."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

README = Path(__file__).resolve().parent.parent / "README.md"


def _block_defining(name: str) -> str:
    for block in re.findall(r"```python\n(.*?)```", README.read_text(), re.S):
        if f"def {name}(" in block:
            return str(block)
    raise AssertionError(f"no README example defines {name}()")


def test_fan_out_fan_in_example() -> None:
    namespace: dict[str, Any] = {}
    exec(_block_defining("parallel"), namespace)
    results = namespace["parallel"]([range(50), range(50, 100)], lambda x: x * 2, workers=4)
    assert sorted(results) == [x * 2 for x in range(100)]


def test_walk_example(tmp_path: Path) -> None:
    for sub in ("a/b/c", "a/d", "e"):
        (tmp_path / sub).mkdir(parents=True)
    namespace: dict[str, Any] = {}
    exec(_block_defining("listdir"), namespace)
    found = sorted(namespace["subdirectories"](str(tmp_path), workers=3))
    assert found == sorted(str(tmp_path / p) for p in ("", "a", "a/b", "a/b/c", "a/d", "e"))
