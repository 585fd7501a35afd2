"""Settings for CPython's executor suite (see ``_harness.py``).

Every test here is bounded by pytest-timeout: CPython's deadlock tests wait up to
``support.LONG_TIMEOUT`` (300 s) for a result before they call the pool deadlocked,
and a pool that never answers would wait for ever; a test that works takes a few
seconds (``test_map_timeout``, the slowest, about 6 s).

A test cut short that way leaves its pool's workers running. The repository's
``no_leaks`` fixture would then blame every later test for those children (it counts
all of them, not the new ones), and multiprocessing's clean-up at the end of a CPython
module would wait for them for ever. So here ``no_leaks`` fails the test that left a
thread or a child process behind, then terminates the children it left, so that the
tests after it are judged on their own.

The repository's ``filterwarnings = error`` stays in force here: CPython's tests emit
no warning against our pools. (The fork mixin forks a process that runs threads, but
``os.fork`` drops its "multi-threaded" DeprecationWarning when a filter turns it into
an error, so that setting neither fails nor hides anything there.)
"""

from __future__ import annotations

import multiprocessing
import threading
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import _wait_gone

TIMEOUT = 60  # seconds per test, set-up and tear-down included

_HERE = Path(__file__).parent
# anyio and trio keep a process-wide cache of idle worker threads: not ours.
_FOREIGN = ("AnyIO worker", "Trio thread", "asyncio_")


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if _HERE in item.path.parents:
            item.add_marker(pytest.mark.timeout(TIMEOUT))


def pytest_terminal_summary(terminalreporter: Any, config: pytest.Config) -> None:
    """One line for this folder, so a CI log shows that CPython's suite ran."""
    prefix = _HERE.relative_to(config.rootpath).as_posix() + "/"
    counts: Counter[str] = Counter()
    seconds = 0.0
    for outcome, reports in terminalreporter.stats.items():
        for report in reports:
            if getattr(report, "nodeid", "").startswith(prefix):
                counts[outcome] += 1
                seconds += getattr(report, "duration", 0.0)
    if counts:
        terminalreporter.write_line(
            f"== conformance: {counts['passed']} passed, {counts['failed']} failed, "
            f"{counts['skipped']} skipped, {counts['error']} errors "
            f"(CPython's executor suite, {seconds:.0f} s)")


@pytest.fixture(autouse=True)
def no_leaks() -> Iterator[None]:
    """Fail a test that leaves a thread or a child process it started running."""
    threads = set(threading.enumerate())
    children = set(multiprocessing.active_children())
    yield

    def new_threads() -> list[str]:
        return sorted(t.name for t in set(threading.enumerate()) - threads
                      if t.is_alive() and not t.name.startswith(_FOREIGN))

    def new_children() -> list[Any]:
        return [p for p in multiprocessing.active_children() if p not in children]

    left = _wait_gone(lambda: not new_children())
    orphans = new_children()
    for process in orphans:  # the next tests must not wait on them
        process.kill()
        process.join(5)
    assert left, f"child processes left behind: {orphans}"
    assert _wait_gone(lambda: not new_threads()), f"threads left behind: {new_threads()}"
