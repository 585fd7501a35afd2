"""The engine's records and its way in: ``Task``, ``Worker`` and ``EngineIntake``.

``EngineIntake`` is the base of ``_engine.Engine``. It holds the whole engine state
(every attribute is declared in its ``__init__``, so the subclass and the type checker
see one set) and the intake, the top of the diagram in ``_engine.py``::

    put() ──┬─ an idle worker? ── hand-off (SimpleQueue)
            ├─ fewer workers than the target? ── spawn (Engine._spawn)
            └─ else: priority queue (bounded: put() waits)

The priority queue is a ``deque`` per priority, with the priorities present kept
sorted, so pushing and popping cost O(1) in the common case of few distinct
priorities. ``_requeue`` is the timer's way in: a retried task skips the bound, as it
was admitted once already. Workers, retries and shutdown live in ``_engine.py``.
"""

from __future__ import annotations

import bisect
import itertools
import threading
import time
import weakref
from collections import deque
from collections.abc import Callable
from concurrent.futures import Future
from queue import SimpleQueue
from typing import Any, Final

from .._core.context import WorkerSlot
from .._core.exceptions import PoolClosed, QueueFull
from .._core.ratelimit import TokenBucket
from .._core.retry import Retry
from .._core.stats import StatsRecorder
from .._core.timer import Timer, TimerHandle

__all__ = ["CLOSING", "OPEN", "SHUTDOWN_MESSAGE", "EngineIntake", "Task", "Worker"]

# The engine's states, named as the async engine's (RUNNING is a task's state there).
# Plain ints, not an IntEnum: put() compares the state on every task, and an IntEnum
# member compares 3.5 to 5.5 ns slower than an int (20 to 45 ns more read as
# EngineState.OPEN; python -m timeit, CPython 3.11 and 3.13).
OPEN: Final = 0  # taking work
CLOSING: Final = 1  # no intake; workers drain what is queued and exit
SHUTDOWN_MESSAGE: Final = "cannot schedule new futures after shutdown"


class Task:
    """One unit of work: a call, or a chunk of ``map`` items (``items`` is a list)."""

    __slots__ = ("args", "attempt", "count", "crashes", "enqueued", "fn", "future", "items",
                 "key", "kwargs", "priority", "retry", "timeout")

    def __init__(self, fn: Callable[..., Any], args: tuple[Any, ...], kwargs: dict[str, Any],
                 future: Future[Any], priority: int = 0, timeout: float | None = None,
                 retry: Retry | None = None, key: Any = None,
                 items: list[Any] | None = None) -> None:
        self.fn = fn
        self.args = args
        self.kwargs = kwargs
        self.future = future
        self.priority = priority
        self.timeout = timeout
        self.retry = retry
        self.key = key
        self.items = items
        self.count = 1 if items is None else len(items)
        self.attempt = 1
        self.crashes = 0
        self.enqueued = 0.0


class Worker:
    """A worker's bookkeeping; ``thread`` runs ``Engine._work``, starting with
    ``first`` (handed over here, not as a thread argument, which the thread would keep
    alive until it ends)."""

    __slots__ = ("abandoned", "first", "slot", "task", "thread")

    def __init__(self, worker_id: int) -> None:
        self.slot = WorkerSlot(worker_id)
        self.first: Task | None = None
        self.task: Task | None = None
        self.abandoned = False
        self.thread: threading.Thread | None = None


class EngineIntake:
    """The state of one pool's engine and the intake into its queue."""

    def __init__(self, *, workers: int, queue_size: int, timeout: float | None,
                 retry: Retry | None, bucket: TokenBucket | None, name: str,
                 initializer: Callable[..., Any] | None, initargs: tuple[Any, ...],
                 broken_type: type[Exception]) -> None:
        self.target = workers
        self.capacity = queue_size
        self.timeout = timeout
        self.retry = retry
        self.bucket = bucket
        self.name = name
        self.initializer = initializer
        self.initargs = initargs
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
        self._lock = threading.Lock()
        self._not_full = threading.Condition(self._lock)
        self._put_waiters = 0
        self._queues: dict[int, deque[Task]] = {}
        self._prios: list[int] = []  # negated priorities present, ascending
        self._size = 0
        self._idle = 0
        self._wake: SimpleQueue[Task | None] = SimpleQueue()
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

    # -- intake -------------------------------------------------------------------

    def put(self, task: Task, block: bool = True) -> None:
        """Admit *task*: hand it to an idle worker, start a worker, or queue it,
        waiting while the queue is full (``QueueFull`` when not *block*)."""
        spawn = queued = False
        with self._lock:
            while True:
                if self.state != OPEN:
                    self._raise_closed()
                if self._idle:
                    self._idle -= 1
                    break
                if self._alive < self.target:
                    self._alive += 1
                    spawn = True
                    break
                if self._size < self.capacity:
                    task.enqueued = time.perf_counter()
                    self._push(task)
                    queued = True
                    break
                if not block:
                    raise QueueFull(f"queue is full ({self.capacity} tasks)")
                self._put_waiters += 1
                try:
                    self._not_full.wait()
                finally:
                    self._put_waiters -= 1
            self.stats.submitted += task.count
        if not queued:
            task.enqueued = time.perf_counter()
            if spawn:
                self._spawn(task)
            else:
                self._wake.put(task)

    def _raise_closed(self) -> None:
        if self.broken is not None:
            raise self.broken_type(self.broken)
        error_type, message = self.closed_error
        raise error_type(message)

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
        prio = self._prios[0]
        queue = self._queues[prio]
        task = queue.popleft()
        if not queue:
            del self._queues[prio]
            del self._prios[0]
        self._size -= 1
        if self._put_waiters:
            self._not_full.notify()
        return task

    def _requeue(self, task: Task) -> None:
        """Put a retried task back, past the queue bound: it was admitted already."""
        spawn = False
        with self._lock:
            if self._retrying.pop(task, None) is None:
                return  # cancelled by shutdown meanwhile
            if self._idle:
                self._idle -= 1
            elif self._alive < self.target:
                self._alive += 1
                spawn = True
            else:
                task.enqueued = time.perf_counter()
                self._push(task)
                return
        task.enqueued = time.perf_counter()
        if spawn:
            self._spawn(task)
        else:
            self._wake.put(task)

    def _spawn(self, first: Task | None) -> None:
        """Start a worker whose first task is *first* (``Engine._spawn``)."""
        raise NotImplementedError
