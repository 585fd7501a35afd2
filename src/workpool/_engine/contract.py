"""The records the sync engine schedules and the contract a backend implements.

Owns ``Task`` (a call or a chunk of ``map`` items; ``new_call`` makes a call fast),
``TaskFuture`` (what a task settles: a ``concurrent.futures.Future``, an
``AsyncFuture``, an async ``map`` chunk), ``Run`` (what a pool prepares once for all
the chunks of one run), ``Worker`` (a worker's bookkeeping) and ``Backend``, the one
typed contract between ``Engine`` (``engine.py``) and the ways of running work
(``_backends/``). May import ``_core`` only.

A backend is composed into the engine, which owns intake, queue, counts, deadlines,
retries, shutdown and statistics. The backend says how a unit of work runs::

    in the caller      prepare_call / prepare_run / prepare_chunk   (pickling, for
                                                                     processes)
    the workers        spawn (start one), resume (hand a parked one a task),
                       release (a parked one leaves)
    stopping           interrupt (cancel_all), give_up (deadline passed, hard stop)
    its resources      close (intake is over), after_fork_in_child
    async callers      room (the queue has room for a caller parked in want_room)
    how it runs        lazy_wake, lazy_spawn, own_deadlines, reuse_context (flags)

Whatever drives a worker (a thread per worker: ``threaded.ThreadedBackend``; one
reader thread for every child process: ``_backends.process``; a task of an event loop
per worker: ``_backends.async_backend``) reports each task's end
through one step, ``Engine.end``: "this task ended with this outcome on this worker",
which counts it, settles or retries it, and returns the worker's next task, or None
when the worker is parked (``Engine.resume`` hands it the next one) or leaving
(``worker.leaving``). A task ``end`` returns may be begun already (``worker.task`` is
it: a plain one); a driver calls ``Engine.begin`` on the others (and on those handed
over otherwise: ``worker.first``, ``resume``, ``next_task``), and ``begin`` of a task
begun already returns None.
"""

from __future__ import annotations

import threading
from abc import ABC, abstractmethod
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, ClassVar, Final, Protocol

from .._core.context import TaskContext, WorkerSlot
from .._core.dynamic import Scaler
from .._core.exceptions import TaskTimeout
from .._core.ratelimit import TokenBucket
from .._core.retry import Retry
from .._core.timer import Timer, TimerHandle

if TYPE_CHECKING:
    from .._core.chunk import ChunkRun

__all__ = ["TASK_CANCELLED", "TASK_FAILED", "TASK_OK", "TASK_STOPPED", "Backend", "Run",
           "Scheduler", "Task", "TaskFuture", "Worker", "new_call"]

# How a task ended, as a backend reports it to Engine.end (named apart from the child
# protocol's OK and from the AsyncFuture states).
TASK_OK: Final = 0  # it returned: settle its future with the value
TASK_FAILED: Final = 1  # it raised, or was stopped: retry it or settle with the error
TASK_CANCELLED: Final = 2  # its future was cancelled before it started: nothing to settle
TASK_STOPPED: Final = 3  # it was stopped while running (a cancellation): settle with the
#                          error, never retried, counted as cancelled


class TaskFuture(Protocol):
    """The handle a task settles, as the engine drives it: what both
    ``concurrent.futures.Future`` (the sync pools') and ``AsyncFuture`` (the async
    pool's) offer, and any object that stands for a task's end (an async ``map``
    chunk's delivery). ``set_result`` and ``set_exception`` raise
    ``InvalidStateError`` on a handle already settled."""

    def set_running_or_notify_cancel(self) -> bool:
        """The task starts: False if it was cancelled first (it must not run)."""

    def set_result(self, result: Any, /) -> None:
        """The task returned *result*."""

    def set_exception(self, exception: BaseException | None, /) -> None:
        """The task ended with *exception*."""

    def cancel(self) -> bool:
        """Cancel the task before it starts; False if that is too late."""

    def done(self) -> bool:
        """Whether the task ended."""


class Run:
    """What a backend prepared once for every chunk of one run (a ``map`` call, a
    pipeline stage): the pickled function, for processes. The pool keeps it per run
    (``ExecutorPool._submit_chunk``)."""

    __slots__ = ("prepared",)

    def __init__(self, prepared: Any) -> None:
        self.prepared = prepared


