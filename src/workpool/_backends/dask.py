"""Running work on a Dask cluster: the dask backend.

Owns ``DaskBackend`` (the ``Backend`` contract of ``_engine.contract`` over a
``distributed.Client``), ``Call`` (what travels to the cluster for one task) and the
functions that run there (``run_remote``, ``cancel_remote``, ``forget_remote``). May
import ``_core``, ``_engine`` and ``distributed``.

A worker is a slot of work in flight, not a thread or a process: at most ``workers``
tasks (calls or ``map`` chunks) are on the cluster at once, so an endless input maps in
flat memory on the client and on the scheduler. Each pool has one driver thread that
does everything the client is asked::

    Engine.put ── resume / spawn: a message ──▶ driver thread (one per pool)
                                                  │ Engine.begin, then client.submit(
                                                  │   run_remote, Call, pure=False,
                                                  │   priority, resources, workers)
                                                  ▼
    cluster worker: run_remote(call) ── fn(*args) or a chunk ── (kind, value)
                                                  │
    the cluster future's done callback ── a message ──▶ driver: gather the
        results of every future that finished meanwhile in one call, then
        Engine.end(worker, task, kind, value) -> the slot's next task, submitted at once

``run_remote`` catches what the task raises (``BaseException`` included, which a Dask
worker would otherwise let through) and returns it, so a task's own error comes back
as its outcome and retries are the engine's (with backoff, on its timer: a waiting
retry holds no slot and no cluster thread). A ``Call`` travels pickled, by Dask's own
pickler (cloudpickle for what must go by value): its arguments are never searched for
Dask keys, the scheduler never unpickles them, and the messages it keeps for debugging
(``distributed.admin.low-level-log-length``) hold compact bytes, not the items as
objects.

What the cluster raised instead of a reply is the task's error: ``KilledWorker`` (the
task's workers died ``distributed.scheduler.allowed-failures`` times) becomes
``WorkerCrashed``, caused by it.

Stopping: a task past its deadline (``give_up``), a cancelled stage (``interrupt``)
and the hard stop of a shutdown end the task at once, with ``TaskTimeout`` or
``Cancelled``; the driver cancels its cluster future (a task not started yet never
runs) and cancels the task's ``wp.current()`` context on the worker that runs it, so
that code which checks ``cancelled``, calls ``checkpoint()`` or sleeps with
``wp.current().sleep()`` stops. Dask cannot stop a thread that runs Python code: a task
that never checks runs to its end on its worker, holding that thread, though its result
is dropped.
"""

from __future__ import annotations

import itertools
import threading
import time
import uuid
from collections.abc import Callable, Mapping, Sequence
from functools import partial
from queue import Empty, SimpleQueue
from typing import Any, Final

import distributed
from distributed.protocol.pickle import dumps, loads

from .._core.chunk import Chunk, run_chunk
from .._core.context import TaskContext, WorkerSlot, install_slot
from .._core.exceptions import Cancelled
from .._core.process_errors import WorkerCrashed
from .._engine.contract import TASK_FAILED, TASK_OK, Backend, Task, Worker
from .._engine.engine import OPEN

__all__ = ["Call", "DaskBackend", "Placed", "cancel_remote", "forget_remote", "run_remote"]

# -- on a cluster worker ------------------------------------------------------------------

# The contexts of the tasks running in this process, by (pool token, job id): what
# cancel_remote cancels.
_RUNNING: dict[tuple[str, int], TaskContext] = {}
# Jobs cancelled before they started here (the cancel raced their start), with when:
# they start cancelled. Kept _CANCEL_MEMORY seconds: a job cancelled everywhere runs on
# one worker at most.
_CANCELLED: dict[tuple[str, int], float] = {}
_CANCEL_MEMORY: Final = 60.0
# The initializers' values, by (pool token, Dask worker address).
_STATES: dict[tuple[str, str], Any] = {}
_REMOTE_LOCK = threading.Lock()
_INIT_LOCK = threading.Lock()  # one initializer at a time in a process


