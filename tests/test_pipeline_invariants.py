"""Every item given to a pipeline comes out exactly once, or fails exactly once, or
is cancelled when the consumer stops early: under random failures, delays, stage
kinds, orderings, error modes and budgets (hypothesis).

A plan gives each item a behaviour (return, fail, yield a moment); the pipeline runs
one or two stages of thread or async kind, ordered or not, with ``on_error`` one of
the four values and, sometimes, a shared budget every item holds its cost of. The
consumer reads everything or stops after a random count. The suite's conftest checks
that no thread is left behind; every budget ends with no token held.
"""

from __future__ import annotations

import time
from collections import Counter
from typing import Any

import anyio
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import workpool as wp

from ._tasks import consume

WAIT = 10.0  # bound on any wait: a bug fails fast instead of hanging
BEHAVIOURS = ["ok", "fail", "slow"]
plans = st.lists(st.sampled_from(BEHAVIOURS), max_size=40)


class Boom(Exception):
    pass


class Plan:
    """What each item does (by its value), and how many times each ran."""

    def __init__(self, behaviours: list[str]) -> None:
        self.behaviours = behaviours
        self.calls: Counter[int] = Counter()

    def failing(self) -> set[int]:
        return {i for i, b in enumerate(self.behaviours) if b == "fail"}

    def sync(self, i: int) -> int:
        self.calls[i] += 1
        what = self.behaviours[i]
        if what == "fail":
            raise Boom(i)
        if what == "slow":
            time.sleep(0.001)
        return i

    async def async_(self, i: int) -> int:
        self.calls[i] += 1
        what = self.behaviours[i]
        if what == "fail":
            raise Boom(i)
        if what == "slow":
            await anyio.sleep(0.001)
        return i


def _identity(x: int) -> int:
    return x


def _stage(pipe: wp.Pipeline[Any], plan: Plan, kind: str, **options: Any) -> wp.Pipeline[Any]:
    if kind == "async":
        return pipe.map(plan.async_, kind="async", **options)
    return pipe.map(plan.sync, **options)


@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(behaviours=plans, kind=st.sampled_from(["thread", "async"]), ordered=st.booleans(),
       on_error=st.sampled_from(["raise", "return", "skip", "collect"]),
       workers=st.integers(1, 4), budget=st.sampled_from([None, "semaphore", "memory"]),
       stop_after=st.one_of(st.none(), st.integers(0, 40)), second=st.booleans())
def test_every_item_ends_exactly_once(behaviours: list[str], kind: str, ordered: bool,
                                      on_error: str, workers: int, budget: str | None,
                                      stop_after: int | None, second: bool) -> None:
    plan = Plan(behaviours)
    n = len(behaviours)
    shared: wp.Semaphore | wp.MemoryBudget | None = (
        None if budget is None else wp.Semaphore(6) if budget == "semaphore"
        else wp.MemoryBudget(6, usage=None))
    options: dict[str, Any] = {"workers": workers, "ordered": ordered, "on_error": on_error}
    if shared is not None:
        options |= {"budget": shared, "cost": lambda i: 1 + i % 3}
    pipe = _stage(wp.Pipeline(range(n)), plan, kind, **options)
    if second:  # a plain second stage: what came out of the first flows on once
        pipe = pipe.map(_identity, ordered=ordered)
    items = iter(pipe)
    try:
        got, raised = consume(items, stop_after, (Boom, wp.ItemsFailed))
    finally:
        items.close()
    failing = plan.failing()
    stopped = stop_after is not None and len(got) > stop_after
    # No item ran twice, and none came out twice.
    assert all(count == 1 for count in plan.calls.values())
    values = [o.value if isinstance(o, wp.Value) else o for o in got
              if not isinstance(o, wp.Error)]
    assert len(values) == len(set(values))
    assert not set(values) & failing
    errors = [o.error.args[0] for o in got if isinstance(o, wp.Error)]
    assert len(errors) == len(set(errors))
    assert set(errors) <= failing
    if ordered:  # what came out is in input order
        positions = [o.value if isinstance(o, wp.Value) else o.error.args[0]
                     if isinstance(o, wp.Error) else o for o in got]
        assert positions == sorted(positions)
    if not stopped:
        ok = [i for i in range(n) if i not in failing]
        if on_error == "return":
            assert raised is None
            assert sorted(values) == ok
            assert sorted(errors) == sorted(failing)
        elif on_error == "skip":
            assert raised is None
            assert sorted(values) == ok
        elif on_error == "collect":
            if failing:
                assert isinstance(raised, wp.ItemsFailed)
                assert sorted(e.item for e in raised.errors) == sorted(failing)
            else:
                assert raised is None
            assert sorted(values) == ok
        elif failing:
            assert isinstance(raised, Boom)
            assert raised.args[0] in failing
            if ordered:  # the items before the first failure came out, and no more
                assert values == list(range(min(failing)))
        else:
            assert raised is None
            assert sorted(values) == ok
            assert sum(plan.calls.values()) == n
    if shared is not None:
        # An async stage's wait for tokens runs in a thread, which a stopped run
        # gives up on: it gives back what it took within a step (0.25 s).
        deadline = time.monotonic() + WAIT
        while shared.statistics().held and time.monotonic() < deadline:
            time.sleep(0.005)
        assert shared.statistics().held == 0


@pytest.mark.parametrize("kind", ["thread", "async"])
def test_a_failing_item_fails_alone_on_every_kind(kind: str) -> None:
    plan = Plan(["ok", "fail", "slow", "ok"])
    got = list(_stage(wp.Pipeline(range(4)), plan, kind, on_error="return"))
    assert [type(o) for o in got] == [wp.Value, wp.Error, wp.Value, wp.Value]
    assert [o.value for o in got if isinstance(o, wp.Value)] == [0, 2, 3]
    assert plan.calls == Counter({0: 1, 1: 1, 2: 1, 3: 1})


@pytest.mark.parametrize("second", [False, True])
@pytest.mark.parametrize("kind", ["thread", "async"])
def test_a_failure_is_raised_after_the_items_before_it(kind: str, second: bool) -> None:
    # Item 3 fails: 0, 1 and 2 come out first, through every stage, then its error;
    # nothing after it. Repeated: the hand-over of the failure must not race the items.
    for _ in range(20):
        plan = Plan(["ok", "ok", "slow", "fail", "ok", "ok"])
        pipe = _stage(wp.Pipeline(range(6)), plan, kind, workers=2)
        if second:
            pipe = pipe.map(_identity)
        got, error = _drain(pipe)
        assert (got, error.args) == ([0, 1, 2], (3,))
        assert all(count == 1 for count in plan.calls.values())


def _drain(pipe: wp.Pipeline[Any]) -> tuple[list[Any], Boom]:
    """What came out of *pipe* before it raised ``Boom``, and that error."""
    got: list[Any] = []
    items = iter(pipe)
    while True:
        try:
            got.append(next(items))
        except Boom as exc:
            return got, exc


def _three_then_boom() -> Any:
    yield from range(3)
    raise Boom("source")


@pytest.mark.parametrize("kind", ["thread", "async"])
def test_a_source_error_is_raised_after_the_items_read_before_it(kind: str) -> None:
    for _ in range(10):
        plan = Plan(["ok"] * 3)
        got, error = _drain(_stage(wp.Pipeline(_three_then_boom()), plan, kind).map(_identity))
        assert (got, error.args) == ([0, 1, 2], ("source",))