class Task:
    """One unit of work: a call (``fn(*args, **kwargs)``); ``ChunkTask`` is a chunk of
    ``map`` items. ``payload`` is what the backend prepared in the caller for this task
    alone (``None`` for threads).

    ``items`` (None for a call) and ``count`` (its items: 1 for a call), read for
    every task, are stored; a call reads the chunk's other fields from the class, which
    saves a submit three stores (a class attribute costs 8 ns more to read than a
    slot, CPython 3.11: none is read on a call's way). ``crashes`` (the worker
    processes it killed) is set only once one died: read it with
    ``getattr(task, "crashes", 0)``. ``enqueued`` is when it was queued, stamped on
    the tasks whose latency the engine samples alone (0.0 on the others), with the
    ``weight`` of the sample: how many tasks it stands for."""

    __slots__ = ("args", "attempt", "count", "crashes", "enqueued", "fn", "future", "items",
                 "kwargs", "payload", "priority", "retry", "timeout", "weight")

    # A call's chunk fields (see ChunkTask).
    star: bool = False
    flag: ChunkRun | None = None
    run: Run | None = None

    def __init__(self, fn: Callable[..., Any], args: tuple[Any, ...], kwargs: dict[str, Any],
                 future: TaskFuture, priority: int = 0, timeout: float | None = None,
                 retry: Retry | None = None, *, payload: Any = None) -> None:
        self.fn = fn
        self.args = args
        self.kwargs = kwargs
        self.future = future
        self.priority = priority
        self.timeout = timeout
        self.retry = retry  # None once quarantined (it crashed max_crashes workers)
        self.payload = payload
        self.items: list[Any] | None = None
        self.count = 1
        self.attempt = 1
        self.enqueued = 0.0
        self.crashes: int  # set once a worker process died running it
        self.weight: int  # set on a sampled task


class ChunkTask(Task):
    """A chunk of ``map`` items: ``fn(item)`` (``fn(*item)`` when ``star``) for each of
    ``items``; ``flag`` is the caller's run, whose ``closed`` a thread chunk reads
    between items, and ``run`` what the backend prepared for all its chunks."""

    __slots__ = ("flag", "run", "star")

    def __init__(self, fn: Callable[..., Any], future: TaskFuture, items: list[Any], *,
                 star: bool, flag: ChunkRun | None, timeout: float | None = None,
                 retry: Retry | None = None, payload: Any = None,
                 run: Run | None = None) -> None:
        super().__init__(fn, (), _NO_KWARGS, future, 0, timeout, retry, payload=payload)
        self.items = items
        self.star = star
        self.flag = flag
        self.run = run
        self.count = len(items)


_new = object.__new__
_NO_KWARGS: Final[dict[str, Any]] = {}  # a chunk's kwargs: its items are its arguments


def new_call(fn: Callable[..., Any], args: tuple[Any, ...], kwargs: dict[str, Any],
             future: TaskFuture, priority: int, timeout: float | None, retry: Retry | None,
             payload: Any) -> Task:
    """``Task(fn, args, kwargs, future, priority, timeout, retry, payload=payload)``,
    made faster: a call is what every ``submit`` makes, and a
    class's ``__init__`` with keywords costs twice these plain stores."""
    task: Task = _new(Task)
    task.fn = fn
    task.args = args
    task.kwargs = kwargs
    task.future = future
    task.priority = priority
    task.timeout = timeout
    task.retry = retry
    task.payload = payload
    task.items = None
    task.count = 1
    task.attempt = 1
    task.enqueued = 0.0
    return task


class Worker:
    """A worker's bookkeeping, which backends extend: the task it runs (``task``,
    under the engine's lock), its first task until it starts (``first``), whether the
    engine gave up on it (``abandoned``) or it leaves (``leaving``), and the thread
    that runs it, if one does."""

    __slots__ = ("abandoned", "ctx", "deadline", "first", "idle_since", "leaving", "limited",
                 "next", "slot", "task", "thread")

    def __init__(self, worker_id: int) -> None:
        self.slot = WorkerSlot(worker_id)
        self.first: Task | None = None
        self.ctx: TaskContext | None = None  # kept for its next task (reuse_context)
        # The task Engine.end picked for it, until it begins (a backend that cancels
        # queued work of one owner reaches it here: its end's callbacks run between).
        self.next: Task | None = None
        self.task: Task | None = None
        self.abandoned = False
        self.leaving = False
        self.thread: threading.Thread | None = None
        self.deadline: TimerHandle | None = None  # the timer call of the task's deadline
        self.idle_since = 0.0  # when it parked (monotonic): an Autoscale pool retires it
        self.limited = False  # its task counts against an Adaptive limit (until it ends)


