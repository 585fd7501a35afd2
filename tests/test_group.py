"""wp.Group and wp.AsyncGroup: Go's errgroup with SetLimit, sync and async twins.

Every wait is bounded (``WAIT``); ordering is made deterministic with events, never
with sleeps. Async tests run on asyncio and on trio (``anyio_backend``).

Where ``pytest.raises`` wraps a whole group block (``# noqa: PT012``), the block is the
statement under test: leaving it is what raises.
"""

from __future__ import annotations

import concurrent.futures as cf
import inspect
import multiprocessing
import operator
import re
import signal
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from concurrent.futures import Executor, Future
from contextlib import contextmanager
from types import FrameType
from typing import Any

import anyio
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import workpool as wp

WAIT = 10.0  # the bound on every wait below; a correct run never comes near it


class Boom(Exception):
    pass


def exact(message: str) -> str:
    return f"^{re.escape(message)}$"


def wait_until(check: Callable[[], bool]) -> None:
    deadline = time.monotonic() + WAIT
    while not check():
        assert time.monotonic() < deadline, "condition not reached in time"
        time.sleep(0.001)


def group_threads() -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name.startswith("workpool-group-")]


class Gate:
    """Tasks that block until the test opens the gate; counts who entered."""

    def __init__(self) -> None:
        self.opened = threading.Event()
        self._lock = threading.Lock()
        self.entered = 0
        self.running = 0
        self.most = 0
        self.arrived = threading.Condition(self._lock)

    def task(self, value: Any = None) -> Any:
        with self._lock:
            self.entered += 1
            self.running += 1
            self.most = max(self.most, self.running)
            self.arrived.notify_all()
        try:
            assert self.opened.wait(WAIT), "gate never opened"
            return value
        finally:
            with self._lock:
                self.running -= 1

    def wait_entered(self, n: int) -> None:
        with self._lock:
            assert self.arrived.wait_for(lambda: self.entered >= n, WAIT)


def wait_for_cancel() -> str:
    """A cooperative task: sleeps until its group cancels it."""
    wp.current().sleep(WAIT)
    return "not cancelled"


def fail_when(event: threading.Event, exc: BaseException) -> None:
    assert event.wait(WAIT)
    raise exc


# -- Group: the basics ---------------------------------------------------------------------

def test_results_in_go_order() -> None:
    with wp.Group(limit=3) as g:
        futures = [g.go(operator.mul, i, 3) for i in range(50)]
    assert g.results() == [i * 3 for i in range(50)]
    assert [f.result() for f in futures] == [i * 3 for i in range(50)]
    assert all(isinstance(f, Future) for f in futures)


def test_go_passes_args_and_kwargs() -> None:
    with wp.Group() as g:
        g.go(int, "ff", base=16)
        g.go(sorted, [3, 1, 2], reverse=True)
    assert g.results() == [255, [3, 2, 1]]


def test_empty_group() -> None:
    with wp.Group() as g:
        pass
    assert g.results() == []


def test_limit_blocks_go_until_a_task_ends() -> None:
    gate = Gate()
    returned = threading.Event()
    with wp.Group(limit=3) as g:
        for i in range(3):
            g.go(gate.task, i)
        gate.wait_entered(3)

        def fourth() -> None:
            g.go(gate.task, 3)
            returned.set()

        caller = threading.Thread(target=fourth)
        caller.start()
        wait_until(lambda: len(g._waiters) == 1)  # blocked: 3 in flight
        assert not returned.is_set()
        assert gate.entered == 3
        gate.opened.set()
        assert returned.wait(WAIT)
        caller.join(WAIT)
    assert g.results() == [0, 1, 2, 3]
    assert gate.most == 3


def _open_when_waiting(g: wp.Group, gate: Gate) -> None:
    wait_until(lambda: len(g._waiters) == 1)
    gate.opened.set()


def test_a_task_that_ends_hands_its_slot_and_thread_to_the_waiting_go() -> None:
    """At the limit, the task that ends admits the waiting go()'s task, and its worker
    runs it next: no worker is woken for it."""
    gate = Gate()
    with wp.Group(limit=1) as g:
        assert g._own is not None
        backend = g._own._engine.backend
        resumed: list[Any] = []
        resume = backend.resume

        def counted(worker: Any, task: Any) -> None:
            resumed.append(task.args[0])  # its index in go order
            resume(worker, task)

        backend.resume = counted  # type: ignore[method-assign]
        g.go(gate.task, 0)
        gate.wait_entered(1)
        opener = threading.Thread(target=_open_when_waiting, args=(g, gate))
        opener.start()
        handed = g.go(operator.neg, 1)  # waits for the slot: handed over
        opener.join(WAIT)
        assert handed.result(WAIT) == -1
        assert resumed == []
        stats = g._own.statistics()
        assert (stats.submitted, stats.completed) == (2, 2)
    assert g.results() == [0, -1]


def test_a_go_whose_hand_off_the_pool_refuses_raises_its_error() -> None:
    gate = Gate()
    with wp.Group(limit=1) as g:
        own = g._own
        assert own is not None
        put = own._put_future

        def refuse(future: Future[Any], fn: Callable[..., Any], args: tuple[Any, ...], *,
                   after_me: bool = False) -> None:
            if after_me:
                raise wp.PoolClosed("refused")
            put(future, fn, args)

        own._put_future = refuse  # type: ignore[method-assign]
        g.go(gate.task, 0)
        gate.wait_entered(1)
        opener = threading.Thread(target=_open_when_waiting, args=(g, gate))
        opener.start()
        with pytest.raises(wp.PoolClosed, match=r"^refused$"):
            g.go(operator.neg, 1)
        opener.join(WAIT)
        assert g.go(operator.neg, 2).result(WAIT) == -2  # the slot was given back
    assert g.results() == [0, -2]


def test_at_most_limit_tasks_run_at_once() -> None:
    lock = threading.Lock()
    running = most = 0

    def task() -> None:
        nonlocal running, most
        with lock:
            running += 1
            most = max(most, running)
        time.sleep(0.0005)
        with lock:
            running -= 1

    with wp.Group(limit=4) as g:
        for _ in range(200):
            g.go(task)
    assert most <= 4
    assert len(g.results()) == 200


