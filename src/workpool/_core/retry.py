"""Retry policy: exponential backoff with jitter, as a frozen value object."""

from __future__ import annotations

import random
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Literal, final

from .exceptions import Cancelled

__all__ = ["Retry"]

Jitter = Literal["full", "equal", "none"]
RetryOn = type[BaseException] | tuple[type[BaseException], ...] | Callable[[BaseException], bool]


@final
@dataclass(frozen=True, slots=True)
class Retry:
    """Run a failed task again, up to ``attempts`` runs in all, with exponential backoff.

    The delay before retry *k* (k = 1 after the first failure) is
    ``min(max_backoff, backoff * multiplier ** (k - 1))``, then jittered: ``"full"``
    draws uniformly from [0, delay], ``"equal"`` from [delay/2, delay], ``"none"``
    keeps it. A task waiting for its retry holds no worker. ``wp.Cancelled`` is never
    retried.

    Args:
        attempts: runs in all, the first included (>= 1).
        backoff: the first delay, in seconds.
        multiplier: growth of the delay per retry (>= 1).
        max_backoff: the cap on one delay.
        jitter: "full", "equal" or "none".
        on: exception types to retry, or a predicate on the exception.

    Example::

        pool = wp.ThreadPool(8, retry=wp.Retry(attempts=5, on=(ConnectionError,)))
    """

    attempts: int = 3
    backoff: float = 0.1
    multiplier: float = 2.0
    max_backoff: float = 30.0
    jitter: Jitter = "full"
    on: RetryOn = field(default=(Exception,))

    def __post_init__(self) -> None:
        if not isinstance(self.attempts, int) or self.attempts < 1:
            raise ValueError(f"attempts must be an int >= 1, got {self.attempts!r}")
        if self.backoff < 0:
            raise ValueError(f"backoff must be >= 0, got {self.backoff!r}")
        if self.multiplier < 1:
            raise ValueError(f"multiplier must be >= 1, got {self.multiplier!r}")
        if self.max_backoff < 0:
            raise ValueError(f"max_backoff must be >= 0, got {self.max_backoff!r}")
        if self.jitter not in ("full", "equal", "none"):
            raise ValueError(f"jitter must be 'full', 'equal' or 'none', got {self.jitter!r}")
        on = self.on
        is_types = (isinstance(on, type) and issubclass(on, BaseException)) or (
            isinstance(on, tuple)
            and all(isinstance(t, type) and issubclass(t, BaseException) for t in on))
        if not is_types and not callable(on):
            raise TypeError(f"on must be exception types or a predicate, got {on!r}")

    def should_retry(self, exc: BaseException, attempt: int) -> bool:
        """Whether a task whose run number *attempt* raised *exc* runs again."""
        if attempt >= self.attempts or isinstance(exc, Cancelled):
            return False
        on = self.on
        if isinstance(on, type | tuple):
            return isinstance(exc, on)
        return bool(on(exc))

    def delay(self, attempt: int, rng: random.Random | None = None) -> float:
        """Seconds to wait after run number *attempt* failed, jitter applied."""
        base = min(self.max_backoff, self.backoff * self.multiplier ** (attempt - 1))
        if self.jitter == "none":
            return base
        uniform = (rng or random).uniform
        if self.jitter == "full":
            return uniform(0.0, base)
        return uniform(base / 2, base)