class Scheduler(Protocol):
    """The engine as a backend sees it (``engine.Engine``): its settings, its state,
    and the step that drives a worker."""

    name: str  # the pool's name: workers' and threads' names start with it
    target: int  # how many workers the pool keeps (a dynamic pool: the most, now)
    bucket: TokenBucket | None  # the pool's rate limit
    stop: threading.Event  # set once queued work is cancelled: rate-limit waits end
    halted: bool  # set by the hard stop: nothing more may start
    state: int  # OPEN, or CLOSING once intake is over
    waking: int  # 1 while a worker woken by resume must call woke() (lazy_wake)
    scaler: Scaler | None  # an Autoscale pool's bounds and idle_timeout

    @property
    def eager(self) -> int:
        """How many workers may start at once with the first task."""

    def may_grow(self) -> bool:
        """Whether an Autoscale pool may start more workers now (below its max)."""

    def begin(self, worker: Worker, task: Task) -> tuple[int, Any] | None:
        """*task* is about to run on *worker*: None to run it, or its outcome (None
        at once for a task ``end`` began)."""

    def end(self, worker: Worker, task: Task, kind: int, value: Any,
            started: float) -> Task | None:
        """*task* ended on *worker*: its next task (begun already when
        ``worker.task`` is it), or None (parked or leaving)."""

    def next_task(self, worker: Worker) -> Task | None:
        """A worker with nothing to run: its next task, as ``end`` gives it."""

    def woke(self) -> None:
        """A worker woken by ``resume`` runs now (``Backend.lazy_wake``)."""

    def left(self, worker: Worker) -> None:
        """*worker* left, its resources released."""

    def idle_timed_out(self, worker: Worker) -> float | None:
        """Parked *worker* of an Autoscale pool waited ``idle_timeout`` for work
        (``Backend.times_idle``): it is released if it may leave. Returns the seconds
        to wait before asking again, or None once something was handed to it (a task,
        or its release)."""

    def failed_to_start(self, worker: Worker, first: Task | None,
                        reason: str | None = None) -> None:
        """*worker* could not start: the pool is broken."""

    def abandon(self, worker: Worker, task: Task, error: BaseException) -> None:
        """Give up on *worker*, stuck in *task*: settle it, start a replacement."""

    def withdraw(self, match: Callable[[Task], bool]) -> tuple[list[Task], list[Task]]:
        """Take the queued and retrying tasks that *match* out: (queued, retrying)."""

    def timer(self) -> Timer:
        """The pool's timer thread."""

    def timed_out(self, task: Task) -> TaskTimeout:
        """The error of a task past its deadline."""


