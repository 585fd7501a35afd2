"""What ``Group`` and ``AsyncGroup`` share: the life-cycle states, the ``limit`` check,
the verdict (what leaving a group's block raises) and the ``metrics=`` check and
sample. May import ``_core`` only.

The verdict, as the docstrings of both groups state it: a ``KeyboardInterrupt`` or
``SystemExit`` (of a task or of the block) is raised as it is; otherwise every real
failure of a task, in the order they happened, then the block's own exception, in an
``ExceptionGroup``; the deadline alone is a plain ``TimeoutError``. Cancellations are
no failures: what happens to them is the caller's part (a sync group lets the block's
own through, an async group swallows its own cancel scope's).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Final

from .._core.dynamic import Adaptive, Autoscale
from .._core.metrics import MetricsSample, check_metrics, read_statistics
from .._core.options import size_or_policy

__all__ = ["CLOSED", "EXITING", "NEW", "OPEN", "GroupBase", "check_group_metrics",
           "check_limit", "group_samples", "verdict"]

NEW: Final = 0
OPEN: Final = 1
EXITING: Final = 2  # the block has ended; running tasks may still call go()
CLOSED: Final = 3


class GroupBase:
    """What both groups show the same way: their ``limit`` and whether they were
    cancelled (each group keeps ``_limit`` and ``_cancelled``)."""

    __slots__ = ()
    _limit: int | None
    _cancelled: bool

    @property
    def limit(self) -> int | None:
        """The most tasks in flight at once (None: no limit)."""
        return self._limit

    @property
    def cancelled(self) -> bool:
        """True once the group was cancelled (a failure, the deadline, ``cancel()``)."""
        return self._cancelled


def check_limit(limit: int | Autoscale | Adaptive | None,
                pool: object) -> tuple[int | None, Autoscale | Adaptive | None]:
    """Validate a group's ``limit``: None (no limit), an int, or a dynamic policy for
    the group's own pool (``wp.Autoscale``: threads come and go between its bounds;
    ``wp.Adaptive``: the tasks running at once follow its limit). Returns the most
    tasks in flight (``go`` blocks there) and the policy, if any.

    Raises:
        TypeError: *limit* is none of those, or a policy with *pool* (it sizes the
            group's own pool).
        ValueError: an int below 1.
    """
    if limit is None:
        return None, None
    if isinstance(limit, Autoscale | Adaptive) and pool is not None:
        raise TypeError(f"a {type(limit).__name__} limit sizes the group's own pool: "
                        "not with pool= (give that pool the policy instead)")
    return size_or_policy("limit", limit, "an int, a wp.Autoscale, a wp.Adaptive or None")


def check_group_metrics(metrics: bool | str, pool: object) -> None:
    """Validate a group's ``metrics=``: a group shows the statistics of its own pool,
    so not with ``pool=`` (which may run other work: opt that pool in instead).

    Raises:
        TypeError: *metrics* is not a bool or a str.
        ValueError: an empty name, or *metrics* with *pool*.
    """
    check_metrics(metrics)
    if metrics is not False and pool is not None:
        raise ValueError("metrics= shows the group's own pool: with pool=, pass "
                         "metrics= to that pool instead")


def group_samples(group: Any, name: str) -> list[MetricsSample]:
    """What a group with ``metrics=`` shows: its own pool's statistics (once it has a
    pool: a ``Group`` makes it on entering), with the group's ``limit``."""
    pool = group._metrics_pool()
    if pool is None:
        return []
    return [MetricsSample(name, type(group).__name__, read_statistics(pool), group.limit)]


def verdict(message: str, errors: Sequence[Exception], base_error: BaseException | None,
            timed_out: bool, exc: BaseException | None, body_error: Exception | None) -> bool:
    """Raise what the tasks' ends and the block's *body_error* make leaving the block
    raise. Return True when *exc* (the block's exception) is the group's
    ``KeyboardInterrupt``/``SystemExit`` and propagates as it is; False when there is
    nothing to raise, and the caller decides about *exc* (a cancellation, or None).
    """
    if base_error is not None:
        if base_error is exc:
            return True
        raise base_error
    failures = list(errors)
    if body_error is not None:
        failures.append(body_error)
    if len(failures) == 1 and timed_out and body_error is None:
        raise failures[0]  # only the deadline: a plain TimeoutError
    if failures:
        raise ExceptionGroup(message, failures) from None
    return False
