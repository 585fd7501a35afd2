"""Running work in worker processes: the process backend.

Owns ``ProcessBackend`` (the ``Backend`` contract of ``_engine.contract`` for child
processes): the children's life (start, fork, reap, kill), the reader thread, and
turning replies and deaths into the engine's step. What the caller pickles, and the
errors that say what could not be sent, are ``_pickling``'s; what crosses the pipe is
``_child``'s. May import ``_core``, ``_engine``, ``_child`` and ``_pickling``.

::

    caller ── pickle (fn, args) at submit: errors surface here ──▶ Engine queue
                                                                       │
        resume / spawn / release: a command, and a byte on the wake-up pipe
                                                                       ▼
    reader thread (one per pool) ── waits on every child's pipe and sentinel and on
        │                           the wake-up pipe at once (one selector)
        │ send_bytes(task)                      ▲ recv_bytes(reply)
        ▼                                       │   EOF or sentinel = the child died
    child process: _child.main ── run ── reply ─┘

A worker is a child process with its bookkeeping; no thread is its own. The reader
reacts to a reply by settling the task through the engine's step (``Engine.end``)
and sending the worker's next task at once; to a child that dies (signal,
``os._exit``, OOM kill) by failing only the task it ran, with ``WorkerCrashed`` (a
fresh child is started for the worker's next task); a SIGKILL is told apart as the
OOM killer's when our cgroup's ``oom_kill`` count rose since the last. A deadline kills
the child (terminate, then kill after a grace), and the reader turns that death into
``TaskTimeout``. So do the hard stop of a shutdown (``abandon_running``) and a
cancelled pipeline stage (``cancel_all``), into ``Cancelled``;
``shutdown(cancel_futures=True)`` lets running tasks finish. The reader reads every
child's pipe and reaps every child (other threads kill a child, under the backend's
lock). A task for a parked worker whose child is ready is sent from the submitting
thread (a round trip about 4 us shorter than waking the reader), under the worker's
``sending`` lock, which the reader takes to reap that child: a child that died idle is
either reaped first (and the reader starts a fresh one for the task) or seen dying with
the task, which then fails as a crash.

What crosses the pipe, and how it is pickled (by reference, as the stdlib, with
cloudpickle only for what must travel by value), is ``_child``'s. Whatever cannot be
pickled or unpickled on either side fails its own task (or its own item of a map
chunk) with the stdlib's exception type, and the pool goes on:

- pickling the call, in the caller: raised by ``submit``/``map`` (the error's own
  type, e.g. ``TypeError`` for an open file, its message naming the culprit);
- unpickling it, in the child: ``WorkerCrashed`` (a ``BrokenProcessPool``, as the
  stdlib's), caused by the child's error;
- pickling the result, in the child: the error itself (``PicklingError``, ...);
- unpickling the result, here: ``WorkerCrashed``, caused by the error.

Workers start at the first task, not with the pool. While this process has a single
thread then, the first workers are forked at once (what makes the stdlib's pool start
fast); later ones come from the pool's context (forkserver by default).

A *spare* is a child started ahead of the worker that takes it: one of those forked
at the first task that no worker took yet, or an Autoscale pool's. While such a pool is
below its ``max`` and a worker joins it for a waiting task, one spare is started on a
thread of its own (``_keep_spare``: neither the caller nor the reader waits for a
process start), so that the next worker takes a ready child; the worker tells it its
id. A spare runs no task and is no worker (``statistics().workers`` does not count
it). A worker that leaves an open pool (an idle shrink, a resize) lets the spares go,
and one being started is stopped as it comes; ``close`` stops them, and waits for the
one being started.
"""

from __future__ import annotations

import contextlib
import importlib
import multiprocessing
import os
import pickle
import selectors
import signal
import threading
import time
from collections.abc import Callable
from concurrent.futures import Future
from functools import partial
from multiprocessing.context import BaseContext
from pathlib import Path
from queue import SimpleQueue
from typing import Any, cast

from .._core.chunk import Chunk
from .._core.exceptions import Cancelled, TaskTimeout
from .._core.forking import can_fork_safely
from .._core.memory import oom_kill_count
from .._core.process_errors import WorkerCrashed
from .._engine.contract import TASK_FAILED, TASK_OK, Backend, Task, Worker
from .._engine.engine import LOGGER, OPEN
from . import _child
from ._pickling import (
    bad_call,
    dumps_call,
    dumps_items,
    fn_name,
    raise_send_error,
    unpicklable,
)

__all__ = ["ProcessBackend", "default_context"]

KILL_GRACE = 0.5  # seconds between terminate and kill
_ROOT = Path("/")  # where /proc and /sys/fs/cgroup are read from

# How a call failed as a whole, beyond the child's own kinds (ERR, BADARGS).
_DIED = -1  # the child died (or could not start): see _death_error
_BADFN = -2  # the child could not unpickle a map's function: every item fails
_NOSTART = -3  # no fresh child could be started for the rest: every item left fails
_START_KILLS = 3  # a worker's first children killed as they start, before the pool is broken

# Ready the by-value pickler (and import cloudpickle) with the backend, not inside the
# first submit of a lambda; so is what the first fork needs (as the stdlib's pool
# imports its own machinery with its module).
_child.prepare_by_value()
importlib.import_module("multiprocessing.popen_fork")


