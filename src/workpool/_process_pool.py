"""``ProcessPool``: every core, a real kill for a task that hangs, and no broken pool."""

from __future__ import annotations

from collections.abc import Callable
from concurrent.futures import Future
from concurrent.futures.process import BrokenProcessPool
from multiprocessing.context import BaseContext
from typing import Any, final

# Imported with the module, not at the first pool: a pool starts as fast as the stdlib's.
from ._backends.process import ProcessEngine, dumps_call
from ._core.ratelimit import RateLimit
from ._core.retry import Retry
from ._engine import Engine, Task
from ._pool import ExecutorPool
from ._sync import Semaphore

__all__ = ["ProcessPool"]


def _positive(value: int | None, name: str, minimum: int = 1) -> int | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"{name} must be an int or None, got {value!r}")
    if value < minimum:
        raise ValueError(f"{name} must be >= {minimum}, got {value}")
    return value


@final
class ProcessPool(ExecutorPool):
    """A bounded pool of worker processes; a drop-in ``ProcessPoolExecutor``.

    Functions, lambdas and closures travel with cloudpickle; what cannot be pickled
    fails at ``submit``/``map`` in the caller, naming the culprit. A worker that dies
    (signal, ``os._exit``, OOM kill) fails only the task it ran, with
    ``wp.WorkerCrashed``, and is replaced: there is no broken-pool state. A task past
    its ``timeout`` is stopped for real: its worker is killed and replaced.

    Args:
        workers: processes to keep (default ``wp.cpus()``).
        max_workers: the stdlib's name for *workers*.
        queue_size, timeout, retry, rate, name, budget: as for ``ThreadPool``.
        initializer: called once in each worker process with *initargs*; its return
            value is that worker's ``wp.current().state`` (load a model once per worker).
        mp_context: a ``multiprocessing`` context (default: forkserver on Linux, so a
            threaded parent is never forked; spawn elsewhere).
        max_tasks_per_worker: replace a worker after that many tasks (the stdlib's
            ``max_tasks_per_child`` is accepted too).
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

    def __init__(self, workers: int | None = None, *, max_workers: int | None = None,
                 queue_size: int = 1024, timeout: float | None = None,
                 retry: Retry | None = None, rate: RateLimit | None = None,
                 initializer: Callable[..., Any] | None = None,
                 initargs: tuple[Any, ...] = (), name: str | None = None,
                 mp_context: BaseContext | None = None,
                 max_tasks_per_worker: int | None = None,
                 max_tasks_per_child: int | None = None,
                 max_memory_per_worker: int | None = None, max_crashes: int = 3,
                 budget: Semaphore | None = None) -> None:
        if max_tasks_per_child is not None and max_tasks_per_worker is not None:
            raise TypeError("pass max_tasks_per_worker or max_tasks_per_child, not both")
        self._options: dict[str, Any] = {
            "mp_context": mp_context,
            "max_tasks": _positive(max_tasks_per_child if max_tasks_per_worker is None
                                   else max_tasks_per_worker, "max_tasks_per_worker"),
            "max_memory": _positive(max_memory_per_worker, "max_memory_per_worker"),
            "max_crashes": _positive(max_crashes, "max_crashes"),
        }
        super().__init__(workers, max_workers=max_workers, queue_size=queue_size,
                         timeout=timeout, retry=retry, rate=rate, initializer=initializer,
                         initargs=initargs, name=name, budget=budget)

    def _default_workers(self) -> int:
        from ._core.sizing import cpus

        return cpus()

    def _make_engine(self, **options: Any) -> Engine:
        return ProcessEngine(**options, **self._options)

    def _task(self, fn: Callable[..., Any], args: tuple[Any, ...], kwargs: dict[str, Any],
              future: Future[Any], priority: int, timeout: float | None, retry: Retry | None,
              key: Any) -> Task:
        return Task(fn, (dumps_call(fn, args, kwargs),), {}, future, priority, timeout, retry,
                    key)

    def __enter__(self) -> ProcessPool:
        return self
