"""wp.MemoryBudget: its checks, its tokens and usage watermarks (against a fake usage),
as budget= on pools and pipeline stages with cost= per item, and a real run: 50 MB items
on 8 threads under a 300 MB budget."""

from __future__ import annotations

import re
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

import workpool as wp
from workpool._bench import bench_memory
from workpool._core.sizing import memory_limit_from, physical_memory

from . import _pipeline_tasks as t
from . import _tasks

WAIT = 10.0  # seconds: the bound of every wait


class FakeUsage:
    """The bytes "in use", as the test says."""

    def __init__(self, value: int | None = 0) -> None:
        self.value = value
        self.reads = 0

    def __call__(self) -> int | None:
        self.reads += 1
        return self.value


def wait_until(condition: Callable[[], bool]) -> None:
    deadline = time.monotonic() + WAIT
    while not condition():
        assert time.monotonic() < deadline, "the condition never came true"
        time.sleep(0.002)


def watched(usage: FakeUsage, capacity: int = 1000) -> wp.MemoryBudget:
    """A budget that reads *usage* at every admission: pause at 900, resume at 500."""
    return wp.MemoryBudget(capacity, high=0.9, low=0.5, usage=usage, interval=0)


# -- construction -------------------------------------------------------------------------

def test_capacity_in_bytes_or_as_a_percentage_of_memory_limit() -> None:
    assert wp.MemoryBudget(300 * 2**20).capacity == 300 * 2**20
    limit = wp.memory_limit()
    assert wp.MemoryBudget().capacity == int(limit * 0.8)
    assert wp.MemoryBudget("80%").capacity == int(limit * 0.8)
    assert wp.MemoryBudget(" 12.5 %").capacity == int(limit * 0.125)
    assert wp.MemoryBudget("100%").capacity == limit


def test_auto_watches_the_cgroup_that_set_the_limit_else_rss() -> None:
    _, cgroup = memory_limit_from(Path("/"), physical_memory())
    budget = wp.MemoryBudget("50%", interval=0)
    assert budget.try_acquire(1)
    usage = budget.statistics().usage
    budget.release(1)
    assert usage is not None
    assert usage > 0
    if cgroup is None:  # this machine: the process's resident memory, a few MB or more
        assert usage < physical_memory()
    rss = wp.MemoryBudget(10**9, usage="rss", interval=0)
    assert rss.try_acquire(1)
    assert (rss.statistics().usage or 0) > 1 << 20
    rss.release(1)


_LIMIT_RULE = ("limit must be bytes (an int), a size such as '300MB' or '2GiB', or a "
               "percentage of wp.memory_limit() such as '80%', ")


@pytest.mark.parametrize(("limit", "capacity"), [
    ("300MB", 300 * 10**6), ("2GiB", 2 * 2**30), ("1.5 gb", 1_500_000_000), ("512k", 512_000),
    ("64Ki", 65_536), ("100B", 100), (" 7 MiB ", 7 * 2**20)])
def test_a_size_with_a_unit_is_bytes(limit: str, capacity: int) -> None:
    assert wp.MemoryBudget(limit, usage=None).statistics().capacity == capacity


