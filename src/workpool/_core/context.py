"""The ambient task context: ``wp.current()`` inside a task returns its ``TaskContext``.

A worker publishes a ``WorkerSlot`` once, in its own thread's (or task's) context; the
pool then points ``slot.ctx`` at each task it runs. Publishing the slot once instead of
setting a context variable per task keeps the hot path free of ``ContextVar.set``.
"""

from __future__ import annotations

import threading
import time
from contextvars import ContextVar
from typing import Any, Final, final

from .exceptions import Cancelled

__all__ = ["TaskContext", "WorkerSlot", "current", "current_slot", "install_slot"]

_LAZY_LOCK: Final = threading.Lock()


class WorkerSlot:
    """What a worker publishes about itself: its id, its per-worker state, and the
    context of the task it runs now (None between tasks)."""

    __slots__ = ("ctx", "state", "worker_id")

    def __init__(self, worker_id: int, state: Any = None) -> None:
        self.worker_id = worker_id
        self.state = state
        self.ctx: TaskContext | None = None


_CURRENT: ContextVar[WorkerSlot] = ContextVar("workpool.current")


def install_slot(slot: WorkerSlot) -> None:
    """Publish *slot* in the calling thread's (or task's) context."""
    _CURRENT.set(slot)


def current_slot() -> WorkerSlot:
    """The slot the calling pool worker published.

    Raises:
        LookupError: the caller is not a pool worker.
    """
    return _CURRENT.get()


@final
class TaskContext:
    """What a running task can learn about itself, and how it cooperates with
    cancellation. Get it with ``wp.current()``; pools create it, users never do.

    Example::

        def crawl(url):
            ctx = wp.current()
            for page in pages(url):
                ctx.checkpoint()          # raises wp.Cancelled once cancelled
                ctx.sleep(0.1)            # wakes early on cancel

    In an ``AsyncPool`` task, ``await ctx.acheckpoint()`` and ``await ctx.asleep(s)``
    are the async twins.
    """

    __slots__ = ("_attempt", "_cancelled", "_deadline", "_event", "_slot")

    def __init__(self, slot: WorkerSlot | None, attempt: int = 1,
                 deadline: float | None = None) -> None:
        self._slot = slot
        self._attempt = attempt
        self._deadline = deadline
        self._cancelled = False
        self._event: threading.Event | None = None

    @property
    def cancelled(self) -> bool:
        """True once the task was cancelled (timeout, shutdown, group failure)."""
        return self._cancelled

    @property
    def cancel_called(self) -> bool:
        """Alias of ``cancelled``, in anyio's vocabulary."""
        return self._cancelled

    @property
    def deadline(self) -> float | None:
        """When the task times out, on the ``time.monotonic()`` clock, or None."""
        return self._deadline

    @property
    def attempt(self) -> int:
        """1 on the first run, 2 on the first retry, and so on."""
        return self._attempt

    @property
    def worker_id(self) -> int:
        """The id of the worker running the task (0, 1, ... per pool)."""
        return -1 if self._slot is None else self._slot.worker_id

    @property
    def state(self) -> Any:
        """Per-worker state: what the pool's ``initializer`` returned (or what a task
        stored here), kept for the worker's lifetime."""
        return None if self._slot is None else self._slot.state

    @state.setter
    def state(self, value: Any) -> None:
        if self._slot is not None:
            self._slot.state = value

    def remaining(self) -> float | None:
        """Seconds left before the deadline (never negative), or None without one."""
        if self._deadline is None:
            return None
        return max(0.0, self._deadline - time.monotonic())

    def checkpoint(self) -> None:
        """Raise ``wp.Cancelled`` if the task was cancelled; return otherwise.

        Raises:
            Cancelled: the task was cancelled.
        """
        if self._cancelled:
            raise Cancelled("task was cancelled")

    def sleep(self, seconds: float) -> None:
        """Sleep up to *seconds*, waking early to raise ``wp.Cancelled`` on cancel.

        Raises:
            Cancelled: the task was cancelled before or during the sleep.
            ValueError: *seconds* is negative.
        """
        if seconds < 0:
            raise ValueError(f"seconds must be >= 0, got {seconds!r}")
        self.checkpoint()
        event = self._event
        if event is None:
            with _LAZY_LOCK:
                event = self._event
                if event is None:
                    event = self._event = threading.Event()
                    if self._cancelled:
                        event.set()
        if event.wait(seconds):
            self.checkpoint()

    async def acheckpoint(self) -> None:
        """The async twin of ``checkpoint()``, for tasks of an ``AsyncPool``: raise
        ``wp.Cancelled`` if the task was cancelled, else yield to the event loop, where
        a pending cancellation (timeout, shutdown) is delivered as the loop's own
        cancellation exception.

        Raises:
            Cancelled: the task was cancelled.
        """
        import anyio.lowlevel

        self.checkpoint()
        await anyio.lowlevel.checkpoint()

    async def asleep(self, seconds: float) -> None:
        """The async twin of ``sleep()``: ``anyio.sleep``, which a cancellation of the
        task interrupts.

        Raises:
            Cancelled: the task was cancelled before or during the sleep.
            ValueError: *seconds* is negative.
        """
        import anyio

        if seconds < 0:
            raise ValueError(f"seconds must be >= 0, got {seconds!r}")
        self.checkpoint()
        await anyio.sleep(seconds)
        self.checkpoint()

    def cancel(self) -> None:
        """Ask the task to stop: ``cancelled`` turns True, ``checkpoint()`` raises and
        ``sleep()`` wakes. Cooperative: code that never checks runs to its end."""
        with _LAZY_LOCK:
            self._cancelled = True
            event = self._event
        if event is not None:
            event.set()

    def __repr__(self) -> str:
        return (f"<TaskContext worker={self.worker_id} attempt={self._attempt} "
                f"cancelled={self._cancelled}>")


def current() -> TaskContext:
    """Return the context of the task running in this thread or async task.

    Raises:
        RuntimeError: called outside a task run by a workpool pool or group.
    """
    slot = _CURRENT.get(None)
    ctx = None if slot is None else slot.ctx
    if ctx is None:
        raise RuntimeError("wp.current() called outside a workpool task")
    return ctx