def test_callers_in_many_threads_share_the_limit() -> None:
    lock = threading.Lock()
    running = most = 0
    names: set[str] = set()

    def task(i: int) -> int:
        nonlocal running, most
        with lock:
            running += 1
            most = max(most, running)
            names.add(threading.current_thread().name)
        if i % 7 == 0:
            time.sleep(0.0002)
        with lock:
            running -= 1
        return i

    with wp.Group(limit=3) as g:
        def feed(start: int) -> None:
            for i in range(start, start + 300):
                g.go(task, i)

        callers = [threading.Thread(target=feed, args=(k * 300,)) for k in range(4)]
        for caller in callers:
            caller.start()
        for caller in callers:
            caller.join(WAIT)
    assert sorted(g.results()) == list(range(1200))
    assert most <= 3
    assert len(names) <= 3  # the group's own threads: no more than its limit


def test_a_burst_of_tasks_each_gets_a_thread_when_they_block() -> None:
    # Tasks handed over in a burst still start at once when each one blocks: a
    # runner taking a task while more are ready brings another runner.
    barrier = threading.Barrier(6, timeout=WAIT)

    def task(i: int) -> int:
        barrier.wait()
        return i

    with wp.Group(limit=6) as g:
        for i in range(6):
            g.go(task, i)
    assert g.results() == list(range(6))


def test_without_limit_every_task_starts_at_once() -> None:
    gate = Gate()
    with wp.Group() as g:
        for i in range(40):
            g.go(gate.task, i)
        gate.wait_entered(40)  # 40 tasks run together: none waited for another
        gate.opened.set()
    assert g.results() == list(range(40))
    assert gate.most == 40


def test_go_nowait_raises_would_block_at_the_limit() -> None:
    gate = Gate()
    with wp.Group(limit=2) as g:
        g.go_nowait(gate.task, 1)
        g.go_nowait(gate.task, 2)
        with pytest.raises(wp.WouldBlock, match=exact("the group is at its limit (2 tasks "
                                                      "in flight)")):
            g.go_nowait(gate.task, 3)
        gate.opened.set()
    assert g.results() == [1, 2]
    assert gate.entered == 2


def test_go_nowait_without_limit_never_blocks() -> None:
    gate = Gate()
    with wp.Group() as g:
        for i in range(20):
            g.go_nowait(gate.task, i)
        gate.opened.set()
    assert g.results() == list(range(20))


def test_threads_are_named_and_joined() -> None:
    names: list[str] = []
    with wp.Group(limit=2) as g:
        for _ in range(6):
            g.go(lambda: names.append(threading.current_thread().name))
    assert len(names) == 6
    assert all(re.fullmatch(r"workpool-group-\d+_\d+", n) for n in names), names
    assert len(set(names)) <= 2
    assert group_threads() == []  # joined by the time the block exits


def test_named_group() -> None:
    with wp.Group(name="crawl") as g:
        g.go(lambda: threading.current_thread().name)
    assert g.results()[0].startswith("crawl_")


def test_wp_current_inside_a_task() -> None:
    def task() -> bool:
        return wp.current().cancelled

    with wp.Group() as g:
        g.go(task)
    assert g.results() == [False]


def test_properties_and_repr() -> None:
    g = wp.Group(limit=5)
    assert g.limit == 5
    assert not g.cancelled
    assert repr(g).startswith("<Group 'workpool-group-")
    assert "new limit=5 in_flight=0 cancelled=False>" in repr(g)
    assert wp.Group().limit is None


# -- Group: validation and life cycle ----------------------------------------------------------

@pytest.mark.parametrize(("limit", "error", "message"), [
    (0, ValueError, "limit must be >= 1, got 0"),
    (-3, ValueError, "limit must be >= 1, got -3"),
    (2.5, TypeError, "limit must be an int, a wp.Autoscale, a wp.Adaptive or None, got 2.5"),
    (True, TypeError, "limit must be an int, a wp.Autoscale, a wp.Adaptive or None, got True"),
    ("8", TypeError, "limit must be an int, a wp.Autoscale, a wp.Adaptive or None, got '8'"),
])
@pytest.mark.parametrize("cls", [wp.Group, wp.AsyncGroup])
def test_bad_limit(cls: type[Any], limit: Any, error: type[Exception], message: str) -> None:
    with pytest.raises(error, match=exact(message)):
        cls(limit=limit)


@pytest.mark.parametrize("cls", [wp.Group, wp.AsyncGroup])
def test_bad_timeout(cls: type[Any]) -> None:
    with pytest.raises(ValueError, match=exact("timeout must be > 0, got 0")):
        cls(timeout=0)
    with pytest.raises(TypeError, match=exact("timeout must be a number of seconds or "
                                              "None, got '1'")):
        cls(timeout="1")


def test_bad_pool() -> None:
    with pytest.raises(TypeError, match=r"^pool must be a concurrent.futures.Executor"):
        wp.Group(pool=object())  # type: ignore[arg-type]
    with pytest.raises(TypeError, match=r"^pool must be a wp.AsyncPool or None, got "):
        wp.AsyncGroup(pool=wp.ThreadPool(1))  # type: ignore[arg-type]


def test_go_rejects_what_it_cannot_run() -> None:
    async def coro() -> None:
        pass

    with wp.Group() as g:
        with pytest.raises(TypeError, match=exact("fn must be callable, got 3")):
            g.go(3)  # type: ignore[arg-type]
        with pytest.raises(TypeError, match=r"coro is a coroutine function: Group runs "
                                            r"plain callables in threads; use "
                                            r"wp.AsyncGroup for coroutines$"):
            g.go(coro)
    assert g.results() == []


def test_go_outside_the_block() -> None:
    g = wp.Group()
    with pytest.raises(RuntimeError, match=exact(
            "Group.go() called before the group was entered: use "
            "'with wp.Group() as g:'")):
        g.go(int)
    with g:
        g.go(int)
    with pytest.raises(RuntimeError, match=exact(
            "Group.go() called after the group's block exited: a group takes no new "
            "tasks once all of its tasks ended")):
        g.go(int)
    with pytest.raises(RuntimeError, match=exact(
            "Group.go() called after the group's block exited: a group takes no new "
            "tasks once all of its tasks ended")):
        g.go_nowait(int)
    with pytest.raises(RuntimeError, match=exact("a Group can be entered only once")), g:
        pass


def test_results_before_the_block_exited() -> None:
    with wp.Group() as g:
        g.go(int)
        with pytest.raises(RuntimeError, match=exact(
                "Group.results() called before the group's block exited: call it after "
                "the 'with' block")):
            g.results()