@pytest.mark.parametrize(("kwargs", "error", "message"), [
    ({"limit": 0}, ValueError, "limit must be >= 1 byte, got 0"),
    ({"limit": "0%"}, ValueError, "limit as a percentage must be > 0 and <= 100, got '0%'"),
    ({"limit": "120%"}, ValueError,
     "limit as a percentage must be > 0 and <= 100, got '120%'"),
    ({"limit": "80"}, TypeError, _LIMIT_RULE + "got '80'"),
    ({"limit": "3 parsecs"}, TypeError, _LIMIT_RULE + "got '3 parsecs'"),
    ({"limit": "0.1B"}, ValueError, "limit must be >= 1 byte, got '0.1B'"),
    ({"limit": 1.5e9}, TypeError, _LIMIT_RULE + "got 1500000000.0"),
    ({"limit": True}, TypeError, _LIMIT_RULE + "got True"),
    ({"limit": 10, "high": 0.5, "low": 0.5}, ValueError,
     "the watermarks must be 0 < low < high (fractions of the capacity), got low=0.5, "
     "high=0.5"),
    ({"limit": 10, "low": 0}, ValueError,
     "the watermarks must be 0 < low < high (fractions of the capacity), got low=0, "
     "high=0.9"),
    ({"limit": 10, "high": "90%"}, TypeError,
     "high must be a fraction of the capacity, got '90%'"),
    ({"limit": 10, "usage": "psutil"}, TypeError,
     "usage must be 'auto', 'rss', a function returning bytes, or None, got 'psutil'"),
    ({"limit": 10, "interval": -1}, ValueError,
     "interval must be >= 0 and finite, got -1"),
    ({"limit": 10, "interval": "1s"}, TypeError,
     "interval must be a number of seconds, got '1s'"),
])
def test_bad_arguments_are_refused(kwargs: dict[str, Any], error: type[Exception],
                                   message: str) -> None:
    with pytest.raises(error) as raised:
        wp.MemoryBudget(**kwargs)
    assert str(raised.value) == message


@pytest.mark.parametrize(("n", "error", "message"), [
    (0, ValueError, "n must be >= 1, got 0"),
    (-4, ValueError, "n must be >= 1, got -4"),
    (1.5, TypeError, "n must be an int, got 1.5"),
])
def test_bad_sizes_are_refused(n: Any, error: type[Exception], message: str) -> None:
    budget = wp.MemoryBudget(100, usage=None)
    for call in (budget.acquire, budget.try_acquire, budget.release, budget.hold):
        with pytest.raises(error) as raised:
            call(n)
        assert str(raised.value) == message


# -- tokens ---------------------------------------------------------------------------------

def test_bytes_are_held_until_released() -> None:
    budget = wp.MemoryBudget(100, usage=None)
    assert budget.acquire(60)
    assert budget.try_acquire(40)
    assert not budget.try_acquire(1)
    assert not budget.acquire(1, timeout=0.01)
    s = budget.statistics()
    assert (s.capacity, s.held, s.available, s.waiters, s.usage) == (100, 100, 0, 0, None)
    budget.release(60)
    with budget.hold(50):
        assert budget.statistics().held == 90
    budget.release(40)
    assert budget.statistics().held == 0
    with pytest.raises(ValueError, match=r"^released more than held \(held 0, released 1\)$"):
        budget.release(1)
    assert repr(budget) == "<MemoryBudget capacity=100 held=0 usage=None paused=False>"


def test_an_item_larger_than_the_budget_runs_alone() -> None:
    budget = wp.MemoryBudget(100, usage=None)
    assert budget.acquire(30)
    admitted = threading.Event()

    def big() -> None:
        assert budget.acquire(500)
        admitted.set()

    thread = threading.Thread(target=big)
    thread.start()
    wait_until(lambda: budget.statistics().waiters == 1)
    assert not admitted.is_set()  # it waits for the 30 bytes held
    budget.release(30)
    thread.join(WAIT)
    assert admitted.is_set()
    s = budget.statistics()
    assert (s.held, s.oversized) == (100, 1)
    assert not budget.try_acquire(1)  # nothing runs beside it
    budget.release(500)
    assert budget.statistics().held == 0


# -- usage watermarks -----------------------------------------------------------------------

def test_admission_pauses_above_high_and_resumes_below_low() -> None:
    usage = FakeUsage(0)
    budget = watched(usage)
    assert budget.try_acquire(100)
    usage.value = 950
    assert not budget.try_acquire(100)  # paused, and 100 bytes are in flight
    s = budget.statistics()
    assert (s.paused, s.pauses, s.usage, s.peak_usage, s.held) == (True, 1, 950, 950, 100)
    usage.value = 600  # below high, above low: still paused
    assert not budget.try_acquire(100)
    usage.value = 500
    assert budget.try_acquire(100)
    s = budget.statistics()
    assert (s.paused, s.pauses, s.usage, s.peak_usage, s.above_high) == (
        False, 1, 500, 950, 0)
    budget.release(200)