def default_context() -> BaseContext:
    """forkserver where it exists (no fork of a threaded parent), else spawn."""
    methods = multiprocessing.get_all_start_methods()
    if "forkserver" in methods:
        ctx = multiprocessing.get_context("forkserver")
        ctx.set_forkserver_preload(["workpool._backends._child"])
        return ctx
    return multiprocessing.get_context("spawn")


class ProcessWorker(Worker):
    """A worker: its child process, driven by the pool's reader thread."""

    __slots__ = ("conn", "job", "kill_reason", "pending", "preloaded", "process", "ready",
                 "sending", "start_kills", "started_once")

    def __init__(self, worker_id: int) -> None:
        super().__init__(worker_id)
        self.process: Any = None
        self.conn: Any = None
        # Held to start and send a task from outside the reader, and by the reader to
        # reap the child: a send never races a reap (nor writes to a descriptor
        # closed and reused meanwhile).
        self.sending = threading.Lock()
        self.ready = False  # the child said it is ready (its initializer ran)
        self.started_once = False  # a child of this worker was ready once
        self.pending: Task | None = None  # the first task, while the first child starts
        # Its first task was sent before its first child was ready (_preload).
        self.preloaded = False
        self.job: _Job | None = None  # the task in progress (under the backend's lock)
        self.kill_reason: str | None = None
        self.start_kills = 0  # its first children killed by a signal before ready


class _Job:
    """A task in progress on a worker: what is sent, and a chunk's results so far
    (``start``: the items before it have ended; ``single``: the rest run one by one,
    after the worker died in the chunk; ``resend``: waiting for the values of a
    chunk resent one by one)."""

    __slots__ = ("errors", "fn_bytes", "payload", "resend", "seconds", "single", "start",
                 "started", "task", "values")

    def __init__(self, task: Task, started: float) -> None:
        self.task = task
        self.started = started
        self.fn_bytes: bytes | None = None if task.run is None else task.run.prepared
        self.payload: bytes = task.payload
        count = 0 if task.items is None else len(task.items)
        self.values: list[Any] = [None] * count
        self.errors: dict[int, BaseException] = {}
        self.seconds = 0.0
        self.start = 0
        self.single = False
        self.resend: tuple[int, BaseException, bool, bool] | None = None


# What the reader is asked to do (commands, from any thread).
_SPAWN = 0  # start a worker: its first child, then its first task
_RUN = 1  # a parked worker runs a task
_SEND = 2  # a task waited for the rate limit: send it now
_RELEASE = 3  # a parked worker leaves


