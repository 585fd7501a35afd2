"""Checks of the options that pools, groups and stages share, with errors that state
the rule. Imports nothing above ``_core``."""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

from .ratelimit import RateLimit
from .retry import Retry

__all__ = [
    "check_choice", "check_chunksize", "check_cost", "check_grace", "check_map_args",
    "check_map_timeout",
    "check_pool_options", "check_rate", "check_retry", "check_schedule_args",
    "check_timeout", "check_window", "pool_workers", "stage_workers",
]


def check_timeout(timeout: float | None, name: str = "timeout") -> float | None:
    """A timeout in seconds: a number > 0, or None for none.

    ``math.inf`` means no timeout too (None is returned); ``nan`` is refused, since it
    compares false with every deadline and would silently mean "never".

    Raises:
        TypeError: *timeout* is not a number.
        ValueError: *timeout* is not > 0 (``nan`` included).
    """
    if timeout is None:
        return None
    if isinstance(timeout, bool) or not isinstance(timeout, int | float):
        raise TypeError(f"{name} must be a number of seconds or None, got {timeout!r}")
    if not timeout > 0:  # false for nan too
        raise ValueError(f"{name} must be > 0, got {timeout!r}")
    if math.isinf(timeout):
        return None
    return float(timeout)


def check_grace(timeout: float | None, name: str = "timeout") -> float | None:
    """A wait in seconds that may be 0 ("at once"), such as a shutdown's grace; None
    and ``math.inf`` mean no limit.

    Raises:
        TypeError: *timeout* is not a number.
        ValueError: *timeout* is negative or ``nan``.
    """
    if timeout is None:
        return None
    if isinstance(timeout, bool) or not isinstance(timeout, int | float):
        raise TypeError(f"{name} must be a number of seconds or None, got {timeout!r}")
    if not timeout >= 0:  # false for nan too
        raise ValueError(f"{name} must be >= 0, got {timeout!r}")
    if math.isinf(timeout):
        return None
    return float(timeout)


def check_map_timeout(timeout: float | None) -> None:
    """``map(timeout=)``, the stdlib's: seconds after the call by which each result
    must be ready; 0 means "ready now", None (or ``math.inf``) no limit.

    Raises:
        TypeError: *timeout* is not a number.
        ValueError: *timeout* is negative or ``nan``.
    """
    if timeout is not None:
        if isinstance(timeout, bool) or not isinstance(timeout, int | float):
            raise TypeError(f"timeout must be a number of seconds or None, got {timeout!r}")
        if not timeout >= 0:  # false for nan too
            raise ValueError(f"timeout must be >= 0, got {timeout!r}")


def check_chunksize(chunksize: int | str) -> None:
    """A ``map``'s ``chunksize``: an int >= 1, or ``"auto"``."""
    if chunksize != "auto" and (not isinstance(chunksize, int) or isinstance(chunksize, bool)
                                or chunksize < 1):
        raise ValueError(f"chunksize must be >= 1 or 'auto', got {chunksize!r}")


def check_window(window: int | None) -> None:
    """A ``map``'s ``window``: an int >= 1, or None for the default."""
    if window is not None and (not isinstance(window, int) or isinstance(window, bool)
                               or window < 1):
        raise ValueError(f"window must be >= 1, got {window!r}")


def check_choice(value: object, name: str, choices: tuple[str, ...]) -> None:
    """*value* is one of *choices*: ``on_error must be 'raise' or 'return', got 'x'``."""
    if value not in choices:
        quoted = [repr(choice) for choice in choices]
        allowed = quoted[0] if len(quoted) == 1 else (
            ", ".join(quoted[:-1]) + " or " + quoted[-1])
        raise ValueError(f"{name} must be {allowed}, got {value!r}")


def check_retry(retry: Retry | None) -> None:
    """``retry=``: a ``wp.Retry`` or None."""
    if retry is not None and not isinstance(retry, Retry):
        raise TypeError(f"retry must be a wp.Retry or None, got {retry!r}")


