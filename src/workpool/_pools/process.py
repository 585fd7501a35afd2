"""``ProcessPool``: every core, a real kill for a task that hangs, and no broken pool.

The front end over the engine and the process backend (``_backends.process``). May
import ``_core``, ``_engine``, ``_backends``, ``_sync`` and ``executor``.
"""

from __future__ import annotations

from collections.abc import Callable
from concurrent.futures import Future
from concurrent.futures.process import BrokenProcessPool
from dataclasses import replace
from multiprocessing.context import BaseContext
from typing import Any, final

# Imported with the module, not at the first pool: a pool starts as fast as the stdlib's.
from .._backends._pickling import can_send
from .._backends.process import ProcessBackend
from .._core.options import Workers
from .._core.ratelimit import RateLimit
from .._core.retry import Retry
from .._core.stats import PoolStatistics
from .._engine.contract import Backend, Task, new_call
from .._sync.memory_budget import Budget
from .executor import ExecutorPool

__all__ = ["ProcessPool"]


def _positive(value: int | None, name: str, minimum: int = 1) -> int | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"{name} must be an int or None, got {value!r}")
    if value < minimum:
        raise ValueError(f"{name} must be >= {minimum}, got {value}")
    return value


def _max_tasks(per_worker: int | None, per_child: int | None,
               mp_context: BaseContext | None) -> int | None:
    """``max_tasks_per_worker``, or the stdlib's ``max_tasks_per_child`` checked as the
    stdlib checks it (same errors, same messages)."""
    if per_child is not None and per_worker is not None:
        raise TypeError("pass max_tasks_per_worker or max_tasks_per_child, not both")
    if per_child is None:
        name, value = "max_tasks_per_worker", _positive(per_worker, "max_tasks_per_worker")
    elif not isinstance(per_child, int):
        raise TypeError("max_tasks_per_child must be an integer")
    elif per_child <= 0:
        raise ValueError("max_tasks_per_child must be >= 1")
    else:
        name, value = "max_tasks_per_child", per_child
    if (value is not None and mp_context is not None
            and mp_context.get_start_method() == "fork"):
        # A replacement would be forked from a process whose proxy threads run.
        raise ValueError(f"{name} is incompatible with the 'fork' multiprocessing start "
                         "method; supply a different mp_context.")
    return value


