"""The scheduling engine every synchronous pool is built on.

::

    submit/schedule/map ──put()──┬─ an idle worker? ── hand-off (SimpleQueue) ──┐
                                 ├─ fewer workers than the target? ── spawn ────┤
                                 └─ else: priority queue (bounded: put() waits) │
                                                                                ▼
        timer thread ── retry re-queue, per-task deadline ──▶ worker: execute(task)
                                                                  │ settle future
                                                                  ▼
                                        under the lock: count, pop next or go idle

One lock guards the queue, the worker counts and the statistics: a worker takes it
once per task, to record the task's end and pick the next one, so statistics cost no
extra synchronisation. Idle workers block on a ``SimpleQueue`` (a C primitive) instead
of a ``Condition``: while any worker is idle the queue is empty, so handing a task
straight to whichever idle worker wakes first keeps priority order.

The top row, ``put()`` and the queue, is ``EngineIntake`` (``_engine_intake.py``), the
base class that also holds ``Task``, ``Worker`` and the engine's state. This module
adds the rest: workers, deadlines and retries, shutdown and statistics.

A backend subclasses ``Engine`` and provides ``execute`` (run one task or chunk) and
``expire`` (what a missed deadline does: threads abandon the stuck thread and start a
replacement; processes kill the child).
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from concurrent.futures import Future, InvalidStateError
from functools import partial
from queue import SimpleQueue
from typing import Any, Final

from .._core.context import TaskContext
from .._core.exceptions import Cancelled, PoolClosed, TaskTimeout
from .._core.retry import Retry
from .._core.stats import PoolStatistics
from .._core.timer import Timer
from .intake import CLOSING, OPEN, EngineIntake, Task, Worker

__all__ = ["Engine", "Task", "Worker"]

# The stdlib's executors' logger: code written for them configures this one.
LOGGER: Final = logging.getLogger("concurrent.futures")

# How a task ended, as execute() reports it (named apart from the child protocol's OK
# and from the AsyncFuture states).
TASK_OK: Final = 0  # it returned: settle its future with the value
TASK_FAILED: Final = 1  # it raised, or was stopped: retry it or settle with the error
TASK_CANCELLED: Final = 2  # its future was cancelled before it started: nothing to settle


class Engine(EngineIntake):
    """Workers, timer, shutdown and statistics of one pool. See the module docstring."""

    # -- workers ------------------------------------------------------------------

    broken_message = "A thread initializer failed, the thread pool is not usable anymore"

    def new_worker(self, worker_id: int) -> Worker:
        """A fresh worker record (backends may add fields)."""
        return Worker(worker_id)

    def stop_worker(self, worker: Worker) -> None:
        """Release what *worker* holds as it leaves (its process, for processes)."""

    def make_chunk_task(self, fn: Callable[..., Any], star: bool, run: Any, items: list[Any],
                        timeout: float | None, retry: Retry | None) -> Task:
        """The task that runs a chunk of items (``ExecutorPool._submit_chunk``): *run*,
        if not None, is read between items (``run.closed``) and caches what backends
        prepare once per run (``run.fn_bytes``)."""
        return Task(fn, (star, run), {}, Future(), timeout=timeout, retry=retry, items=items)

    def _spawn(self, first: Task | None) -> None:
        worker = self.new_worker(next(self._ids))
        worker.first = first
        # A daemon thread: one the pool gave up on (stuck past its timeout) must not
        # keep the interpreter alive. The others are joined at exit by the pools' exit
        # hook (``_pool._python_exit``), as the stdlib joins its workers.
        thread = threading.Thread(target=self._work, args=(worker,), daemon=True,
                                  name=f"{self.name}_{worker.slot.worker_id}")
        worker.thread = thread
        with self._lock:
            self._workers.add(worker)
        # Started outside the lock: a thread start costs ~100 us, which would stall
        # every worker picking its next task. join() waits for threads not yet started.
        try:
            thread.start()
        except BaseException:
            with self._lock:
                self._workers.discard(worker)
                self._alive -= 1
            raise

    def start_worker(self, worker: Worker) -> bool:
        """Per-worker set-up in the worker's thread; False if the initializer failed."""
        from .._core.context import install_slot

        install_slot(worker.slot)
        if self.initializer is None:
            return True
        try:
            worker.slot.state = self.initializer(*self.initargs)
        except BaseException:
            LOGGER.critical("Exception in initializer:", exc_info=True)
            return False
        return True

    def execute(self, worker: Worker, task: Task) -> tuple[int, Any]:
        """Run *task* in *worker*; return (TASK_OK | TASK_FAILED, value or error)."""
        raise NotImplementedError

    def expire(self, worker: Worker, task: Task) -> None:
        """*task* missed its deadline while *worker* ran it."""
        raise NotImplementedError

    def _work(self, worker: Worker) -> None:
        try:
            self._loop(worker)
        finally:
            # The worker leaves the set join() waits on only once its resources (its
            # process, for processes) are released.
            self.stop_worker(worker)
            with self._lock:
                self._workers.discard(worker)
                if worker.thread is not None and not worker.abandoned:
                    if len(self._left) >= 64:  # workers recycled in a long-lived pool
                        self._left = [t for t in self._left if t.is_alive()]
                    self._left.append(worker.thread)
                self._workers_changed.notify_all()
                last = self.state != OPEN and self._alive == 0 and not self._retrying
            if last and self._timer is not None:
                self._timer.close()  # nothing can need it any more

    def _loop(self, worker: Worker) -> None:
        task, worker.first = worker.first, None
        if not self.start_worker(worker):
            self._initializer_failed(worker, task)
            return
        if task is None:  # a replacement: take queued work or wait as an idle worker
            with self._lock:
                task = self._pop()
                if task is None:
                    if self.state != OPEN and not self._retrying:
                        self._retire(worker)
                        return
                    self._went_idle()
        wake = self._wake
        lock = self._lock
        stats = self.stats
        perf = time.perf_counter
        # The hot loop: one lock round per task, in which the task's end is counted
        # and the next task picked (see the module docstring).
        while True:
            if task is None:
                task = wake.get()
                if task is None:
                    break
            future = task.future
            started = perf()
            value: Any
            if task.attempt == 1:
                if self.halted:  # stopped while handed straight to this worker
                    future.cancel()
                if future.set_running_or_notify_cancel():
                    kind, value = self._run(worker, task)
                else:
                    kind, value = TASK_CANCELLED, None
            elif self.stop.is_set():
                kind, value = TASK_FAILED, Cancelled("cancelled by shutdown")
            else:
                kind, value = self._run(worker, task)
            ended = perf()
            retry_delay = None
            with lock:
                if worker.abandoned:
                    self._stuck -= 1
                    return
                worker.task = None
                if kind == TASK_OK:
                    failed = value.failed if task.items is not None else 0
                    stats.completed += task.count - failed
                    stats.failed += failed
                    stats.sample(started - task.enqueued, ended - started, ended, task.count)
                elif kind == TASK_CANCELLED:
                    stats.cancelled += task.count
                else:
                    retry_delay = self._retry_delay(task, value)
                    if retry_delay is not None:
                        self._retrying[task] = None
                    elif isinstance(value, Cancelled):
                        stats.cancelled += task.count
                    elif isinstance(value, TaskTimeout):
                        stats.timed_out += task.count
                    else:
                        stats.failed += task.count
                nxt = self._pop()
                if nxt is None:
                    if self.state != OPEN and not self._retrying:
                        self._retire(worker)
                        stop = True
                    else:
                        self._went_idle()
                        stop = False
                else:
                    stop = False
            if retry_delay is not None:
                self._schedule_retry(task, retry_delay)
            elif kind == TASK_OK:
                _settle(future, value, None)
            elif kind == TASK_FAILED:
                _settle(future, None, value)
            task = value = None
            del future  # an idle worker keeps no result alive
            if stop:
                break
            task = nxt

    def _retire(self, worker: Worker) -> None:
        """Under the lock: *worker* leaves a closing pool; idle ones leave with it."""
        self._alive -= 1
        self._release_idle()

    def _went_idle(self) -> None:
        """Under the lock: a worker waits for work; a blocked put() can hand it some
        (the only way in with ``queue_size=0``)."""
        self._idle += 1
        if self._put_waiters:
            self._not_full.notify()

    def _release_idle(self) -> None:
        """Under the lock: every idle worker leaves."""
        for _ in range(self._idle):
            self._wake.put(None)
            self._alive -= 1
        self._idle = 0

    def _run(self, worker: Worker, task: Task) -> tuple[int, Any]:
        slot = worker.slot
        timeout = task.timeout
        if timeout is None:
            slot.ctx = TaskContext(slot, task.attempt)
            worker.task = task
            try:
                # Checked once the task shows as running: a halt either sees it there
                # (and stops it) or is seen here (see cancel_all).
                if self.halted:
                    return TASK_FAILED, Cancelled("cancelled by shutdown")
                return self.execute(worker, task)
            finally:
                slot.ctx = None
        deadline = time.monotonic() + timeout
        slot.ctx = TaskContext(slot, task.attempt, deadline)
        worker.task = task
        if self.halted:
            slot.ctx = None
            return TASK_FAILED, Cancelled("cancelled by shutdown")
        handle = self._get_timer().call_at(deadline, partial(self._deadline, worker, task))
        try:
            return self.execute(worker, task)
        finally:
            handle.cancel()
            if not worker.abandoned:
                slot.ctx = None

    def _deadline(self, worker: Worker, task: Task) -> None:
        if worker.task is task and not worker.abandoned:
            self.expire(worker, task)

    def timed_out(self, task: Task) -> TaskTimeout:
        """The error a task that ran past its deadline fails with."""
        return TaskTimeout(f"task timed out after {task.timeout:g} s")

    def abandon(self, worker: Worker, task: Task, error: BaseException) -> None:
        """Give up on *worker* (stuck in *task*): settle the task with *error* (or
        retry it), count the thread as stuck and start a replacement."""
        with self._lock:
            if worker.task is not task or worker.abandoned:
                return
            worker.abandoned = True
            worker.task = None
            self._alive -= 1
            self._stuck += 1
            delay = self._retry_delay(task, error)
            if delay is None:
                if isinstance(error, TaskTimeout):
                    self.stats.timed_out += 1
                else:
                    self.stats.cancelled += task.count
            else:
                self._retrying[task] = None
            replace = self.state == OPEN or self._size > 0 or bool(self._retrying)
            if replace:
                self._alive += 1
            else:  # nothing is left to do: idle workers leave (nobody else retires)
                self._release_idle()
            self._workers_changed.notify_all()
        ctx = worker.slot.ctx
        if ctx is not None:
            ctx.cancel()
        if delay is not None:
            self._schedule_retry(task, delay)
        else:
            _settle(task.future, None, error)
        if replace:
            self._spawn(None)

    # -- retries --------------------------------------------------------------------

    def _retry_delay(self, task: Task, error: BaseException) -> float | None:
        """Under the lock: the delay before *task* runs again, or None for no retry."""
        policy = task.retry
        if policy is None or task.count != 1 or self.stop.is_set():
            return None
        if not policy.should_retry(error, task.attempt):
            return None
        self.stats.retried += 1
        task.attempt += 1
        return policy.delay(task.attempt - 1)

    def _schedule_retry(self, task: Task, delay: float) -> None:
        handle = self._get_timer().call_later(delay, partial(self._requeue, task))
        with self._lock:
            if task in self._retrying:
                self._retrying[task] = handle

    def _get_timer(self) -> Timer:
        timer = self._timer
        if timer is None or timer.closed:
            with self._lock:
                if self._timer is None or self._timer.closed:
                    self._timer = Timer(f"{self.name}_timer")
                timer = self._timer
        return timer

    # -- failure of the initializer (the stdlib's "broken" state) -------------------

    def _initializer_failed(self, worker: Worker, first: Task | None) -> None:
        with self._lock:
            # The worker stays in the set join() waits on until _work() released its
            # process: it leaves there, as every worker does.
            self._alive -= 1
            if self.broken is None:
                self.broken = self.broken_message
            self.state = CLOSING
            victims = [first] if first is not None else []
            while (task := self._pop()) is not None:
                victims.append(task)
            self._not_full.notify_all()
            self._release_idle()
            for task in victims:
                self.stats.failed += task.count
        for task in victims:
            _settle(task.future, None, self.broken_type(self.broken))

    # -- shutdown -----------------------------------------------------------------------

    def close_intake(self, error: tuple[type[Exception], str] | None = None) -> None:
        """Stop accepting work; idle workers leave once nothing is left.

        *error* is what ``put()`` raises from now on: (type, message); by default
        ``PoolClosed`` with the stdlib's message.
        """
        with self._lock:
            if self.state == OPEN:
                self.state = CLOSING
                if error is not None:
                    self.closed_error = error
            self._not_full.notify_all()
            if not self._size and not self._retrying:
                self._release_idle()

    def cancel_pending(self) -> list[Future[Any]]:
        """Cancel queued tasks and tasks waiting for a retry; running ones go on (as
        the stdlib's ``shutdown(cancel_futures=True)``): stopping them is
        ``abandon_running``'s and ``cancel_all``'s.

        Returns the futures this cancelled."""
        self.stop.set()
        with self._lock:
            queued: list[Task] = []
            while (task := self._pop()) is not None:
                queued.append(task)
            retrying = list(self._retrying.items())
            self._retrying.clear()
            self._release_idle()
            for task in queued:
                self.stats.cancelled += task.count
            for task, _ in retrying:
                self.stats.cancelled += task.count
        cancelled: list[Future[Any]] = []
        for task in queued:
            if task.future.cancel():
                cancelled.append(task.future)
            else:  # a retried task: its future is already running
                _settle(task.future, None, Cancelled("cancelled by shutdown"))
                cancelled.append(task.future)
        for task, handle in retrying:
            if handle is not None:
                handle.cancel()
            _settle(task.future, None, Cancelled("cancelled by shutdown while waiting to retry"))
            cancelled.append(task.future)
        return cancelled

    def cancel_all(self) -> list[Future[Any]]:
        """Stop everything now, in one call: cancel queued tasks and tasks waiting for
        a retry, and stop running ones, cooperatively for threads (their context is
        cancelled), by a kill for processes. A task handed to a worker that has not
        started it yet is stopped too: the engine is halted first, and a worker checks
        that once the task shows as running (``_run``; for processes, ``_call`` under
        the lock), so either it sees the halt or the halt sees the task.

        Stronger than ``shutdown(cancel_futures=True)``, whose running tasks and
        hand-offs finish as the stdlib's; a cancelled pipeline stage uses it. Close
        intake first. Returns the futures cancelled before they started."""
        self.stop.set()
        with self._lock:
            self.halted = True
        cancelled = self.cancel_pending()
        with self._lock:
            running = [w for w in self._workers if w.task is not None and not w.abandoned]
        for worker in running:
            self.cancel_running(worker)
        return cancelled

    def cancel_running(self, worker: Worker) -> None:
        """Ask the task *worker* runs to stop (cooperatively, for threads)."""
        ctx = worker.slot.ctx
        if ctx is not None:
            ctx.cancel()

    def running_futures(self) -> list[Future[Any]]:
        """The futures of the tasks running now."""
        with self._lock:
            return [w.task.future for w in self._workers
                    if w.task is not None and not w.abandoned]

    def abandon_running(self) -> list[Future[Any]]:
        """Give up on every running task: its future fails with ``Cancelled``."""
        with self._lock:
            self.halted = True
            running = [(w, w.task) for w in self._workers if w.task is not None
                       and not w.abandoned]
            self.state = CLOSING
        left = []
        for worker, task in running:
            if task is not None:
                self.abandon(worker, task, Cancelled("abandoned by shutdown"))
                left.append(task.future)
        return left

    def join(self, deadline: float | None) -> bool:
        """Wait for every worker that is not stuck to leave; False at the deadline.

        A worker given up on while join() waits is not waited for (hence a wait on
        ``_workers_changed``, not on each thread in turn).
        """
        me = threading.current_thread()
        with self._lock:
            while any(not w.abandoned and w.thread is not me for w in self._workers):
                remaining = None if deadline is None else deadline - time.monotonic()
                if remaining is not None and remaining <= 0:
                    return False
                self._workers_changed.wait(remaining)
            left = list(self._left)
        # Past their last lock: ending now. Every joiner waits for all of them (two
        # may join at once: a shutdown and the exit hook), then the ended ones go.
        for thread in left:
            if thread is not me:
                thread.join()
        with self._lock:
            self._left = [t for t in self._left if t not in left]
        timer = self._timer
        if timer is not None:
            timer.close()
        return True

    def after_fork_in_child(self) -> None:
        """In a child forked from this process: the workers, the timer and any lock
        held at the fork belong to the parent. Start over with fresh locks, no
        workers and closed intake, so that nothing here waits for or stops the
        parent's workers, and a submit says why it fails."""
        self._lock = threading.Lock()
        self._not_full = threading.Condition(self._lock)
        self._workers_changed = threading.Condition(self._lock)
        self.stop = threading.Event()
        self._put_waiters = self._size = self._idle = self._alive = self._stuck = 0
        self._queues = {}
        self._prios = []
        self._wake = SimpleQueue()
        self._workers = set()
        self._left = []
        self._retrying = {}
        self._maps = set()
        self._timer = None
        self.state = CLOSING
        self.halted = True
        self.closed_error = (PoolClosed, "cannot schedule new futures in a forked child "
                                         "process: the pool belongs to its parent")

    # -- maps that nobody iterated ------------------------------------------------------

    def remember_map(self, run: Any) -> None:
        with self._lock:
            self._maps.add(run)

    def forget_map(self, run: Any) -> None:
        with self._lock:
            self._maps.discard(run)

    def take_maps(self) -> list[Any]:
        with self._lock:
            runs = list(self._maps)
            self._maps.clear()
        return runs

    # -- statistics -----------------------------------------------------------------

    def count_failed_at_intake(self) -> None:
        """A call whose future failed before it reached the queue (its arguments could
        not be sent to a worker process): submitted, and failed."""
        with self._lock:
            self.stats.submitted += 1
            self.stats.failed += 1

    def statistics(self) -> PoolStatistics:
        with self._lock:
            running = sum(1 for w in self._workers if w.task is not None and not w.abandoned)
            return self.stats.snapshot(
                queued=self._size + len(self._retrying), running=running,
                workers=self._alive, busy=max(0, self._alive - self._idle), stuck=self._stuck)

    def live_workers(self) -> list[Worker]:
        with self._lock:
            return list(self._workers)


def _settle(future: Future[Any], value: Any, error: BaseException | None) -> None:
    """Resolve *future*; a future that someone else resolved first stays as it is."""
    try:
        if error is None:
            future.set_result(value)
        else:
            future.set_exception(error)
    except InvalidStateError:
        pass