class ProcessBackend(Backend):
    """Workers are child processes, all driven by one reader thread."""

    broken_message = "A child process terminated abruptly, the process pool is not usable anymore"

    def __init__(self, *, initializer: Callable[..., Any] | None, initargs: tuple[Any, ...],
                 mp_context: BaseContext | None, max_tasks: int | None,
                 max_memory: int | None, max_crashes: int) -> None:
        self.fork_first = mp_context is None
        self.mp_context = mp_context  # None: default_context(), resolved when first needed
        self.max_tasks = max_tasks
        self.max_memory = max_memory
        self.max_crashes = max_crashes
        self.init_bytes: bytes | None = None
        # initargs go to each worker as the stdlib sends them, with the process's own
        # arguments: multiprocessing lets a Queue or a Lock travel there (inherited by
        # a fork, or pickled while spawning), which no pickling of ours could.
        self.initargs = initargs
        if initializer is not None:
            try:
                self.init_bytes = _child.dumps(initializer)
            except Exception as exc:
                raise_send_error(exc, [("the initializer", initializer)], "")
        # Children started ahead of the workers that take them: those forked with the
        # first worker, and an Autoscale pool's spare (_keep_spare).
        self._spares: list[tuple[Any, Any]] = []
        self._unstarted = True  # no worker yet: the first one forks them (_first_spawn)
        # The thread that starts a spare (the last one), whether one runs, and the
        # generation a spare must be of to be kept: a shrink moves it on.
        self._starter: threading.Thread | None = None
        self._starting = False
        self._generation = 0
        self._closed = False
        # Guards the reader's start and end, the commands' wake-up, and the kill
        # decisions (against a job's end).
        self._lock = threading.Lock()
        self._commands: SimpleQueue[tuple[int, ProcessWorker, Task | None]] = SimpleQueue()
        self._reader: threading.Thread | None = None
        self._selector: selectors.BaseSelector | None = None
        self._wake_fds: tuple[int, int] | None = None
        self._signalled = False
        # The reader's own: the workers it drives, the children reaped in this round.
        self._workers: set[ProcessWorker] = set()
        self._touched: set[ProcessWorker] = set()
        self._oom_kills = oom_kill_count(_ROOT)  # as last seen: a rise is the OOM killer
        # Counted by the reader alone, for the pool's statistics: tasks failed for good
        # by a worker's death, and children started in place of one that had been ready.
        self.crashed = 0
        self.restarts = 0

    # -- in the caller --------------------------------------------------------------------

    def prepare_call(self, fn: Callable[..., Any], args: tuple[Any, ...],
                     kwargs: dict[str, Any]) -> bytes:
        return dumps_call(fn, args, kwargs)

    def prepare_run(self, fn: Callable[..., Any]) -> bytes:
        # Pickled in the caller's thread, so that what cannot be pickled fails in the
        # caller's map() call or loop, naming the culprit; once per run.
        try:
            return _child.dumps(fn)
        except Exception as exc:
            raise_send_error(exc, [("the function", fn)], f" of {fn_name(fn)}")

    def prepare_chunk(self, fn: Callable[..., Any], prepared: Any, star: bool,
                      items: list[Any]) -> bytes:
        try:
            return dumps_items(star, items)
        except Exception as exc:
            raise_send_error(exc, [("an item", item) for item in items],
                              f" of the map of {fn_name(fn)}")

    # -- the contract's worker half: commands to the reader ------------------------------

    def new_worker(self, worker_id: int) -> Worker:
        return ProcessWorker(worker_id)

    def spawn(self, worker: Worker) -> None:
        assert isinstance(worker, ProcessWorker)
        if self._unstarted:
            self._first_spawn(worker)
        self._post(_SPAWN, worker, None)

    def resume(self, worker: Worker, task: Task) -> None:
        """Send *task* to the parked worker's child from this thread when the child is
        ready (a round trip costs about 4 us less than waking the reader to send it:
        ``processes`` round trips, 26 against 30 us); else the reader starts a child
        (or waits out the rate limit) first."""
        assert isinstance(worker, ProcessWorker)
        engine = self.engine
        while engine.bucket is None:
            started = time.perf_counter()
            # Begun and sent under the lock the reader takes to reap a child: a child
            # that died idle is either reaped first (then the reader starts one) or
            # seen dying with this task (which then fails, as a crash).
            with worker.sending:
                if worker.process is None or not worker.ready:
                    break
                outcome = engine.begin(worker, task)
                if outcome is None:
                    job = _Job(task, started)
                    with self._lock:
                        worker.job = job
                        worker.kill_reason = None
                    # A child that died meanwhile shows as EOF to the reader.
                    with contextlib.suppress(OSError):
                        worker.conn.send_bytes(self._message(worker, job))
                    return
            nxt = engine.end(worker, task, *outcome, started)
            if nxt is None:
                if worker.leaving:
                    self._post(_RELEASE, worker, None)
                return
            task = nxt
        self._post(_RUN, worker, task)

    def release(self, worker: Worker) -> None:
        assert isinstance(worker, ProcessWorker)
        self._post(_RELEASE, worker, None)

    def interrupt(self, worker: Worker, task: Task) -> None:
        """Stop the task *worker* runs: a process cannot be asked, so its child is
        killed and the task fails with ``Cancelled``."""
        assert isinstance(worker, ProcessWorker)
        self._kill(worker, "cancel", task)

    def give_up(self, worker: Worker, task: Task, error: BaseException) -> None:
        assert isinstance(worker, ProcessWorker)
        self._kill(worker, "timeout" if isinstance(error, TaskTimeout) else "cancel", task)

    def _post(self, op: int, worker: ProcessWorker, task: Task | None) -> None:
        """Ask the reader to do *op*, starting it if none runs."""
        with self._lock:
            self._commands.put((op, worker, task))
            if self._reader is None:
                self._start_reader()
            elif not self._signalled:
                self._signalled = True
                assert self._wake_fds is not None
                with contextlib.suppress(BlockingIOError):
                    os.write(self._wake_fds[1], b"\0")
            if op == _SPAWN:
                # The reader drives it (and ends only once no worker is left): a
                # shutdown called on the reader (by a future's callback) does not wait
                # for it (Engine.join). Set before the reader can read the command.
                worker.thread = self._reader

    def _start_reader(self) -> None:
        """Under the lock: a fresh reader thread, with its selector and wake-up pipe."""
        read_fd, write_fd = os.pipe()
        os.set_blocking(read_fd, False)
        os.set_blocking(write_fd, False)
        self._wake_fds = (read_fd, write_fd)
        self._selector = selectors.DefaultSelector()
        self._selector.register(read_fd, selectors.EVENT_READ, None)
        self._signalled = True  # it runs the commands first: no wake-up needed
        # A daemon, as the stdlib's executor manager thread; the pools' exit hook
        # joins it (it ends once every worker left, after shutdown).
        self._reader = threading.Thread(target=self._read, daemon=True,
                                        name=f"{self.engine.name}_reader")
        self._reader.start()

    # -- starting: at the first task ------------------------------------------------------

    def _first_spawn(self, worker: ProcessWorker) -> None:
        with self._lock:
            unstarted, self._unstarted = self._unstarted, False
        if unstarted and self.fork_first and can_fork_safely():
            # A fork that fails (EAGAIN, say) leaves its worker to start as later ones do.
            with contextlib.suppress(OSError):
                self._prefork(worker)

    def _prefork(self, first: ProcessWorker) -> None:
        """Fork every worker now, before the reader thread starts, while this process
        has a single thread.

        Forking is what makes the stdlib's pool start fast, and it is safe while no
        other thread can hold a lock; workers started later (replacements) come from
        the forkserver instead, since by then the reader runs. The *first* worker's
        child gets its first task at once (``_preload``): it runs while the others
        fork and the reader starts.
        """
        ctx = multiprocessing.get_context("fork")
        for worker_id in range(self.engine.eager):
            parent_conn, child_conn = ctx.Pipe()
            process = ctx.Process(
                target=_child.main, name=f"{self.engine.name}_{worker_id}", daemon=False,
                args=(child_conn, worker_id, self.init_bytes, self.initargs, self.max_tasks,
                      self.max_memory))
            process.start()
            child_conn.close()
            if worker_id == 0 and self._preload(first, process, parent_conn):
                continue
            self._spares.append((process, parent_conn))

    def _preload(self, worker: ProcessWorker, process: Any, conn: Any) -> bool:
        """Give *worker* the child just forked, and send it the worker's first task
        before the child says it is ready (it reads the task once it is): the task
        runs while the caller forks the other workers and starts the reader, which
        adopts the child (``_SPAWN``) and reads the result. Only for a plain first
        task (no initializer, deadline or rate limit): False, the child stays a
        spare, otherwise."""
        task = worker.first
        engine = self.engine
        if (task is None or self.init_bytes is not None or task.timeout is not None
                or engine.bucket is not None):
            return False
        started = time.perf_counter()
        if engine.begin(worker, task) is not None:  # cancelled meanwhile: the usual way
            return False
        job = _Job(task, started)
        with self._lock:
            worker.process, worker.conn = process, conn
            worker.job = job
        worker.first = None
        worker.preloaded = True
        with contextlib.suppress(OSError):  # a child that died shows as EOF to the reader
            conn.send_bytes(self._message(worker, job))
        return True

    def close(self) -> None:
        with self._lock:  # spares no worker took: intake is over, let them go
            self._closed = True
            spares, self._spares = self._spares, []
            starter = self._starter
            # A reader left with no worker (an Autoscale pool at min=0) waits for
            # nothing: woken, it sees intake is over and ends.
            if self._reader is not None and not self._signalled and self._wake_fds:
                self._signalled = True
                with contextlib.suppress(BlockingIOError):
                    os.write(self._wake_fds[1], b"\0")
        if starter is not None:
            starter.join()  # it stops the spare it started: the pool is closed
        for spare in spares:
            _stop(*spare)

    def after_fork_in_child(self) -> None:
        # The workers are the parent's: multiprocessing must not terminate them (as
        # daemons, or join them) when this child exits, nor may anything here stop them.
        from multiprocessing import process as mp_process

        children = mp_process._children  # type: ignore[attr-defined]
        for worker in self._workers:
            if worker.process is not None:
                children.discard(worker.process)
        for process, _ in self._spares:
            children.discard(process)
        self._spares = []
        self._starter = None
        self._starting = False
        self._lock = threading.Lock()
        self._commands = SimpleQueue()
        self._reader = self._selector = self._wake_fds = None
        self._workers = set()
        self._touched = set()

    # -- the reader ---------------------------------------------------------------------

    def _read(self) -> None:
        """The reader's loop: wait on every child's pipe and sentinel and on the
        commands' wake-up at once; act on what is ready; leave once no worker is left
        and intake is over."""
        selector = self._selector
        assert selector is not None
        self._run_commands()  # the one that started it, at least
        while True:
            touched = self._touched
            for key, _ in selector.select():
                worker = key.data
                if worker is None:
                    self._run_commands()
                elif worker not in touched and worker.process is not None:
                    if key.fileobj is worker.conn:
                        self._on_readable(worker)
                    else:
                        self._on_exit(worker)
            touched.clear()
            if not self._workers and self._done():
                return

    def _done(self) -> bool:
        """No worker left: end the reader if intake is over and no command waits."""
        with self._lock:
            if not self._commands.empty() or self.engine.state == OPEN:
                return False
            selector, self._selector = self._selector, None
            fds, self._wake_fds = self._wake_fds, None
            self._reader = None
        assert selector is not None
        assert fds is not None
        selector.close()
        os.close(fds[0])
        os.close(fds[1])
        return True

    def _run_commands(self) -> None:
        with self._lock:
            self._signalled = False
            assert self._wake_fds is not None
            with contextlib.suppress(BlockingIOError):
                os.read(self._wake_fds[0], 4096)
        leaving: list[ProcessWorker] = []
        while not self._commands.empty():
            op, worker, task = self._commands.get()
            if op == _RUN:
                self._start_task(worker, task)
            elif op == _SEND:
                self._send_after_wait(worker, task)
            elif op == _SPAWN:
                self._workers.add(worker)
                worker.pending, worker.first = worker.first, None
                if worker.preloaded:  # its child runs its first task already
                    assert self._selector is not None
                    self._selector.register(worker.conn, selectors.EVENT_READ, worker)
                    self._selector.register(worker.process.sentinel, selectors.EVENT_READ,
                                            worker)
                else:
                    self._start_child(worker)
                if worker.pending is not None or worker.job is not None:
                    self._keep_spare(worker)  # it joined for a waiting task: more may follow
            else:
                leaving.append(worker)
        # Every leaving child is told to stop before any is waited for.
        for worker in leaving:
            if worker.conn is not None:
                with contextlib.suppress(OSError):
                    worker.conn.send_bytes(_STOP)
        for worker in leaving:
            self._leave(worker)

    def _on_readable(self, worker: ProcessWorker) -> None:
        try:
            data = worker.conn.recv_bytes()
        except (EOFError, OSError):
            self._on_death(worker)
            return
        self._on_message(worker, data)

    def _on_exit(self, worker: ProcessWorker) -> None:
        """The child's sentinel is ready: read what it sent before it exited, then
        report its death."""
        process = worker.process
        with contextlib.suppress(EOFError, OSError):
            while worker.process is process and worker.conn.poll():
                self._on_message(worker, worker.conn.recv_bytes())
        if worker.process is process and worker not in self._touched:
            self._on_death(worker)

    # -- the child's life ---------------------------------------------------------------

    def _start_child(self, worker: ProcessWorker) -> None:
        """Start (or adopt a forked) child for *worker*; it is ready when its first
        message says so (``_on_ready``)."""
        try:
            self._try_start_child(worker)
        except Exception as exc:  # e.g. spawn refusing a main module without its guard
            LOGGER.critical("A worker process could not be started:", exc_info=True)
            self._start_failed(worker, WorkerCrashed(
                f"the worker process could not be started ({type(exc).__name__}: {exc})"),
                f"A worker process could not be started ({type(exc).__name__}: {exc}), "
                "the process pool is not usable anymore")

    def _try_start_child(self, worker: ProcessWorker) -> None:
        spare = self._take_spare()
        if spare is None:
            process, parent_conn = self._new_child(worker.slot.worker_id)
        else:  # started ahead, under some id: the worker's from now on
            process, parent_conn = spare
            with contextlib.suppress(OSError):  # a child that died shows as EOF
                parent_conn.send_bytes(pickle.dumps((_child.SLOT, worker.slot.worker_id)))
        with self._lock:
            worker.process, worker.conn = process, parent_conn
            if worker.started_once:  # in place of a child that died, was killed or retired
                self.restarts += 1
        worker.ready = False
        selector = self._selector
        assert selector is not None
        selector.register(parent_conn, selectors.EVENT_READ, worker)
        selector.register(process.sentinel, selectors.EVENT_READ, worker)

    def _new_child(self, worker_id: int) -> tuple[Any, Any]:
        """Start a child from the pool's context (forkserver by default): the process
        and the parent's end of its pipe."""
        ctx = self.mp_context
        if ctx is None:
            ctx = self.mp_context = default_context()
        parent_conn, child_conn = ctx.Pipe()
        process = ctx.Process(  # type: ignore[attr-defined]
            target=_child.main, name=f"{self.engine.name}_{worker_id}", daemon=False,
            args=(child_conn, worker_id, self.init_bytes, self.initargs, self.max_tasks,
                  self.max_memory))
        try:
            process.start()
        except BaseException:
            parent_conn.close()
            raise
        finally:
            child_conn.close()
        return process, parent_conn

    def _take_spare(self) -> tuple[Any, Any] | None:
        """A spare child for a worker to take, if one is alive (one that died idle,
        killed from outside, is reaped)."""
        while True:
            with self._lock:
                if not self._spares:
                    return None
                spare = self._spares.pop()
            if spare[0].is_alive():
                return spare
            _stop(*spare)

    # -- an Autoscale pool's spare --------------------------------------------------------

    def _keep_spare(self, worker: ProcessWorker) -> None:
        """The reader's, as a worker joins for a waiting task: while an Autoscale pool
        may grow further, have one spare child started, on a thread of its own (no
        caller and not the reader waits for a process start), for the next worker to
        take at once. One spare at most: none while one is held or starting."""
        if not self.engine.may_grow():
            return
        with self._lock:
            if self._closed or self._spares or self._starting:
                return
            self._starting = True
            # Its id (the worker that takes it sends its own): the next worker's.
            self._starter = threading.Thread(
                target=self._start_spare, args=(worker.slot.worker_id + 1, self._generation),
                daemon=True, name=f"{self.engine.name}_spare")
            self._starter.start()

    def _start_spare(self, worker_id: int, generation: int) -> None:
        """The starter thread: start a spare child; keep it unless the pool shrank
        (``_drop_spares``), closed or reached its ``max`` meanwhile. A start that
        fails is left to the worker that would have taken it, whose own start then
        fails and says why."""
        spare = None
        try:
            spare = self._new_child(worker_id)
        except Exception:
            LOGGER.debug("A spare worker process could not be started:", exc_info=True)
        with self._lock:
            if (spare is not None and generation == self._generation and not self._closed
                    and self.engine.may_grow()):
                self._spares.append(spare)
                spare = None
        if spare is not None:
            _stop(*spare)
        with self._lock:
            self._starting = False

    def _drop_spares(self) -> None:
        """A worker left an open pool (it shrank): the spares go too, and so does one
        being started now (its generation is over)."""
        with self._lock:
            self._generation += 1
            spares, self._spares = self._spares, []
        for spare in spares:
            _stop(*spare)

    def _on_ready(self, worker: ProcessWorker, data: bytes) -> None:
        """The first message of a child: ready, or its initializer failed."""
        error: BaseException | None
        try:
            status, error, _ = pickle.loads(data)
        except BaseException as exc:  # the initializer's error did not unpickle
            status, error = _child.ERR, unpicklable("initializer's exception", exc)
        if status != _child.OK:
            LOGGER.critical("Exception in initializer:", exc_info=error)
            code = self._reap(worker)
            self._start_failed(worker, WorkerCrashed(self._death_description(code)))
            return
        worker.ready = True
        worker.started_once = True
        job = worker.job
        if job is not None:
            if worker.preloaded:  # the child has it already
                worker.preloaded = False
            else:
                self._send(worker, job)
            return
        task, worker.pending = worker.pending, None
        if task is None:
            task = self.engine.next_task(worker)
        self._start_task(worker, task)

    def _start_failed(self, worker: ProcessWorker, error: BaseException,
                      reason: str | None = None) -> None:
        """A child of *worker* could not start, or its initializer failed. The first
        one: the pool is broken (the stdlib's state). A replacement: the task it was
        started for fails, as a crash."""
        if not worker.started_once:
            task, worker.pending = worker.pending, None
            if worker.preloaded:  # its first task was sent already: it fails as queued
                worker.preloaded = False
                with self._lock:
                    job, worker.job = worker.job, None
                assert job is not None
                task = job.task
            self.engine.failed_to_start(worker, task, reason)
            self._leave(worker)
            return
        job = worker.job
        if job is not None:
            job.task.crashes = getattr(job.task, "crashes", 0) + 1
            self._failed(worker, job, _NOSTART, self._crashed(job.task, str(error)))

    def _reap(self, worker: ProcessWorker, kill: bool = False) -> int | None:
        """Wait for the child to exit (killing it if it lingers); return its exit code."""
        process, conn = worker.process, worker.conn
        if process is None:
            return None
        self._touched.add(worker)
        selector = self._selector
        if selector is not None:
            selector.unregister(conn)
            selector.unregister(process.sentinel)
        code = _join(process, 0 if kill else 2.0)
        with worker.sending:
            with self._lock:
                worker.process = worker.conn = None
            worker.ready = False
            conn.close()
        process.close()
        return code

    def _leave(self, worker: ProcessWorker) -> None:
        """*worker* leaves the pool: its child stops (if it still has one)."""
        if worker.conn is not None:
            with contextlib.suppress(OSError):
                worker.conn.send_bytes(_STOP)
        self._reap(worker)
        self._workers.discard(worker)
        if self.engine.state == OPEN:  # the pool shrinks (close() stops them at the end)
            self._drop_spares()
        self.engine.left(worker)

    def _kill(self, worker: ProcessWorker, reason: str, task: Task) -> None:
        """Kill the child of *worker* from another thread, if it still runs *task*; the
        reader sees it die. Decided under the lock, against the reader's ending the
        job, so a kill never hits the next task."""
        with self._lock:
            job = worker.job
            if job is None or job.task is not task:
                return
            worker.kill_reason = reason
            process = worker.process
        if process is None:
            return
        try:
            process.terminate()
        except (OSError, ValueError):  # already gone, or already closed
            return
        try:
            self.engine.timer().call_later(KILL_GRACE, lambda: _hard_kill(process))
        except RuntimeError:  # the timer closed as the pool finished: no grace then
            _hard_kill(process)

    def _on_death(self, worker: ProcessWorker) -> None:
        """The child died (signal, ``os._exit``, a kill of ours, ...)."""
        if worker.preloaded and worker.kill_reason is not None:
            worker.preloaded = False  # killed in its first task before it said ready
        elif not worker.started_once:  # the first child, before it was ready
            code = self._reap(worker)
            if code is not None and code < 0 and worker.start_kills < _START_KILLS:
                # Killed by a signal as it started (the OOM killer, a kill from
                # outside), not failing by itself: another child starts in its place.
                # A first task sent already (preloaded) never ran: a child reads it
                # once ready. It goes to the new child once that one is.
                worker.start_kills += 1
                worker.preloaded = False
                self._start_child(worker)
                return
            self._start_failed(worker, WorkerCrashed(self._death_description(code)))
            return
        code = self._reap(worker)
        job = worker.job
        if job is None:
            return  # an idle child died: the next task starts a fresh one
        if job.resend is not None:  # the values it was resending died with it
            ran, failure, _, _ = job.resend
            job.resend = None
            self._merge(worker, job, _lost(ran, failure), ran)
            return
        self._failed(worker, job, _DIED, self._death_error(worker, job.task, code))

    def _death_error(self, worker: ProcessWorker, task: Task,
                     code: int | None) -> BaseException:
        """What a task whose child died (exit *code*) fails with."""
        reason = worker.kill_reason
        if reason == "timeout":
            return self.engine.timed_out(task)
        if reason == "cancel":
            return Cancelled("cancelled by shutdown: its worker process was killed")
        task.crashes = getattr(task, "crashes", 0) + 1
        return self._crashed(task, self._death_description(code))

    def _death_description(self, code: int | None) -> str:
        """How a child died, from its exit *code*; for a SIGKILL, whether the OOM
        killer sent it (our cgroup's ``oom_kill`` count rose since the last look)."""
        if code != -signal.SIGKILL:
            return _death_description(code)
        before, self._oom_kills = self._oom_kills, oom_kill_count(_ROOT)
        if before is not None and self._oom_kills is not None and self._oom_kills > before:
            return (f"the worker process running the task was killed by the OOM killer "
                    f"(signal SIGKILL; the oom_kill count of its cgroup rose from {before} "
                    f"to {self._oom_kills})")
        if self._oom_kills is None:
            return ("the worker process running the task was killed by SIGKILL (possibly "
                    "the OOM killer)")
        return _death_description(code)

    def _crashed(self, task: Task, description: str) -> WorkerCrashed:
        if task.crashes >= self.max_crashes:
            task.retry = None  # quarantined: a poison pill never loops forever
            return WorkerCrashed(f"{description}; the task crashed {task.crashes} workers "
                                 f"and is quarantined (max_crashes={self.max_crashes})")
        return WorkerCrashed(description)

    # -- running tasks ------------------------------------------------------------------

    def _start_task(self, worker: ProcessWorker, task: Task | None) -> None:
        """Run *task* on *worker* (the reader's now), or what the engine gives next."""
        engine = self.engine
        while task is not None:
            started = time.perf_counter()
            outcome = engine.begin(worker, task)
            if outcome is None:
                job = _Job(task, started)
                with self._lock:
                    worker.job = job
                    worker.kill_reason = None
                bucket = engine.bucket
                if bucket is not None:
                    wait = bucket.reserve()
                    if wait > 0.0:
                        engine.timer().call_later(
                            wait, partial(self._post, _SEND, worker, task))
                        return
                self._send(worker, job)
                return
            task = engine.end(worker, task, *outcome, started)
        if worker.leaving:
            self._leave(worker)

    def _send_after_wait(self, worker: ProcessWorker, task: Task | None) -> None:
        """The rate limit let *task* start: send it, unless a shutdown came first."""
        job = worker.job
        if job is None or job.task is not task:
            return  # ended meanwhile (its child was killed)
        if self.engine.stop.is_set():
            if job.task.items is not None:  # under a rate limit, map chunks hold one item
                self._end(worker, job, TASK_OK,
                          Chunk([None], {0: Cancelled("cancelled by shutdown")}, 0.0))
            else:
                self._end(worker, job, TASK_FAILED, Cancelled(
                    "cancelled by shutdown while waiting for the rate limit"))
            return
        self._send(worker, job)

    def _send(self, worker: ProcessWorker, job: _Job) -> None:
        """Send the job's next call to the worker's child, starting one if needed."""
        if worker.process is None:
            if worker.kill_reason is not None:  # killed while it had no child
                self._failed(worker, job, _DIED, self._death_error(worker, job.task, None))
                return
            self._start_child(worker)
            return  # sent once the child is ready
        if not worker.ready:
            return
        message = self._message(worker, job)
        # A child that died meanwhile shows as EOF to the reader.
        with contextlib.suppress(OSError):
            worker.conn.send_bytes(message)

    def _message(self, worker: ProcessWorker, job: _Job) -> bytes:
        ctx = worker.slot.ctx
        return pickle.dumps(
            (_child.CALL, job.task.attempt, None if ctx is None else ctx.deadline,
             job.fn_bytes, job.payload), protocol=_child.PROTOCOL)

    def _end(self, worker: ProcessWorker, job: _Job, kind: int, value: Any) -> None:
        """The job ended: the engine counts and settles it, and gives the next task."""
        with self._lock:
            worker.job = None
        task = self.engine.end(worker, job.task, kind, value, job.started)
        if task is not None:
            self._start_task(worker, task)
        elif worker.leaving:
            self._leave(worker)

    def _on_message(self, worker: ProcessWorker, data: bytes) -> None:
        if not worker.ready:
            self._on_ready(worker, data)
            return
        job = worker.job
        if job is None:
            return  # nothing expected (a stray reply after a kill)
        kind, body, ran, retire = pickle.loads(data)
        if kind == _child.PARTS:
            self._on_parts(worker, job, body)
            return
        with self._lock:
            killed = worker.kill_reason is not None
        if job.task.items is None:
            kind, value = self._decode(kind, body)
            if retire or killed:  # the child retires, or a kill raced with the reply
                self._reap(worker, kill=killed)
            self._end(worker, job, TASK_OK if kind == _child.OK else TASK_FAILED, value)
            return
        if kind != _child.CHUNK:
            kind, error = self._decode(kind, body)
            if retire or killed:
                self._reap(worker, kill=killed)
            self._failed(worker, job, kind, error)
            return
        try:
            values, errors, seconds = pickle.loads(body)
        except BaseException as exc:  # even a SystemExit while unpickling
            if ran > 1 and not killed:
                # After several, the child waits for a verdict: it resends them one by
                # one, so that only the items whose value cannot be unpickled fail.
                job.resend = (ran, exc, retire, killed)
                with contextlib.suppress(OSError):
                    worker.conn.send_bytes(_RESEND)
                return
            chunk = _lost(ran, exc)
        else:
            chunk = Chunk(values, errors, seconds)
            if ran > 1 and not killed:
                with contextlib.suppress(OSError):
                    worker.conn.send_bytes(_DROP)
        if retire or killed:
            self._reap(worker, kill=killed)
        self._merge(worker, job, chunk, ran)

    def _on_parts(self, worker: ProcessWorker, job: _Job, parts_seconds: Any) -> None:
        assert job.resend is not None
        ran, _, retire, killed = job.resend
        job.resend = None
        parts, seconds = parts_seconds
        values: list[Any] = [None] * ran
        errors: dict[int, BaseException] = {}
        for i, part in enumerate(parts):
            try:
                value = pickle.loads(part)
            except BaseException as exc:
                errors[i] = unpicklable("result", exc)
                continue
            if isinstance(value, _child.Failed):
                errors[i] = value.error
            else:
                values[i] = value
        if retire or killed:
            self._reap(worker, kill=killed)
        self._merge(worker, job, Chunk(values, errors or None, seconds), ran)

    def _decode(self, kind: int, body: bytes) -> tuple[int, Any]:
        """Unpickle the body of a call's reply (user code may run, and fail, here)."""
        try:
            obj = pickle.loads(body)
        except BaseException as exc:  # even a SystemExit while unpickling
            return _child.ERR, unpicklable("result" if kind == _child.OK else "exception", exc)
        if kind != _child.BADARGS:
            return kind, obj
        error, what = obj
        return (_BADFN if what == "function" else _child.BADARGS), bad_call(what, error)

    # -- a chunk's progress ---------------------------------------------------------------

    def _merge(self, worker: ProcessWorker, job: _Job, chunk: Chunk, ran: int) -> None:
        """*ran* items of the job's chunk ended with *chunk*; go on with the rest."""
        start = job.start
        job.values[start:start + ran] = chunk.values
        if chunk.errors:
            job.errors.update((start + i, e) for i, e in chunk.errors.items())
        job.seconds += chunk.seconds
        job.start = start + ran
        self._next_piece(worker, job)

    def _failed(self, worker: ProcessWorker, job: _Job, kind: int,
                error: BaseException) -> None:
        """The job's last call failed as a whole with *error* (*kind*: the child's
        ERR or BADARGS, _BADFN, _DIED or _NOSTART)."""
        task = job.task
        items = task.items
        crash = isinstance(error, WorkerCrashed)
        if items is None or (len(items) == 1 and task.retry is not None):
            self._end(worker, job, TASK_FAILED, error)  # the engine retries a lone item
            future = cast("Future[Any]", task.future)  # a ProcessPool's task: a stdlib one
            if crash and future.done() and not future.cancelled() and future.exception() is error:
                self.crashed += task.count  # failed for good, not retried
            return
        if job.single and kind != _NOSTART:
            job.errors[job.start] = error
            job.start += 1
            self.crashed += crash
        elif not job.single and len(items) - job.start > 1 and (
                kind == _child.BADARGS
                or (kind == _DIED and not isinstance(error, Cancelled | TaskTimeout))):
            # The chunk's arguments did not unpickle, or its worker died somewhere in it:
            # run the rest one by one on fresh workers, so that only the item at fault
            # fails (the others run again: their results died with the worker).
            job.single = True
        else:
            if crash:
                self.crashed += len(items) - job.start
            job.errors.update((i, error) for i in range(job.start, len(items)))
            job.start = len(items)
        self._next_piece(worker, job)

    def _next_piece(self, worker: ProcessWorker, job: _Job) -> None:
        """Send what is left of the job's chunk (the rest after a worker used up
        max_tasks; one item at a time after a crash), or end the job."""
        task = job.task
        items = task.items
        assert items is not None
        while job.start < len(items):
            start = job.start
            if self.engine.halted:
                stopped = Cancelled("cancelled by shutdown")
                job.errors.update((i, stopped) for i in range(start, len(items)))
                break
            rest = items[start:start + 1] if job.single else items[start:]
            try:
                job.payload = dumps_items(task.star, rest)
            except Exception as exc:  # pickled fine with the others: unlikely
                if not job.single:
                    job.errors.update((i, exc) for i in range(start, len(items)))
                    break
                job.errors[start] = exc
                job.start += 1
                continue
            self._send(worker, job)
            return
        self._end(worker, job, TASK_OK, Chunk(job.values, job.errors or None, job.seconds))