class Call:
    """What travels to the cluster for one task: the call (``fn(*args, **kwargs)``) or
    the chunk (``items``; ``single``: one item run as a call, whose error is the
    task's), with what its ``wp.current()`` context says."""

    __slots__ = ("args", "attempt", "fn", "init", "items", "job", "kwargs", "single", "star",
                 "timeout", "token", "worker_id")

    def __init__(self, token: str, job: int, fn: Callable[..., Any], args: tuple[Any, ...],
                 kwargs: dict[str, Any], items: list[Any] | None, star: bool, single: bool,
                 attempt: int, timeout: float | None, worker_id: int,
                 init: tuple[Callable[..., Any], tuple[Any, ...]] | None) -> None:
        self.token = token
        self.job = job
        self.fn = fn
        self.args = args
        self.kwargs = kwargs
        self.items = items
        self.star = star
        self.single = single
        self.attempt = attempt
        self.timeout = timeout
        self.worker_id = worker_id
        self.init = init

    def __getstate__(self) -> tuple[Any, ...]:
        return tuple(getattr(self, name) for name in self.__slots__)

    def __setstate__(self, state: tuple[Any, ...]) -> None:
        for name, value in zip(self.__slots__, state, strict=True):
            setattr(self, name, value)


def _state(call: Call) -> Any:
    """The value of the pool's initializer on this Dask worker (run at its first task
    there); raises ``BrokenExecutor`` if the initializer fails (it runs again for the
    next task)."""
    assert call.init is not None
    where = (call.token, distributed.get_worker().address)
    with _INIT_LOCK:
        if where not in _STATES:
            initializer, initargs = call.init
            try:
                _STATES[where] = initializer(*initargs)
            except BaseException as exc:
                from concurrent.futures import BrokenExecutor

                raise BrokenExecutor(f"the initializer failed on Dask worker {where[1]}: "
                                     f"{exc!r}") from exc
        return _STATES[where]


def run_remote(payload: bytes) -> tuple[int, Any]:
    """Run the pickled ``Call`` on a cluster worker: (``TASK_OK``, the value or
    ``Chunk``) or (``TASK_FAILED``, what it raised, unpickling it included)."""
    try:
        call: Call = loads(payload)
        state = None if call.init is None else _state(call)
    except BaseException as exc:
        return TASK_FAILED, exc
    slot = WorkerSlot(call.worker_id, state)
    deadline = None if call.timeout is None else time.monotonic() + call.timeout
    ctx = slot.ctx = TaskContext(slot, call.attempt, deadline)
    install_slot(slot)
    key = (call.token, call.job)
    with _REMOTE_LOCK:
        _RUNNING[key] = ctx
        if _CANCELLED.pop(key, None) is not None:
            ctx.cancel()
    try:
        if call.items is not None:
            return TASK_OK, run_chunk(call.fn, call.items, call.star, ctx)
        started = time.perf_counter()
        try:
            value = call.fn(*call.args, **call.kwargs)
        except BaseException as exc:  # a task's error never kills its worker
            return TASK_FAILED, exc
        if call.single:
            return TASK_OK, Chunk([value], None, time.perf_counter() - started)
        return TASK_OK, value
    finally:
        slot.ctx = None
        with _REMOTE_LOCK:
            del _RUNNING[key]


def cancel_remote(token: str, job: int) -> None:
    """On every cluster worker (``Client.run``): cancel the context of the job if it
    runs here, or when it starts here."""
    now = time.monotonic()
    with _REMOTE_LOCK:
        ctx = _RUNNING.get((token, job))
        if ctx is None:
            for key in [k for k, when in _CANCELLED.items() if now - when > _CANCEL_MEMORY]:
                del _CANCELLED[key]
            _CANCELLED[token, job] = now
    if ctx is not None:
        ctx.cancel()


def forget_remote(token: str) -> None:
    """On every cluster worker: drop the initializer values of the pool *token*."""
    with _INIT_LOCK:
        for where in [w for w in _STATES if w[0] == token]:
            del _STATES[where]


# -- in the client ----------------------------------------------------------------------

class Placed:
    """A function with where its task may run (``DaskPool.schedule``'s ``resources``
    and ``workers``): the backend unwraps it."""

    __slots__ = ("fn", "resources", "workers")

    def __init__(self, fn: Callable[..., Any], resources: Mapping[str, float] | None,
                 workers: Sequence[str] | None) -> None:
        self.fn = fn
        self.resources = resources
        self.workers = workers

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        return self.fn(*args, **kwargs)


class _Job:
    """A task handed to a slot: its cluster future once submitted, and whether it
    ended (``ended``: its end is being reported; later news of it is dropped)."""

    __slots__ = ("cluster", "ended", "id", "reply", "started", "task")

    def __init__(self, task: Task, job_id: int) -> None:
        self.task = task
        self.id = job_id
        self.started = 0.0
        self.cluster: distributed.Future[Any] | None = None
        self.ended = False
        self.reply: tuple[int, Any] | None = None  # gathered with others


