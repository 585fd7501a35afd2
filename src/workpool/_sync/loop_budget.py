"""A budget that threads share (``Semaphore``, ``MemoryBudget``) taken from an event
loop: how ``AsyncPool`` holds ``budget=`` tokens of one.

Owns ``LoopBudget``, which gives such a budget the ``AsyncSemaphore`` calls the pool
makes. Free tokens are taken at once, in the loop (``try_acquire``: no thread hop);
a wait runs in a worker thread, so that the loop goes on. Imports the budgets and
anyio.

A wait the loop gives up on (cancelled, or out of time) must not leave tokens taken
by the thread a moment later, nor a waiter in the budget's line: the loop calls the
thread's wait off (the budget takes it out of its line, and the thread returns), and
the two settle through a ``_Claim`` whichever comes second giving back tokens taken.
"""

from __future__ import annotations

import threading
import time
from typing import final

import anyio
import anyio.to_thread

from .memory_budget import MemoryBudget, MemoryBudgetStatistics
from .semaphore import Semaphore, SemaphoreStatistics, WaitTicket

__all__ = ["LoopBudget"]

@final
class LoopBudget:
    """*budget*, shared with threads, as an ``AsyncPool`` takes its tokens."""

    __slots__ = ("budget",)

    def __init__(self, budget: Semaphore | MemoryBudget) -> None:
        self.budget = budget

    @property
    def capacity(self) -> int:
        return self.budget.capacity

    def try_acquire(self, n: int = 1) -> bool:
        return self.budget.try_acquire(n)

    def release(self, n: int = 1) -> None:
        self.budget.release(n)

    def statistics(self) -> SemaphoreStatistics | MemoryBudgetStatistics:
        return self.budget.statistics()

    async def acquire(self, n: int = 1, timeout: float | None = None) -> bool:
        """Hold *n* tokens, waiting for them (in a worker thread) at most *timeout*
        seconds (None: as long as it takes). Returns whether it holds them;
        cancelled, it holds nothing."""
        if self.budget.try_acquire(n):
            return True
        if timeout is not None and timeout <= 0:
            return False
        deadline = None if timeout is None else time.monotonic() + timeout
        claim = _Claim()
        try:
            return await anyio.to_thread.run_sync(claim.wait, self.budget, n, deadline,
                                                  abandon_on_cancel=True)
        except BaseException:
            claim.give_up(self.budget, n)
            raise


class _Claim:
    """A wait for tokens in a worker thread that the loop may give up on."""

    __slots__ = ("gave_up", "got", "lock", "ticket")

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.gave_up = False
        self.got = False
        self.ticket = WaitTicket()

    def wait(self, budget: Semaphore | MemoryBudget, n: int,
             deadline: float | None) -> bool:
        """The thread's side: take *n* tokens by *deadline*, unless given up on."""
        timeout = None if deadline is None else max(0.0, deadline - time.monotonic())
        if not budget._acquire_withdrawable(n, timeout, self.ticket):
            return False
        with self.lock:
            if not self.gave_up:
                self.got = True
                return True
        budget.release(n)  # given up on meanwhile: the tokens go back
        return False

    def give_up(self, budget: Semaphore | MemoryBudget, n: int) -> None:
        """The loop's side: it no longer waits; the thread's wait is called off, and
        tokens it took go back."""
        with self.lock:
            self.gave_up = True
            got = self.got
        if got:
            budget.release(n)
        else:
            budget._withdraw(self.ticket)