@final
class ProcessPool(ExecutorPool):
    """A bounded pool of worker processes; a drop-in ``ProcessPoolExecutor``.

    Pickling is the stdlib's: functions, arguments, results and exceptions travel by
    reference wherever ``pickle`` can send them (functions and classes of importable
    modules and of ``__main__``), so a dataclass or exception class of your script
    comes back as itself (``except MyError`` catches it) and a function's globals, a
    module-level lock or a per-worker cache, are the worker's own, as with the
    stdlib. Only what must travel by value does, with cloudpickle: lambdas, closures,
    local classes, and ``__main__`` of a program without a file (``python -c``, a
    notebook). An open file never travels (not even as a copy of its contents).

    Whatever cannot be pickled fails with the stdlib's exception type, and only its
    own task (or its own item of a ``map``); the pool goes on:

    - arguments that cannot be pickled fail the task's future (as the stdlib's pool
      does) with the error of its own type (``TypeError: cannot pickle
      '_io.TextIOWrapper' object`` for an open file, ``PicklingError``, ...), its
      message naming the culprit (``cannot send argument 0 of f to a worker process:
      ...``); a function that cannot be sent raises at the call (``submit``,
      ``schedule``, ``map``), and so does an item of a ``map``, where it is read;
    - a result or exception that cannot be pickled in the worker fails its task with
      that error (``PicklingError``, ``TypeError``, even ``SystemExit``);
    - arguments that cannot be unpickled in the worker, or a result that cannot be
      unpickled here, fail the task with ``wp.WorkerCrashed`` (a
      ``BrokenProcessPool``, as the stdlib raises), whose ``__cause__`` is the error.

    A worker that dies (signal, ``os._exit``, OOM kill) fails only the task it ran,
    with ``wp.WorkerCrashed``, and is replaced: there is no broken-pool state. A task
    past its ``timeout`` is stopped for real: its worker is killed and replaced.

    Workers start at the first task, not here, so a pool may be created at import
    time (``POOL = wp.ProcessPool()`` at the top of a module); while the program has
    a single thread then, the first workers are forked at once, which is as fast as
    the stdlib's start. A child forked from your program (``os.fork()``) never stops
    or waits for the pool's workers.

    ``shutdown(cancel_futures=True)`` cancels queued tasks and lets running ones
    finish, as the stdlib's; only the hard stop (``shutdown(timeout=s)`` after *s*
    seconds, a second Ctrl-C) kills running workers, failing their tasks with
    ``wp.Cancelled``.

    Args:
        workers: processes to keep (default ``wp.cpus()``).
        max_workers: the stdlib's name for *workers*.
        queue_size: tasks that may wait for a worker, as for ``ThreadPool``.
        timeout: seconds a task may run; then its worker is killed and replaced,
            and its future fails with ``wp.TaskTimeout``.
        retry: a ``wp.Retry`` policy, as for ``ThreadPool``.
        rate: a ``wp.RateLimit`` shared by all workers, as for ``ThreadPool``.
        name: names the pool in its ``repr`` and its worker processes (``name_0``, ...)
            and reader thread.
        budget: a ``wp.Semaphore`` or ``wp.MemoryBudget`` every task takes ``cost``
            tokens of, as for ``ThreadPool``.
        metrics: True or a name: show the pool to ``workpool.exporters.prometheus``,
            as for ``ThreadPool``.
        initializer: called once in each worker process with *initargs*; its return
            value is that worker's ``wp.current().state`` (load a model once per worker).
        mp_context: a ``multiprocessing`` context (default: the first workers forked
            as above, later ones from a forkserver on Linux, so a threaded parent is
            never forked; spawn elsewhere).
        max_tasks_per_worker: replace a worker after that many tasks, counted in
            items for ``map`` (a worker stops inside a chunk when its budget is spent,
            and a fresh one runs the rest); the stdlib's ``max_tasks_per_child`` is
            accepted too. As with the stdlib, not with a fork ``mp_context``.
        max_memory_per_worker: replace a worker, between tasks, once its resident
            memory exceeds that many bytes.
        max_crashes: a task that crashed this many workers is quarantined: it fails
            with ``WorkerCrashed`` even if its retry policy would run it again.

    ``map`` batches items (``chunksize="auto"`` aims at tens of milliseconds per
    chunk); if a worker dies inside a chunk, only the item it ran fails and the others
    run again on a fresh worker.

    Example::

        with wp.ProcessPool(timeout=60, retry=wp.Retry(on=(wp.WorkerCrashed,))) as pool:
            for digest in pool.map(hash_file, paths, ordered=False):
                print(digest)
    """

    _broken_type = BrokenProcessPool
    _chunk_target = 0.02
    _max_chunk = 8192

    def __init__(self, workers: Workers | None = None, *, max_workers: int | None = None,
                 queue_size: int = 1024, timeout: float | None = None,
                 retry: Retry | None = None, rate: RateLimit | None = None,
                 initializer: Callable[..., Any] | None = None,
                 initargs: tuple[Any, ...] = (), name: str | None = None,
                 mp_context: BaseContext | None = None,
                 max_tasks_per_worker: int | None = None,
                 max_tasks_per_child: int | None = None,
                 max_memory_per_worker: int | None = None, max_crashes: int = 3,
                 budget: Budget | None = None, metrics: bool | str = False) -> None:
        self._options: dict[str, Any] = {
            "mp_context": mp_context,
            "max_tasks": _max_tasks(max_tasks_per_worker, max_tasks_per_child, mp_context),
            "max_memory": _positive(max_memory_per_worker, "max_memory_per_worker"),
            "max_crashes": _positive(max_crashes, "max_crashes"),
        }
        super().__init__(workers, max_workers=max_workers, queue_size=queue_size,
                         timeout=timeout, retry=retry, rate=rate, initializer=initializer,
                         initargs=initargs, name=name, budget=budget, metrics=metrics)

    def _default_workers(self) -> int:
        from .._core.sizing import cpus

        return cpus()

    def _make_backend(self, initializer: Callable[..., Any] | None,
                      initargs: tuple[Any, ...]) -> Backend:
        return ProcessBackend(initializer=initializer, initargs=initargs, **self._options)

    def _task(self, fn: Callable[..., Any], args: tuple[Any, ...], kwargs: dict[str, Any],
              future: Future[Any], priority: int, timeout: float | None,
              retry: Retry | None) -> Task | None:
        try:
            payload = self._backend.prepare_call(fn, args, kwargs)
        except Exception as exc:
            if not can_send(fn):
                raise  # a function no worker can be sent: an error at the call
            # Arguments that cannot be sent fail the future, as with the stdlib's pool.
            future.set_exception(exc)
            self._engine.count_failed_at_intake()
            return None
        return new_call(fn, (), {}, future, priority, timeout, retry, payload)

    def statistics(self) -> PoolStatistics:
        """A frozen snapshot of the pool's counters and latencies, with ``crashed``
        (tasks its workers' deaths failed) and ``restarts`` (workers replaced)."""
        backend = self._backend
        assert isinstance(backend, ProcessBackend)
        return replace(super().statistics(), crashed=backend.crashed,
                       restarts=backend.restarts)

    def __enter__(self) -> ProcessPool:
        return self
