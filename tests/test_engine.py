"""The sync engine driven by a backend written against the contract alone.

``QueueBackend`` is what a new backend looks like: no thread per worker, one driver
thread that runs whatever worker has work, in turn, through the engine's step
(``begin`` / ``end``), as the process backend's reader or an event loop would.
"""

from __future__ import annotations

import operator
import threading
import time
from concurrent.futures import Future
from queue import SimpleQueue
from typing import Any

import pytest

import workpool as wp
from tests import _tasks
from tests.pool_suite import WAIT
from workpool._core.context import install_slot
from workpool._engine.contract import (
    TASK_FAILED,
    TASK_OK,
    TASK_STOPPED,
    Backend,
    Scheduler,
    Task,
    Worker,
    new_call,
)
from workpool._engine.engine import Engine

_RUN = 0  # run (worker, task): spawned with it, or resumed
_RELEASE = 1  # the parked worker leaves


class QueueBackend(Backend):
    """Every worker's tasks run on one driver thread, from one command queue."""

    broken_message = "the queue backend is broken"

    def __init__(self) -> None:
        self.commands: SimpleQueue[tuple[int, Worker, Task | None] | None] = SimpleQueue()
        self.driver = threading.Thread(target=self._drive, name="queue-driver")
        self.interrupted: list[Task] = []
        self.closed = False

    def attach(self, engine: Scheduler) -> None:
        super().attach(engine)
        self.driver.start()

    def spawn(self, worker: Worker) -> None:
        task, worker.first = worker.first, None
        self.commands.put((_RUN, worker, task))

    def resume(self, worker: Worker, task: Task) -> None:
        self.commands.put((_RUN, worker, task))

    def release(self, worker: Worker) -> None:
        self.commands.put((_RELEASE, worker, None))

    def interrupt(self, worker: Worker, task: Task) -> None:
        self.interrupted.append(task)

    def give_up(self, worker: Worker, task: Task, error: BaseException) -> None:
        self.engine.abandon(worker, task, error)

    def close(self) -> None:
        self.closed = True

    def after_fork_in_child(self) -> None:
        """Nothing of its own to forget."""

    def stop(self) -> None:
        if self.driver.is_alive():
            self.commands.put(None)
            self.driver.join(WAIT)

    def _drive(self) -> None:
        engine = self.engine
        while (command := self.commands.get()) is not None:
            op, worker, task = command
            if op == _RELEASE:
                engine.left(worker)
                continue
            if task is None:
                task = engine.next_task(worker)
            while task is not None:
                started = time.perf_counter()
                outcome = engine.begin(worker, task)
                if outcome is None:
                    install_slot(worker.slot)
                    try:
                        outcome = TASK_OK, task.fn(*task.args, **task.kwargs)
                    except Exception as exc:
                        outcome = TASK_FAILED, exc
                kind, value = outcome
                task = engine.end(worker, task, kind, value, started)
            if worker.leaving:
                engine.left(worker)


def _engine(backend: Backend, workers: int = 2, **options: Any) -> Engine:
    return Engine(backend, workers=workers, queue_size=options.pop("queue_size", 100),
                  timeout=None, retry=options.pop("retry", None), bucket=None,
                  name="queue", broken_type=RuntimeError)


def _put(engine: Engine, fn: Any, *args: Any, retry: wp.Retry | None = None) -> Future[Any]:
    future: Future[Any] = Future()
    engine.put(Task(fn, args, {}, future, retry=retry))
    return future


@pytest.fixture
def backend() -> Any:
    backend = QueueBackend()
    yield backend
    backend.stop()


def test_a_backend_written_against_the_contract_runs_through_the_engine(
        backend: QueueBackend) -> None:
    engine = _engine(backend)
    futures = [_put(engine, _tasks.square, i) for i in range(50)]
    failing = _put(engine, _tasks.fail, "no")
    retried = _put(engine, _tasks.fail_until_attempt, 3,
                   retry=wp.Retry(attempts=3, backoff=0.001, on=(ValueError,)))
    assert [f.result(WAIT) for f in futures] == [i * i for i in range(50)]
    assert retried.result(WAIT) == 3
    with pytest.raises(ValueError, match=r"^no$"):
        failing.result(WAIT)
    engine.close_intake()
    assert engine.join(time.monotonic() + WAIT)
    assert backend.closed
    stats = engine.statistics()
    assert (stats.submitted, stats.completed, stats.failed, stats.retried) == (52, 51, 1, 2)
    assert (stats.workers, stats.running, stats.queued) == (0, 0, 0)
    with pytest.raises(wp.PoolClosed):
        _put(engine, _tasks.square, 1)


