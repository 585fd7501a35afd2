"""The exceptions workpool raises, one small tree.

::

    WorkpoolError                      root of everything workpool raises
    ├── TaskTimeout                    also a TimeoutError: a task ran past its timeout
    ├── Cancelled                      also concurrent.futures.CancelledError
    ├── PoolClosed                     also a RuntimeError: the pool takes no more work
    ├── WouldBlock                     an ``X_nowait`` call would have had to wait
    │   └── QueueFull                  ... because the pool's queue is full
    ├── ItemsFailed                    items failed under on_error="collect": all of
    │                                  them, raised once the rest came out
    └── WorkerCrashed                  also BrokenProcessPool: a worker process died,
                                       or a task could not cross to or from it

Each also subclasses the stdlib exception that code written for
``concurrent.futures`` already catches, so existing ``except`` clauses keep working.
``WorkerCrashed`` is defined in ``process_errors.py``, loaded with the process side:
its base, ``BrokenProcessPool``, imports ``multiprocessing``, which nothing else needs.
"""

from __future__ import annotations

import concurrent.futures
from typing import TYPE_CHECKING, Any, final

if TYPE_CHECKING:
    from .failures import CollectedErrors

__all__ = [
    "Cancelled",
    "ItemsFailed",
    "PoolClosed",
    "QueueFull",
    "TaskTimeout",
    "WorkpoolError",
    "WouldBlock",
]


class WorkpoolError(Exception):
    """Root of every exception workpool raises."""


class TaskTimeout(WorkpoolError, TimeoutError):
    """A task ran longer than its ``timeout``.

    Its future fails with this error; the task's context is cancelled (threads), its
    worker is killed and replaced (processes) or it is cancelled (async).
    """


class Cancelled(WorkpoolError, concurrent.futures.CancelledError):
    """A task was cancelled: raised by ``TaskContext.checkpoint()`` and set on futures
    that were stopped while running or waiting for a retry."""


class PoolClosed(WorkpoolError, RuntimeError):
    """The pool was shut down and takes no more work.

    The message is the stdlib's (``cannot schedule new futures after shutdown``) so code
    that matches it keeps working.
    """


class WouldBlock(WorkpoolError):
    """An ``X_nowait`` call would have had to wait."""


class QueueFull(WouldBlock):
    """``submit_nowait`` found the pool's queue full."""


@final
class ItemsFailed(WorkpoolError):
    """Items failed under ``on_error="collect"``: raised once every other item came
    out of the ``map`` or the pipeline, with every failure in ``errors`` (a tuple of
    ``wp.CollectedError``: where, the item, the exception and its traceback).
    ``str()`` is the count and the exception types, then a line per failure for the
    first ten. A pipeline's run also leaves its ``PipelineReport`` in ``report``
    (None for a ``map``).

    Example::

        try:
            results = list(pool.map(parse, paths, on_error="collect"))
        except wp.ItemsFailed as failed:
            retry_later([failure.item for failure in failed.errors])
    """

    def __init__(self, errors: CollectedErrors, report: Any = None) -> None:
        super().__init__(errors, report)
        self.errors = errors
        self.report = report

    def __str__(self) -> str:
        return str(self.errors)