def test_while_paused_a_task_with_nothing_in_flight_runs_alone() -> None:
    usage = FakeUsage(2000)  # more than the whole budget, held by someone else
    budget = watched(usage)
    for _ in range(3):  # one at a time, never stuck
        assert budget.try_acquire(10)
        assert not budget.try_acquire(10)
        budget.release(10)
    s = budget.statistics()
    assert (s.paused, s.pauses, s.above_high, s.held) == (True, 1, 3, 0)


def test_a_waiter_is_let_in_when_usage_falls() -> None:
    usage = FakeUsage(0)
    budget = watched(usage)
    assert budget.acquire(100)
    usage.value = 950
    admitted = threading.Event()

    def wait() -> None:
        assert budget.acquire(100)
        admitted.set()

    thread = threading.Thread(target=wait)
    thread.start()
    wait_until(lambda: budget.statistics().waiters == 1)
    assert budget.statistics().paused
    usage.value = 100
    thread.join(WAIT)
    assert admitted.is_set()
    assert budget.statistics().held == 200
    budget.release(200)


def test_a_waiter_is_let_in_when_the_rest_ends_while_paused() -> None:
    budget = watched(FakeUsage(950))
    assert budget.acquire(100)  # the first look: paused, but nothing in flight
    admitted = threading.Event()

    def wait() -> None:
        assert budget.acquire(100)
        admitted.set()

    thread = threading.Thread(target=wait)
    thread.start()
    wait_until(lambda: budget.statistics().waiters == 1)
    budget.release(100)
    thread.join(WAIT)
    assert admitted.is_set()
    assert budget.statistics().above_high == 2
    budget.release(100)


def test_a_timeout_while_paused_gives_the_bytes_back() -> None:
    budget = watched(FakeUsage(950))
    assert budget.acquire(100)
    assert not budget.acquire(100, timeout=0.02)
    s = budget.statistics()
    assert (s.held, s.waiters) == (100, 0)
    budget.release(100)


def test_usage_is_read_at_most_every_interval() -> None:
    usage = FakeUsage(0)
    budget = wp.MemoryBudget(1000, usage=usage, interval=3600)
    for _ in range(5):
        assert budget.try_acquire(1)
    assert usage.reads == 1
    budget.release(5)


def test_an_unknown_usage_changes_nothing() -> None:
    usage = FakeUsage(950)
    budget = watched(usage)
    assert budget.try_acquire(1)
    usage.value = None
    assert not budget.try_acquire(1)  # still paused: nothing new was read
    assert budget.statistics().usage == 950
    budget.release(1)


# -- on pools ---------------------------------------------------------------------------------

