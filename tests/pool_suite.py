"""The behaviour every executor pool must have, run against each kind.

A test module subclasses ``PoolBehaviour`` (``ExecutorPoolBehaviour`` for the executor
pools) and provides ``make_pool(**options)`` and ``make_gate()``. Task functions live
in ``tests/_tasks.py`` so that a process pool can pickle them; gates (something a task
blocks on until the test opens it) are made per pool kind: an event for threads, a file
for processes.
"""

from __future__ import annotations

import concurrent.futures as cf
import time
from collections.abc import Callable, Iterator
from typing import Any, Protocol

import pytest

import workpool as wp
from tests import _tasks

WAIT = 10.0  # bound on any wait in a test: a bug fails fast instead of hanging CI


def wait_until(check: Callable[[], bool], what: str, timeout: float = WAIT) -> None:
    """Poll *check* (bounded): a pool's state changes on its own threads."""
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.005)


class TaskInterrupt(BaseException):
    """A BaseException of a task's own (at module level: processes pickle it by name)."""


class _CancelAsItStarts(cf.Future[Any]):
    """A future whose task's pool is stopped (``_cancel_all``) just as a worker marks
    the task as running."""

    def __init__(self, pool: Any) -> None:
        super().__init__()
        self.pool = pool

    def set_running_or_notify_cancel(self) -> bool:
        self.pool._cancel_all()
        return super().set_running_or_notify_cancel()


class Gate(Protocol):
    """Something tasks block on (bounded) until the test opens it."""

    def wait(self) -> bool: ...
    def open(self) -> None: ...