def test_siblings_added_during_exit_are_waited_for() -> None:
    exiting = threading.Event()
    child_ran = threading.Event()

    def child() -> str:
        child_ran.set()
        return "child"

    def parent(g: wp.Group) -> str:
        assert exiting.wait(WAIT)
        wait_until(lambda: "exiting" in repr(g))
        g.go(child)
        return "parent"

    with wp.Group() as g:
        g.go(parent, g)
        exiting.set()
    assert child_ran.is_set()
    assert g.results() == ["parent", "child"]


# -- Group: the first failure ----------------------------------------------------------------

def test_first_failure_cancels_running_and_unstarted_tasks() -> None:
    fail = threading.Event()
    ran: list[int] = []
    seen_cancelled: list[bool] = []

    def cooperative() -> None:
        try:
            wp.current().sleep(WAIT)
        finally:
            seen_cancelled.append(wp.current().cancelled)

    with pytest.raises(ExceptionGroup) as info, wp.Group(limit=2) as g:  # noqa: PT012
        g.go(cooperative)
        boom = g.go(fail_when, fail, Boom("first"))
        fail.set()
        later = [g.go(ran.append, i) for i in range(5)]  # after the failure, or blocked
    assert str(info.value) == "unhandled errors in a Group (1 sub-exception)"
    assert [repr(e) for e in info.value.exceptions] == ["Boom('first')"]
    assert ran == []  # blocked by the limit until the failure: then never started
    assert all(f.cancelled() for f in later)
    assert seen_cancelled == [True]
    assert isinstance(boom.exception(), Boom)
    assert g.cancelled


def test_queued_tasks_on_a_pool_are_cancelled() -> None:
    release = threading.Event()
    ran: list[int] = []
    with wp.ThreadPool(1) as pool:
        with pytest.raises(ExceptionGroup), wp.Group(pool=pool) as g:  # noqa: PT012
            first = g.go(fail_when, release, Boom("x"))
            queued = [g.go(ran.append, i) for i in range(3)]  # behind it, on one thread
            release.set()
        assert first.exception() is not None
        assert [f.cancelled() for f in queued] == [True, True, True]
        assert pool.submit(operator.neg, 1).result(WAIT) == -1  # not shut down
    assert ran == []


def test_every_real_failure_is_raised_cancellations_are_not() -> None:
    barrier = threading.Barrier(3, timeout=WAIT)

    def fail(i: int) -> None:
        barrier.wait()
        raise Boom(i)

    def cancelled() -> None:
        barrier.wait()
        raise wp.Cancelled("stopped")

    with pytest.raises(ExceptionGroup) as info, wp.Group() as g:  # noqa: PT012
        g.go(fail, 1)
        g.go(fail, 2)
        g.go(cancelled)
    assert sorted(str(e) for e in info.value.exceptions) == ["1", "2"]
    assert all(type(e) is Boom for e in info.value.exceptions)
    with pytest.raises(RuntimeError, match=exact(
            "Group.results() needs every task to succeed: 2 failed, 1 cancelled")):
        g.results()


def test_a_cancelled_task_does_not_fail_the_group() -> None:
    with wp.Group() as g:
        g.go(operator.neg, 1)
        f = g.go(_raise_cancelled)
    assert isinstance(f.exception(), wp.Cancelled)
    assert not g.cancelled
    with pytest.raises(RuntimeError, match=exact(
            "Group.results() needs every task to succeed: 0 failed, 1 cancelled")):
        g.results()


def _raise_cancelled() -> None:
    raise wp.Cancelled("by itself")


def test_a_blocked_go_returns_a_cancelled_future_once_the_group_fails() -> None:
    gate = Gate()
    fail = threading.Event()
    box: list[Future[Any]] = []
    with pytest.raises(ExceptionGroup), wp.Group(limit=2) as g:  # noqa: PT012
        g.go(gate.task)
        g.go(fail_when, fail, Boom())

        def blocked() -> None:
            box.append(g.go(gate.task, "never"))

        caller = threading.Thread(target=blocked)
        caller.start()
        wait_until(lambda: len(g._waiters) == 1)
        fail.set()
        caller.join(WAIT)
        assert not caller.is_alive()
        gate.opened.set()
    assert box[0].cancelled()
    assert gate.entered == 1


def test_cancel_stops_the_group_without_an_error() -> None:
    ran: list[int] = []
    with wp.Group(limit=1) as g:
        running = g.go(wait_for_cancel)
        g.cancel()
        later = g.go(ran.append, 1)
    assert g.cancelled
    assert later.cancelled()
    assert cf.wait([later], timeout=WAIT).done == {later}  # done for the stdlib's wait too
    assert isinstance(running.exception(), wp.Cancelled)
    assert ran == []


def test_base_exception_in_a_task_is_raised_as_it_is() -> None:
    def interrupt() -> None:
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt), wp.Group() as g:  # noqa: PT012
        other = g.go(wait_for_cancel)
        g.go(interrupt)
    assert isinstance(other.exception(), wp.Cancelled)


# -- Group: an exception in the block ---------------------------------------------------------

def test_an_error_in_the_block_cancels_and_is_grouped() -> None:
    with pytest.raises(ExceptionGroup) as info, wp.Group() as g:  # noqa: PT012
        running = g.go(wait_for_cancel)
        raise Boom("body")
    assert [repr(e) for e in info.value.exceptions] == ["Boom('body')"]
    assert isinstance(running.exception(), wp.Cancelled)


def test_task_failures_come_before_the_blocks_error() -> None:
    done = threading.Event()

    def fail() -> None:
        done.set()
        raise Boom("task")

    with pytest.raises(ExceptionGroup) as info, wp.Group() as g:  # noqa: PT012
        g.go(fail)
        assert done.wait(WAIT)
        wait_until(lambda: g.cancelled)
        raise KeyError("body")
    assert [repr(e) for e in info.value.exceptions] == ["Boom('task')", "KeyError('body')"]


@pytest.mark.parametrize("exc", [KeyboardInterrupt(), SystemExit(3)])
def test_keyboard_interrupt_in_the_block_cancels_waits_and_propagates(
        exc: BaseException) -> None:
    with pytest.raises(type(exc)) as info, wp.Group() as g:  # noqa: PT012
        running = g.go(wait_for_cancel)
        raise exc
    assert info.value is exc
    assert running.done()
    assert isinstance(running.exception(), wp.Cancelled)
    assert group_threads() == []