class BytesGauge:
    """The most bytes (its item) in flight at once; each call waits a moment."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.now = self.most = 0

    def __call__(self, size: int) -> int:
        with self.lock:
            self.now += size
            self.most = max(self.most, self.now)
        time.sleep(0.002)
        with self.lock:
            self.now -= size
        return size


SIZES = [30, 50, 20, 70, 10, 40, 60, 5] * 4


def _identity(size: int) -> int:
    return size


def test_map_holds_cost_of_each_item() -> None:
    budget = wp.MemoryBudget(100, usage=None)
    gauge = BytesGauge()
    with wp.ThreadPool(8, budget=budget) as pool:
        assert list(pool.map(gauge, SIZES, cost=_identity)) == SIZES
        assert list(pool.map(gauge, [25] * 32, cost=25)) == [25] * 32
    assert 0 < gauge.most <= 100
    assert budget.statistics().held == 0


def test_map_and_schedule_run_an_oversized_item_alone() -> None:
    budget = wp.MemoryBudget(100, usage=None)
    gauge = BytesGauge()
    with wp.ThreadPool(4, budget=budget) as pool:
        assert list(pool.map(gauge, [10, 500, 10, 10], cost=_identity)) == [10, 500, 10, 10]
        assert pool.schedule(gauge, (20,), cost=1000).result(WAIT) == 20
    assert gauge.most <= 500  # the 500 alone: nothing beside it
    assert budget.statistics().oversized == 2


def test_process_pool_map_with_a_memory_budget() -> None:
    budget = wp.MemoryBudget(100, usage="rss", interval=0)
    with wp.ProcessPool(2, budget=budget) as pool:
        assert list(pool.map(t.square, range(10), cost=_identity_plus_one)) == [
            x * x for x in range(10)]
    s = budget.statistics()
    assert s.held == 0
    assert s.usage is not None


def _identity_plus_one(x: int) -> int:
    return x + 1


@pytest.mark.parametrize(("budget", "cost", "error", "message"), [
    (None, 2, ValueError, "cost is tokens of a budget: pass budget= too (cost=2)"),
    (wp.Semaphore(10), 11, ValueError, "cost must be <= the budget's capacity (10), got 11"),
    (wp.Semaphore(10), "big", ValueError,
     "cost must be an int >= 1 or a function of the item, got 'big'"),
    (wp.Semaphore(10), 0, ValueError, "cost must be an int >= 1, got 0"),
])
def test_map_cost_rules(budget: wp.Semaphore | None, cost: Any, error: type[Exception],
                        message: str) -> None:
    with wp.ThreadPool(2, budget=budget) as pool, pytest.raises(error) as raised:
        pool.map(t.square, range(3), cost=cost)
    assert str(raised.value) == message


@pytest.mark.parametrize(("budget", "cost", "message"), [
    (wp.Semaphore(10), lambda x: 11, "cost(item) must be <= the budget's capacity (10), got 11"),
    (wp.MemoryBudget(10, usage=None), lambda x: 0, "cost(item) must return an int >= 1, got 0"),
    (wp.MemoryBudget(10, usage=None), str, "cost(item) must return an int >= 1, got '0'"),
])
def test_a_bad_cost_of_an_item_is_raised_by_map(budget: wp.Semaphore | wp.MemoryBudget,
                                                cost: Callable[[int], Any],
                                                message: str) -> None:
    with wp.ThreadPool(2, budget=budget) as pool, pytest.raises(
            ValueError, match=f"^{re.escape(message)}$"):
        list(pool.map(t.square, range(3), cost=cost))
    assert budget.statistics().held == 0


def test_pool_budget_type_is_checked() -> None:
    with pytest.raises(TypeError) as raised:
        wp.ThreadPool(2, budget=100)  # type: ignore[arg-type]
    assert str(raised.value) == "budget must be a wp.Semaphore, a wp.MemoryBudget or None, got 100"


def test_a_group_on_a_pool_with_a_memory_budget() -> None:
    usage = FakeUsage(0)
    budget = watched(usage)
    with wp.ThreadPool(4, budget=budget) as pool, wp.Group(pool=pool) as group:
        futures = [group.go(t.square, i) for i in range(20)]
    assert [f.result() for f in futures] == [i * i for i in range(20)]
    assert budget.statistics().held == 0


# -- on pipeline stages -----------------------------------------------------------------------

def _gauge(kind: str) -> Any:
    """A task that records the most bytes in flight: a thread's or a coroutine."""
    return _tasks.AsyncGauge() if kind == "async" else BytesGauge()


@pytest.mark.parametrize("budget_kind", ["semaphore", "memory"])
@pytest.mark.parametrize("kind", ["thread", "async"])
def test_a_stage_holds_the_cost_of_each_item(kind: Any, budget_kind: str) -> None:
    budget: wp.Semaphore | wp.MemoryBudget = (
        wp.Semaphore(100) if budget_kind == "semaphore" else wp.MemoryBudget(100, usage=None))
    gauge = _gauge(kind)
    out = list(wp.Pipeline(SIZES).map(gauge, kind=kind, workers=8, budget=budget,
                                      cost=_identity))
    assert out == SIZES
    assert 0 < gauge.most <= 100
    assert budget.statistics().held == 0


