"""Every task given to a group's ``go`` ends exactly once: a result, an error or
cancelled, under random delays, failures and cancellations (hypothesis).

Plans mix tasks that return, fail, raise ``wp.Cancelled``, sleep a little, or are
cancelled by the caller right after ``go``; the block may cancel the group or fail at
a random point. ``Group`` runs on its own pool, a ``wp.ThreadPool`` or a
``ThreadPoolExecutor``; ``AsyncGroup`` on its own workers or an ``AsyncPool``, on
asyncio and trio. Every wait is bounded (``WAIT``); the suite's conftest checks that
no thread is left behind.
"""

from __future__ import annotations

import concurrent.futures as cf
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import anyio
import anyio.lowlevel
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import workpool as wp

WAIT = 10.0

KINDS = ["ok", "fail", "cancelled", "sleep", "cancel-me"]
plans = st.lists(st.tuples(st.sampled_from(KINDS), st.integers(0, 3)), max_size=20)
limits = st.one_of(st.none(), st.integers(1, 5))
# Where the block cancels the group (after that many go calls), if at all.
cancel_points = st.one_of(st.none(), st.integers(0, 20))


class Boom(Exception):
    pass


def wait_until(check: Callable[[], bool]) -> None:
    deadline = time.monotonic() + WAIT
    while not check():
        assert time.monotonic() < deadline, "condition not reached in time"
        time.sleep(0.001)


@contextmanager
def executor(kind: str) -> Iterator[cf.Executor | None]:
    if kind == "own":
        yield None
    elif kind == "ThreadPool":
        with wp.ThreadPool(4) as pool:
            yield pool
    else:
        with cf.ThreadPoolExecutor(4) as stdlib:
            yield stdlib


def check_ends(futures: list[Any], calls: Counter[int], ends: Counter[int],
               raised: BaseException | None, body_fails: bool, *,
               cancel_stops_running: bool = False) -> None:
    """The invariant, for the futures of one group: each one done, in exactly one
    of three ways, its done callbacks called once; a cancelled task never ran (an
    async one may have been stopped while running), one with a value or a failure
    ran once; the group raised exactly the failures."""
    assert all(f.done() for f in futures)
    assert all(ends[i] == 1 for i in range(len(futures))), ends
    assert all(n == 1 for n in calls.values()), calls  # no task ran twice
    failures = 0
    for i, f in enumerate(futures):
        if f.cancelled():
            assert calls[i] <= (1 if cancel_stops_running else 0)
            continue
        error = f.exception()
        if error is None:
            assert f.result() == i
            assert calls[i] == 1
        elif isinstance(error, Boom):
            assert calls[i] == 1
            failures += 1
        else:  # refused as it started, or stopped itself: a cancellation
            assert isinstance(error, cf.CancelledError), repr(error)
    expected = failures + body_fails
    if expected:
        assert isinstance(raised, ExceptionGroup)
        assert len(raised.exceptions) == expected
        assert sum(isinstance(e, Boom) for e in raised.exceptions) == expected
    else:
        assert raised is None


# -- Group -------------------------------------------------------------------------------------

@settings(max_examples=80, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture,
                                 HealthCheck.too_slow])
@given(limit=limits, plan=plans, cancel_at=cancel_points, body_fails=st.booleans(),
       pool_kind=st.sampled_from(["own", "ThreadPool", "ThreadPoolExecutor"]))
