"""One vocabulary (``_core/options.py``): each keyword is accepted with the same values
and the same meaning by every pool, map and pipeline stage, and refused with the same
message."""

from __future__ import annotations

import threading
from collections.abc import AsyncIterable, Callable, Iterable
from typing import Any

import anyio
import pytest

import workpool as wp

from . import _pipeline_tasks as t

# fail_on_3 over range(5): 3 raises ValueError("bad 3"), the rest are squared.
SQUARES = [0, 1, 4, 16]
Outcome = tuple[list[Any], BaseException | None]


def _drain(items: Iterable[Any]) -> Outcome:
    """What came out, and what ended the iteration (None: its end)."""
    out: list[Any] = []
    try:
        for item in items:
            out.append(item)
    except Exception as exc:
        return out, exc
    return out, None


async def _adrain(items: AsyncIterable[Any]) -> Outcome:
    out: list[Any] = []
    try:
        async for item in items:
            out.append(item)
    except Exception as exc:
        return out, exc
    return out, None


def _thread_map(on_error: Any) -> Outcome:
    with wp.ThreadPool(2) as pool:
        return _drain(pool.map(t.fail_on_3, range(5), on_error=on_error))


def _process_map(on_error: Any) -> Outcome:
    with wp.ProcessPool(2) as pool:
        return _drain(pool.map(t.fail_on_3, range(5), on_error=on_error))


def _async_map(fn: Callable[[int], Any]) -> Callable[[Any], Outcome]:
    def run(on_error: Any) -> Outcome:
        async def main() -> Outcome:
            with anyio.fail_after(30):
                async with wp.AsyncPool(2) as pool, pool.map(fn, range(5),
                                                             on_error=on_error) as results:
                    return await _adrain(results)
        return anyio.run(main)
    return run


def _stage(kind: Any) -> Callable[[Any], Outcome]:
    fn: Any = t.afail_on_3 if kind == "async" else t.fail_on_3

    def run(on_error: Any) -> Outcome:
        pipe = wp.Pipeline(range(5)).map(fn, workers=2, kind=kind, on_error=on_error)
        with iter(pipe) as items:
            return _drain(items)
    return run


MAPS = {
    "ThreadPool.map": _thread_map,
    "ProcessPool.map": _process_map,
    "AsyncPool.map(async fn)": _async_map(t.afail_on_3),
    "AsyncPool.map(sync fn)": _async_map(t.fail_on_3),
    "thread stage": _stage("thread"),
    "process stage": _stage("process"),
    "async stage": _stage("async"),
}
PLACES = list(MAPS)


def _is_bad_3(error: BaseException | None) -> bool:
    return type(error) is ValueError and str(error) == "bad 3"


@pytest.mark.parametrize("place", PLACES)
def test_on_error_raise_raises_the_first_failure_after_the_items_before_it(place: str) -> None:
    out, error = MAPS[place]("raise")
    assert _is_bad_3(error)
    if place.endswith("stage"):
        # A failing stage stops the whole pipeline at once: what was already on its
        # way out may not have come out.
        assert out == [0, 1, 4][:len(out)]
    else:
        assert out == [0, 1, 4]


@pytest.mark.parametrize("place", PLACES)
def test_on_error_return_puts_the_failure_in_the_items_place(place: str) -> None:
    out, error = MAPS[place]("return")
    assert error is None
    assert [type(o) for o in out] == [wp.Value, wp.Value, wp.Value, wp.Error, wp.Value]
    assert [o.unwrap() for o in out if isinstance(o, wp.Value)] == SQUARES
    assert _is_bad_3(out[3].error)


@pytest.mark.parametrize("place", PLACES)
def test_on_error_skip_drops_failed_items(place: str) -> None:
    assert MAPS[place]("skip") == (SQUARES, None)


@pytest.mark.parametrize("place", PLACES)
def test_on_error_collect_goes_on_and_raises_every_failure_at_the_end(place: str) -> None:
    out, error = MAPS[place]("collect")
    assert out == SQUARES
    assert isinstance(error, wp.ItemsFailed)
    assert [(f.item, type(f.error), str(f.error)) for f in error.errors] == [
        (3, ValueError, "bad 3")]
    failure = error.errors[0]
    assert isinstance(failure, wp.CollectedError)
    assert "ValueError: bad 3" in failure.traceback
    assert failure.error.__traceback__ is None
    assert str(error).splitlines()[0] == "1 error collected (1 ValueError)"
    assert failure.stage == ("map(fail_on_3)" if place != "AsyncPool.map(async fn)"
                             and place != "async stage" else "map(afail_on_3)")


