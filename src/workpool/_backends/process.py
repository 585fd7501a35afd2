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
proxy turns that EOF into ``TaskTimeout``. So do the hard stop of a shutdown
(``abandon_running``) and a cancelled pipeline stage (``cancel_all``), into
``Cancelled``; ``shutdown(cancel_futures=True)`` lets running tasks finish.

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
"""

from __future__ import annotations

import contextlib
import importlib
import multiprocessing
import pickle
import signal
import threading
from collections.abc import Callable, Iterable
from concurrent.futures import Future
from multiprocessing.context import BaseContext
from typing import Any, NoReturn

from .._core.chunk import Chunk
from .._core.exceptions import Cancelled, TaskTimeout
from .._core.process_errors import WorkerCrashed
from .._core.retry import Retry
from .._engine.engine import TASK_FAILED, TASK_OK, Engine, Task, Worker
from .._engine.intake import CLOSING
from . import _child

__all__ = ["ProcessEngine", "can_send", "default_context", "dumps_call"]

KILL_GRACE = 0.5  # seconds between terminate and kill

# What _call() reports beyond the child's own kinds (OK, ERR, CHUNK, BADARGS).
_DIED = -1  # the child died (or could not start): see _death_error
_BADFN = -2  # the child could not unpickle a map's function: every item fails
_STOPPED = -3  # a shutdown gave up on running tasks: nothing more is sent

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


# -- pickling in the caller ---------------------------------------------------------------

def dumps_call(fn: Callable[..., Any], args: tuple[Any, ...], kwargs: dict[str, Any]) -> bytes:
    """Pickle a call for a worker process (see ``_child``).

    Raises:
        The pickling error, of its own type (``TypeError`` for an open file or a lock,
        ``PicklingError``, ...), its message naming what could not be sent.
    """
    try:
        return _child.dumps((fn, args, kwargs))
    except Exception as exc:
        parts = [("the function", fn), *((f"argument {i}", a) for i, a in enumerate(args)),
                 *((f"keyword argument {k!r}", v) for k, v in kwargs.items())]
        _raise_send_error(exc, parts, f" of {_name(fn)}")


def can_send(obj: Any) -> bool:
    """True if *obj* can be pickled for a worker process."""
    try:
        _child.dumps(obj)
    except Exception:
        return False
    return True


def _name(fn: Any) -> str:
    return str(getattr(fn, "__qualname__", None) or repr(fn))


def _raise_send_error(exc: Exception, parts: Iterable[tuple[str, Any]],
                      where: str) -> NoReturn:
    """Raise *exc* again, as an error of its own type (the one the stdlib's pool would
    have set on the future) whose message says which of *parts* could not be sent."""
    culprit, what = exc, "a call"
    for name, obj in parts:
        try:
            _child.dumps(obj)
        except Exception as inner:
            culprit, what = inner, name
            break
    message = f"cannot send {what}{where} to a worker process: {culprit}"
    try:
        restated = type(culprit)(message)
    except Exception:
        restated = None
    if restated is None or type(restated) is not type(culprit) or str(restated) != message:
        culprit.add_note(message)  # a type that takes no message: the note says it
        raise culprit
    raise restated from culprit


def _dumps_items(star: bool, items: list[Any]) -> bytes:
    return _child.dumps((star, items))


# -- the errors of a call that failed as a whole --------------------------------------------

def _describe(error: BaseException) -> str:
    text = str(error)
    return f"{type(error).__name__}: {text}" if text else type(error).__name__


def _unpicklable(what: str, error: BaseException) -> WorkerCrashed:
    """The task's result (or exception) came back but cannot be unpickled here."""
    crashed = WorkerCrashed(f"the task's {what} could not be unpickled: {_describe(error)}")
    crashed.__cause__ = error
    return crashed


