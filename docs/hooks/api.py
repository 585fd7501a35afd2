"""MkDocs hook: the API reference pages list every name of ``workpool.__all__``.

A reference page holds a marker, ``<!-- api: PAGE -->``; this hook replaces it with one
mkdocstrings block (``::: workpool.Name``) per public name that belongs on that page,
chosen by the module that defines the name (``PAGES`` below, first match wins). The last
rule matches every module, so a name added to ``__all__`` appears in the reference
without editing any page, and a name with no page cannot exist. The names are read
statically with griffe (what mkdocstrings itself reads), so building the docs imports
nothing from the package.
"""

from __future__ import annotations

import logging
import re
from functools import cache
from pathlib import Path
from typing import Any

import griffe

log = logging.getLogger("mkdocs.plugins.workpool_api")
SRC = Path(__file__).resolve().parents[2] / "src"

#: (page, module prefixes under ``workpool.``): a name goes to the first page one of
#: whose prefixes starts its defining module's path.
PAGES: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("pools", ("_pools", "_engine", "_backends", "_dask", "_walk")),
    ("sync", ("_groups", "_sync")),
    ("pipelines", ("_pipeline",)),
    ("errors", ("_core.exceptions", "_core.process_errors", "_core.failures")),
    ("helpers", ("",)),
)
#: Names a reader looks for first come first, in this order; the rest follow in
#: ``__all__`` order.
FIRST: tuple[str, ...] = (
    "ThreadPool", "ProcessPool", "AsyncPool", "Group", "AsyncGroup", "Semaphore",
    "AsyncSemaphore", "merge", "amerge", "Pipeline", "Retry", "RateLimit", "current",
    "TaskContext", "Value", "Error", "cpus", "io_workers", "WorkpoolError",
)
MARKER = re.compile(r"<!--\s*api:\s*([a-z-]+)\s*-->")


@cache
def pages() -> dict[str, list[str]]:
    """{page: the public names it documents, in ``__all__`` order}."""
    package = griffe.load("workpool", search_paths=[str(SRC)])
    exported = package.exports
    if not exported:
        raise RuntimeError("workpool.__all__ could not be read statically")
    listed: dict[str, list[str]] = {page: [] for page, _ in PAGES}
    for name in exported:
        member = package.members.get(str(name))
        if member is None:
            raise RuntimeError(f"workpool.__all__ names {name!r}, which workpool lacks")
        path = member.target_path if member.is_alias else member.path
        module = path.removeprefix("workpool.")
        for page, prefixes in PAGES:
            if any(module.startswith(prefix) for prefix in prefixes):
                listed[page].append(str(name))
                break
    rank = {name: n for n, name in enumerate(FIRST)}
    return {page: sorted(names, key=lambda name: rank.get(name, len(FIRST)))
            for page, names in listed.items()}


def on_page_markdown(markdown: str, page: Any, **_: Any) -> str:
    """Expand each ``<!-- api: PAGE -->`` marker into the page's mkdocstrings blocks."""

    def expand(match: re.Match[str]) -> str:
        names = pages().get(match.group(1))
        if names is None:
            log.warning("%s: unknown API page %r", page.file.src_uri, match.group(1))
            return ""
        return "\n\n".join(f"::: workpool.{name}" for name in names)

    return MARKER.sub(expand, markdown)