def _thread_map_call(value: Any) -> None:
    with wp.ThreadPool(1) as pool:
        pool.map(t.square, [1], on_error=value)


def _async_map_call(value: Any) -> None:
    async def main() -> None:
        async with wp.AsyncPool(1) as pool:
            pool.map(t.square, [1], on_error=value)
    anyio.run(main)


def _calls_with_on_error(value: Any) -> dict[str, Callable[[], object]]:
    """Every place that takes ``on_error``, called with *value* (each must refuse a
    bad one at the call, before any work)."""
    pipe = wp.Pipeline(range(3))
    return {
        "ThreadPool.map": lambda: _thread_map_call(value),
        "AsyncPool.map": lambda: _async_map_call(value),
        "Pipeline.map": lambda: pipe.map(t.square, on_error=value),
        "Pipeline.filter": lambda: pipe.filter(t.is_even, on_error=value),
        "Pipeline.flat_map": lambda: pipe.flat_map(t.twice, on_error=value),
        "Pipeline.each": lambda: pipe.each(t.square, on_error=value),
    }


@pytest.mark.parametrize("bad", ["ignore", "Raise", None, 1])
def test_every_place_refuses_an_unknown_on_error_with_one_message(bad: Any) -> None:
    message = f"on_error must be one of 'raise', 'return', 'collect', 'skip', not {bad!r}"
    for name, call in _calls_with_on_error(bad).items():
        with pytest.raises(ValueError, match=r"^on_error must be one of ") as raised:
            call()
        assert str(raised.value) == message, name


def test_a_sink_refuses_return_with_the_rule() -> None:
    with pytest.raises(ValueError, match=r"^on_error='return' puts") as raised:
        wp.Pipeline(range(3)).each(t.square, on_error="return")  # type: ignore[call-overload]
    assert str(raised.value) == (
        "on_error='return' puts a failure in its item's place in the output, and each() "
        "has none: on_error must be 'raise', 'collect' or 'skip' for a sink")
    for value in ("raise", "collect", "skip"):
        wp.Pipeline(range(3)).each(t.square, on_error=value)


def test_return_passes_outcomes_on_from_filter_and_flat_map() -> None:
    kept = list(wp.Pipeline(range(5)).filter(t.is_even, on_error="return"))
    assert kept == [wp.Value(0), wp.Value(2), wp.Value(4)]
    pairs = list(wp.Pipeline(range(2)).flat_map(t.twice, on_error="return"))
    assert pairs == [wp.Value(0), wp.Value(0), wp.Value(1), wp.Value(1)]


def test_skip_and_return_are_counted() -> None:
    for value, field in (("skip", "skipped"), ("collect", "collected")):
        pipe = wp.Pipeline(range(10)).map(t.fail_on_3, on_error=value)  # type: ignore[call-overload]
        with iter(pipe) as items:
            _drain(items)
            stage = items.report().stages[0]
        assert (stage.errors, getattr(stage, field)) == (2, 2), value
    with iter(wp.Pipeline(range(10)).map(t.fail_on_3, on_error="return")) as returned:
        assert sum(isinstance(o, wp.Error) for o in returned) == 2
        assert returned.report().stages[0].errors == 2
    with wp.ThreadPool(2) as pool:
        assert list(pool.map(t.fail_on_3, range(10), on_error="skip")) == [
            x * x for x in range(10) if x % 5 != 3]
    assert pool.statistics().failed == 2


# -- the other keywords: the same rule, the same message, wherever they are taken --------

def _thread_schedule(**kw: Any) -> None:
    with wp.ThreadPool(1) as pool:
        pool.schedule(t.square, (1,), **kw)


def _async_schedule(**kw: Any) -> None:
    async def main() -> None:
        async with wp.AsyncPool(1) as pool:
            await pool.schedule(t.square, (1,), **kw)
    anyio.run(main)