def _bad_call(what: str, error: BaseException) -> WorkerCrashed:
    """The child could not unpickle the task's function or arguments (the stdlib's
    pool breaks there; only this task fails here)."""
    crashed = WorkerCrashed(
        f"the worker process could not unpickle the task's {what}: {_describe(error)}")
    crashed.__cause__ = error
    return crashed


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
        initargs = tuple(options.pop("initargs"))
        super().__init__(initializer=None, initargs=(), **options)
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
                _raise_send_error(exc, [("the initializer", initializer)], "")
        self._spares: list[tuple[Any, Any]] = []
        self._unstarted = True  # no worker yet: the first one forks them (_first_spawn)

    # -- starting: at the first task ------------------------------------------------------

    def _spawn(self, first: Task | None) -> None:
        if self._unstarted:
            self._first_spawn()
        super()._spawn(first)

    def _first_spawn(self) -> None:
        with self._lock:
            unstarted, self._unstarted = self._unstarted, False
        if unstarted and self.fork_first and _can_fork_safely():
            # A fork that fails (EAGAIN, say) leaves its worker to start as later ones do.
            with contextlib.suppress(OSError):
                self._prefork()

    def _prefork(self) -> None:
        """Fork every worker now, before the first proxy thread starts, while this
        process has a single thread.

        Forking is what makes the stdlib's pool start fast, and it is safe while no
        other thread can hold a lock; workers started later (replacements) come from
        the forkserver instead, since by then the proxy threads run.
        """
        ctx = multiprocessing.get_context("fork")
        for worker_id in range(self.target):
            parent_conn, child_conn = ctx.Pipe()
            process = ctx.Process(
                target=_child.main, name=f"{self.name}_{worker_id}", daemon=False,
                args=(child_conn, worker_id, self.init_bytes, self.initargs, self.max_tasks,
                      self.max_memory))
            process.start()
            child_conn.close()
            self._spares.append((process, parent_conn))

    def new_worker(self, worker_id: int) -> Worker:
        return ProcessWorker(worker_id)

    def close_intake(self, error: tuple[type[Exception], str] | None = None) -> None:
        super().close_intake(error)
        with self._lock:  # forked workers no proxy took: intake is over, let them go
            spares, self._spares = self._spares, []
        for process, conn in spares:
            spare = ProcessWorker(-1)
            spare.process, spare.conn = process, conn
            self.stop_worker(spare)

    def after_fork_in_child(self) -> None:
        # The workers are the parent's: multiprocessing must not terminate them (as
        # daemons, or join them) when this child exits, nor may anything here stop them.
        from multiprocessing import process as mp_process

        children = mp_process._children  # type: ignore[attr-defined]
        for worker in self._workers:
            if isinstance(worker, ProcessWorker) and worker.process is not None:
                children.discard(worker.process)
        for process, _ in self._spares:
            children.discard(process)
        self._spares = []
        super().after_fork_in_child()

    # -- the child's life ---------------------------------------------------------------

    def start_worker(self, worker: Worker) -> bool:
        assert isinstance(worker, ProcessWorker)
        return self._start_child(worker)

    def _start_child(self, worker: ProcessWorker) -> bool:
        """Start (or adopt a forked) child for *worker*; False if it cannot run."""
        try:
            return self._try_start_child(worker)
        except Exception as exc:  # e.g. spawn refusing a main module without its guard
            from .._engine.engine import LOGGER

            LOGGER.critical("A worker process could not be started:", exc_info=True)
            with self._lock:  # the pool is broken: say why, not only that
                if self.broken is None:
                    self.broken = (f"A worker process could not be started "
                                   f"({type(exc).__name__}: {exc}), the process pool is "
                                   "not usable anymore")
            return False

    def _try_start_child(self, worker: ProcessWorker) -> bool:
        with self._lock:
            spare = self._spares.pop() if self._spares else None
        if spare is not None:
            process, parent_conn = spare
        else:
            ctx = self.mp_context
            if ctx is None:
                ctx = self.mp_context = default_context()
            parent_conn, child_conn = ctx.Pipe()
            process = ctx.Process(  # type: ignore[attr-defined]
                target=_child.main, name=f"{self.name}_{worker.slot.worker_id}", daemon=False,
                args=(child_conn, worker.slot.worker_id, self.init_bytes, self.initargs,
                      self.max_tasks, self.max_memory))
            process.start()
            child_conn.close()
        worker.process, worker.conn = process, parent_conn
        worker.kill_reason = None
        error: BaseException | None
        try:
            status, error, _ = pickle.loads(parent_conn.recv_bytes())
        except (EOFError, OSError):
            status, error = _child.ERR, WorkerCrashed(self._describe_death(worker))
        except BaseException as exc:  # the initializer's error did not unpickle
            status, error = _child.ERR, _unpicklable("initializer's exception", exc)
        if status == _child.OK:
            return True
        from .._engine.engine import LOGGER

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

    def _death_error(self, worker: ProcessWorker, task: Task) -> BaseException:
        reason = worker.kill_reason
        description = self._describe_death(worker)
        if reason == "timeout":
            return self.timed_out(task)
        if reason == "cancel":
            return Cancelled("cancelled by shutdown: its worker process was killed")
        task.crashes += 1
        if task.crashes >= self.max_crashes:
            return WorkerCrashed(f"{description}; the task crashed {task.crashes} workers "
                                 f"and is quarantined (max_crashes={self.max_crashes})")
        return WorkerCrashed(description)

    # -- running tasks ----------------------------------------------------------------------

    def execute(self, worker: Worker, task: Task) -> tuple[int, Any]:
        assert isinstance(worker, ProcessWorker)
        if task.items is not None:
            return self._execute_chunk(worker, task)
        bucket = self.bucket
        if bucket is not None and not bucket.acquire(self.stop):
            return TASK_FAILED, Cancelled("cancelled by shutdown while waiting for the rate limit")
        kind, value, _ = self._call(worker, task, None, task.args[0])
        if kind == _child.OK:
            return TASK_OK, value
        if kind == _DIED:
            return TASK_FAILED, self._death_error(worker, task)
        return TASK_FAILED, value

    def _call(self, worker: ProcessWorker, task: Task, fn_bytes: bytes | None,
              payload: bytes) -> tuple[int, Any, int]:
        """Send one call, wait for its reply and decode it: (kind, value, items run).

        kind is OK (value: what the call returned), ERR (value: the error it fails
        with), CHUNK (value: a ``Chunk`` of the items the child ran), BADARGS or
        _BADFN (value: the ``WorkerCrashed`` to fail with), _STOPPED (value: the
        ``Cancelled``) or _DIED (see ``_death_error``).
        """
        if worker.process is None and not self._start_child(worker):
            return _DIED, None, 0
        ctx = worker.slot.ctx
        deadline = None if ctx is None else ctx.deadline
        message = pickle.dumps((_child.CALL, task.attempt, deadline, fn_bytes, payload),
                               protocol=_child.PROTOCOL)
        with self._lock:
            if self.halted:
                return _STOPPED, Cancelled("cancelled by shutdown"), 0
            worker.busy = task
        try:
            worker.conn.send_bytes(message)
            del message
            kind, body, ran, retire = pickle.loads(worker.conn.recv_bytes())
        except (EOFError, OSError):
            with self._lock:
                worker.busy = None
            return _DIED, None, 0
        with self._lock:
            worker.busy = None
            killed = worker.kill_reason is not None
        try:
            if kind == _child.CHUNK:
                return kind, self._decode_chunk(worker, body, ran, killed), ran
            return (*self._decode(kind, body), ran)
        finally:
            if retire or killed:  # the child retires, or a kill raced with the reply
                self._reap(worker, kill=killed)

    def _decode(self, kind: int, body: bytes) -> tuple[int, Any]:
        """Unpickle the body of a call's reply (user code may run, and fail, here)."""
        try:
            obj = pickle.loads(body)
        except BaseException as exc:  # even a SystemExit while unpickling
            return _child.ERR, _unpicklable("result" if kind == _child.OK else "exception", exc)
        if kind != _child.BADARGS:
            return kind, obj
        error, what = obj
        return (_BADFN if what == "function" else _child.BADARGS), _bad_call(what, error)

    def _decode_chunk(self, worker: ProcessWorker, body: bytes, ran: int,
                      killed: bool) -> Chunk:
        """Unpickle a chunk's values. After several, the child waits for a verdict: if
        they cannot be unpickled together, it resends them one by one, so that only
        the items whose value cannot be unpickled fail."""
        try:
            values, errors, seconds = pickle.loads(body)
        except BaseException as exc:  # even a SystemExit while unpickling
            if ran > 1 and not killed:
                return self._resend(worker, ran, exc)
            return Chunk([None] * ran, dict.fromkeys(range(ran), _unpicklable("result", exc)),
                         0.0)
        if ran > 1 and not killed:
            with contextlib.suppress(OSError):
                worker.conn.send_bytes(_DROP)
        return Chunk(values, errors, seconds)

    def _resend(self, worker: ProcessWorker, ran: int, failure: BaseException) -> Chunk:
        values: list[Any] = [None] * ran
        errors: dict[int, BaseException] = {}
        try:
            worker.conn.send_bytes(_RESEND)
            _, (parts, seconds), _, _ = pickle.loads(worker.conn.recv_bytes())
        except (EOFError, OSError):  # the child died meanwhile: the values are lost
            return Chunk(values, dict.fromkeys(range(ran), _unpicklable("result", failure)),
                         0.0)
        for i, part in enumerate(parts):
            try:
                value = pickle.loads(part)
            except BaseException as exc:
                errors[i] = _unpicklable("result", exc)
                continue
            if isinstance(value, _child.Failed):
                errors[i] = value.error
            else:
                values[i] = value
        return Chunk(values, errors or None, seconds)

    def _execute_chunk(self, worker: ProcessWorker, task: Task) -> tuple[int, Any]:
        bucket = self.bucket  # under a rate limit, map chunks hold one item
        if bucket is not None and not bucket.acquire(self.stop):
            return TASK_OK, Chunk([None], {0: Cancelled("cancelled by shutdown")}, 0.0)
        fn_bytes, star, payload = task.args
        items = task.items
        assert items is not None
        values: list[Any] = [None] * len(items)
        errors: dict[int, BaseException] = {}
        seconds = 0.0
        start = 0  # items before it have ended
        while start < len(items):
            kind, value, ran = self._call(worker, task, fn_bytes, payload)
            if kind == _child.CHUNK:
                values[start:start + ran] = value.values
                errors.update((start + i, e) for i, e in (value.errors or {}).items())
                seconds += value.seconds
                start += ran
                if start < len(items):  # the child used up max_tasks: a fresh one goes on
                    try:
                        payload = _dumps_items(star, items[start:])
                    except Exception as exc:  # pickled fine with the others: unlikely
                        errors.update((i, exc) for i in range(start, len(items)))
                        break
                continue
            error = value if kind != _DIED else self._death_error(worker, task)
            if len(items) == 1 and task.retry is not None:
                return TASK_FAILED, error  # the engine retries a lone item
            if len(items) - start > 1 and (
                    kind == _child.BADARGS
                    or (kind == _DIED and not isinstance(error, Cancelled | TaskTimeout))):
                # The chunk's arguments did not unpickle, or its worker died somewhere in
                # it: run the rest one by one on fresh workers, so that only the item at
                # fault fails (the others run again: their results died with the worker).
                self._one_by_one(worker, task, start, values, errors)
            else:
                errors.update((i, error) for i in range(start, len(items)))
            break
        return TASK_OK, Chunk(values, errors or None, seconds)

    def _one_by_one(self, worker: ProcessWorker, task: Task, start: int, values: list[Any],
                    errors: dict[int, BaseException]) -> None:
        fn_bytes, star, _ = task.args
        items = task.items
        assert items is not None
        for i in range(start, len(items)):
            try:
                payload = _dumps_items(star, [items[i]])
            except Exception as exc:  # pickled fine with the others: unlikely
                errors[i] = exc
                continue
            kind, value, _ = self._call(worker, task, fn_bytes, payload)
            if kind == _child.CHUNK:
                values[i] = value.values[0]
                if value.errors:
                    errors[i] = value.errors[0]
            else:
                errors[i] = value if kind != _DIED else self._death_error(worker, task)

    def expire(self, worker: Worker, task: Task) -> None:
        assert isinstance(worker, ProcessWorker)
        self._kill(worker, "timeout", task)

    def cancel_running(self, worker: Worker) -> None:
        """Stop the task *worker* runs: a process cannot be asked, so its child is
        killed and the task fails with ``Cancelled``. No shutdown flavour calls this
        but the hard stop (``abandon_running``); a cancelled pipeline stage's
        ``cancel_all`` does."""
        assert isinstance(worker, ProcessWorker)
        self._kill(worker, "cancel")

    def abandon_running(self) -> list[Future[Any]]:
        """Kill the children of running tasks (the hard stop of a shutdown): their
        futures fail with ``Cancelled``, and nothing more is sent to any child."""
        with self._lock:
            self.halted = True
            self.state = CLOSING
            running = [(w, w.task) for w in self._workers if w.task is not None]
        for worker, _ in running:
            self.cancel_running(worker)
        return [task.future for _, task in running if task is not None]

    def _retry_delay(self, task: Task, error: BaseException) -> float | None:
        if isinstance(error, WorkerCrashed) and task.crashes >= self.max_crashes:
            return None  # quarantined: a poison pill never loops forever
        return super()._retry_delay(task, error)

    def make_chunk_task(self, fn: Callable[..., Any], star: bool, run: Any, items: list[Any],
                        timeout: float | None, retry: Retry | None) -> Task:
        # Pickled here, in the caller's thread, so that what cannot be pickled fails
        # in the caller's map() call or loop, naming the culprit. The function once
        # per run: *run* caches it.
        fn_bytes = None if run is None else run.fn_bytes
        if fn_bytes is None:
            try:
                fn_bytes = _child.dumps(fn)
            except Exception as exc:
                _raise_send_error(exc, [("the function", fn)], f" of {_name(fn)}")
            if run is not None:
                run.fn_bytes = fn_bytes
        try:
            payload = _dumps_items(star, items)
        except Exception as exc:
            _raise_send_error(exc, [("an item", item) for item in items],
                              f" of the map of {_name(fn)}")
        return Task(fn, (fn_bytes, star, payload), {}, Future(), timeout=timeout, retry=retry,
                    items=items)


_DROP = pickle.dumps((_child.DROP,))
_RESEND = pickle.dumps((_child.RESEND,))


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