@contextmanager
def ctrl_c_when(ready: Callable[[], bool]) -> Iterator[None]:
    """Raise KeyboardInterrupt in the main thread, as Ctrl-C would, once *ready*."""
    def handler(signum: int, frame: FrameType | None) -> None:
        raise KeyboardInterrupt

    def interrupter() -> None:
        wait_until(ready)
        signal.pthread_kill(threading.main_thread().ident or 0, signal.SIGUSR1)

    old = signal.signal(signal.SIGUSR1, handler)
    helper = threading.Thread(target=interrupter)
    helper.start()
    try:
        yield
    finally:
        helper.join(WAIT)
        signal.signal(signal.SIGUSR1, old)


@pytest.mark.skipif(not hasattr(signal, "pthread_kill"), reason="needs pthread_kill")
def test_ctrl_c_while_leaving_cancels_waits_and_propagates() -> None:
    g = wp.Group()
    with ctrl_c_when(lambda: "exiting" in repr(g)), pytest.raises(KeyboardInterrupt), g:
        running = g.go(wait_for_cancel)
    assert isinstance(running.exception(), wp.Cancelled)
    assert group_threads() == []


@pytest.mark.skipif(not hasattr(signal, "pthread_kill"), reason="needs pthread_kill")
def test_ctrl_c_while_go_waits_for_a_slot() -> None:
    g = wp.Group(limit=1)
    with (ctrl_c_when(lambda: len(g._waiters) == 1),  # noqa: PT012
          pytest.raises(KeyboardInterrupt), g):
        running = g.go(wait_for_cancel)
        g.go(operator.neg, 1)  # waits for the slot: interrupted there
    assert isinstance(running.exception(), wp.Cancelled)
    assert len(g._waiters) == 0


@pytest.mark.skipif(not hasattr(signal, "pthread_kill"), reason="needs pthread_kill")
def test_a_second_ctrl_c_gives_up_on_tasks_that_ignore_cancellation() -> None:
    release = threading.Event()

    def stubborn() -> str:
        assert release.wait(WAIT)  # never looks at wp.current().cancelled
        return "done"

    g = wp.Group()

    def waiting_again() -> bool:  # cancelled by the first Ctrl-C, waiting again
        return g.cancelled and bool(g._all_done._waiters)  # type: ignore[attr-defined]

    with ctrl_c_when(lambda: "exiting" in repr(g)), ctrl_c_when(waiting_again), \
            pytest.raises(KeyboardInterrupt), g:
        running = g.go(stubborn)
    assert not running.done()  # given up on: the block did not wait for it
    release.set()
    assert running.result(WAIT) == "done"


def test_a_cancellation_of_the_block_propagates_as_it_is() -> None:
    with pytest.raises(wp.Cancelled, match=exact("outer")), wp.Group() as g:  # noqa: PT012
        running = g.go(wait_for_cancel)
        raise wp.Cancelled("outer")
    assert isinstance(running.exception(), wp.Cancelled)


# -- Group: the deadline ---------------------------------------------------------------------

def test_timeout_cancels_and_raises_timeout_error() -> None:
    ran: list[int] = []
    with (pytest.raises(TimeoutError, match=exact("group timed out after 0.05 s")) as info,  # noqa: PT012
          wp.Group(limit=1, timeout=0.05) as g):
        running = g.go(wait_for_cancel)
        g.go(ran.append, 1)  # blocked by the limit, then refused
    assert type(info.value) is TimeoutError
    assert isinstance(running.exception(), wp.Cancelled)
    assert ran == []
    assert group_threads() == []
    assert not [t for t in threading.enumerate() if t.name.endswith("_timer")]


def test_no_timeout_when_the_group_ends_in_time() -> None:
    with wp.Group(timeout=WAIT) as g:
        g.go(operator.neg, 2)
    assert g.results() == [-2]
    assert not g.cancelled


def test_timeout_with_a_failure_of_the_block() -> None:
    with pytest.raises(ExceptionGroup) as info, wp.Group(timeout=0.02) as g:  # noqa: PT012
        g.go(wait_for_cancel)
        wait_until(lambda: g.cancelled)
        raise Boom("body")
    assert [repr(e) for e in info.value.exceptions] == [
        "TimeoutError('group timed out after 0.02 s')", "Boom('body')"]


# -- Group on a pool ---------------------------------------------------------------------------

def test_group_on_a_thread_pool() -> None:
    with wp.ThreadPool(4, name="shared") as pool:
        gate = Gate()
        with wp.Group(limit=2, pool=pool) as g:
            for i in range(2):
                g.go(gate.task, i)
            gate.wait_entered(2)
            with pytest.raises(wp.WouldBlock):  # the group's limit, not the pool's 4
                g.go_nowait(gate.task, 2)
            gate.opened.set()
            for i in range(2, 6):
                g.go(gate.task, i)
            g.go(lambda: threading.current_thread().name)
        assert g.results()[:6] == list(range(6))
        assert g.results()[6].startswith("shared_")
        assert gate.most == 2
        assert pool.submit(operator.neg, 3).result(WAIT) == -3  # still open


def test_go_nowait_on_a_full_pool_raises_queue_full() -> None:
    gate = Gate()
    with wp.ThreadPool(1, queue_size=1) as pool:
        with wp.Group(pool=pool) as g:
            g.go(gate.task, 1)
            gate.wait_entered(1)
            g.go(gate.task, 2)  # waits in the pool's queue
            with pytest.raises(wp.QueueFull):
                g.go_nowait(gate.task, 3)
            assert "in_flight=2" in repr(g)  # the refused one is not counted
            gate.opened.set()
        assert g.results() == [1, 2]


def test_group_on_a_stdlib_thread_pool_sees_cancellation() -> None:
    fail = threading.Event()
    with cf.ThreadPoolExecutor(3) as pool:
        with pytest.raises(ExceptionGroup), wp.Group(pool=pool) as g:  # noqa: PT012
            running = g.go(wait_for_cancel)
            g.go(fail_when, fail, Boom())
            fail.set()
        assert isinstance(running.exception(), wp.Cancelled)


class InThreads(Executor):
    """An executor workpool knows nothing about: a thread per task."""

    def __init__(self) -> None:
        self.threads: list[threading.Thread] = []

    def submit(self, fn: Callable[..., Any], /, *args: Any, **kwargs: Any) -> Future[Any]:
        future: Future[Any] = Future()

        def run() -> None:
            if not future.set_running_or_notify_cancel():
                return
            try:
                future.set_result(fn(*args, **kwargs))
            except BaseException as exc:
                future.set_exception(exc)

        thread = threading.Thread(target=run)
        self.threads.append(thread)
        thread.start()
        return future

    def shutdown(self, wait: bool = True, *, cancel_futures: bool = False) -> None:
        for thread in self.threads:
            thread.join(WAIT)