class Backend(ABC):
    """How one unit of work runs, composed into an ``Engine`` (see the module
    docstring). Methods named "under the lock" are called with the engine's lock
    held and must not block."""

    #: The message of the pool's broken state (the stdlib's, per executor kind).
    broken_message: ClassVar[str]
    #: Whether a worker woken by ``resume`` calls ``Scheduler.woke`` before it runs
    #: the task: the engine then wakes one worker at a time (see ``engine.py``).
    lazy_wake: ClassVar[bool] = False
    #: Whether a worker started for a task counts as woken, as above, until it calls
    #: ``Scheduler.woke`` once running: put() then queues instead of starting one
    #: worker per task of a burst, and tasks start in the order they came (an event
    #: loop starts new tasks in any order).
    lazy_spawn: ClassVar[bool] = False
    #: Whether a worker's task context serves its next tasks too, until one is
    #: cancelled (or has a deadline, or is a retry): for backends where nothing
    #: outside the pool holds a task's context once the task ended (a ``Group`` on a
    #: thread pool keeps its tasks' contexts to cancel them).
    reuse_context: ClassVar[bool] = False
    #: Whether the backend enforces a task's deadline itself (an event loop's cancel
    #: scope with a deadline is exact and costs no thread): ``Engine.begin`` then sets
    #: the context's deadline but arms no timer call, and the backend ends a task past
    #: it with ``Scheduler.timed_out``'s error.
    own_deadlines: ClassVar[bool] = False
    #: Whether a parked worker of an Autoscale pool times its idleness itself (a
    #: thread waits for work with a timeout and then calls
    #: ``Scheduler.idle_timed_out``): the engine then arms no idle sweep, and an idle
    #: pool holds no timer thread.
    times_idle: ClassVar[bool] = False
    #: Whether one thread alone calls into the engine (an event loop's): the engine
    #: then takes no lock, which saves two lock rounds a task. ``statistics()`` may
    #: still be read from any thread (a snapshot then may lag by a task).
    one_thread: ClassVar[bool] = False
    engine: Scheduler

    def attach(self, engine: Scheduler) -> None:
        """Called once by the engine that this backend runs the work of."""
        self.engine = engine

    # -- in the caller ----------------------------------------------------------------

    def prepare_call(self, fn: Callable[..., Any], args: tuple[Any, ...],
                     kwargs: dict[str, Any]) -> Any:
        """The payload of a call (``Task.payload``); raises what cannot be sent."""
        return None

    def prepare_run(self, fn: Callable[..., Any]) -> Any:
        """What every chunk of a run of *fn* shares (``Run.prepared``)."""
        return None

    def prepare_chunk(self, fn: Callable[..., Any], prepared: Any, star: bool,
                      items: list[Any]) -> Any:
        """The payload of a chunk (``Task.payload``); raises what cannot be sent."""
        return None

    # -- the workers ------------------------------------------------------------------

    def new_worker(self, worker_id: int) -> Worker:
        """A fresh worker record."""
        return Worker(worker_id)

    @abstractmethod
    def spawn(self, worker: Worker) -> None:
        """Start *worker* (in the engine's set and counted alive already): it runs
        ``worker.first``, if any, then goes on as ``Engine.end`` says. On a failed
        start it calls ``Engine.failed_to_start``."""

    @abstractmethod
    def resume(self, worker: Worker, task: Task) -> None:
        """Hand *task* to *worker*, parked until now."""

    @abstractmethod
    def release(self, worker: Worker) -> None:
        """Under the lock: parked *worker* leaves (it calls ``Engine.left``)."""

    # -- stopping ---------------------------------------------------------------------

    @abstractmethod
    def interrupt(self, worker: Worker, task: Task) -> None:
        """Ask *task*, running on *worker*, to stop (``Engine.cancel_all``): its
        context is cancelled (threads), or its process killed."""

    @abstractmethod
    def give_up(self, worker: Worker, task: Task, error: BaseException) -> None:
        """*task* must end now with *error* (its deadline passed: ``TaskTimeout``;
        the hard stop of a shutdown: ``Cancelled``): a thread is abandoned
        (``Engine.abandon``), a process killed."""

    def room(self, every: bool = False) -> bool:
        """Under the lock: the queue has room again (or intake closed: *every*) while
        callers wait for room without blocking a thread (``Engine.want_room``): wake
        one of them (*every* one); False when none was waiting any more. Backends
        whose callers block in ``Engine.put`` need nothing here."""
        return False

    def call_later(self, delay: float, callback: Callable[[], None]) -> TimerHandle:
        """Run *callback* (a retry's re-queue) after *delay* seconds, cancellably: on
        the engine's timer thread, unless the backend keeps time itself (an event
        loop's, in a task of its own: the callback then runs on the loop)."""
        return self.engine.timer().call_later(delay, callback)

    def stray(self) -> int:
        """Calls given up on that still run outside any worker (a thread an event
        loop's worker stopped waiting for), counted as ``stuck`` in statistics."""
        return 0

    # -- the backend's own resources --------------------------------------------------

    @abstractmethod
    def close(self) -> None:
        """Intake is over: let go of what no worker will use (forked spares)."""

    @abstractmethod
    def after_fork_in_child(self) -> None:
        """In a forked child (before the engine starts over): what the backend holds
        is the parent's, to be neither waited for nor stopped."""
