"""The documentation's code runs, and its API reference lists every public name.

Every ``docs/examples/*.py`` exits 0 within seconds and prints what its ``.out`` file
says (``NAME.out``, or ``X.out`` for both sides of a ``X_before.py`` / ``X_after.py``
comparison); every example is shown on some page, and a page's Python code comes only
from these files (pages include them with ``--8<--``), so nothing the site shows goes
untested. The reference pages' hook (docs/hooks/api.py) puts every name of
``workpool.__all__`` on exactly one page.
"""

from __future__ import annotations

import importlib.util
import os
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

import workpool as wp

DOCS = Path(__file__).resolve().parent.parent / "docs"
EXAMPLES = DOCS / "examples"
SCRIPTS = sorted(EXAMPLES.glob("*.py"))
PAGES = sorted(DOCS.rglob("*.md"))
# Examples of the peers a "coming from" page compares with: the docs extra installs
# them, and `make docs` runs these examples; elsewhere they are skipped.
PEERS = {"joblib_before.py": "joblib", "mpire_before.py": "mpire"}
INCLUDE = re.compile(r'--8<--\s+"([^"]+)"')
FENCE = re.compile(r"^```(\w*)[^\n]*\n(.*?)^```", re.S | re.M)


def _expected(script: Path) -> Path | None:
    """The output *script* must print, if it is deterministic."""
    pair = re.sub(r"_(before|after)\.py$", ".out", script.name)
    for out in (script.with_suffix(".out"), script.with_name(pair)):
        if out.suffix == ".out" and out.exists():
            return out
    return None


@pytest.mark.parametrize("script", SCRIPTS, ids=[s.name for s in SCRIPTS])
def test_example_runs(script: Path, tmp_path: Path) -> None:
    peer = PEERS.get(script.name)
    if peer is not None and importlib.util.find_spec(peer) is None:
        pytest.skip(f"{peer} is not installed (the docs extra brings it)")
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(
        [str(DOCS.parent / "src"), os.environ.get("PYTHONPATH", "")]),
        "WORKPOOL_PLAIN": "1"}
    done = subprocess.run([sys.executable, str(script)], cwd=tmp_path, env=env,
                          capture_output=True, text=True, timeout=30, check=False)
    assert done.returncode == 0, done.stderr
    assert done.stderr == ""
    expected = _expected(script)
    if expected is not None:
        assert done.stdout == expected.read_text()
    assert list(tmp_path.iterdir()) == []  # an example leaves no file behind


def test_every_example_is_shown_and_every_include_exists() -> None:
    included = {name for page in PAGES for name in INCLUDE.findall(page.read_text())}
    files = {p.name for p in EXAMPLES.iterdir()}
    assert sorted(included - files) == []
    assert sorted(name for name in files - included if not name.endswith(".out")) == []


def test_pages_take_python_code_from_the_examples() -> None:
    inline = [f"{page.relative_to(DOCS)}: {body.splitlines()[0] if body else ''}"
              for page in PAGES for lang, body in FENCE.findall(page.read_text())
              if lang in ("python", "py", "pycon") and not INCLUDE.search(body)]
    assert inline == []


def _api_hook() -> Any:
    spec = importlib.util.spec_from_file_location("docs_api_hook", DOCS / "hooks" / "api.py")
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_every_public_name_is_on_one_reference_page() -> None:
    pytest.importorskip("griffe", reason="the docs extra brings griffe")
    hook = _api_hook()
    pages: dict[str, list[str]] = hook.pages()
    placed = [name for names in pages.values() for name in names]
    assert sorted(placed) == sorted(wp.__all__)
    for page in pages:
        assert f"<!-- api: {page} -->" in (DOCS / "reference" / f"{page}.md").read_text()