def test_group_every_task_ends_exactly_once(limit: int | None, plan: list[tuple[str, int]],
                                            cancel_at: int | None, body_fails: bool,
                                            pool_kind: str) -> None:
    lock = threading.Lock()
    calls: Counter[int] = Counter()
    ends: Counter[int] = Counter()

    def task(i: int, kind: str, delay: int) -> int:
        with lock:
            calls[i] += 1
        ctx = wp.current()
        ctx.sleep(delay / 2000)
        if kind == "fail":
            raise Boom(i)
        if kind == "cancelled":
            raise wp.Cancelled(str(i))
        if kind == "sleep":
            ctx.sleep(0.002)
        return i

    def ended(i: int) -> Callable[[cf.Future[int]], None]:
        def count(_: cf.Future[int]) -> None:
            with lock:
                ends[i] += 1
        return count

    futures: list[cf.Future[int]] = []
    raised: BaseException | None = None
    with executor(pool_kind) as pool:
        try:
            with wp.Group(limit=limit, pool=pool) as g:
                for i, (kind, delay) in enumerate(plan):
                    if i == cancel_at:
                        g.cancel()
                    future = g.go(task, i, kind, delay)
                    future.add_done_callback(ended(i))
                    futures.append(future)
                    if kind == "cancel-me":
                        future.cancel()
                if body_fails:
                    raise Boom("body")
        except ExceptionGroup as exc:
            raised = exc
        # A done callback added after the group's own may still be running.
        wait_until(lambda: sum(ends.values()) >= len(futures))
    assert len(futures) == len(plan)
    check_ends(futures, calls, ends, raised, body_fails)
    if cancel_at is not None and cancel_at < len(plan):
        assert g.cancelled
        assert all(f.cancelled() for f in futures[cancel_at:])  # refused at once
    if all(f.exception() is None for f in futures if not f.cancelled()) and not any(
            f.cancelled() for f in futures) and raised is None:
        assert g.results() == list(range(len(plan)))


# -- AsyncGroup --------------------------------------------------------------------------------

@pytest.mark.parametrize("backend", ["asyncio", "trio"])
@settings(max_examples=50, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(limit=limits, plan=plans, cancel_at=cancel_points, body_fails=st.booleans(),
       on_pool=st.booleans(), nowait=st.booleans())
def test_async_group_every_task_ends_exactly_once(
        backend: str, limit: int | None, plan: list[tuple[str, int]],
        cancel_at: int | None, body_fails: bool, on_pool: bool, nowait: bool) -> None:
    calls: Counter[int] = Counter()
    ends: Counter[int] = Counter()

    async def task(i: int, kind: str, delay: int) -> int:
        calls[i] += 1
        await anyio.sleep(delay / 2000)
        if kind == "fail":
            raise Boom(i)
        if kind == "cancelled":
            raise wp.Cancelled(str(i))
        if kind == "sleep":
            for _ in range(3):
                await anyio.lowlevel.checkpoint()
        return i

    def ended(i: int) -> Callable[[wp.AsyncFuture[int]], None]:
        def count(_: wp.AsyncFuture[int]) -> None:
            ends[i] += 1
        return count

    futures: list[wp.AsyncFuture[int]] = []
    group = wp.AsyncGroup(limit=limit)

    async def block(g: wp.AsyncGroup) -> None:
        for i, (kind, delay) in enumerate(plan):
            if i == cancel_at:
                g.cancel()
            try:
                future = g.go_nowait(task, i, kind, delay) if nowait else await g.go(
                    task, i, kind, delay)
            except wp.WouldBlock:
                future = await g.go(task, i, kind, delay)
            future.add_done_callback(ended(i))
            futures.append(future)
            if kind == "cancel-me":
                future.cancel()
        if body_fails:
            raise Boom("body")

    async def main() -> BaseException | None:
        nonlocal group
        try:
            with anyio.fail_after(WAIT):
                if on_pool:
                    async with wp.AsyncPool(3) as pool:
                        group = wp.AsyncGroup(limit=limit, pool=pool)
                        async with group as g:
                            await block(g)
                else:
                    async with group as g:
                        await block(g)
        except ExceptionGroup as exc:
            return exc
        return None

    raised = anyio.run(main, backend=backend)
    finished = len(futures) == len(plan)  # else the block was cancelled in a go()
    if not finished:
        assert group.cancelled
    check_ends(futures, calls, ends, raised, body_fails and finished,
               cancel_stops_running=True)
    if finished and raised is None and all(
            not f.cancelled() and f.exception() is None for f in futures):
        assert group.results() == list(range(len(plan)))