def test_group_on_any_executor() -> None:
    with InThreads() as pool:
        with wp.Group(limit=3, pool=pool) as g:
            for i in range(10):
                g.go(operator.mul, i, i)
        assert g.results() == [i * i for i in range(10)]
        with pytest.raises(ExceptionGroup) as info, wp.Group(pool=pool) as g:
            g.go(operator.truediv, 1, 0)
        assert [type(e) for e in info.value.exceptions] == [ZeroDivisionError]


def test_group_on_a_process_pool() -> None:
    ctx = multiprocessing.get_context("forkserver")
    with cf.ProcessPoolExecutor(2, mp_context=ctx) as pool:
        with wp.Group(limit=2, pool=pool) as g:
            for i in range(8):
                g.go(operator.pow, i, 2)
        assert g.results() == [i ** 2 for i in range(8)]
        with pytest.raises(ExceptionGroup) as info, wp.Group(pool=pool) as g:
            g.go(operator.truediv, 1, 0)
        assert [type(e) for e in info.value.exceptions] == [ZeroDivisionError]


# -- Group: nesting ------------------------------------------------------------------------------

def test_nested_groups() -> None:
    def inner(n: int) -> list[int]:
        with wp.Group(limit=2) as g:
            for i in range(n):
                g.go(operator.mul, n, i)
        return g.results()

    with wp.Group(limit=3) as g:
        for n in range(5):
            g.go(inner, n)
    assert g.results() == [[n * i for i in range(n)] for n in range(5)]


def test_outer_failure_cancels_inner_groups() -> None:
    inner_started = threading.Event()
    fail = threading.Event()
    inner_outcomes: list[str] = []

    def inner() -> None:
        try:
            with wp.Group() as g:
                running = g.go(wait_for_cancel)
                inner_started.set()
        except wp.Cancelled as exc:
            inner_outcomes.append(str(exc))
            assert isinstance(running.exception(), wp.Cancelled)
            raise

    with pytest.raises(ExceptionGroup) as info, wp.Group() as g:  # noqa: PT012
        nested = g.go(inner)
        assert inner_started.wait(WAIT)
        g.go(fail_when, fail, Boom("outer"))
        fail.set()
    assert [repr(e) for e in info.value.exceptions] == ["Boom('outer')"]
    assert inner_outcomes == ["the group was cancelled with the task that opened it"]
    assert isinstance(nested.exception(), wp.Cancelled)


def test_an_inner_group_opened_after_the_outer_failed_starts_cancelled() -> None:
    fail = threading.Event()
    seen: list[bool] = []

    def inner() -> None:
        wait_until(lambda: wp.current().cancelled)
        with wp.Group() as g:
            seen.append(g.cancelled)
            refused = g.go(operator.neg, 1)
        seen.append(refused.cancelled())

    with pytest.raises(ExceptionGroup), wp.Group() as g:  # noqa: PT012
        nested = g.go(inner)
        g.go(fail_when, fail, Boom())
        fail.set()
    assert seen == [True]  # the inner block raised wp.Cancelled on exit
    assert isinstance(nested.exception(), wp.Cancelled)


# -- Group: every task ends exactly once -------------------------------------------------------

