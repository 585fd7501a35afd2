"""``WorkerCrashed``, the one exception of the tree in ``exceptions.py`` that lives apart.

It subclasses the stdlib's ``BrokenProcessPool``, and importing that imports
``multiprocessing``: so it is defined here, imported only by the process side, and
``wp.WorkerCrashed`` loads it on first use. ``import workpool``, threads, groups and
semaphores never load ``multiprocessing``.
"""

from __future__ import annotations

from concurrent.futures.process import BrokenProcessPool

from .exceptions import WorkpoolError

__all__ = ["WorkerCrashed"]


class WorkerCrashed(WorkpoolError, BrokenProcessPool):
    """The worker process running a task died (signal, ``os._exit``, OOM kill), or the
    task's arguments could not be unpickled in the worker, or its result in the caller
    (then ``__cause__`` is the error that unpickling raised).

    Only that task fails; the worker is replaced and the pool goes on. (Where the
    stdlib's pool breaks for good, workpool fails the one task.)
    """


# The process backend raises it whether or not ``wp.WorkerCrashed`` was ever read (the
# read is what renames the other lazily loaded names): it says workpool.WorkerCrashed.
WorkerCrashed.__module__ = "workpool"
