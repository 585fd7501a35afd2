"""The scheduling engine every pool is built on: ThreadPool, ProcessPool and AsyncPool.

Owns intake, the bounded priority queue, the worker counts, deadlines, retries,
shutdown and statistics; how a unit of work runs is the ``Backend``'s
(``contract.py``), composed into it. May import ``_core`` and ``contract``.

::

    submit/schedule/map ──put()──┬─ a parked worker? ── backend.resume(worker, task)
                                 │   (lazy: unless one woken is not running yet)
                                 ├─ fewer workers than the target? ── backend.spawn
                                 └─ else: priority queue (bounded: put() waits)

    an async caller: put(block=False) ── QueueFull ── want_room, park in the event
        loop; room freed calls backend.room, which wakes it to put() again

    timer thread ── retry re-queue (backend.call_later), per-task deadline
                    (backend.give_up); an event loop's backend keeps both on the
                    loop (``own_deadlines``: a cancel scope; call_later: a task)

    a worker (a thread; the process backend's reader for a child; a task of an
    event loop, ``_backends/async_backend.py``):
        begin(worker, task) ── run it ── end(worker, task, outcome) ──┬─ next task
                                                                       ├─ parked
                                                                       └─ leaving

``end`` begins a plain next task itself (first attempt, no deadline, no adaptive
limit), after settling the one that ended: the driver runs it without ``begin`` (a
``begin`` of it returns None), so a stream of plain tasks costs one engine call and
one lock round per task.

One lock guards the queue, the worker counts and the statistics: ``end`` takes it
once per task, to record the task's end and pick the next one, so statistics cost no
extra synchronisation. An engine that one thread alone drives (an event loop's:
``Backend.one_thread``) takes no lock: its ``with`` costs a third of a lock's.
Counts are exact; latencies of tasks quicker than 0.1 ms are sampled 1 in 16, each
sample standing for the 16 tasks.

The priority queue is a ``deque`` per priority, with the priorities present kept
sorted, so pushing and popping cost O(1) in the common case of few distinct
priorities.

The hand-off is lazy for backends whose wake-up is dear (``Backend.lazy_wake``:
threads): while a worker woken for a task has not started it, put() queues further
tasks instead of waking one worker per task; the woken worker, once it runs, wakes one
more for what was queued meanwhile (``woke``), which does the same. A burst of short
tasks is so drained by the workers already running, without a thread wake-up per
task, while tasks that block still each get a worker. The queue may then hold as many
tasks past its bound as workers are parked: each is as good as handed to one. While
a worker is parked and none is being woken, the queue is empty, so handing a task
straight to a parked worker keeps priority order. A backend whose workers start lazily
too (``Backend.lazy_spawn``: an event loop's tasks) treats a worker started for a task
as one woken: it calls ``woke`` once it runs, so that a burst starts workers one at a
time, in order, as those running fall behind.

``_requeue`` is the timer's way in: a retried task skips the bound, as it was admitted
once already; it runs where the backend's ``call_later`` runs it (the timer thread,
or an event loop's task).

For front ends that own some of the work: ``withdraw`` takes queued and retrying tasks
that match out (a cancelled ``AsyncFuture``, a ``map`` run left early, a failed group's
tasks), ``start`` starts workers up front, and a task stopped while running ends
``TASK_STOPPED`` (counted cancelled, never retried).
"""

from __future__ import annotations

import bisect
import dataclasses
import itertools
import logging
import threading
import time
import weakref
from collections import deque
from collections.abc import Callable
from concurrent.futures import InvalidStateError
from functools import partial
from typing import Any, Final, cast

from .._core.context import TaskContext
from .._core.dynamic import Adaptive, Autoscale, Limiter, Scaler
from .._core.exceptions import Cancelled, PoolClosed, QueueFull, TaskTimeout
from .._core.ratelimit import TokenBucket
from .._core.retry import Retry
from .._core.stats import PoolStatistics, StatsRecorder
from .._core.timer import Timer, TimerHandle
from .contract import (
    TASK_CANCELLED,
    TASK_FAILED,
    TASK_OK,
    TASK_STOPPED,
    Backend,
    Task,
    TaskFuture,
    Worker,
)

__all__ = ["CLOSING", "LOGGER", "OPEN", "SHUTDOWN_MESSAGE", "Engine", "settle"]

# The stdlib's executors' logger: code written for them configures this one.
LOGGER: Final = logging.getLogger("concurrent.futures")

# The engine's states.
# Plain ints, not an IntEnum: put() compares the state on every task, and an IntEnum
# member compares 3.5 to 5.5 ns slower than an int (20 to 45 ns more read as
# EngineState.OPEN; python -m timeit, CPython 3.11 and 3.13).
OPEN: Final = 0  # taking work
CLOSING: Final = 1  # no intake; workers drain what is queued and exit
SHUTDOWN_MESSAGE: Final = "cannot schedule new futures after shutdown"
# Tasks that run in under _FAST seconds get their latency sampled 1 in
# (_SAMPLE_MASK + 1): a sample costs about 0.45 us, as much as
# the rest of a tiny task's end. The counts stay exact.
_FAST: Final = 1e-4
_SAMPLE_MASK: Final = 15
_perf: Final = time.perf_counter