@settings(max_examples=25, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(limit=st.one_of(st.none(), st.integers(1, 6)),
       plan=st.lists(st.tuples(st.sampled_from(["ok", "fail", "cancelled", "slow"]),
                               st.integers(0, 3)), max_size=25),
       body_fails=st.booleans())
def test_every_task_ends_exactly_once(limit: int | None, plan: list[tuple[str, int]],
                                      body_fails: bool) -> None:
    calls: Counter[int] = Counter()
    lock = threading.Lock()

    def task(i: int, kind: str, spins: int) -> int:
        with lock:
            calls[i] += 1
        ctx = wp.current()
        for _ in range(spins):
            ctx.sleep(0.0005)
        if kind == "fail":
            raise Boom(i)
        if kind == "cancelled":
            raise wp.Cancelled(str(i))
        if kind == "slow":
            ctx.sleep(0.002)
        return i

    futures: list[Future[int]] = []
    raised: BaseException | None = None
    try:
        with wp.Group(limit=limit) as g:
            for i, (kind, spins) in enumerate(plan):
                futures.append(g.go(task, i, kind, spins))
            if body_fails:
                raise Boom("body")
    except ExceptionGroup as exc:
        raised = exc
    assert all(f.done() for f in futures)
    assert all(n == 1 for n in calls.values())
    ends: Counter[str] = Counter()
    real_failures = 0
    for i, f in enumerate(futures):
        if f.cancelled():
            ends["cancelled"] += 1
            assert calls[i] == 0  # a cancelled future never ran
        elif isinstance(f.exception(), cf.CancelledError):
            ends["cancelled"] += 1
        elif f.exception() is not None:
            ends["error"] += 1
            real_failures += 1
        else:
            ends["value"] += 1
            assert f.result() == i
    assert sum(ends.values()) == len(plan)
    expected = real_failures + body_fails
    if expected:
        assert isinstance(raised, ExceptionGroup)
        assert len(raised.exceptions) == expected
    else:
        assert raised is None
        if ends["cancelled"] == 0:
            assert g.results() == list(range(len(plan)))


# -- AsyncGroup ---------------------------------------------------------------------------------

async def double(x: int) -> int:
    await anyio.lowlevel.checkpoint()
    return 2 * x


async def sleep_forever() -> None:
    await anyio.sleep(WAIT)
    raise AssertionError("not cancelled")


async def afail_when(event: anyio.Event, exc: BaseException) -> None:
    with anyio.fail_after(WAIT):
        await event.wait()
    raise exc


class AGate:
    """Async tasks that block until the test opens the gate; counts who entered."""

    def __init__(self) -> None:
        self.opened = anyio.Event()
        self.entered = 0
        self.running = 0
        self.most = 0
        self._arrived: list[tuple[int, anyio.Event]] = []

    async def task(self, value: Any = None) -> Any:
        self.entered += 1
        self.running += 1
        self.most = max(self.most, self.running)
        for n, event in self._arrived:
            if self.entered >= n:
                event.set()
        try:
            with anyio.fail_after(WAIT):
                await self.opened.wait()
            return value
        finally:
            self.running -= 1

    async def wait_entered(self, n: int) -> None:
        if self.entered < n:
            event = anyio.Event()
            self._arrived.append((n, event))
            with anyio.fail_after(WAIT):
                await event.wait()


@pytest.mark.anyio
async def test_async_results_in_go_order() -> None:
    async with wp.AsyncGroup(limit=3) as g:
        futures = [await g.go(double, i) for i in range(50)]
    assert g.results() == [2 * i for i in range(50)]
    assert [await f for f in futures] == [2 * i for i in range(50)]
    assert all(isinstance(f, wp.AsyncFuture) and f.done() for f in futures)


@pytest.mark.anyio
async def test_async_handles_can_be_awaited_in_the_block() -> None:
    async with wp.AsyncGroup() as g:
        fut = await g.go(double, 21)
        assert not fut.done()
        with anyio.fail_after(WAIT):
            assert await fut == 42
        assert fut.done()
        assert fut.result() == 42


@pytest.mark.anyio
async def test_async_kwargs_and_async_callables() -> None:
    class Fetcher:
        async def __call__(self, x: int, *, scale: int) -> int:
            return x * scale

    async with wp.AsyncGroup() as g:
        await g.go(Fetcher(), 3, scale=5)
        g.go_nowait(Fetcher(), 1, scale=2)
    assert g.results() == [15, 2]


@pytest.mark.anyio
async def test_async_limit_makes_go_wait() -> None:
    gate = AGate()
    returned = anyio.Event()
    async with wp.AsyncGroup(limit=3) as g:
        for i in range(3):
            await g.go(gate.task, i)
        await gate.wait_entered(3)

        async def fourth() -> None:
            await g.go(gate.task, 3)
            returned.set()

        async with anyio.create_task_group() as tg:
            tg.start_soon(fourth)
            await anyio.wait_all_tasks_blocked()
            assert not returned.is_set()  # 3 in flight: waiting
            assert gate.entered == 3
            gate.opened.set()
            with anyio.fail_after(WAIT):
                await returned.wait()
    assert g.results() == [0, 1, 2, 3]
    assert gate.most == 3


@pytest.mark.anyio
async def test_async_at_most_limit_run_at_once() -> None:
    running = most = 0

    async def task() -> None:
        nonlocal running, most
        running += 1
        most = max(most, running)
        for _ in range(3):
            await anyio.lowlevel.checkpoint()
        running -= 1

    async with wp.AsyncGroup(limit=4) as g:
        for _ in range(200):
            await g.go(task)
    assert most == 4
    assert len(g.results()) == 200


@pytest.mark.anyio
async def test_async_without_limit_every_task_starts_at_once() -> None:
    gate = AGate()
    async with wp.AsyncGroup() as g:
        for i in range(100):
            await g.go(gate.task, i)
        await gate.wait_entered(100)
        gate.opened.set()
    assert g.results() == list(range(100))
    assert gate.most == 100


@pytest.mark.anyio
async def test_async_go_nowait() -> None:
    gate = AGate()
    async with wp.AsyncGroup(limit=2) as g:
        g.go_nowait(gate.task, 1)
        g.go_nowait(gate.task, 2)
        with pytest.raises(wp.WouldBlock, match=exact("the group is at its limit (2 tasks "
                                                      "in flight)")):
            g.go_nowait(gate.task, 3)
        gate.opened.set()
    assert g.results() == [1, 2]
    assert gate.entered == 2


@pytest.mark.anyio
async def test_async_go_rejects_what_it_cannot_run() -> None:
    def blocking(x: int) -> int:
        return x

    async with wp.AsyncGroup() as g:
        with pytest.raises(TypeError, match=exact(
                "test_async_go_rejects_what_it_cannot_run.<locals>.blocking is not a "
                "coroutine function: AsyncGroup.go() runs 'async def' functions; run a "
                "blocking one with go(anyio.to_thread.run_sync, "
                "test_async_go_rejects_what_it_cannot_run.<locals>.blocking, ...)")):
            await g.go(blocking, 1)  # type: ignore[arg-type]
        with pytest.raises(TypeError, match=exact("fn must be callable, got 3")):
            g.go_nowait(3)  # type: ignore[arg-type]
        coro = double(1)
        with pytest.raises(TypeError, match=exact(
                "go() takes a coroutine function and its arguments, got the coroutine "
                "object double(): write go(double, *args)")):
            await g.go(coro)  # type: ignore[arg-type]
        assert inspect.getcoroutinestate(coro) == "CORO_CLOSED"  # no "never awaited"
    assert g.results() == []


@pytest.mark.anyio
async def test_async_go_outside_the_block() -> None:
    g = wp.AsyncGroup()
    with pytest.raises(RuntimeError, match=exact(
            "AsyncGroup.go() called before the group was entered: use "
            "'async with wp.AsyncGroup() as g:'")):
        await g.go(double, 1)
    async with g:
        await g.go(double, 1)
        with pytest.raises(RuntimeError, match=exact(
                "AsyncGroup.results() called before the group's block exited: call it "
                "after the 'async with' block")):
            g.results()
    with pytest.raises(RuntimeError, match=exact(
            "AsyncGroup.go() called after the group's block exited: a group takes no new "
            "tasks once all of its tasks ended")):
        g.go_nowait(double, 1)
    with pytest.raises(RuntimeError, match=exact("an AsyncGroup can be entered only once")):
        async with g:
            pass
    assert g.results() == [2]


@pytest.mark.anyio
async def test_async_first_failure_cancels_everything() -> None:
    fail = anyio.Event()
    ran: list[int] = []
    reached: list[str] = []

    async def record(i: int) -> None:
        ran.append(i)

    with pytest.raises(ExceptionGroup) as info:  # noqa: PT012
        async with wp.AsyncGroup(limit=2) as g:
            running = await g.go(sleep_forever)
            boom = await g.go(afail_when, fail, Boom("first"))
            fail.set()
            later = [await g.go(record, i) for i in range(5)]  # waits, then cancelled
            reached.append("after go")  # never: the block itself is cancelled
    assert str(info.value) == "unhandled errors in an AsyncGroup (1 sub-exception)"
    assert [repr(e) for e in info.value.exceptions] == ["Boom('first')"]
    assert ran == []
    assert reached == []
    assert "later" not in locals()
    assert running.cancelled()
    with pytest.raises(wp.Cancelled, match=exact("cancelled with its group while running")):
        running.result()
    assert isinstance(boom.exception(), Boom)
    assert g.cancelled


@pytest.mark.anyio
async def test_async_go_from_outside_the_block_returns_a_cancelled_future() -> None:
    fail = anyio.Event()
    box: list[wp.AsyncFuture[int]] = []
    ran: list[int] = []

    async def record(i: int) -> int:
        ran.append(i)
        return i

    async def outsider(g: wp.AsyncGroup) -> None:
        box.append(await g.go(record, 1))  # waits for the limit, outside the group

    async with anyio.create_task_group() as tg:
        with pytest.raises(ExceptionGroup):  # noqa: PT012
            async with wp.AsyncGroup(limit=1) as g:
                await g.go(afail_when, fail, Boom())
                tg.start_soon(outsider, g)
                await anyio.wait_all_tasks_blocked()
                fail.set()
                await anyio.sleep(WAIT)
    assert box[0].cancelled()
    assert ran == []


@pytest.mark.anyio
async def test_async_queued_tasks_never_start() -> None:
    ran: list[int] = []

    async def record(i: int) -> None:
        ran.append(i)

    async def fail() -> None:
        raise Boom("now")

    with pytest.raises(ExceptionGroup):  # noqa: PT012
        async with wp.AsyncGroup() as g:
            first = await g.go(fail)
            queued = [g.go_nowait(record, i) for i in range(5)]  # before any worker ran
    assert isinstance(first.exception(), Boom)
    assert ran == []
    assert all(f.cancelled() for f in queued)


@pytest.mark.anyio
async def test_async_a_task_cancelled_alone_does_not_fail_the_group() -> None:
    gate = AGate()
    async with wp.AsyncGroup() as g:
        victim = await g.go(sleep_forever)
        other = await g.go(gate.task, "other")
        await gate.wait_entered(1)
        await anyio.wait_all_tasks_blocked()
        assert victim.cancel()
        with anyio.fail_after(WAIT):
            with pytest.raises(wp.Cancelled, match=exact("cancelled while running")):
                await victim
        gate.opened.set()
    assert not g.cancelled
    assert other.result() == "other"
    with pytest.raises(RuntimeError, match=exact(
            "AsyncGroup.results() needs every task to succeed: 0 failed, 1 cancelled")):
        g.results()


@pytest.mark.anyio
async def test_async_cancel_a_queued_task() -> None:
    ran: list[int] = []

    async def record(i: int) -> None:
        ran.append(i)

    async with wp.AsyncGroup() as g:
        queued = g.go_nowait(record, 1)
        assert queued.cancel()
        kept = g.go_nowait(record, 2)
    assert queued.cancelled()
    assert kept.done()
    assert ran == [2]


@pytest.mark.anyio
async def test_async_every_real_failure_is_raised() -> None:
    async def fail(i: int) -> None:
        raise Boom(i)

    async def cancelled() -> None:
        raise wp.Cancelled("by itself")

    with pytest.raises(ExceptionGroup) as info:  # noqa: PT012
        async with wp.AsyncGroup() as g:
            g.go_nowait(fail, 1)
            g.go_nowait(fail, 2)  # runs: the first failure comes after both started
            g.go_nowait(cancelled)
            await anyio.sleep(WAIT)
    assert [repr(e) for e in info.value.exceptions] in (
        ["Boom(1)"], ["Boom(1)", "Boom(2)"])
    assert g.cancelled


@pytest.mark.anyio
async def test_async_error_in_the_block() -> None:
    with pytest.raises(ExceptionGroup) as info:  # noqa: PT012
        async with wp.AsyncGroup() as g:
            running = await g.go(sleep_forever)
            await anyio.wait_all_tasks_blocked()
            raise Boom("body")
    assert [repr(e) for e in info.value.exceptions] == ["Boom('body')"]
    assert running.cancelled()


@pytest.mark.anyio
async def test_async_task_failures_come_before_the_blocks_error() -> None:
    async def fail() -> None:
        raise Boom("task")

    with pytest.raises(ExceptionGroup) as info:  # noqa: PT012
        async with wp.AsyncGroup() as g:
            await g.go(fail)
            try:
                await anyio.sleep(WAIT)
            finally:
                raise KeyError("body")
    assert [repr(e) for e in info.value.exceptions] == ["Boom('task')", "KeyError('body')"]


@pytest.mark.anyio
@pytest.mark.parametrize("exc", [KeyboardInterrupt(), SystemExit(3)])
async def test_async_keyboard_interrupt_in_the_block(exc: BaseException) -> None:
    with pytest.raises(type(exc)) as info:  # noqa: PT012
        async with wp.AsyncGroup() as g:
            running = await g.go(sleep_forever)
            await anyio.wait_all_tasks_blocked()
            raise exc
    assert info.value is exc
    assert running.cancelled()


@pytest.mark.anyio
async def test_async_keyboard_interrupt_in_a_task() -> None:
    async def interrupt() -> None:
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):  # noqa: PT012
        async with wp.AsyncGroup() as g:
            other = await g.go(sleep_forever)
            await g.go(interrupt)
    assert other.cancelled()