@pytest.mark.parametrize("kind", ["thread", "async"])
def test_a_stage_runs_an_oversized_item_alone(kind: Any) -> None:
    budget = wp.MemoryBudget(100, usage=None)
    gauge = _gauge(kind)
    out = list(wp.Pipeline([10, 20, 400, 30]).map(gauge, kind=kind, workers=4,
                                                   budget=budget, cost=_identity))
    assert out == [10, 20, 400, 30]
    assert gauge.most == 400  # alone
    assert budget.statistics().oversized == 1
    assert budget.statistics().held == 0


def test_a_stage_int_cost_larger_than_a_memory_budget_runs_alone() -> None:
    budget = wp.MemoryBudget(100, usage=None)
    assert list(wp.Pipeline(range(5)).map(t.square, workers=2, budget=budget,
                                          cost=150)) == [0, 1, 4, 9, 16]
    assert budget.statistics().oversized == 5


@pytest.mark.parametrize("kind", ["thread", "async"])
def test_a_stage_whose_cost_function_fails_stops_the_pipeline(kind: Any) -> None:
    budget = wp.MemoryBudget(100, usage=None)
    fn: Any = t.asquare if kind == "async" else t.square
    with pytest.raises(ValueError, match=r"^cost\(item\) must return an int >= 1, got 0$"):
        list(wp.Pipeline(range(5)).map(fn, kind=kind, budget=budget, cost=lambda x: x))
    assert budget.statistics().held == 0


# -- a real run ---------------------------------------------------------------------------------

@pytest.mark.skipif(not bench_memory.can_measure_peak(),
                    reason="the kernel cannot reset the peak RSS (/proc/self/clear_refs)")
def test_50_mb_items_on_8_workers_stay_under_a_300_mb_budget() -> None:
    # The peak is the kernel's high-water mark of this process's RSS, reset before the
    # run (exact: no sampling), less the RSS at its start: what the run itself added.
    item, limit = bench_memory.ITEM, bench_memory.BUDGET
    budget = wp.MemoryBudget(limit)
    _, peak, digests = bench_memory.run(16, budget)
    assert digests == [bench_memory._work(item)] * 16  # every item, in order
    assert peak < limit + item
    assert peak >= item  # what is measured is real: at least one item was resident
    assert budget.statistics().held == 0


def _called_off(budget: wp.MemoryBudget, n: int) -> tuple[threading.Thread, list[bool]]:
    """A thread waiting for *n* bytes in a wait that ``budget._withdraw`` calls off."""
    from workpool._sync.semaphore import WaitTicket

    ticket, result = WaitTicket(), []
    thread = threading.Thread(
        target=lambda: result.append(budget._acquire_withdrawable(n, None, ticket)),
        daemon=True)
    thread.start()
    wait_until(lambda: budget.statistics().waiters == 1)
    budget._withdraw(ticket)
    thread.join(WAIT)
    assert not thread.is_alive(), "the wait was not called off"
    return thread, result


@pytest.mark.parametrize("where", ["in line for bytes", "at the usage gate"])
def test_a_wait_called_off_holds_nothing(where: str) -> None:
    usage = FakeUsage(0)
    budget = watched(usage)
    if where == "in line for bytes":
        assert budget.acquire(1000)
    else:
        assert budget.acquire(100)
        usage.value = 950  # paused, with 100 bytes in flight: the next waits
    held = budget.statistics().held
    _, result = _called_off(budget, 100)
    assert result == [False]
    s = budget.statistics()
    assert (s.held, s.waiters) == (held, 0)
    usage.value = 0
    budget.release(held)
    assert budget.try_acquire(1000)  # every byte is back