class PoolBehaviour:
    """Mix into a test class; subclasses define the two factories."""

    def make_pool(self, **options: Any) -> Any:
        raise NotImplementedError

    def make_gate(self) -> Gate:
        raise NotImplementedError

    def occupy(self, pool: Any, gate: Gate) -> cf.Future[Any]:
        """Submit a task that holds a worker until *gate* opens; wait until it runs."""
        future: cf.Future[Any] = pool.submit(_tasks.wait_gate, gate)
        deadline = time.monotonic() + WAIT
        while pool.statistics().running < 1 and not future.done():
            assert time.monotonic() < deadline, "blocker never started"
            time.sleep(0.001)
        return future

    # -- the stdlib contract ----------------------------------------------------------

    def test_submit_returns_the_result(self) -> None:
        with self.make_pool(workers=2) as pool:
            assert pool.submit(pow, 2, 8).result(WAIT) == 256
            assert pool.submit(_tasks.add, 1, b=2).result(WAIT) == 3

    def test_submit_passes_the_exception(self) -> None:
        with self.make_pool(workers=2) as pool:
            future = pool.submit(_tasks.fail, "boom")
            with pytest.raises(ValueError, match=r"^boom$"):
                future.result(WAIT)
            assert isinstance(future.exception(), ValueError)

    def test_a_failing_task_does_not_kill_its_worker(self) -> None:
        with self.make_pool(workers=1) as pool:
            for _ in range(3):
                with pytest.raises(ValueError, match=r"^x$"):
                    pool.submit(_tasks.fail, "x").result(WAIT)
            assert pool.submit(_tasks.add, 2, b=3).result(WAIT) == 5

    @pytest.mark.parametrize("kind", [KeyboardInterrupt, SystemExit, TaskInterrupt])
    def test_a_base_exception_fails_only_its_task(self, kind: Any) -> None:
        # Whatever a task raises, BaseException included, goes to its future (as with
        # the stdlib's executors); the pool and its other tasks go on.
        with self.make_pool(workers=1) as pool:
            future = pool.submit(_tasks.fail_type, kind)
            with pytest.raises(kind, match=r"^x$"):
                future.result(WAIT)
            assert type(future.exception()) is kind
            assert pool.submit(_tasks.add, 2, b=3).result(WAIT) == 5
            outcomes = list(pool.map(_tasks.fail_type, [kind], on_error="return"))
            assert [type(o.error) for o in outcomes] == [kind]
            with pytest.raises(kind, match=r"^x$"):
                list(pool.map(_tasks.fail_type, [kind]))
            assert pool.submit(_tasks.square, 3).result(WAIT) == 9
        stats = pool.statistics()
        assert (stats.failed, stats.completed) == (3, 2)

    def test_map_is_ordered_and_zips(self) -> None:
        with self.make_pool(workers=3) as pool:
            assert list(pool.map(_tasks.square, range(100))) == [x * x for x in range(100)]
            assert list(pool.map(pow, [2, 3, 4], [5, 6])) == [32, 729]
            assert list(pool.map(_tasks.square, [])) == []

    @pytest.mark.parametrize("chunksize", [1, 7, "auto"])
    def test_map_chunksizes_agree(self, chunksize: Any) -> None:
        with self.make_pool(workers=2) as pool:
            got = list(pool.map(_tasks.square, range(1000), chunksize=chunksize))
        assert got == [x * x for x in range(1000)]

    def test_map_unordered_yields_every_result_once(self) -> None:
        with self.make_pool(workers=3) as pool:
            got = list(pool.map(_tasks.square, range(500), ordered=False))
        assert sorted(got) == [x * x for x in range(500)]

    def test_map_raises_at_the_failing_item(self) -> None:
        # CPython's test_map_exception.
        with self.make_pool(workers=2) as pool:
            it = pool.map(divmod, [1, 1, 1, 1], [2, 3, 0, 5])
            assert next(it) == (0, 1)
            assert next(it) == (0, 1)
            with pytest.raises(ZeroDivisionError):
                next(it)
            assert list(it) == []  # the error ends the map, as the stdlib's generator

    def test_map_ends_at_an_error_in_a_big_chunk(self) -> None:
        with self.make_pool(workers=2) as pool:
            it = pool.map(_tasks.invert, [1, 2, 0, 4], chunksize=4)
            assert [next(it), next(it)] == [1.0, 0.5]
            with pytest.raises(ZeroDivisionError):
                next(it)
            assert list(it) == []

    def test_map_on_error_return_yields_outcomes(self) -> None:
        with self.make_pool(workers=2) as pool:
            got = list(pool.map(_tasks.invert, [1, 0, 4], on_error="return"))
        assert got[0] == wp.Value(1.0)
        assert isinstance(got[1], wp.Error)
        assert isinstance(got[1].error, ZeroDivisionError)
        assert got[2].unwrap() == 0.25
        with pytest.raises(ZeroDivisionError):
            got[1].unwrap()

    def test_map_timeout_is_the_stdlibs(self) -> None:
        gate = self.make_gate()
        with self.make_pool(workers=2) as pool:
            it = pool.map(_tasks.wait_gate_or_value, [None, None, gate], timeout=0.3,
                          chunksize=1)
            assert next(it) is True
            assert next(it) is True
            with pytest.raises(TimeoutError):
                next(it)
            gate.open()

    def test_map_reads_the_input_lazily(self) -> None:
        read: list[int] = []

        def source() -> Iterator[int]:
            for i in range(1_000_000):
                read.append(i)
                yield i

        with self.make_pool(workers=2) as pool:
            it = pool.map(_tasks.square, source(), window=50)
            assert [next(it) for _ in range(10)] == [x * x for x in range(10)]
            assert len(read) <= 10 + 50
            it.close()

    def test_map_on_an_endless_generator(self) -> None:
        def endless() -> Iterator[int]:
            i = 0
            while True:
                yield i
                i += 1

        with self.make_pool(workers=2) as pool:
            it = pool.map(_tasks.square, endless())
            got = [next(it) for _ in range(5000)]
            it.close()
        assert got == [x * x for x in range(5000)]

    def test_map_nobody_iterates_still_runs_by_shutdown(self) -> None:
        gate = self.make_gate()
        with self.make_pool(workers=2) as pool:
            pool.map(_tasks.wait_gate_or_value, [None] * 20 + [gate])
            gate.open()
        assert pool.statistics().completed == 21

    def test_closing_a_map_early_cancels_what_is_queued(self) -> None:
        gate = self.make_gate()
        with self.make_pool(workers=1) as pool:
            it = pool.map(_tasks.wait_gate_or_value, [None, gate] + [None] * 98, chunksize=1,
                          window=100)
            assert next(it) is True
            it.close()
            gate.open()
        stats = pool.statistics()
        assert stats.cancelled >= 97
        assert stats.completed + stats.cancelled == 100

    def test_futures_work_with_wait_and_as_completed(self) -> None:
        with self.make_pool(workers=3) as pool:
            futures = [pool.submit(_tasks.square, i) for i in range(20)]
            done, not_done = cf.wait(futures, timeout=WAIT)
            assert len(done) == 20
            assert not not_done
            assert sorted(f.result() for f in cf.as_completed(futures, timeout=WAIT)) == [
                i * i for i in range(20)]

    def test_submit_after_shutdown_raises_the_stdlibs_error(self) -> None:
        pool = self.make_pool(workers=1)
        pool.shutdown()
        pool.shutdown()  # twice is fine
        with pytest.raises(RuntimeError, match=r"^cannot schedule new futures after shutdown$"):
            pool.submit(pow, 2, 2)
        with pytest.raises(wp.PoolClosed):
            pool.map(pow, [1], [2])

    def test_max_workers_zero_is_the_stdlibs_error(self) -> None:
        with pytest.raises(ValueError, match=r"^max_workers must be greater than 0$"):
            self.make_pool(max_workers=0)
        with pytest.raises(ValueError, match=r"^max_workers must be greater than 0$"):
            self.make_pool(max_workers=-1)

    # -- bad input fails at the call --------------------------------------------------

    def test_bad_arguments_are_refused_with_the_rule(self) -> None:
        with pytest.raises(ValueError, match=r"^workers must be >= 1, got 0$"):
            self.make_pool(workers=0)
        with pytest.raises(ValueError, match=r"^queue_size must be >= 0, got -1$"):
            self.make_pool(queue_size=-1)
        with pytest.raises(ValueError, match=r"^timeout must be > 0, got -1$"):
            self.make_pool(timeout=-1)
        with self.make_pool(workers=1) as pool:
            with pytest.raises(TypeError, match=r"^fn must be callable, got 3$"):
                pool.submit(3)
            with pytest.raises(TypeError, match=r"^priority must be an int, got 'high'$"):
                pool.schedule(pow, (2, 2), priority="high")
            with pytest.raises(ValueError, match=r"^timeout must be > 0, got -2$"):
                pool.schedule(pow, (2, 2), timeout=-2)
            with pytest.raises(ValueError, match=r"^chunksize must be >= 1 or 'auto', got 0$"):
                pool.map(pow, [1], [2], chunksize=0)
            with pytest.raises(ValueError, match=r"^window must be >= 1, got 0$"):
                pool.map(pow, [1], [2], window=0)

    # -- bounded intake, priority ----------------------------------------------------------

    def test_submit_nowait_raises_queue_full(self) -> None:
        gate = self.make_gate()
        with self.make_pool(workers=1, queue_size=2) as pool:
            blocker = self.occupy(pool, gate)
            queued = [pool.submit_nowait(_tasks.square, i) for i in range(2)]
            with pytest.raises(wp.QueueFull, match=r"^queue is full \(2 tasks\)$"):
                pool.submit_nowait(_tasks.square, 9)
            with pytest.raises(wp.WouldBlock):
                pool.schedule(_tasks.square, (9,), block=False)
            assert pool.statistics().queued == 2
            gate.open()
            assert [f.result(WAIT) for f in queued] == [0, 1]
            assert blocker.result(WAIT) is True

    def test_queue_size_zero_is_a_hand_off(self) -> None:
        gate = self.make_gate()
        with self.make_pool(workers=1, queue_size=0) as pool:
            blocker = self.occupy(pool, gate)
            with pytest.raises(wp.QueueFull):
                pool.submit_nowait(_tasks.square, 3)
            gate.open()
            blocker.result(WAIT)
            assert pool.submit(_tasks.square, 3).result(WAIT) == 9

    def test_higher_priority_runs_first_fifo_within(self) -> None:
        gate = self.make_gate()
        with self.make_pool(workers=1) as pool:
            self.occupy(pool, gate)
            order = [(0, "a"), (5, "b"), (0, "c"), (5, "d"), (-1, "e"), (9, "f")]
            futures = {name: pool.schedule(_tasks.started_at, (name,), priority=prio)
                       for prio, name in order}
            gate.open()
            starts = sorted((f.result(WAIT), name) for name, f in futures.items())
        assert [name for _, name in starts] == ["f", "b", "d", "a", "c", "e"]

    # -- retry, timeout, rate ----------------------------------------------------------------

    def test_retry_runs_again_until_success(self) -> None:
        retry = wp.Retry(attempts=3, backoff=0.001, jitter="none")
        with self.make_pool(workers=2, retry=retry) as pool:
            assert pool.submit(_tasks.fail_until_attempt, 3).result(WAIT) == 3
        stats = pool.statistics()
        assert (stats.retried, stats.completed, stats.failed) == (2, 1, 0)

    def test_retry_gives_up_with_the_last_error(self) -> None:
        retry = wp.Retry(attempts=2, backoff=0.001, on=(ValueError,))
        with self.make_pool(workers=2) as pool:
            future = pool.schedule(_tasks.fail_until_attempt, (5,), retry=retry)
            with pytest.raises(ValueError, match=r"^attempt 2$"):
                future.result(WAIT)
            other = pool.schedule(_tasks.fail, ("kind",), retry=retry)
            with pytest.raises(ValueError, match=r"^kind$"):
                other.result(WAIT)
            typed = pool.schedule(_tasks.fail_type, (KeyError,), retry=retry)
            with pytest.raises(KeyError):
                typed.result(WAIT)
        stats = pool.statistics()
        assert (stats.retried, stats.failed) == (2, 3)

    def test_timeout_fails_the_task_and_the_pool_goes_on(self) -> None:
        with self.make_pool(workers=1) as pool:
            slow = pool.schedule(_tasks.sleep_for, (5.0,), timeout=0.2)
            with pytest.raises(wp.TaskTimeout, match=r"^task timed out after 0.2 s$"):
                slow.result(WAIT)
            assert isinstance(slow.exception(), TimeoutError)
            assert pool.submit(_tasks.square, 4).result(WAIT) == 16
        assert pool.statistics().timed_out == 1

    def test_rate_limit_spaces_task_starts(self) -> None:
        with self.make_pool(workers=4, rate=wp.RateLimit(per_second=50)) as pool:
            starts = sorted(f.result(WAIT) for f in
                            [pool.submit(_tasks.started_at, i) for i in range(10)])
        # Start k waits for its slot, k / 50 s after the first slot; the first start may
        # itself run late by scheduling noise, hence the slack.
        for k, start in enumerate(starts):
            assert start - starts[0] >= k * 0.02 - 0.05

    # -- shutdown flavours ----------------------------------------------------------------

    def test_exit_drains_every_task(self) -> None:
        with self.make_pool(workers=2) as pool:
            futures = [pool.submit(_tasks.square, i) for i in range(200)]
        assert all(f.done() for f in futures)
        assert [f.result() for f in futures] == [i * i for i in range(200)]

    def test_shutdown_cancel_futures_cancels_the_queue(self) -> None:
        gate = self.make_gate()
        pool = self.make_pool(workers=1)
        blocker = self.occupy(pool, gate)
        queued = [pool.submit(_tasks.square, i) for i in range(5)]
        # As the stdlib: queued tasks are cancelled, the running one finishes.
        pool.shutdown(wait=False, cancel_futures=True)
        assert all(f.cancelled() for f in queued)
        assert not blocker.done()
        gate.open()
        pool.shutdown()
        assert blocker.result(WAIT) is True
        assert set(pool.unfinished) == set(queued)
        stats = pool.statistics()
        assert (stats.completed, stats.cancelled) == (1, 5)

    def test_shutdown_timeout_cancels_what_did_not_drain(self) -> None:
        gate = self.make_gate()
        pool = self.make_pool(workers=1)
        blocker = self.occupy(pool, gate)
        queued = pool.submit(_tasks.square, 3)
        pool.shutdown(timeout=0.2)
        assert queued.cancelled()
        with pytest.raises(wp.Cancelled):
            blocker.result(WAIT)
        assert set(pool.unfinished) == {queued, blocker}
        gate.open()
        self.wait_no_stuck(pool)

    def wait_no_stuck(self, pool: Any) -> None:
        deadline = time.monotonic() + WAIT
        while pool.statistics().stuck:
            assert time.monotonic() < deadline, "stuck worker never returned"
            time.sleep(0.005)

    # -- statistics, context ---------------------------------------------------------------

    def test_statistics_count_exactly(self) -> None:
        with self.make_pool(workers=2) as pool:
            ok = [pool.submit(_tasks.square, i) for i in range(7)]
            bad = [pool.submit(_tasks.fail, "x") for _ in range(3)]
            cf.wait(ok + bad, timeout=WAIT)
        stats = pool.statistics()
        assert (stats.submitted, stats.completed, stats.failed) == (10, 7, 3)
        assert (stats.queued, stats.running, stats.cancelled, stats.timed_out) == (0, 0, 0, 0)
        assert stats.ended == 10
        assert stats.run_time_p50 <= stats.run_time_p99

    def test_current_inside_a_task(self) -> None:
        with self.make_pool(workers=2, initializer=_tasks.make_state, initargs=("s",)) as pool:
            attempt, worker_id, state, cancelled = pool.submit(_tasks.describe).result(WAIT)
        assert (attempt, state, cancelled) == (1, "state-s", False)
        assert worker_id >= 0

    def test_current_outside_a_task_raises(self) -> None:
        with pytest.raises(RuntimeError, match=r"^wp.current\(\) called outside a workpool task$"):
            wp.current()