def test_a_parked_worker_is_resumed_by_the_next_put(backend: QueueBackend) -> None:
    engine = _engine(backend, workers=1)
    assert _put(engine, _tasks.square, 3).result(WAIT) == 9
    # The worker's task ended with nothing queued: it is parked, not gone.
    deadline = time.monotonic() + WAIT
    while engine.statistics().idle != 1:
        assert time.monotonic() < deadline, "the worker was never parked"
        time.sleep(0.001)
    assert _put(engine, _tasks.square, 4).result(WAIT) == 16
    assert len(engine.live_workers()) == 1
    engine.close_intake()
    assert engine.join(time.monotonic() + WAIT)
    assert engine.live_workers() == []


def test_cancel_all_interrupts_what_runs_and_cancels_what_waits(
        backend: QueueBackend) -> None:
    engine = _engine(backend, workers=1)
    gate = threading.Event()
    started = threading.Event()

    def hold() -> str:
        started.set()
        assert gate.wait(WAIT)
        return "held"

    running = _put(engine, hold)
    queued = _put(engine, _tasks.square, 2)
    assert started.wait(WAIT)
    engine.close_intake()
    assert engine.cancel_all() == [queued]
    assert [t.future for t in backend.interrupted] == [running]
    gate.set()
    assert engine.join(time.monotonic() + WAIT)
    assert queued.cancelled()
    assert running.result(WAIT) == "held"  # this backend cannot stop a call
    stats = engine.statistics()
    assert (stats.completed, stats.cancelled) == (1, 1)


def test_an_engine_with_a_full_queue_makes_put_wait_for_the_step(
        backend: QueueBackend) -> None:
    engine = _engine(backend, workers=1, queue_size=1)
    gate = threading.Event()
    first = _put(engine, gate.wait, WAIT)
    second = _put(engine, _tasks.square, 5)  # queued: the queue is full now
    with pytest.raises(wp.QueueFull):
        engine.put(Task(_tasks.square, (6,), {}, Future()), block=False)
    gate.set()
    third = _put(engine, _tasks.square, 7)  # waits until end() pops the queued one
    assert (first.result(WAIT), second.result(WAIT), third.result(WAIT)) == (True, 25, 49)
    engine.close_intake()
    assert engine.join(time.monotonic() + WAIT)


def _wait_idle(pool: wp.ThreadPool, idle: int) -> None:
    deadline = time.monotonic() + WAIT
    while pool.statistics().idle != idle:
        assert time.monotonic() < deadline, f"never {idle} idle workers"
        time.sleep(0.001)


def test_a_burst_of_blocking_tasks_wakes_every_parked_worker() -> None:
    # The hand-off is lazy (one worker woken at a time), yet each woken worker passes
    # on what was queued meanwhile: tasks that block each get a parked worker.
    with wp.ThreadPool(4) as pool:
        warm = threading.Barrier(4, timeout=WAIT)
        warmed = [pool.submit(warm.wait) for _ in range(4)]
        assert sorted(f.result(WAIT) for f in warmed) == [0, 1, 2, 3]
        _wait_idle(pool, 4)
        meet = threading.Barrier(4, timeout=WAIT)
        futures = [pool.submit(meet.wait) for _ in range(4)]
        assert sorted(f.result(WAIT) for f in futures) == [0, 1, 2, 3]
        stats = pool.statistics()
        assert (stats.workers, stats.completed, stats.failed) == (4, 8, 0)