class _Unlocked:
    """The lock of an engine that one thread alone drives (``Backend.one_thread``):
    ``with`` on it costs 60 ns where a lock costs 140 (CPython 3.11), and an engine
    takes its lock twice a task. Its ``__enter__`` and ``__exit__`` are C callables
    that bind to nothing and do nothing, so that ``with`` runs no Python code:
    ``tuple()``, and ``type.__prepare__``, which takes any arguments and returns an
    empty dict (false: an exception raised inside goes on). The methods are those
    ``threading.Condition`` reads; a wait on such a condition is a bug."""

    __slots__ = ()
    __enter__ = tuple
    __exit__ = type.__prepare__

    def acquire(self, blocking: bool = True, timeout: float = -1) -> bool:
        return True

    def release(self) -> None:
        pass

    def _is_owned(self) -> bool:
        return True

    def _release_save(self) -> None:
        raise RuntimeError("an engine that one thread drives never waits on a condition")


def _new_lock(backend: Backend) -> threading.Lock:
    """The engine's lock: a real one, unless one thread alone drives the engine."""
    if backend.one_thread:
        return cast(threading.Lock, _Unlocked())
    return threading.Lock()


class Engine:
    """Intake, queue, workers' counts, timer, shutdown and statistics of one pool,
    running its work through *backend*. See the module docstring."""

    def __init__(self, backend: Backend, *, workers: int, queue_size: int,
                 timeout: float | None, retry: Retry | None, bucket: TokenBucket | None,
                 name: str, broken_type: type[Exception],
                 dynamic: Autoscale | Adaptive | None = None) -> None:
        self.backend = backend
        self.target = workers  # the most workers now: a fixed count, or a dynamic bound
        # A dynamic pool's state (see "dynamic pools" in the module docstring).
        self.scaler: Scaler | None = None
        self.limiter: Limiter | None = None
        self._adaptive: Adaptive | None = None
        self._sweep_at: float | None = None  # when the idle sweep is due, if armed
        self._sweep: TimerHandle | None = None
        self._timer_lock = threading.Lock()
        if isinstance(dynamic, Autoscale):
            self.scaler = dynamic.scaler()
            self.target = dynamic.max
        elif isinstance(dynamic, Adaptive):
            self._adaptive = dynamic
            self.limiter = dynamic.limiter()
            self.target = self.limiter.limit
        self.capacity = queue_size
        self.timeout = timeout
        self.retry = retry
        self.bucket = bucket
        self.name = name
        self.broken_type = broken_type
        self.broken: str | None = None
        # Why intake is closed, once it is: the error put() raises then.
        self.closed_error: tuple[type[Exception], str] = (PoolClosed, SHUTDOWN_MESSAGE)
        self.state = OPEN
        self.stop = threading.Event()  # set on cancel: interrupts rate-limit waits
        # Set by the hard stop (abandon_running): a task handed to a worker that has
        # not started it yet is cancelled, not run. (A cancel alone lets such a task
        # run, as the stdlib runs the calls already in its call queue.)
        self.halted = False
        self.stats = StatsRecorder()
        self._tick = -1  # tasks queued, less 1: the first is sampled, then 1 in (_sample_mask + 1)
        self._sample_mask = 0  # _SAMPLE_MASK while sampled tasks run fast (_sample)
        self._lock = _new_lock(backend)
        self._not_full = threading.Condition(self._lock)
        self._put_waiters = 0  # callers waiting for room: threads in put(), and
        self._room_waiters = 0  # those of them that wait without a thread (want_room)
        # The queue of priority 0 stands, empty or not: a queue that keeps emptying
        # and filling (tasks handed on as they come) costs no deque and no insort.
        self._queue0: deque[Task] = deque()
        self._queues: dict[int, deque[Task]] = {0: self._queue0}
        self._prios: list[int] = [0]  # negated priorities present, ascending
        self._size = 0
        self._parked: list[Worker] = []
        # 1 while a worker woken by resume() has not called woke() yet, and others are
        # parked (lazy backends only): put() queues meanwhile instead of waking another.
        self._lazy = int(backend.lazy_wake)
        self._own_deadlines = backend.own_deadlines
        self._lazy_spawn = int(backend.lazy_spawn)
        self._reuse = backend.reuse_context
        self.waking = 0
        self._workers: set[Worker] = set()
        # Notified when a worker leaves the set or is given up on: what join() waits
        # for. Threads that left are joined (they are ending) by join().
        self._workers_changed = threading.Condition(self._lock)
        self._left: list[threading.Thread] = []
        self._alive = 0  # workers not abandoned
        self._stuck = 0
        self._ids = itertools.count()
        self._retrying: dict[Task, TimerHandle | None] = {}
        self._maps: set[Any] = set()  # map runs not yet iterated: drained at shutdown
        self._timer: Timer | None = None
        # Closes intake when the pool is collected; detached in a forked child.
        self.finalizer: weakref.finalize[Any, Any] | None = None
        backend.attach(self)

    # -- intake -------------------------------------------------------------------------

    def put(self, task: Task, block: bool = True, bounded: bool = True) -> None:
        """Admit *task*: hand it to a parked worker, start a worker, or queue it,
        waiting while the queue is full (``QueueFull`` when not *block*). A caller
        bounded otherwise (an async ``map`` run, by its window) passes not *bounded*:
        the task is queued past the bound."""
        worker: Worker | None = None
        # "with", not acquire()/try/release() (40 to 70 ns less): a Ctrl-C between an
        # acquire() and its try would leave the lock held for good; "with" has no
        # such window.
        with self._lock:
            while True:
                if self.state != OPEN:
                    self._raise_closed()
                parked = self._parked
                if parked:
                    if not self.waking:
                        worker = parked.pop()
                        if parked:  # others to wake for what comes meanwhile
                            self.waking = self._lazy
                        break
                    # A worker woken for an earlier task passes this one on (woke()),
                    # to a parked worker if it is not taken by then.
                    room = self.capacity + len(parked)
                elif self._alive < self.target:
                    if not self.waking:
                        self._alive += 1
                        self.waking = self._lazy_spawn
                        break
                    # A worker started for an earlier task passes this one on.
                    room = self.capacity + 1
                else:
                    room = self.capacity
                if self._size < room or not bounded:
                    # _stamp(), inline: only a sampled task reads the clock
                    tick = self._tick = self._tick + 1
                    if not tick & self._sample_mask:
                        task.enqueued = _perf()
                        task.weight = self._sample_mask + 1
                    if task.priority:
                        self._push(task)
                    else:  # _push(), inline: the standing queue of priority 0
                        self._queue0.append(task)
                        self._size += 1
                    self.stats.submitted += task.count
                    return
                if not block:
                    raise QueueFull(f"queue is full ({self.capacity} tasks)")
                self._put_waiters += 1
                try:
                    self._not_full.wait()
                finally:
                    self._put_waiters -= 1
            self.stats.submitted += task.count
            self._stamp(task)
        if worker is not None:
            self.backend.resume(worker, task)
        else:
            self._spawn(task)

    def put_next(self, task: Task) -> None:
        """Queue *task* for the worker whose task calls this, as that task's last act:
        no worker is woken or started for it, as the caller's worker takes it (or a
        task queued before it) at its ``end``, one step later, with no wake-up in
        between (Go's ``runnext``; how a group's ending task hands its slot to the
        ``go`` waiting for one). Past the queue bound: the caller frees a worker.

        Raises:
            the pool's closed error, once intake is closed (as ``put``).
        """
        with self._lock:
            if self.state != OPEN:
                self._raise_closed()
            self._stamp(task)
            self._push(task)
            self.stats.submitted += task.count

    def _raise_closed(self) -> None:
        if self.broken is not None:
            raise self.broken_type(self.broken)
        error_type, message = self.closed_error
        raise error_type(message)

    def _stamp(self, task: Task) -> None:
        """Under the lock: *task* is queued now. 1 in (_sample_mask + 1) tasks reads
        the clock, for the latency sample its end takes, which stands for ``weight``
        tasks (``enqueued``: 0.0 unsampled)."""
        tick = self._tick = self._tick + 1
        if tick & self._sample_mask:
            task.enqueued = 0.0
        else:
            task.enqueued = _perf()
            task.weight = self._sample_mask + 1

    def _push(self, task: Task) -> None:
        prio = -task.priority
        queue = self._queues.get(prio)
        if queue is None:
            queue = self._queues[prio] = deque()
            bisect.insort(self._prios, prio)
        queue.append(task)
        self._size += 1

    def _pop(self) -> Task | None:
        if not self._size:
            return None
        prios = self._prios
        prio = prios[0]
        queue = self._queues[prio]
        if not queue:  # the standing queue of priority 0: lower priorities' turn
            prio = prios[1]
            queue = self._queues[prio]
        task = queue.popleft()
        if not queue and prio:
            del self._queues[prio]
            prios.remove(prio)
        self._size -= 1
        if self._put_waiters:
            self._room()
        return task

    def _room(self) -> None:
        """Under the lock: a queued task left, or a worker parked: one waiter for room
        may go on (a thread blocked in put(), or a caller of ``want_room``)."""
        if self._room_waiters and not self.backend.room():
            # None of them is parked any more: those woken try put() again, and say
            # so anew if they must wait again. (Pops stop calling the backend.)
            self._put_waiters -= self._room_waiters
            self._room_waiters = 0
        if self._put_waiters > self._room_waiters:
            self._not_full.notify()

    def want_room(self, delta: int) -> None:
        """A caller that cannot block a thread (an event loop's) is about to wait for
        room (+1), after ``put(block=False)`` raised ``QueueFull``, or stopped
        waiting before it was woken (-1): while any waits, room freed calls
        ``Backend.room``, until it says that nobody waits any more (the woken ones
        count no more: they try put() again, and say so anew if they must wait)."""
        with self._lock:
            if delta > 0 or self._room_waiters:
                self._put_waiters += delta
                self._room_waiters += delta

    def _requeue(self, task: Task) -> None:
        """Put a retried task back, past the queue bound: it was admitted already."""
        worker: Worker | None = None
        with self._lock:
            if self._retrying.pop(task, None) is None:
                return  # cancelled by shutdown meanwhile
            self._stamp(task)
            if self._parked and not self.waking:
                worker = self._parked.pop()
                if self._parked:
                    self.waking = self._lazy
            elif self._parked:
                self._push(task)  # the woken worker passes it on
                return
            elif self._alive < self.target:
                self._alive += 1
            else:
                self._push(task)
                return
        if worker is not None:
            self.backend.resume(worker, task)
        else:
            self._spawn(task)

    def woke(self) -> None:
        """A worker woken by ``resume`` (``Backend.lazy_wake``) while ``waking`` is set
        is about to run its task: the tasks queued meanwhile go to one more parked
        worker (it passes them on in turn) or a new one; or to the workers running, as
        each ends. (Woken while ``waking`` is 0, it need not call: no worker was left
        parked for the tasks queued meanwhile.)"""
        worker: Worker | None = None
        with self._lock:
            self.waking = 0
            if not self._size:
                return
            if self._parked:
                worker = self._parked.pop()
                if self._parked:
                    self.waking = 1
            elif self._alive < self.target:
                self._alive += 1
                self.waking = self._lazy_spawn
            else:
                return
            task = self._pop()
            assert task is not None
        if worker is not None:
            self.backend.resume(worker, task)
        else:
            self._spawn(task)

    def _spawn(self, first: Task | None) -> None:
        """Start a worker (counted alive already) whose first task is *first*."""
        worker = self.backend.new_worker(next(self._ids))
        worker.first = first
        with self._lock:
            self._workers.add(worker)
            self._record()
        try:
            self.backend.spawn(worker)
        except BaseException:
            with self._lock:
                self._workers.discard(worker)
                self._alive -= 1
                self._workers_changed.notify_all()
            raise

    # -- the step that drives every worker -----------------------------------------------

    def begin(self, worker: Worker, task: Task) -> tuple[int, Any] | None:
        """*task* is about to run on *worker*: None to run it now (it shows as
        running, with its context and deadline), or the outcome it ends with
        without running (its future was cancelled; a shutdown stopped it), for
        ``end``. A task that ``end`` began already (``worker.task`` is it) runs as is."""
        if worker.task is task:
            # It shows as running since end() began it: a halt either sees it there
            # (and stops it) or is seen here, as below.
            return (TASK_FAILED, Cancelled("cancelled by shutdown")) if self.halted else None
        if worker.abandoned:  # given up on while end() handed it the task begun
            return TASK_CANCELLED, None  # settled then: end() lets the worker leave
        worker.next = None
        attempt = task.attempt
        if attempt == 1:
            if self.halted:  # stopped while handed straight to this worker
                task.future.cancel()
            if not task.future.set_running_or_notify_cancel():
                return TASK_CANCELLED, None
        elif self.stop.is_set():
            return TASK_FAILED, Cancelled("cancelled by shutdown")
        elif task.future.done():  # a retry cancelled once handed to this worker
            return TASK_CANCELLED, None
        slot = worker.slot
        timeout = task.timeout
        if timeout is None:
            ctx = worker.ctx
            if ctx is None or ctx._cancelled or attempt != 1:
                ctx = TaskContext(slot, attempt)
                if self._reuse:
                    worker.ctx = ctx
            slot.ctx = ctx
            worker.task = task
        else:
            deadline = time.monotonic() + timeout
            slot.ctx = TaskContext(slot, task.attempt, deadline)
            worker.task = task
            if not self.halted and not self._own_deadlines:
                worker.deadline = self.timer().call_at(
                    deadline, partial(self._deadline, worker, task))
        # Checked once the task shows as running: a halt either sees it there (and
        # stops it) or is seen here (see cancel_all).
        if self.halted:
            return TASK_FAILED, Cancelled("cancelled by shutdown")
        if self.limiter is not None:
            with self._lock:
                self.limiter.on_start()
            worker.limited = True
        return None

    def end(self, worker: Worker, task: Task, kind: int, value: Any,
            started: float) -> Task | None:
        """*task* ended on *worker* with (*kind*, *value*) (``TASK_OK`` and the value
        or ``Chunk``, ``TASK_FAILED`` and the error, ``TASK_CANCELLED``), after
        starting at *started* (``perf_counter``; read only for a task whose latency
        is sampled, ``task.enqueued``, or under an adaptive limit, ``worker.limited``:
        a driver may pass 0.0 for others): count it, settle or retry it, and
        return the worker's next task; None when the worker is parked now
        (``Backend.resume`` wakes it) or leaving (``worker.leaving``).

        A plain next task (first attempt, no deadline, no adaptive limit) comes back
        begun already (``worker.task`` is it: the driver runs it without ``begin``),
        so a worker's step between two such tasks is this one call; any other comes
        back for the driver to ``begin``."""
        # The hot path of every pool: one lock round, the success case first, and
        # each attribute read once. It loops only for a next task found cancelled.
        while True:
            if worker.deadline is not None:
                worker.deadline.cancel()
                worker.deadline = None
            retry_delay = None
            grow: list[Task] | None = None
            with self._lock:  # "with": see put()
                if worker.abandoned:  # given up on: its task was settled then
                    self._stuck -= 1
                    worker.leaving = True
                    return None
                worker.task = None
                worker.slot.ctx = None
                stats = self.stats
                if kind == TASK_OK:
                    if task.items is None:
                        stats.completed += 1
                    else:
                        failed = value.failed
                        stats.completed += task.count - failed
                        stats.failed += failed
                    if task.enqueued:  # sampled when queued (_stamp)
                        self._sample(task, started)
                elif kind in (TASK_CANCELLED, TASK_STOPPED):
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
                if worker.limited:
                    grow = self._adapt(worker, kind, value, _perf() - started)
                if not self._size or self._alive > self.target:
                    nxt = self._park_or_retire(worker)
                elif len(self._prios) == 1:  # _pop(), inline: priority 0 alone
                    worker.next = nxt = self._queue0.popleft()
                    self._size -= 1
                    if self._put_waiters:
                        self._room()
                else:
                    worker.next = nxt = self._pop()
            if kind == TASK_OK:
                # settle(), inline (contextlib.suppress would cost a call and a context)
                try:  # noqa: SIM105
                    task.future.set_result(value)
                except InvalidStateError:
                    pass
            elif retry_delay is not None:
                self._schedule_retry(task, retry_delay)
            elif kind != TASK_CANCELLED:
                settle(task.future, None, value)
            if grow:
                for first in grow:
                    self._spawn(first)
            if (nxt is None or nxt.attempt != 1 or nxt.timeout is not None
                    or self.limiter is not None):
                return nxt
            # begin(), inline for the plain task: after the settle above, whose
            # callbacks may cancel what was handed to this worker (worker.next).
            future = nxt.future
            if self.halted:  # stopped while handed to this worker
                future.cancel()
            if future.set_running_or_notify_cancel():
                slot = worker.slot
                ctx = worker.ctx
                if ctx is None or ctx._cancelled:
                    ctx = TaskContext(slot, 1)
                    if self._reuse:
                        worker.ctx = ctx
                slot.ctx = ctx
                worker.task = nxt
                worker.next = None
                # Checked once the task shows as running (see begin).
                if not self.halted:
                    return nxt
                task, kind, value = nxt, TASK_FAILED, Cancelled("cancelled by shutdown")
            else:
                worker.next = None
                task, kind, value = nxt, TASK_CANCELLED, None
            started = _perf()


    def _sample(self, task: Task, started: float) -> None:
        """Under the lock: record *task*'s latency, standing for the tasks queued
        after it and not sampled (1 in 16 sampled while tasks run in under ``_FAST``:
        ``_stamp``)."""
        ended = time.perf_counter()
        self.stats.sample(started - task.enqueued, ended - started, ended,
                          task.count * task.weight)
        self._sample_mask = _SAMPLE_MASK if ended - started < _FAST else 0

    def next_task(self, worker: Worker) -> Task | None:
        """A worker with nothing to run (a replacement): its next task, as ``end``
        returns it."""
        with self._lock:
            task = self._pop()
            if task is None:
                self._park_or_retire(worker)
            return task

    def _park_or_retire(self, worker: Worker) -> Task | None:
        """Under the lock: *worker* has nothing to run (or is one too many); it leaves
        a closing pool (idle ones leave with it) or a pool above its target (resized
        down, or an adaptive limit that fell), or waits for work, which a blocked put()
        can hand it (the only way in with ``queue_size=0``). Returns None, or the
        queued task it takes after all (one too many, a parked worker leaves
        instead)."""
        if self.state != OPEN and not self._retrying:
            self._alive -= 1
            worker.leaving = True
            self._release_idle()
        elif self._alive > self.target:
            if self._size and self._parked:
                # Work is queued (put_next's, for this worker) while others are
                # parked: one of them leaves in its place, and it takes the work.
                self._retire(self._parked.pop(0))
                self._record()
                worker.next = task = self._pop()
                return task
            self._alive -= 1
            worker.leaving = True
            self._record()
        else:
            self._parked.append(worker)
            if self.scaler is not None:
                worker.idle_since = time.monotonic()
                self._arm_sweep(worker.idle_since + self.scaler.idle_timeout)
            if self._put_waiters:
                self._room()
        return None

    # -- dynamic pools: Autoscale and Adaptive -------------------------------------------

    @property
    def eager(self) -> int:
        """How many workers a backend may start at once when the first task comes
        (the process backend forks them while the caller has one thread): all of a
        fixed pool's; an Autoscale pool's ``min`` and one spare, so that an idle
        dynamic pool holds no more than it was asked to."""
        scaler = self.scaler
        return self.target if scaler is None else min(self.target, scaler.min + 1)

    def may_grow(self) -> bool:
        """Whether this Autoscale pool takes work and has fewer workers than its
        ``max`` now: a hint, read without the lock, for a backend that readies what
        the next worker needs ahead of time (the process backend's spare process)."""
        return self.scaler is not None and self.state == OPEN and self._alive < self.target

    def _record(self) -> None:
        """Under the lock: note the worker count in an Autoscale pool's history."""
        if self.scaler is not None:
            self.scaler.record(time.monotonic(), self._alive)

    def _arm_sweep(self, when: float) -> None:
        """Under the lock: make sure the idle sweep runs by *when*, where the backend
        keeps time (the timer thread, or an event loop's task: the sweep then runs on
        the loop, where its workers may be released); unless parked workers time their
        idleness themselves (``Backend.times_idle``: ``idle_timed_out``)."""
        if (self._sweep_at is not None and self._sweep_at <= when) or self.backend.times_idle:
            return
        self._sweep_at = when
        self._sweep = self.backend.call_later(max(0.0, when - time.monotonic()),
                                              self._sweep_idle)

    def _sweep_idle(self) -> None:
        """The timer's call: workers of an Autoscale pool idle for ``idle_timeout``
        leave, the longest idle first, down to ``min``; it comes again for the next."""
        scaler = self.scaler
        assert scaler is not None
        with self._lock:
            self._sweep_at = self._sweep = None
            now = time.monotonic()
            parked = self._parked
            retired = False
            while (parked and self._alive > scaler.min
                   and scaler.may_retire(workers=self._alive,
                                         idle_since=parked[0].idle_since, now=now)):
                self._retire(parked.pop(0))  # parked in order: the first waited longest
                retired = True
            if retired:
                self._record()
            if parked and self._alive > scaler.min and self.state == OPEN:
                self._arm_sweep(scaler.retire_at(parked[0].idle_since))

    def idle_timed_out(self, worker: Worker) -> float | None:
        """Parked *worker* of an Autoscale pool waited ``idle_timeout`` for work
        (``Backend.times_idle``, instead of the sweep): it leaves, released as the
        sweep releases one, if it is still parked, idle that long, and the pool stays
        at ``min`` or above without it. Returns the seconds to wait before asking
        again (``idle_timeout`` at ``min``: a resize may lower it), or None once
        something was handed to it (a task, or its release), which it then waits for."""
        scaler = self.scaler
        assert scaler is not None
        with self._lock:
            if worker not in self._parked:
                return None
            now = time.monotonic()
            if scaler.may_retire(workers=self._alive, idle_since=worker.idle_since, now=now):
                self._parked.remove(worker)
                self._retire(worker)
                self._record()
                return None
            wait = scaler.retire_at(worker.idle_since) - now
            return wait if wait > 0 else scaler.idle_timeout

    def _adapt(self, worker: Worker, kind: int, value: Any, latency: float) -> list[Task]:
        """Under the lock: *worker*'s task, counted against the adaptive limit, ended
        after *latency* seconds: feed the limiter and follow its limit. Returns the
        queued tasks that workers started now for a limit that rose must run."""
        worker.limited = False
        limiter, adaptive = self.limiter, self._adaptive
        assert limiter is not None
        assert adaptive is not None
        dropped = False
        if kind == TASK_FAILED:
            try:
                dropped = adaptive.is_drop(value)
            except Exception:  # the user's predicate: its bug must not stop the pool
                LOGGER.exception("exception in the drop predicate of %r", adaptive)
        limiter.on_end(latency, dropped, _perf())
        old, self.target = self.target, limiter.limit
        return self._grow() if self.target > old else []

    def _grow(self) -> list[Task]:
        """Under the lock: start workers for queued tasks, up to the target (after it
        rose); returns the tasks the new workers start with."""
        firsts: list[Task] = []
        while self._size and self._alive < self.target and not self._parked:
            task = self._pop()
            assert task is not None
            self._alive += 1
            firsts.append(task)
        return firsts

    def resize(self, workers: int | None = None, *, low: int | None = None,
               high: int | None = None) -> None:
        """Move the pool's size (checked by the caller): a fixed pool keeps *workers*;
        an Autoscale pool's bounds become *low* and *high* (*workers*: both at most
        that); an Adaptive pool's limit bounds become *low* and *high*. Workers above
        the new size leave: idle ones now, busy ones once their task ended; queued
        tasks get new workers at once when it grew."""
        with self._lock:
            if self.scaler is not None:
                scaler = self.scaler
                if workers is not None:
                    high, low = workers, min(scaler.min, workers)
                scaler.resize(min=low, max=high)
                self.target = scaler.max
            elif self.limiter is not None:
                self.limiter.resize(min=low, max=high)
                self.target = self.limiter.limit
            else:
                assert workers is not None
                self.target = workers
            parked = self._parked
            while self._alive > self.target and parked:
                self._retire(parked.pop(0))
            if self.scaler is not None and parked and self._alive > self.scaler.min:
                # A lower min: workers idle at the old one are due to leave too (the
                # sweep's; threads time their idleness themselves).
                self._arm_sweep(self.scaler.retire_at(parked[0].idle_since))
            grow = self._grow()
            self._record()
        for first in grow:
            self._spawn(first)

    def _retire(self, worker: Worker) -> None:
        """Under the lock: parked *worker*, out of ``_parked`` already, leaves."""
        self._alive -= 1
        worker.leaving = True
        self.backend.release(worker)

    def _release_idle(self) -> None:
        """Under the lock: every parked worker leaves."""
        parked, self._parked = self._parked, []
        for worker in parked:
            self._retire(worker)
        if parked:
            self._record()

    def left(self, worker: Worker) -> None:
        """*worker* left, its resources released (its thread ending, or its process
        reaped): join() stops waiting for it."""
        with self._lock:
            self._workers.discard(worker)
            if not worker.leaving and worker in self._parked:
                # It ended while parked (its event loop task was cancelled from
                # outside): it is gone, not idle.
                self._parked.remove(worker)
                self._alive -= 1
                worker.leaving = True
            thread = worker.thread
            if (thread is not None and not worker.abandoned
                    and thread is threading.current_thread() and thread not in self._left):
                if len(self._left) >= 64:  # workers recycled in a long-lived pool
                    self._left = [t for t in self._left if t.is_alive()]
                self._left.append(thread)
            self._workers_changed.notify_all()
            last = self.state != OPEN and self._alive == 0 and not self._retrying
        if last and self._timer is not None:
            self._timer.close()  # nothing can need it any more

    def _deadline(self, worker: Worker, task: Task) -> None:
        if worker.task is task and not worker.abandoned:
            self.backend.give_up(worker, task, self.timed_out(task))

    def timed_out(self, task: Task) -> TaskTimeout:
        """The error a task that ran past its deadline fails with."""
        return TaskTimeout(f"task timed out after {task.timeout:g} s")

    def abandon(self, worker: Worker, task: Task, error: BaseException) -> None:
        """Give up on *worker* (stuck in *task*): settle the task with *error* (or
        retry it), count the worker as stuck and start a replacement."""
        with self._lock:
            if worker.task is not task or worker.abandoned:
                return
            worker.abandoned = True
            worker.task = None
            self._alive -= 1
            self._stuck += 1
            grow = (self._adapt(worker, TASK_FAILED, error, task.timeout or 0.0)
                    if worker.limited else [])
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
            settle(task.future, None, error)
        if replace:
            self._spawn(None)
        for first in grow:
            self._spawn(first)

    # -- retries ------------------------------------------------------------------------

    def _retry_delay(self, task: Task, error: BaseException) -> float | None:
        """Under the lock: the delay before *task* runs again, or None for no retry."""
        policy = task.retry
        if policy is None or task.count != 1 or self.stop.is_set():
            return None
        if not policy.should_retry(error, task.attempt):
            return None
        self.stats.retried += 1
        task.attempt += 1
        return policy.delay_for(error, task.attempt - 1)

    def _schedule_retry(self, task: Task, delay: float) -> None:
        """Re-queue *task*, registered in ``_retrying`` under the lock a moment ago,
        after *delay*; unless a shutdown withdrew it meanwhile. Under the lock (the
        timer's lock is taken after the engine's, never before): a shutdown that
        withdraws it, and a last worker's ``left`` that closes the timer then, come
        either before (nothing is scheduled) or after (the handle is cancelled)."""
        with self._lock:
            if task in self._retrying:
                self._retrying[task] = self.backend.call_later(
                    delay, partial(self._requeue, task))

    def timer(self) -> Timer:
        """The pool's timer thread (started on first use)."""
        timer = self._timer
        if timer is None or timer.closed:
            # A lock of its own, not the engine's: a backend's call_later may be asked
            # under the engine's lock (the idle sweep), and the timer's lock is only
            # ever taken after the engine's, never before.
            with self._timer_lock:
                if self._timer is None or self._timer.closed:
                    self._timer = Timer(f"{self.name}_timer")
                timer = self._timer
        return timer

    # -- failure of the initializer (the stdlib's "broken" state) ---------------------

    def failed_to_start(self, worker: Worker, first: Task | None,
                        reason: str | None = None) -> None:
        """*worker* could not start (its initializer failed): the pool is broken,
        and what is queued fails. The backend calls ``left`` once the worker released
        what it holds. *reason* says why, when more is known than the stdlib says."""
        with self._lock:
            self._alive -= 1
            worker.leaving = True
            if self.broken is None:
                self.broken = reason or self.backend.broken_message
            self.state = CLOSING
            victims = [first] if first is not None else []
            while (task := self._pop()) is not None:
                victims.append(task)
            self._not_full.notify_all()
            self.backend.room(every=True)
            self._release_idle()
            for task in victims:
                self.stats.failed += task.count
        for task in victims:
            settle(task.future, None, self.broken_type(self.broken))

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
            self.backend.room(every=True)
            if not self._size and not self._retrying:
                self._release_idle()
            if self._sweep is not None:  # nothing idles past a close
                self._sweep.cancel()
                self._sweep_at = self._sweep = None
        self.backend.close()

    def cancel_pending(self) -> list[TaskFuture]:
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
        cancelled: list[TaskFuture] = []
        for task in queued:
            if task.future.cancel():
                cancelled.append(task.future)
            else:  # a retried task: its future is already running
                settle(task.future, None, Cancelled("cancelled by shutdown"))
                cancelled.append(task.future)
        for task, handle in retrying:
            if handle is not None:
                handle.cancel()
            settle(task.future, None, Cancelled("cancelled by shutdown while waiting to retry"))
            cancelled.append(task.future)
        return cancelled

    def cancel_all(self) -> list[TaskFuture]:
        """Stop everything now, in one call: cancel queued tasks and tasks waiting for
        a retry, and stop running ones (``Backend.interrupt``: cooperatively for
        threads, by a kill for processes). A task handed to a worker that has not
        started it yet is stopped too: the engine is halted first, and ``begin``
        checks that once the task shows as running, so either it sees the halt or the
        halt sees the task.

        Stronger than ``shutdown(cancel_futures=True)``, whose running tasks and
        hand-offs finish as the stdlib's; a cancelled pipeline stage uses it. Close
        intake first. Returns the futures cancelled before they started."""
        self.stop.set()
        with self._lock:
            self.halted = True
        cancelled = self.cancel_pending()
        for worker, task in self._running():
            self.backend.interrupt(worker, task)
        return cancelled

    def withdraw(self, match: Callable[[Task], bool]) -> tuple[list[Task], list[Task]]:
        """Take the queued tasks and the tasks waiting for a retry that *match* out of
        the engine, counted as cancelled: (queued, retrying). The caller settles their
        futures (a cancelled ``AsyncFuture``, the chunks of a ``map`` its consumer
        left, a group's tasks once it failed). A closing pool's idle workers leave if
        nothing is left."""
        with self._lock:
            queued: list[Task] = []
            for prio in list(self._prios):
                queue = self._queues[prio]
                kept = deque(task for task in queue if not match(task))
                if len(kept) == len(queue):
                    continue
                queued += [task for task in queue if match(task)]
                if not prio:  # the standing queue stands
                    queue.clear()
                    queue.extend(kept)
                elif kept:
                    self._queues[prio] = kept
                else:
                    del self._queues[prio]
                    self._prios.remove(prio)
            self._size -= len(queued)
            retrying = [task for task in self._retrying if match(task)]
            handles = [self._retrying.pop(task) for task in retrying]
            for task in queued + retrying:
                self.stats.cancelled += task.count
            if queued and self._put_waiters:
                self._not_full.notify(len(queued))
                if self._room_waiters:
                    self.backend.room(every=True)
            if self.state != OPEN and not self._size and not self._retrying:
                self._release_idle()
        for handle in handles:
            if handle is not None:
                handle.cancel()
        return queued, retrying

    def start(self, workers: int) -> None:
        """Start *workers* more workers now, without tasks (they park), up to the
        target: for a pool that starts its workers up front, as ``AsyncPool`` does at
        ``async with`` (the sync pools start theirs as tasks come)."""
        with self._lock:
            workers = max(0, min(workers, self.target - self._alive))
            self._alive += workers
        for _ in range(workers):
            self._spawn(None)

    def _running(self) -> list[tuple[Worker, Task]]:
        with self._lock:
            return [(w, w.task) for w in self._workers
                    if w.task is not None and not w.abandoned]

    def running_futures(self) -> list[TaskFuture]:
        """The futures of the tasks running now."""
        return [task.future for _, task in self._running()]

    def abandon_running(self) -> list[TaskFuture]:
        """Give up on every running task (``Backend.give_up``: a thread is abandoned,
        a process killed): its future fails with ``Cancelled``."""
        with self._lock:
            self.halted = True
            self.state = CLOSING
        running = self._running()
        for worker, task in running:
            self.backend.give_up(worker, task, Cancelled("abandoned by shutdown"))
        return [task.future for _, task in running]

    def join(self, deadline: float | None) -> bool:
        """Wait for every worker that is not stuck to leave; False at the deadline.

        A worker given up on while join() waits is not waited for (hence a wait on
        ``_workers_changed``, not on each thread in turn); nor is the calling
        thread's own worker.
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
        self.backend.after_fork_in_child()
        self._lock = _new_lock(self.backend)
        self._not_full = threading.Condition(self._lock)
        self._workers_changed = threading.Condition(self._lock)
        self.stop = threading.Event()
        self._put_waiters = self._room_waiters = self._size = self._alive = 0
        self._stuck = self.waking = 0
        self._queue0 = deque()
        self._queues = {0: self._queue0}
        self._prios = [0]
        self._parked = []
        self._workers = set()
        self._left = []
        self._retrying = {}
        self._maps = set()
        self._timer = None
        self._timer_lock = threading.Lock()
        self._sweep_at = self._sweep = None
        self.state = CLOSING
        self.halted = True
        self.closed_error = (PoolClosed, "cannot schedule new futures in a forked child "
                                         "process: the pool belongs to its parent")

    # -- maps that nobody iterated ----------------------------------------------------

    def remember_map(self, run: Any) -> None:
        """Remember a map run, drained at shutdown if nobody iterates it."""
        with self._lock:
            self._maps.add(run)

    def forget_map(self, run: Any) -> None:
        """The map run is iterated (or over): shutdown need not drain it."""
        with self._lock:
            self._maps.discard(run)

    def take_maps(self) -> list[Any]:
        """The map runs nobody iterated, forgotten from now on."""
        with self._lock:
            runs = list(self._maps)
            self._maps.clear()
        return runs

    # -- statistics ---------------------------------------------------------------------

    def count_submitted(self, items: int) -> None:
        """*items* joined a task still queued (``Task.items`` of an async ``map``
        chunk, and its ``count``): they are submitted too."""
        with self._lock:
            self.stats.submitted += items

    def count_failed_at_intake(self) -> None:
        """A call whose future failed before it reached the queue (its arguments could
        not be sent to a worker process): submitted, and failed."""
        with self._lock:
            self.stats.submitted += 1
            self.stats.failed += 1

    def statistics(self) -> PoolStatistics:
        """A snapshot of the counters, and of the queue and workers now."""
        with self._lock:
            # tuple(): read in one step, as statistics may be read from another thread
            # than the one driving an engine without a lock (Backend.one_thread)
            workers = tuple(self._workers)
            running = sum(1 for w in workers if w.task is not None and not w.abandoned)
            snapshot = self.stats.snapshot(
                queued=self._size + len(self._retrying), running=running,
                workers=self._alive, busy=max(0, self._alive - len(self._parked)),
                stuck=self._stuck + self.backend.stray())
            scaler, limiter = self.scaler, self.limiter
            if scaler is not None:
                return dataclasses.replace(snapshot, min_workers=scaler.min,
                                           max_workers=scaler.max,
                                           workers_history=scaler.history)
            if limiter is not None:
                return dataclasses.replace(snapshot, limit=limiter.limit,
                                           limit_history=limiter.history,
                                           drops=limiter.drops)
            return snapshot

    def live_workers(self) -> list[Worker]:
        """The workers now in the pool (tests read their processes)."""
        with self._lock:
            return list(self._workers)


def settle(future: TaskFuture, value: Any, error: BaseException | None) -> None:
    """Resolve *future*; a future that someone else resolved first stays as it is."""
    try:
        if error is None:
            future.set_result(value)
        else:
            future.set_exception(error)
    except InvalidStateError:
        pass
