"""One thread per pool that runs callbacks at given times: retry re-queues and
per-task deadlines. Started on first use, so pools without timeouts or retries pay
nothing."""

from __future__ import annotations

import heapq
import itertools
import threading
import time
from collections.abc import Callable

__all__ = ["Timer", "TimerHandle"]


class TimerHandle:
    """A scheduled callback; ``cancel()`` drops it if it has not run yet."""

    __slots__ = ("callback", "cancelled", "when")

    def __init__(self, when: float, callback: Callable[[], None]) -> None:
        self.when = when
        self.callback = callback
        self.cancelled = False

    def cancel(self) -> None:
        """Drop the callback (lazily: the entry stays in the heap until due, but
        without the callback, so that what it refers to is not kept alive)."""
        self.cancelled = True
        self.callback = _nothing


def _nothing() -> None:
    pass


class Timer:
    """Runs callbacks at ``time.monotonic()`` instants, in order, on one thread.

    Callbacks must be short and must not raise: they run on the timer thread.
    """

    def __init__(self, name: str) -> None:
        self._name = name
        self._cond = threading.Condition(threading.Lock())
        self._heap: list[tuple[float, int, TimerHandle]] = []
        self._seq = itertools.count()
        self._thread: threading.Thread | None = None
        self._closed = False

    @property
    def closed(self) -> bool:
        """True once ``close()`` was called."""
        return self._closed

    def call_at(self, when: float, callback: Callable[[], None]) -> TimerHandle:
        """Run *callback* at *when* (monotonic seconds)."""
        handle = TimerHandle(when, callback)
        with self._cond:
            if self._closed:
                raise RuntimeError("timer is closed")
            heapq.heappush(self._heap, (when, next(self._seq), handle))
            if self._thread is None:
                self._thread = threading.Thread(target=self._run, name=self._name, daemon=True)
                self._thread.start()
            elif self._heap[0][2] is handle:
                self._cond.notify()
        return handle

    def call_later(self, delay: float, callback: Callable[[], None]) -> TimerHandle:
        """Run *callback* after *delay* seconds."""
        return self.call_at(time.monotonic() + delay, callback)

    def close(self) -> list[TimerHandle]:
        """Stop the thread; return the handles that never ran and were not cancelled."""
        with self._cond:
            self._closed = True
            left = [h for _, _, h in self._heap if not h.cancelled]
            self._heap.clear()
            self._cond.notify()
            thread = self._thread
        if thread is not None and thread is not threading.current_thread():
            thread.join()
        return left

    def _run(self) -> None:
        cond = self._cond
        while True:
            with cond:
                while True:
                    if self._closed:
                        return
                    if self._heap:
                        wait = self._heap[0][0] - time.monotonic()
                        if wait <= 0:
                            handle = heapq.heappop(self._heap)[2]
                            break
                        cond.wait(wait)
                    else:
                        cond.wait()
            if not handle.cancelled:
                handle.callback()
