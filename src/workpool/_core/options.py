"""Checks of the options that pools, groups and stages share, with errors that state
the rule. Imports nothing above ``_core``."""

from __future__ import annotations

import math

__all__ = ["check_grace", "check_timeout"]


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
