"""Running work in worker processes.

::

    caller ── pickle (fn, args) at submit: errors surface here ──▶ Engine queue
                                                                       │
    proxy thread (one per worker, in this process) ◀───────────────────┘
        │ send_bytes(task)                      ▲ recv_bytes(reply)
        ▼                                       │   EOF = the child died
    child process: _child.main ── run ── reply ─┘

A worker is a proxy thread paired with one child. The proxy blocks on the pipe, so
a child that dies (signal, ``os._exit``, OOM kill) shows up as EOF in the proxy: only
the task it ran fails, with ``WorkerCrashed``, and the proxy starts a fresh child.
A deadline kills the child the same way (terminate, then kill after a grace), and the
proxy turns that EOF into ``TaskTimeout``.
"""

from __future__ import annotations

import contextlib
import multiprocessing
import pickle
import signal
import threading
from collections.abc import Callable
from concurrent.futures import Future
from multiprocessing.context import BaseContext
from typing import Any

import cloudpickle

from .._chunk import Chunk
from .._core.exceptions import Cancelled, TaskTimeout, WorkerCrashed
from .._core.retry import Retry
from .._engine import FAILED, OK, Engine, Task, Worker
from . import _child

__all__ = ["ProcessEngine", "default_context", "dumps_call"]

KILL_GRACE = 0.5  # seconds between terminate and kill


def default_context() -> BaseContext:
    """forkserver where it exists (no fork of a threaded parent), else spawn."""
    methods = multiprocessing.get_all_start_methods()
    if "forkserver" in methods:
        ctx = multiprocessing.get_context("forkserver")
        ctx.set_forkserver_preload(["workpool._backends._child"])
        return ctx
    return multiprocessing.get_context("spawn")


def dumps_call(fn: Callable[..., Any], args: tuple[Any, ...], kwargs: dict[str, Any]) -> bytes:
    """Pickle a call for a worker process; say what could not be pickled if it fails."""
    try:
        data: bytes = cloudpickle.dumps((fn, args, kwargs), protocol=pickle.HIGHEST_PROTOCOL)
        return data
    except Exception as exc:
        raise pickle.PicklingError(_what_failed(fn, args, kwargs, exc)) from exc


def _what_failed(fn: Callable[..., Any], args: tuple[Any, ...], kwargs: dict[str, Any],
                 exc: Exception) -> str:
    name = getattr(fn, "__qualname__", repr(fn))
    for what, obj in [("the function", fn), *((f"argument {i}", a) for i, a in enumerate(args)),
                      *((f"keyword argument {k!r}", v) for k, v in kwargs.items())]:
        try:
            cloudpickle.dumps(obj)
        except Exception as inner:
            return (f"cannot send {what} of {name} to a worker process: {inner} "
                    f"({type(obj).__name__} objects cannot be pickled)")
    return f"cannot send a call of {name} to a worker process: {exc}"


class ProcessWorker(Worker):
    """A worker: a proxy thread and its child process."""

    __slots__ = ("busy", "conn", "kill_reason", "process")

    def __init__(self, worker_id: int) -> None:
        super().__init__(worker_id)
        self.process: Any = None
        self.conn: Any = None
        self.kill_reason: str | None = None
        self.busy: Task | None = None  # the task the child runs now (under the lock)