def _lost(ran: int, failure: BaseException) -> Chunk:
    """*ran* values that came back but cannot be unpickled."""
    return Chunk([None] * ran, dict.fromkeys(range(ran), unpicklable("result", failure)), 0.0)


def _death_description(code: int | None) -> str:
    if code is not None and code < 0:
        try:
            how = f"signal {signal.Signals(-code).name}"
        except ValueError:
            how = f"signal {-code}"
    else:
        how = f"exit code {code}"
    return f"the worker process running the task died ({how})"


def _join(process: Any, wait: float = 2.0) -> int | None:
    """Wait for *process* to exit (killing it if it lingers); return its exit code."""
    process.join(wait)
    if process.exitcode is None:
        process.terminate()
        process.join(KILL_GRACE)
    if process.exitcode is None:
        process.kill()
        process.join()
    return process.exitcode  # type: ignore[no-any-return]

_DROP = pickle.dumps((_child.DROP,))
_RESEND = pickle.dumps((_child.RESEND,))
_STOP = pickle.dumps((_child.STOP,))


def _stop(process: Any, conn: Any) -> None:
    """Stop a spare child (it waits for its first task), and release it."""
    with contextlib.suppress(OSError):
        conn.send_bytes(_STOP)
    _join(process)
    conn.close()
    process.close()


def _hard_kill(process: Any) -> None:
    try:
        if process.exitcode is None:
            process.kill()
    except (OSError, ValueError):
        pass