def test_a_parked_pool_keeps_priority_order_through_a_lazy_hand_off() -> None:
    with wp.ThreadPool(1) as pool:
        assert pool.submit(_tasks.square, 2).result(WAIT) == 4
        _wait_idle(pool, 1)
        gate = threading.Event()
        order: list[int] = []
        first = pool.submit(gate.wait, WAIT)  # the parked worker is woken for it
        futures = [pool.schedule(order.append, (p,), priority=p) for p in (1, 5, 3)]
        gate.set()
        assert first.result(WAIT) is True
        assert [f.result(WAIT) for f in futures] == [None, None, None]
        assert order == [5, 3, 1]


def test_fast_tasks_are_counted_exactly_and_their_latency_sampled() -> None:
    with wp.ThreadPool(2) as pool:
        assert list(pool.map(_tasks.square, range(1), chunksize=1)) == [0]
        futures = [pool.submit(_tasks.square, i) for i in range(500)]
        assert [f.result(WAIT) for f in futures] == [i * i for i in range(500)]
        stats = pool.statistics()
    assert (stats.submitted, stats.completed, stats.failed, stats.ended) == (501, 501, 0, 501)
    assert 0 < stats.run_time_p50 <= stats.run_time_p99
    assert 0 <= stats.queue_wait_p50 <= stats.queue_wait_p99
    assert stats.throughput > 0


# -- what the engine offers front ends that own some of the work (AsyncPool's) ---------


class RoomBackend(QueueBackend):
    """Counts the engine's calls to ``room`` (a waiter parked outside a thread)."""

    def __init__(self) -> None:
        super().__init__()
        self.rooms: list[bool] = []
        self.waiting = 0

    def room(self, every: bool = False) -> bool:
        self.rooms.append(every)
        if not self.waiting:
            return False
        self.waiting -= 1
        return True


def _task(fn: Any, *args: Any, priority: int = 0, retry: wp.Retry | None = None) -> Task:
    return Task(fn, args, {}, Future(), priority, retry=retry)


def test_new_call_makes_the_task_task_makes() -> None:
    future: Future[Any] = Future()
    made = new_call(_tasks.square, (3,), {"k": 1}, future, 5, 2.0, None, "payload")
    plain = Task(_tasks.square, (3,), {"k": 1}, future, 5, 2.0, None, payload="payload")
    # crashes and weight stay unset until a worker process dies running the task,
    # and until the engine samples its latency
    assert {name: getattr(made, name, "unset") for name in Task.__slots__} == {
        name: getattr(plain, name, "unset") for name in Task.__slots__}
    assert not hasattr(made, "crashes")
    assert not hasattr(made, "weight")


def test_withdraw_takes_matching_queued_tasks_out_and_counts_them_cancelled() -> None:
    gate = threading.Event()
    backend = QueueBackend()
    try:
        engine = _engine(backend, workers=1)
        blocker = _put(engine, gate.wait, WAIT)
        tasks = [_task(_tasks.square, i, priority=i % 2) for i in range(6)]
        for task in tasks:
            engine.put(task)
        queued, retrying = engine.withdraw(lambda t: t.args[0] % 3 == 0)
        assert ([t.args[0] for t in queued], retrying) == ([3, 0], [])  # priority order
        assert engine.statistics().queued == 4
        gate.set()
        assert blocker.result(WAIT) is True
        kept = [t for t in tasks if t not in queued]
        assert [t.future.result(WAIT) for t in kept] == [1, 4, 16, 25]  # type: ignore[attr-defined]
        assert all(not t.future.done() for t in queued)  # the caller settles them
        engine.close_intake()
        assert engine.join(time.monotonic() + WAIT)
        stats = engine.statistics()
        assert (stats.submitted, stats.completed, stats.cancelled) == (7, 5, 2)
    finally:
        gate.set()
        backend.stop()


def test_start_starts_workers_up_to_the_target_before_any_task() -> None:
    backend = QueueBackend()
    try:
        engine = _engine(backend, workers=3)
        engine.start(5)
        engine.start(1)  # at the target already
        assert _until(lambda: engine.statistics().idle == 3)
        assert engine.statistics().workers == 3
        assert _put(engine, _tasks.square, 4).result(WAIT) == 16
        engine.close_intake()
        assert engine.join(time.monotonic() + WAIT)
        assert engine.statistics().workers == 0
    finally:
        backend.stop()