@pytest.mark.anyio
async def test_async_cancellation_from_outside_propagates() -> None:
    with anyio.move_on_after(0.05) as scope:
        async with wp.AsyncGroup() as g:
            running = await g.go(sleep_forever)
            queued = g.go_nowait(sleep_forever)
            await anyio.sleep(WAIT)
    assert scope.cancelled_caught
    assert running.cancelled()
    assert queued.cancelled()


@pytest.mark.anyio
async def test_async_cancel_stops_the_group_without_an_error() -> None:
    reached: list[str] = []
    async with wp.AsyncGroup() as g:
        running = await g.go(sleep_forever)
        await anyio.wait_all_tasks_blocked()
        g.cancel()
        refused = g.go_nowait(double, 1)
        await anyio.lowlevel.checkpoint()  # the block is cancelled here, like the tasks
        reached.append("after")
    assert reached == []
    assert running.cancelled()
    assert refused.cancelled()


@pytest.mark.anyio
async def test_async_cancel_as_the_blocks_last_statement() -> None:
    async with wp.AsyncGroup() as g:
        running = await g.go(sleep_forever)
        queued = g.go_nowait(sleep_forever)
        g.cancel()  # no await follows: leaving the block must still stop both
    assert running.cancelled()
    assert queued.cancelled()


@pytest.mark.anyio
async def test_async_timeout() -> None:
    with pytest.raises(TimeoutError, match=exact("group timed out after 0.05 s")) as info:  # noqa: PT012
        async with wp.AsyncGroup(limit=1, timeout=0.05) as g:
            running = await g.go(sleep_forever)
            await g.go(double, 1)  # waits for the limit until the deadline
    assert type(info.value) is TimeoutError
    assert running.cancelled()


