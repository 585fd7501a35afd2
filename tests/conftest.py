"""Shared fixtures: every test must leave no thread, child process or fd behind."""

from __future__ import annotations

import multiprocessing
import os
import threading
import time
from collections.abc import Callable, Iterator

import pytest

_FOREIGN = ("AnyIO worker", "Trio thread", "asyncio_", "workpool-async-thread")


def _threads() -> set[threading.Thread]:
    return {t for t in threading.enumerate() if t is not threading.main_thread()}


def _fds() -> set[int]:
    try:
        return {int(fd) for fd in os.listdir("/proc/self/fd")}
    except FileNotFoundError:  # pragma: no cover - not Linux
        return set()


def _wait_gone(check: Callable[[], bool], timeout: float = 5.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():
            return True
        time.sleep(0.01)
    return check()


@pytest.fixture(autouse=True)
def no_leaks(request: pytest.FixtureRequest) -> Iterator[None]:
    """Fail a test that leaves a thread or a child process running.

    Threads that the pool already joined may take a moment to leave
    ``threading.enumerate()``; the wait is bounded.
    """
    before = _threads()
    yield
    if request.node.get_closest_marker("allow_leaks"):
        return
    # anyio, trio and AsyncPool (on asyncio) keep process-wide caches of idle daemon
    # threads for sync calls, which leave after idling: not a leak of the test.
    def leaked() -> set[threading.Thread]:
        return {t for t in _threads() - before
                if t.is_alive() and not t.name.startswith(_FOREIGN)}

    ok = _wait_gone(lambda: not leaked())
    assert ok, f"threads left behind: {sorted(t.name for t in leaked())}"
    ok = _wait_gone(lambda: not multiprocessing.active_children())
    assert ok, f"child processes left behind: {multiprocessing.active_children()}"


@pytest.fixture(scope="module", params=["asyncio", "trio"])
def anyio_backend(request: pytest.FixtureRequest) -> str:
    """Run every ``@pytest.mark.anyio`` test on asyncio and on trio."""
    return str(request.param)