class ProcessEngine(Engine):
    """Workers are proxy threads, each driving one child process."""

    broken_message = "A child process terminated abruptly, the process pool is not usable anymore"

    def __init__(self, *, mp_context: BaseContext | None, max_tasks: int | None,
                 max_memory: int | None, max_crashes: int, **options: Any) -> None:
        initializer = options.pop("initializer")
        initargs = options.pop("initargs")
        super().__init__(initializer=None, initargs=(), **options)
        self.mp_context = mp_context or default_context()
        self.max_tasks = max_tasks
        self.max_memory = max_memory
        self.max_crashes = max_crashes
        self.init_bytes = (None if initializer is None
                           else cloudpickle.dumps((initializer, tuple(initargs))))
        self._spares: list[tuple[Any, Any]] = []
        if mp_context is None and _can_fork_safely():
            self._prefork()

    def _prefork(self) -> None:
        """Fork every first worker now, while this process has a single thread.

        Forking is what makes the stdlib's pool start fast, and it is safe while no
        other thread can hold a lock; workers started later (replacements) come from
        the forkserver instead, since by then the proxy threads run.
        """
        ctx = multiprocessing.get_context("fork")
        for worker_id in range(self.target):
            parent_conn, child_conn = ctx.Pipe()
            process = ctx.Process(
                target=_child.main, name=f"{self.name}_{worker_id}", daemon=True,
                args=(child_conn, worker_id, self.init_bytes, self.max_tasks, self.max_memory))
            process.start()
            child_conn.close()
            self._spares.append((process, parent_conn))

    def new_worker(self, worker_id: int) -> Worker:
        return ProcessWorker(worker_id)

    def close_intake(self) -> None:
        super().close_intake()
        with self._lock:  # forked workers no proxy took: intake is over, let them go
            spares, self._spares = self._spares, []
        for process, conn in spares:
            spare = ProcessWorker(-1)
            spare.process, spare.conn = process, conn
            self.stop_worker(spare)

    # -- the child's life ---------------------------------------------------------------

    def start_worker(self, worker: Worker) -> bool:
        assert isinstance(worker, ProcessWorker)
        return self._start_child(worker)

    def _start_child(self, worker: ProcessWorker) -> bool:
        """Start (or adopt a forked) child for *worker*; False if it cannot run."""
        try:
            return self._try_start_child(worker)
        except Exception:  # e.g. spawn refusing a main module without its guard
            from .._engine import LOGGER

            LOGGER.critical("A worker process could not be started:", exc_info=True)
            return False

    def _try_start_child(self, worker: ProcessWorker) -> bool:
        with self._lock:
            spare = self._spares.pop() if self._spares else None
        if spare is not None:
            process, parent_conn = spare
        else:
            ctx = self.mp_context
            parent_conn, child_conn = ctx.Pipe()
            process = ctx.Process(  # type: ignore[attr-defined]
                target=_child.main, name=f"{self.name}_{worker.slot.worker_id}", daemon=True,
                args=(child_conn, worker.slot.worker_id, self.init_bytes,
                      self.max_tasks, self.max_memory))
            process.start()
            child_conn.close()
        worker.process, worker.conn = process, parent_conn
        worker.kill_reason = None
        try:
            status, error, _ = pickle.loads(parent_conn.recv_bytes())
        except (EOFError, OSError):
            status, error = _child.ERR, WorkerCrashed(self._describe_death(worker))
        if status == _child.OK:
            return True
        from .._engine import LOGGER

        LOGGER.critical("Exception in initializer:", exc_info=error)
        self._reap(worker)
        return False

    def stop_worker(self, worker: Worker) -> None:
        assert isinstance(worker, ProcessWorker)
        if worker.process is None:
            return
        with contextlib.suppress(OSError):
            worker.conn.send_bytes(pickle.dumps((_child.STOP,)))
        self._reap(worker)

    def _reap(self, worker: ProcessWorker, kill: bool = False) -> int | None:
        """Wait for the child to exit (killing it if it lingers); return its exit code."""
        process = worker.process
        if process is None:
            return None
        process.join(0 if kill else 2.0)
        if process.exitcode is None:
            process.terminate()
            process.join(KILL_GRACE)
        if process.exitcode is None:
            process.kill()
            process.join()
        code = process.exitcode
        worker.conn.close()
        process.close()
        worker.process = worker.conn = None
        return code  # type: ignore[no-any-return]

    def _kill(self, worker: ProcessWorker, reason: str, task: Task | None = None) -> None:
        """Kill the child of *worker* from another thread, if it still runs *task* (or
        any task); its proxy sees EOF. Decided under the lock, against the proxy's
        marking the end of each task, so a kill never hits the next task."""
        with self._lock:
            busy = worker.busy
            if busy is None or (task is not None and busy is not task):
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
            self._get_timer().call_later(KILL_GRACE, lambda: _hard_kill(process))
        except RuntimeError:  # the timer closed as the pool finished: no grace then
            _hard_kill(process)

    def _describe_death(self, worker: ProcessWorker) -> str:
        code = self._reap(worker)
        if code is not None and code < 0:
            try:
                how = f"signal {signal.Signals(-code).name}"
            except ValueError:
                how = f"signal {-code}"
        else:
            how = f"exit code {code}"
        return f"the worker process running the task died ({how})"

    # -- running tasks ----------------------------------------------------------------------

    def execute(self, worker: Worker, task: Task) -> tuple[int, Any]:
        assert isinstance(worker, ProcessWorker)
        if task.items is not None:
            return self._execute_chunk(worker, task)
        bucket = self.bucket
        if bucket is not None and not bucket.acquire(self.stop):
            return FAILED, Cancelled("cancelled by shutdown while waiting for the rate limit")
        kind, value = self._call(worker, task, None, task.args[0])
        if kind == _DIED:
            return FAILED, self._death_error(worker, task)
        return (OK if kind == _child.OK else FAILED), value

    def _call(self, worker: ProcessWorker, task: Task, fn_bytes: bytes | None,
              payload: bytes) -> tuple[int, Any]:
        """Send one message, wait for its reply; (_DIED, None) if the child died."""
        if worker.process is None and not self._start_child(worker):
            return _DIED, None
        ctx = worker.slot.ctx
        deadline = None if ctx is None else ctx.deadline
        message = pickle.dumps((_child.CALL, task.attempt, deadline, fn_bytes, payload),
                               protocol=pickle.HIGHEST_PROTOCOL)
        with self._lock:
            worker.busy = task
        try:
            worker.conn.send_bytes(message)
            reply = pickle.loads(worker.conn.recv_bytes())
        except (EOFError, OSError):
            with self._lock:
                worker.busy = None
            return _DIED, None
        with self._lock:
            worker.busy = None
            killed = worker.kill_reason is not None
        if reply[-1] or killed:  # the child retires, or a kill raced with the reply
            self._reap(worker, kill=killed)
        if reply[0] == _child.CHUNK:
            return _child.CHUNK, Chunk(reply[1], reply[2], reply[3])
        return reply[0], reply[1]

    def _death_error(self, worker: ProcessWorker, task: Task) -> BaseException:
        reason = worker.kill_reason
        description = self._describe_death(worker)
        if reason == "timeout":
            return self.timed_out(task)
        if reason == "cancel" or self.stop.is_set():
            return Cancelled("cancelled by shutdown: its worker process was killed")
        task.crashes += 1
        if task.crashes >= self.max_crashes:
            return WorkerCrashed(f"{description}; the task crashed {task.crashes} workers "
                                 f"and is quarantined (max_crashes={self.max_crashes})")
        return WorkerCrashed(description)

    def _execute_chunk(self, worker: ProcessWorker, task: Task) -> tuple[int, Any]:
        bucket = self.bucket  # under a rate limit, map chunks hold one item
        if bucket is not None and not bucket.acquire(self.stop):
            return OK, Chunk([None], {0: Cancelled("cancelled by shutdown")}, 0.0)
        fn_bytes, star, payload = task.args
        items = task.items
        assert items is not None
        kind, value = self._call(worker, task, fn_bytes, payload)
        if kind == _child.CHUNK:
            return OK, value
        error = value if kind != _DIED else self._death_error(worker, task)
        if len(items) == 1 and task.retry is not None:
            return FAILED, error  # the engine retries a lone item
        if kind != _DIED or len(items) == 1 or isinstance(error, Cancelled | TaskTimeout):
            return OK, Chunk([None] * len(items), dict.fromkeys(range(len(items)), error), 0.0)
        # A worker died somewhere in the chunk: run its items one by one on fresh workers,
        # so that only the item that kills its worker fails (the others run again: their
        # results died with the worker).
        values: list[Any] = [None] * len(items)
        errors: dict[int, BaseException] = {}
        for i, item in enumerate(items):
            kind, value = self._call(worker, task, fn_bytes, _dumps_items(star, [item]))
            if kind == _child.CHUNK:
                values[i] = value.values[0]
                if value.errors:
                    errors[i] = value.errors[0]
            else:
                errors[i] = value if kind != _DIED else self._death_error(worker, task)
        return OK, Chunk(values, errors or None, 0.0)

    def expire(self, worker: Worker, task: Task) -> None:
        assert isinstance(worker, ProcessWorker)
        self._kill(worker, "timeout", task)

    def cancel_running(self, worker: Worker) -> None:
        assert isinstance(worker, ProcessWorker)
        self._kill(worker, "cancel")

    def abandon_running(self) -> list[Future[Any]]:
        left = []
        for worker in self.live_workers():
            task = worker.task
            if task is not None:
                self.cancel_running(worker)
                left.append(task.future)
        return left

    def _retry_delay(self, task: Task, error: BaseException) -> float | None:
        if isinstance(error, WorkerCrashed) and task.crashes >= self.max_crashes:
            return None  # quarantined: a poison pill never loops forever
        return super()._retry_delay(task, error)

    def make_chunk_task(self, fn: Callable[..., Any], star: bool, run: Any, items: list[Any],
                        timeout: float | None, retry: Retry | None) -> Task:
        # Pickled here, in the caller's thread, so that what cannot be pickled fails
        # in the caller's map() call or loop, naming the culprit.
        fn_bytes = run.fn_bytes
        if fn_bytes is None:
            try:
                fn_bytes = cloudpickle.dumps(fn, protocol=pickle.HIGHEST_PROTOCOL)
            except Exception as exc:
                raise pickle.PicklingError(_what_failed(fn, (), {}, exc)) from exc
            run.fn_bytes = fn_bytes
        try:
            payload = _dumps_items(star, items)
        except Exception as exc:
            name = getattr(fn, "__qualname__", repr(fn))
            raise pickle.PicklingError(
                f"cannot send an item of the map of {name} to a worker process: {exc}") from exc
        return Task(fn, (fn_bytes, star, payload), {}, Future(), timeout=timeout, retry=retry,
                    items=items)


_DIED = -1


def _dumps_items(star: bool, items: list[Any]) -> bytes:
    try:
        return pickle.dumps((star, items), protocol=pickle.HIGHEST_PROTOCOL)
    except Exception:
        data: bytes = cloudpickle.dumps((star, items), protocol=pickle.HIGHEST_PROTOCOL)
        return data


def _hard_kill(process: Any) -> None:
    try:
        if process.exitcode is None:
            process.kill()
    except (OSError, ValueError):
        pass


def _can_fork_safely() -> bool:
    """True on Linux while this process has exactly one thread (as the kernel counts
    them, so threads started by C libraries count too)."""
    if "fork" not in multiprocessing.get_all_start_methods():
        return False
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("Threads:"):
                    return int(line.split()[1]) == 1 and threading.active_count() == 1
    except OSError:
        pass
    return False