class DaskWorker(Worker):
    """A slot of in-flight work: the job it holds (under the backend's lock)."""

    __slots__ = ("job",)

    def __init__(self, worker_id: int) -> None:
        super().__init__(worker_id)
        self.job: _Job | None = None


# What the driver is asked to do.
_RUN: Final = 0  # run a task on a slot (None: a new slot takes queued work or parks)
_DONE: Final = 1  # a cluster future finished
_SEND: Final = 2  # a task waited for the rate limit: submit it now
_STOP: Final = 3  # end a job now with an error, cancelling its cluster task
_RELEASE: Final = 4  # a parked slot leaves


def _name(fn: Callable[..., Any]) -> str:
    return str(getattr(fn, "__name__", None) or type(fn).__name__)


class DaskBackend(Backend):
    """Workers are slots of tasks in flight on a Dask cluster, all driven by one
    thread (see the module docstring)."""

    broken_message = "the Dask cluster cannot run this pool's work anymore"

    def __init__(self, client: distributed.Client, *,
                 initializer: Callable[..., Any] | None, initargs: tuple[Any, ...],
                 resources: Mapping[str, float] | None) -> None:
        self.client = client
        self.token = uuid.uuid4().hex
        self.init = None if initializer is None else (initializer, initargs)
        self.resources = resources
        self._ids = itertools.count()
        # Guards the driver's start and end, the slots' count and each slot's job.
        self._lock = threading.Lock()
        self._inbox: SimpleQueue[tuple[Any, ...]] = SimpleQueue()
        self._driver: threading.Thread | None = None
        self._live = 0

    def new_worker(self, worker_id: int) -> Worker:
        return DaskWorker(worker_id)

    # -- the contract ------------------------------------------------------------------

    def spawn(self, worker: Worker) -> None:
        task, worker.first = worker.first, None
        with self._lock:
            self._live += 1
            driver = self._driver
            if driver is None:
                driver = self._driver = threading.Thread(
                    target=self._drive, name=f"{self.engine.name}_driver", daemon=True)
                driver.start()
            # engine.left() is called from the driver: join() then joins it, the last
            # slot's leave being the driver's last act.
            worker.thread = driver
        self._inbox.put((_RUN, worker, task))

    def resume(self, worker: Worker, task: Task) -> None:
        self._inbox.put((_RUN, worker, task))

    def release(self, worker: Worker) -> None:
        self._inbox.put((_RELEASE, worker))

    def interrupt(self, worker: Worker, task: Task) -> None:
        self._stop(worker, task, Cancelled("task was cancelled"))

    def give_up(self, worker: Worker, task: Task, error: BaseException) -> None:
        self._stop(worker, task, error)

    def close(self) -> None:
        """Nothing to let go of: a slot holds no resource."""

    def after_fork_in_child(self) -> None:
        self._lock = threading.Lock()
        self._inbox = SimpleQueue()
        self._driver = None
        self._live = 0

    def _stop(self, worker: Worker, task: Task, error: BaseException) -> None:
        assert isinstance(worker, DaskWorker)
        with self._lock:
            job = worker.job
            if job is None or job.task is not task or job.ended:
                return
            job.ended = True
        self._inbox.put((_STOP, worker, job, error))

    def _done(self, worker: DaskWorker, job: _Job, _: distributed.Future[Any]) -> None:
        # Dask's callback thread: hand over, never block it.
        self._inbox.put((_DONE, worker, job))

    # -- the driver thread -------------------------------------------------------------

    def _drive(self) -> None:
        inbox = self._inbox
        while True:
            batch = [inbox.get()]
            try:
                while True:
                    batch.append(inbox.get_nowait())
            except Empty:
                pass
            self._gather(batch)
            for msg in batch:
                self._handle(msg)
            del batch, msg
            with self._lock:
                if self._live == 0 and self.engine.state != OPEN:
                    self._driver = None
                    return

    def _gather(self, batch: list[tuple[Any, ...]]) -> None:
        """Fetch the replies of the futures that finished meanwhile in one round trip
        (each is fetched on its own, by ``_reply``, if this fails)."""
        jobs = [msg[2] for msg in batch if msg[0] == _DONE and not msg[2].ended
                and msg[2].cluster.status == "finished"]
        if len(jobs) < 2:
            return
        try:
            replies = self.client.gather([job.cluster for job in jobs])
        except Exception:
            return
        for job, reply in zip(jobs, replies, strict=True):
            job.reply = reply

    def _handle(self, msg: tuple[Any, ...]) -> None:
        op, worker = msg[0], msg[1]
        if op == _RUN:
            task = msg[2]
            self._run(worker, self.engine.next_task(worker) if task is None else task)
        elif op == _DONE:
            job = msg[2]
            with self._lock:
                if job.ended:
                    return
                job.ended = True
            self._finish(worker, job, *self._reply(job))
        elif op == _SEND:
            job = msg[2]
            if job.ended:
                return
            if self.engine.stop.is_set():
                with self._lock:
                    job.ended = True
                self._finish(worker, job, TASK_FAILED,
                             Cancelled("cancelled by shutdown while waiting for the rate limit"))
            else:
                self._submit(worker, job)
        elif op == _STOP:
            job, error = msg[2], msg[3]
            self._cancel(job)
            self._finish(worker, job, TASK_FAILED, error)
        else:
            self._leave(worker)

    def _reply(self, job: _Job) -> tuple[int, Any]:
        reply, job.reply = job.reply, None
        if reply is not None:
            return reply
        cluster = job.cluster
        assert cluster is not None
        try:
            kind, value = cluster.result()
        except distributed.KilledWorker as exc:
            crashed = WorkerCrashed(f"the Dask workers running the task died: {exc}")
            crashed.__cause__ = exc
            return TASK_FAILED, crashed
        except BaseException as exc:  # the cluster's error: lost, cancelled, ...
            return TASK_FAILED, exc
        return kind, value

    def _cancel(self, job: _Job) -> None:
        """Cancel *job*'s cluster task, and its context where it runs."""
        cluster = job.cluster
        if cluster is None:
            return
        try:
            cluster.cancel()
            self.client.run(cancel_remote, self.token, job.id, on_error="ignore")
        except Exception:  # the client is closing: nothing runs there any more
            pass

    def _finish(self, worker: DaskWorker, job: _Job, kind: int, value: Any) -> None:
        """*job* ended (``job.ended`` set by the caller): report it, run what is next."""
        with self._lock:
            worker.job = None
        job.cluster = None
        self._run(worker, self.engine.end(worker, job.task, kind, value, job.started))

    def _run(self, worker: DaskWorker, task: Task | None) -> None:
        """Start *task* on *worker*, or what the engine gives next."""
        engine = self.engine
        while task is not None:
            job = _Job(task, next(self._ids))
            with self._lock:
                worker.job = job  # before begin(): its deadline may pass at once
            job.started = time.perf_counter()
            outcome = engine.begin(worker, task)
            if outcome is None:
                bucket = engine.bucket
                if bucket is not None:
                    wait = bucket.reserve()
                    if wait > 0.0:
                        engine.timer().call_later(
                            wait, partial(self._inbox.put, (_SEND, worker, job)))
                        return
                self._submit(worker, job)
                return
            with self._lock:
                job.ended = True
                worker.job = None
            task = engine.end(worker, task, *outcome, job.started)
        if worker.leaving:
            self._leave(worker)

    def _submit(self, worker: DaskWorker, job: _Job) -> None:
        task = job.task
        fn, args, kwargs, items = task.fn, task.args, task.kwargs, task.items
        single = items is not None and task.retry is not None and len(items) == 1
        if single:
            # One item under a retry policy runs as a call, so that the engine's retry
            # sees its error.
            assert items is not None
            args, kwargs, items = items[0] if task.star else (items[0],), {}, None
        resources, where = self.resources, None
        if isinstance(fn, Placed):
            resources = fn.resources if fn.resources is not None else resources
            where = fn.workers
            fn = fn.fn
        call = Call(self.token, job.id, fn, args, kwargs, items, task.star, single,
                    task.attempt, task.timeout, worker.slot.worker_id, self.init)
        try:
            cluster = self.client.submit(
                run_remote, dumps(call), key=f"{_name(fn)}-{uuid.uuid4().hex}", pure=False,
                priority=task.priority, resources=resources, workers=where)
        except BaseException as exc:  # the call cannot be pickled, the client is closed
            with self._lock:
                if job.ended:
                    return
                job.ended = True
            self._finish(worker, job, TASK_FAILED, exc)
            return
        job.cluster = cluster
        cluster.add_done_callback(partial(self._done, worker, job))

    def _leave(self, worker: DaskWorker) -> None:
        with self._lock:
            self._live -= 1
        self.engine.left(worker)