def _places(keyword: str, value: Any) -> dict[str, Callable[[], object]]:
    pipe = wp.Pipeline(range(3))
    kw = {keyword: value}
    places: dict[str, Callable[[], object]] = {
        "ThreadPool()": lambda: wp.ThreadPool(1, **kw),
        "ProcessPool()": lambda: wp.ProcessPool(1, **kw),
        "AsyncPool()": lambda: wp.AsyncPool(1, **kw),
        "ThreadPool.schedule": lambda: _thread_schedule(**kw),
        "AsyncPool.schedule": lambda: _async_schedule(**kw),
        "Pipeline.map": lambda: pipe.map(t.square, **kw),
        "Pipeline.each": lambda: pipe.each(t.square, **kw),
    }
    taken = {
        "timeout": places,
        "retry": places,
        "rate": {k: v for k, v in places.items() if "schedule" not in k},
        "cost": {k: v for k, v in places.items() if "()" not in k},
    }
    return taken[keyword]


@pytest.mark.parametrize(("keyword", "value", "error", "message"), [
    ("timeout", 0, ValueError, "timeout must be > 0, got 0"),
    ("timeout", float("nan"), ValueError, "timeout must be > 0, got nan"),
    ("timeout", "1", TypeError, "timeout must be a number of seconds or None, got '1'"),
    ("retry", 3, TypeError, "retry must be a wp.Retry or None, got 3"),
    ("rate", 3, TypeError, "rate must be a wp.RateLimit or None, got 3"),
    ("cost", 0, ValueError, "cost must be an int >= 1, got 0"),
    ("cost", True, ValueError, "cost must be an int >= 1, got True"),
])
def test_each_keyword_is_refused_alike_everywhere(keyword: str, value: Any,
                                                  error: type[Exception], message: str) -> None:
    for name, call in _places(keyword, value).items():
        with pytest.raises(error) as raised:
            call()
        assert str(raised.value) == message, name


def test_priority_is_checked_alike_by_every_schedule() -> None:
    with pytest.raises(TypeError) as sync:
        _thread_schedule(priority="high")
    with pytest.raises(TypeError) as async_:
        _async_schedule(priority="high")
    assert str(sync.value) == str(async_.value) == "priority must be an int, got 'high'"


# -- budget and cost on stages -------------------------------------------------------------

class _Gauge:
    """The most calls running at once."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.now = self.most = 0

    def __call__(self, x: int) -> int:
        with self.lock:
            self.now += 1
            self.most = max(self.most, self.now)
        try:
            for _ in range(2000):  # a little work, so that calls overlap
                pass
            return x
        finally:
            with self.lock:
                self.now -= 1


@pytest.mark.parametrize(("capacity", "cost", "most"), [(2, 1, 2), (4, 2, 2), (3, 3, 1)])
def test_a_stage_holds_cost_tokens_of_its_budget_per_item(capacity: int, cost: int,
                                                          most: int) -> None:
    budget = wp.Semaphore(capacity)
    gauge = _Gauge()
    got = list(wp.Pipeline(range(300)).map(gauge, workers=4, budget=budget, cost=cost))
    assert got == list(range(300))
    assert gauge.most <= most
    assert budget.statistics().held == 0


@pytest.mark.parametrize("kind", ["thread", "async"])
def test_a_stage_waits_for_a_budget_held_elsewhere_and_stops_when_cancelled(
        kind: str) -> None:
    fn: Any = t.asquare if kind == "async" else t.square
    how: Any = kind
    budget = wp.Semaphore(2)
    assert budget.acquire(2)
    items = iter(wp.Pipeline(range(5)).map(fn, kind=how, budget=budget))
    items.close()  # returns although the stage never got a token
    budget.release(2)
    assert list(wp.Pipeline(range(5)).map(fn, kind=how, budget=budget)) == [0, 1, 4, 9, 16]
    assert budget.statistics().held == 0


@pytest.mark.parametrize(("call", "error", "message"), [
    (lambda p: p.map(t.square, budget=wp.Semaphore(2), cost=3), ValueError,
     "cost must be <= the budget's capacity (2), got 3"),
    (lambda p: p.map(t.square, cost=2), ValueError,
     "cost is tokens of a budget: pass budget= too (cost=2)"),
    (lambda p: p.map(t.square, budget=2), TypeError,
     "budget must be a wp.Semaphore, a wp.MemoryBudget or None, got 2"),
    (lambda p: p.map(t.asquare, kind="async", budget=wp.Semaphore(2), cost=3), ValueError,
     "cost must be <= the budget's capacity (2), got 3"),
])
def test_stage_budget_rules(call: Callable[[wp.Pipeline[int]], object],
                            error: type[Exception], message: str) -> None:
    with pytest.raises(error) as raised:
        call(wp.Pipeline(range(3)))
    assert str(raised.value) == message
