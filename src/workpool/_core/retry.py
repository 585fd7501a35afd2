"""Retry policy: exponential backoff with jitter, as a frozen value object."""

from __future__ import annotations

import math
import random
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Literal, final

from .exceptions import Cancelled

__all__ = ["Retry", "retry_after"]

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

    def delay_for(self, exc: BaseException, attempt: int,
                  rng: random.Random | None = None) -> float:
        """Seconds to wait after run number *attempt* failed with *exc*: ``delay``, or
        longer when *exc* carries a retry-after hint (an attribute ``retry_after`` in
        seconds, see ``retry_after``): the service said when to come back, and an
        earlier retry would only be refused again. The hint is not capped by
        ``max_backoff``."""
        backoff = self.delay(attempt, rng)
        hint = retry_after(exc)
        return backoff if hint is None else max(hint, backoff)


def retry_after(exc: BaseException) -> float | None:
    """The seconds *exc* asks to wait before its task runs again, or None.

    An exception carries the hint as an attribute ``retry_after``: a number of seconds
    (int or float, >= 0) or the text of an HTTP ``Retry-After`` header in seconds
    (``"30"``). Anything else (absent, None, a date, negative) is no hint.

    Example::

        class Throttled(Exception):
            def __init__(self, seconds: float) -> None:
                super().__init__(f"429, retry in {seconds} s")
                self.retry_after = seconds
    """
    hint = getattr(exc, "retry_after", None)
    if isinstance(hint, str):
        try:
            hint = float(hint.strip())
        except ValueError:
            return None
    if isinstance(hint, bool) or not isinstance(hint, int | float):
        return None
    return float(hint) if math.isfinite(hint) and hint >= 0 else None
