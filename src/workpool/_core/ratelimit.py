"""Rate limits: a frozen ``RateLimit`` policy and the token bucket a pool shares.

The bucket is a GCRA (generic cell rate algorithm): instead of refilling tokens it keeps
the theoretical arrival time of the next task. Each reservation is an absolute slot, so
timer jitter never accumulates and the achieved rate stays on the limit over long runs;
no window of T seconds ever admits more than ``per_second * T + burst`` tasks.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass
from typing import final

__all__ = ["RateLimit", "TokenBucket"]


@final
@dataclass(frozen=True, slots=True)
class RateLimit:
    """At most ``per_second`` task starts per second, shared by every worker of a pool,
    with at most ``burst`` starting back to back.

    Example::

        pool = wp.ThreadPool(50, rate=wp.RateLimit(per_second=20))
    """

    per_second: float
    burst: int = 1

    def __post_init__(self) -> None:
        if not isinstance(self.per_second, int | float) or not self.per_second > 0:
            raise ValueError(f"per_second must be > 0, got {self.per_second!r}")
        if not isinstance(self.burst, int) or self.burst < 1:
            raise ValueError(f"burst must be an int >= 1, got {self.burst!r}")

    def bucket(self) -> TokenBucket:
        """A fresh token bucket enforcing this limit."""
        return TokenBucket(self)


@final
class TokenBucket:
    """The shared, thread-safe state of a ``RateLimit``."""

    __slots__ = ("_interval", "_lock", "_tat", "_tolerance", "limit")

    def __init__(self, limit: RateLimit) -> None:
        self.limit = limit
        self._interval = 1.0 / limit.per_second
        self._tolerance = (limit.burst - 1) * self._interval
        self._lock = threading.Lock()
        self._tat = 0.0

    def reserve(self) -> float:
        """Claim the next slot; return how many seconds to wait before starting."""
        with self._lock:
            now = time.monotonic()
            tat = max(self._tat, now)
            self._tat = tat + self._interval
            return max(0.0, tat - self._tolerance - now)

    def acquire(self, stop: threading.Event | None = None) -> bool:
        """Wait for a slot. Returns False if *stop* was set first (the slot is lost)."""
        wait = self.reserve()
        if wait <= 0.0:
            return True
        if stop is None:
            time.sleep(wait)
            return True
        return not stop.wait(wait)