def check_rate(rate: RateLimit | None) -> None:
    """``rate=``: a ``wp.RateLimit`` or None."""
    if rate is not None and not isinstance(rate, RateLimit):
        raise TypeError(f"rate must be a wp.RateLimit or None, got {rate!r}")


def check_cost(cost: int) -> int:
    """``cost=``: the tokens of a budget one task holds, an int >= 1."""
    if isinstance(cost, bool) or not isinstance(cost, int) or cost < 1:
        raise ValueError(f"cost must be an int >= 1, got {cost!r}")
    return cost


def check_pool_options(queue_size: int, retry: Retry | None, rate: RateLimit | None,
                       initializer: Callable[..., Any] | None) -> None:
    """The options every pool's constructor shares."""
    if isinstance(queue_size, bool) or not isinstance(queue_size, int):
        raise TypeError(f"queue_size must be an int, got {queue_size!r}")
    if queue_size < 0:
        raise ValueError(f"queue_size must be >= 0, got {queue_size}")
    check_retry(retry)
    check_rate(rate)
    if initializer is not None and not callable(initializer):
        raise TypeError("initializer must be a callable")  # the stdlib's message


def check_schedule_args(priority: int, retry: Retry | None,
                        kwargs: dict[str, Any] | None, cost: int = 1) -> None:
    """What every pool's ``schedule`` takes beyond the call."""
    if isinstance(priority, bool) or not isinstance(priority, int):
        raise TypeError(f"priority must be an int, got {priority!r}")
    check_retry(retry)
    if kwargs is not None and not isinstance(kwargs, dict):
        raise TypeError(f"kwargs must be a dict or None, got {kwargs!r}")
    check_cost(cost)


def pool_workers(workers: int | None, max_workers: int | None, default: int) -> int:
    """A pool's worker count: ``workers`` or its stdlib alias ``max_workers``, checked;
    *default* if neither is given.

    Raises:
        TypeError: both are given and differ, or *workers* is not an int.
        ValueError: a count below 1 (for ``max_workers``, the stdlib's message).
    """
    if workers is not None and max_workers is not None and workers != max_workers:
        raise TypeError("pass workers or max_workers, not both")
    if max_workers is not None:
        if max_workers <= 0:
            raise ValueError("max_workers must be greater than 0")  # the stdlib's message
        return max_workers
    if workers is None:
        return default
    if isinstance(workers, bool) or not isinstance(workers, int):
        raise TypeError(f"workers must be an int, got {workers!r}")
    if workers < 1:
        raise ValueError(f"workers must be >= 1, got {workers}")
    return workers


def stage_workers(workers: int | float, cpus: Callable[[], int]) -> int:
    """A pipeline stage's worker count: an int as it is (>= 1); a float as that
    multiple of ``wp.cpus()`` (*cpus*), rounded half up, at least 1 (``0.5`` on 4
    CPUs: 2; ``0.1`` on 2 CPUs: 1; ``1.5`` on 2 CPUs: 3).

    Raises:
        TypeError: *workers* is not an int or a float.
        ValueError: an int below 1, or a float that is not finite and > 0.
    """
    if isinstance(workers, bool) or not isinstance(workers, int | float):
        raise TypeError(f"workers must be an int or a float multiple of wp.cpus(), "
                        f"got {workers!r}")
    if isinstance(workers, int):
        if workers < 1:
            raise ValueError(f"workers must be >= 1, got {workers}")
        return workers
    if not math.isfinite(workers) or workers <= 0:
        raise ValueError(f"workers as a multiple of wp.cpus() must be > 0, got {workers!r}")
    return max(1, math.floor(workers * cpus() + 0.5))


def check_map_args(chunksize: int | str, window: int | None, on_error: str,
                   timeout: float | None, on_errors: tuple[str, ...]) -> None:
    """A ``map``'s keywords, at the call; *on_errors* are the pool's ``on_error``
    choices (the async pool also takes ``"collect"``)."""
    check_chunksize(chunksize)
    check_window(window)
    check_choice(on_error, "on_error", on_errors)
    check_map_timeout(timeout)