class ExecutorPoolBehaviour(PoolBehaviour):
    """What the executor pools (``ThreadPool``, ``ProcessPool``) add: the private
    stop-everything a cancelled pipeline stage uses (``_cancel_all``)."""

    def test_schedule_keeps_its_key_on_the_future(self) -> None:
        with self.make_pool(workers=1) as pool:
            keyed = pool.schedule(_tasks.square, (4,), key=("job", 7))
            plain = pool.schedule(_tasks.square, (5,))
            assert (keyed.result(WAIT), keyed.key) == (16, ("job", 7))
            assert (plain.result(WAIT), plain.key) == (25, None)

    def test_cancel_all_stops_running_and_queued_tasks(self) -> None:
        # Unlike shutdown(cancel_futures=True), the running task is stopped too:
        # threads through their context, processes by a kill.
        pool = self.make_pool(workers=1)
        running = pool.submit(_tasks.sleep_for, 10 * WAIT)
        deadline = time.monotonic() + WAIT
        while pool.statistics().running < 1:
            assert time.monotonic() < deadline, "the task never started"
            time.sleep(0.001)
        queued = pool.submit(_tasks.square, 3)
        started = time.monotonic()
        pool._cancel_all()
        pool.shutdown()
        assert time.monotonic() - started < WAIT
        assert queued.cancelled()
        assert isinstance(running.exception(), wp.Cancelled)

    def test_cancel_all_stops_a_hand_off_not_yet_taken(self) -> None:
        # put() hands a task to an idle worker after it let go of the lock: a cancel
        # landing in between finds the task neither queued nor running.
        pool = self.make_pool(workers=1)
        assert pool.submit(pow, 2, 2).result(WAIT) == 4  # its worker is idle now
        engine = pool._engine
        future: cf.Future[Any] = cf.Future()
        task = pool._task(pow, (2, 3), {}, future, 0, None, None)
        with engine._lock:  # put(), up to the hand-off
            worker = engine._parked.pop()
        pool._cancel_all()
        assert task is not None
        engine.backend.resume(worker, task)  # the rest of put()
        pool.shutdown()
        assert future.cancelled()

    def test_cancel_all_stops_a_hand_off_the_worker_just_took(self) -> None:
        # The cancel lands after the worker checked for it, before the task shows as
        # running: one call still stops it.
        pool = self.make_pool(workers=1)
        assert pool.submit(pow, 2, 2).result(WAIT) == 4
        future = _CancelAsItStarts(pool)
        task = pool._task(pow, (2, 3), {}, future, 0, None, None)
        pool._engine.put(task)
        pool.shutdown()
        assert isinstance(future.exception(WAIT), wp.Cancelled)