@pytest.mark.anyio
async def test_async_timeout_while_exiting() -> None:
    with pytest.raises(TimeoutError):
        async with wp.AsyncGroup(timeout=0.05) as g:
            running = await g.go(sleep_forever)
    assert running.cancelled()


@pytest.mark.anyio
async def test_async_no_timeout_when_in_time() -> None:
    with anyio.fail_after(WAIT):
        async with wp.AsyncGroup(timeout=WAIT) as g:
            await g.go(double, 4)
    assert g.results() == [8]


@pytest.mark.anyio
async def test_async_siblings_added_by_tasks() -> None:
    async def parent(g: wp.AsyncGroup) -> str:
        for _ in range(3):
            await anyio.lowlevel.checkpoint()  # the block exits meanwhile
        await g.go(double, 5)
        return "parent"

    async with wp.AsyncGroup() as g:
        await g.go(parent, g)
    assert g.results() == ["parent", 10]


@pytest.mark.anyio
async def test_async_current_context_in_a_task() -> None:
    seen: list[bool] = []
    fail = anyio.Event()

    async def watcher() -> None:
        ctx = wp.current()
        seen.append(ctx.cancelled)
        try:
            await anyio.sleep(WAIT)
        finally:
            seen.append(ctx.cancelled)

    with pytest.raises(ExceptionGroup):  # noqa: PT012
        async with wp.AsyncGroup() as g:
            await g.go(watcher)
            await g.go(afail_when, fail, Boom())
            await anyio.wait_all_tasks_blocked()
            fail.set()
    assert seen == [False, True]


@pytest.mark.anyio
async def test_async_nested_groups() -> None:
    async def inner(n: int) -> list[int]:
        async with wp.AsyncGroup(limit=2) as g:
            for i in range(n):
                await g.go(double, i)
        return g.results()

    async with wp.AsyncGroup(limit=3) as g:
        for n in range(5):
            await g.go(inner, n)
    assert g.results() == [[2 * i for i in range(n)] for n in range(5)]


@pytest.mark.anyio
async def test_async_outer_failure_cancels_inner_groups() -> None:
    fail = anyio.Event()
    inner_running: list[wp.AsyncFuture[None]] = []

    async def inner() -> None:
        async with wp.AsyncGroup() as g:
            inner_running.append(await g.go(sleep_forever))

    with pytest.raises(ExceptionGroup) as info:  # noqa: PT012
        async with wp.AsyncGroup() as g:
            nested = await g.go(inner)
            await g.go(afail_when, fail, Boom("outer"))
            await anyio.wait_all_tasks_blocked()
            fail.set()
    assert [repr(e) for e in info.value.exceptions] == ["Boom('outer')"]
    assert nested.cancelled()
    assert inner_running[0].cancelled()


@pytest.mark.anyio
async def test_async_group_on_a_pool() -> None:
    gate = AGate()
    async with wp.AsyncPool(4) as pool:
        async with wp.AsyncGroup(limit=2, pool=pool) as g:
            await g.go(gate.task, 0)
            await g.go(gate.task, 1)
            await gate.wait_entered(2)
            with pytest.raises(wp.WouldBlock):  # the group's limit, not the pool's 4
                g.go_nowait(gate.task, 2)
            gate.opened.set()
            for i in range(2, 6):
                await g.go(gate.task, i)
        assert g.results() == list(range(6))
        assert gate.most == 2
        assert await pool.run(double, 3) == 6  # the pool is still open


@pytest.mark.anyio
async def test_async_group_on_a_pool_fails_fast() -> None:
    fail = anyio.Event()
    async with wp.AsyncPool(1) as pool:
        with pytest.raises(ExceptionGroup) as info:  # noqa: PT012
            async with wp.AsyncGroup(pool=pool) as g:
                first = await g.go(afail_when, fail, Boom("x"))
                queued = [await g.go(double, i) for i in range(3)]  # behind it in the pool
                fail.set()
                await anyio.sleep(WAIT)
        assert [repr(e) for e in info.value.exceptions] == ["Boom('x')"]
        assert isinstance(first.exception(), Boom)
        assert all(f.cancelled() for f in queued)
        assert await pool.run(double, 1) == 2


# -- AsyncGroup: every task ends exactly once ------------------------------------------------

@pytest.mark.parametrize("backend", ["asyncio", "trio"])
@settings(max_examples=20, deadline=None)
@given(limit=st.one_of(st.none(), st.integers(1, 6)),
       plan=st.lists(st.tuples(st.sampled_from(["ok", "fail", "cancelled", "cancel-me"]),
                               st.integers(0, 4)), max_size=25),
       body_fails=st.booleans())
def test_async_every_task_ends_exactly_once(backend: str, limit: int | None,
                                            plan: list[tuple[str, int]],
                                            body_fails: bool) -> None:
    calls: Counter[int] = Counter()

    async def task(i: int, kind: str, steps: int) -> int:
        calls[i] += 1
        for _ in range(steps):
            await anyio.lowlevel.checkpoint()
        if kind == "fail":
            raise Boom(i)
        if kind == "cancelled":
            raise wp.Cancelled(str(i))
        return i

    futures: list[wp.AsyncFuture[int]] = []
    group = wp.AsyncGroup(limit=limit)

    async def main() -> BaseException | None:
        try:
            with anyio.fail_after(WAIT):
                async with group as g:
                    for i, (kind, steps) in enumerate(plan):
                        futures.append(await g.go(task, i, kind, steps))
                        if kind == "cancel-me":
                            futures[-1].cancel()
                    if body_fails:
                        raise Boom("body")
        except ExceptionGroup as exc:
            return exc
        return None

    raised = anyio.run(main, backend=backend)
    assert all(f.done() for f in futures)
    assert all(n == 1 for n in calls.values())  # no task ran twice
    ends: Counter[str] = Counter()
    for i, f in enumerate(futures):
        if f.cancelled():
            ends["cancelled"] += 1
        elif f.exception() is not None:
            ends["error"] += 1
            assert isinstance(f.exception(), Boom)
        else:
            ends["value"] += 1
            assert f.result() == i
    assert sum(ends.values()) == len(futures)
    if len(futures) < len(plan):  # the block was cancelled in a go() that waited
        assert group.cancelled
    expected = ends["error"] + (body_fails and len(futures) == len(plan))
    if expected:
        assert isinstance(raised, ExceptionGroup)
        assert len(raised.exceptions) == expected
    else:
        assert raised is None
    if not expected and not ends["cancelled"]:
        assert group.results() == list(range(len(plan)))