def test_a_task_stopped_while_running_is_counted_cancelled_and_never_retried() -> None:
    backend = QueueBackend()
    try:
        engine = _engine(backend, workers=1)
        worker = backend.new_worker(99)
        task = _task(_tasks.square, 2, retry=wp.Retry(attempts=3, backoff=0))
        assert engine.begin(worker, task) is None
        assert engine.end(worker, task, TASK_STOPPED, wp.Cancelled("stopped"), 0.0) is None
        with pytest.raises(wp.Cancelled, match=r"^stopped$"):
            task.future.result(0)  # type: ignore[attr-defined]
        stats = engine.statistics()
        assert (stats.cancelled, stats.retried, stats.failed) == (1, 0, 0)
    finally:
        backend.stop()


def test_room_is_called_while_a_waiter_is_parked_and_no_longer() -> None:
    gate = threading.Event()
    backend = RoomBackend()
    try:
        engine = _engine(backend, workers=1, queue_size=1)
        blocker = _put(engine, gate.wait, WAIT)
        engine.put(_task(_tasks.square, 1))
        with pytest.raises(wp.QueueFull, match=r"^queue is full \(1 tasks\)$"):
            engine.put(_task(_tasks.square, 2), block=False)
        backend.waiting = 1
        engine.want_room(1)
        gate.set()
        assert blocker.result(WAIT) is True
        assert _until(lambda: engine.statistics().idle == 1)
        # The pop woke the waiter (True); the next call found none parked (False):
        # the engine stopped calling.
        assert backend.rooms == [False, False]
        engine.want_room(-1)  # woken: a no-op
        engine.close_intake()
        assert backend.rooms[-1] is True  # intake closed: every waiter wakes
        assert engine.join(time.monotonic() + WAIT)
    finally:
        gate.set()
        backend.stop()


def _until(check: Any) -> bool:
    deadline = time.monotonic() + WAIT
    while not check():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.001)
    return True


# -- put_next: a task queues its worker's next one ----------------------------------------------

def _park_both(pool: wp.ThreadPool) -> None:
    """Start the pool's two threads and let both park."""
    barrier = threading.Barrier(2, timeout=WAIT)
    for future in [pool.submit(barrier.wait) for _ in range(2)]:
        future.result(WAIT)
    deadline = time.monotonic() + WAIT
    while len(pool._engine._parked) < 2:
        assert time.monotonic() < deadline, "the workers never parked"
        time.sleep(0.001)


def test_put_next_runs_on_the_worker_whose_task_queued_it() -> None:
    with wp.ThreadPool(2) as pool:
        _park_both(pool)
        nxt: Future[int] = Future()

        def first() -> int:
            pool._put_future(nxt, threading.get_ident, (), after_me=True)
            return threading.get_ident()

        ident = pool.submit(first).result(WAIT)
        assert nxt.result(WAIT) == ident  # the other thread, parked, was not woken
        assert len(pool._engine._parked) == 2
        stats = pool.statistics()
        assert (stats.submitted, stats.completed) == (4, 4)


def test_put_next_work_of_a_worker_above_the_target_goes_on_a_parked_one_leaves() -> None:
    with wp.ThreadPool(2) as pool:
        _park_both(pool)
        engine = pool._engine
        nxt: Future[int] = Future()

        def first() -> int:
            # As an adaptive limit that fell: the target drops, parked workers stay.
            with engine._lock:
                engine.target = 1
            pool._put_future(nxt, threading.get_ident, (), after_me=True)
            return threading.get_ident()

        ident = pool.submit(first).result(WAIT)
        assert nxt.result(WAIT) == ident
        deadline = time.monotonic() + WAIT
        while engine._alive != 1 or len(engine._parked) != 1:
            assert time.monotonic() < deadline, (engine._alive, engine._parked)
            time.sleep(0.001)
        assert pool.submit(operator.neg, 3).result(WAIT) == -3


def test_put_next_after_shutdown_raises() -> None:
    pool = wp.ThreadPool(1)
    pool.shutdown()
    with pytest.raises(RuntimeError, match=r"^cannot schedule new futures after shutdown$"):
        pool._put_future(Future(), operator.neg, (1,), after_me=True)
