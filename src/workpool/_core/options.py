"""Checks of the options that pools, groups and stages share, with errors that state
the rule: one vocabulary, each keyword meaning the same wherever it is accepted. Imports
nothing above ``_core``.

Where each keyword is accepted (``-``: not accepted, and why)::

    keyword   pools' ctor   submit/schedule   map                Group/AsyncGroup  stage
    --------  ------------  ----------------  -----------------  ----------------  -----------
    on_error  -             -                 all four values    - (1)             all four (2)
    timeout   per task      schedule: per     the stdlib's (3)   whole group (4)   per item (4)
                            task
    retry     per task      schedule: per     - (the pool's)     - (the pool's)    per item
                            task
    rate      the pool's    -                 - (the pool's)     - (the pool's)    per stage
    priority  -             schedule          - (5)              -                 - (6)
    budget    every task    (the pool's)      every item (7)     - (9)             per item (8)
    cost      -             schedule          per item (7)       - (9)             per item (8)
    progress  -             -                 bar or callable    - (10)            - (10)
    metrics   the pool's    -                 -                  own pool's (11)   all (11)

``on_error``, the same four values everywhere (``check_on_error``):

- ``"raise"``: the first failure (in output order) is raised after the items before
  it, and stops the rest.
- ``"return"``: every item comes out as a ``wp.Value`` or a ``wp.Error``: the failure
  takes the failed item's place.
- ``"collect"``: go on past failures; each is kept (a ``wp.CollectedError``: where,
  the item, the exception, its traceback), and once the rest came out one
  ``wp.ItemsFailed`` listing them all is raised.
- ``"skip"``: failed items are dropped (counted: ``failed`` in the pool's statistics,
  ``skipped`` in a pipeline's report).

Notes: (1) a group fails fast by design (the first failure cancels it) and has no
``on_error``. (2) ``each()`` has no output for ``"return"`` to put a failure in: it
refuses it. (3) ``map(timeout=)`` is the stdlib's: seconds after the call by which each
result must be ready, so that code written for ``concurrent.futures`` keeps working; the
per-item limit is the pool's ``timeout``. (4) a group's ``timeout`` bounds the block;
``batch(timeout=)`` is how long a partial batch waits. (5) a map's items have one
priority, the default. (6) a stage's items run on a pool of the stage's own, so there is
nothing to order them against. (7) ``cost=`` tokens per item (1 unless said), an int
or a function of the item (then each item is a chunk of its own). (8) ``budget=`` a
``wp.Semaphore`` or a ``wp.MemoryBudget`` (shared with anything else), ``cost=`` tokens
per item, an int or a function of the item, held while it is handed to the workers and
until it ends, on every kind of stage. An ``AsyncPool`` (and so an async stage) takes a
``wp.AsyncSemaphore`` as well, and waits for a shared budget's tokens in a worker
thread. A ``wp.MemoryBudget`` lets a cost larger
than its capacity through, alone; a ``wp.Semaphore`` refuses it. (9) a
group's tasks hold the budget of the pool it runs on (``pool=``), if any; the group
itself takes none. (10) ``map(progress=True)`` draws a live bar, ``progress=callable``
receives ``wp.ProgressCounts`` (``_core/progress.py``); groups have no ``map``, and a
pipeline shows every stage at once: ``Pipeline.run(progress=True)``. (11) ``metrics=True``
or a name shows the object to ``workpool.exporters.prometheus`` (``_core/metrics.py``):
a group its own pool (not with ``pool=``), ``Pipeline(metrics=)`` every pooled stage.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any, Final, Literal

from .dynamic import Adaptive, Autoscale
from .ratelimit import RateLimit
from .retry import Retry

__all__ = [
    "ON_ERROR", "OnError",
    "Cost", "check_budget", "check_choice", "check_chunksize", "check_cost", "check_grace",
    "check_map_args", "check_map_timeout", "check_on_error",
    "check_pool_options", "check_rate", "check_retry", "check_schedule_args",
    "check_timeout", "check_window", "item_cost", "pool_workers", "stage_workers",
]

OnError = Literal["raise", "return", "collect", "skip"]
Cost = int | Callable[[Any], int]  # cost= where items have one each: tokens, or a function
ON_ERROR: Final = ("raise", "return", "collect", "skip")


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


def check_on_error(on_error: object, refused: dict[str, str] | None = None) -> None:
    """``on_error=``: one of ``ON_ERROR`` (the module docstring says what each means),
    and not one of *refused*, a place's values it cannot honour, each with the rule.

    Raises:
        ValueError: an unknown value, or a refused one.
    """
    if not isinstance(on_error, str) or on_error not in ON_ERROR:
        raise ValueError("on_error must be one of 'raise', 'return', 'collect', 'skip', "
                         f"not {on_error!r}")
    if refused is not None and on_error in refused:
        raise ValueError(refused[on_error])


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


def check_cost(cost: Cost, *, per_item: bool = False) -> Cost:
    """``cost=``: the tokens of a budget one task holds, an int >= 1; where *per_item*
    (``map``, stages), a function of the item that returns them may stand instead."""
    if per_item and callable(cost):
        return cost
    if isinstance(cost, bool) or not isinstance(cost, int) or cost < 1:
        if per_item and not isinstance(cost, int):
            raise ValueError(f"cost must be an int >= 1 or a function of the item, "
                             f"got {cost!r}")
        raise ValueError(f"cost must be an int >= 1, got {cost!r}")
    return cost


def check_budget(budget: object, kind: type[Any] | tuple[type[Any], ...], cost: Cost = 1,
                 *, bounded: bool = True) -> None:
    """``budget=``: None, or a semaphore of *kind* (each named ``wp.<kind>`` in the
    error), with ``cost=`` (an int, or a function of the item) checked too: where the
    budget is *bounded*, an int cost must not exceed its capacity (that task would wait
    for ever; a ``wp.MemoryBudget`` runs it alone instead).

    Raises:
        TypeError: *budget* is not a *kind*.
        ValueError: a bad *cost*, or more than a bounded budget's capacity.
    """
    check_cost(cost, per_item=True)
    if budget is None:
        if cost != 1:
            raise ValueError(f"cost is tokens of a budget: pass budget= too (cost={cost!r})")
        return
    kinds = kind if isinstance(kind, tuple) else (kind,)
    if not isinstance(budget, kinds):
        listed = ", ".join(f"a wp.{k.__name__}" for k in kinds)
        raise TypeError(f"budget must be {listed} or None, got {budget!r}")
    capacity = budget.capacity
    if bounded and isinstance(cost, int) and cost > capacity:
        raise ValueError(f"cost must be <= the budget's capacity ({capacity}), got {cost}")


def item_cost(cost: Cost, item: Any, bound: int | None) -> int:
    """The tokens *item* holds: *cost*, or what ``cost(item)`` returns, which must be an
    int >= 1, and at most *bound* (a bounded budget's capacity) unless *bound* is None.

    Raises:
        ValueError: ``cost(item)`` returned something else.
        Whatever ``cost(item)`` raised.
    """
    if not callable(cost):
        return cost
    n = cost(item)
    if isinstance(n, bool) or not isinstance(n, int) or n < 1:
        raise ValueError(f"cost(item) must return an int >= 1, got {n!r}")
    if bound is not None and n > bound:
        raise ValueError(f"cost(item) must be <= the budget's capacity ({bound}), got {n}")
    return n


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


Workers = int | Autoscale | Adaptive
"""What ``workers=`` takes: a count, or a dynamic pool's policy."""


def pool_workers(workers: Workers | None, max_workers: int | None,
                 default: int) -> tuple[int, Autoscale | Adaptive | None]:
    """A pool's worker count and dynamic policy: ``workers`` (an int, a
    ``wp.Autoscale`` or a ``wp.Adaptive``) or its stdlib alias ``max_workers``,
    checked; *default* workers if neither is given. The count is the most workers the
    pool may have (a dynamic policy's ``max``).

    Raises:
        TypeError: both are given and differ, or *workers* is none of the above.
        ValueError: a count below 1 (for ``max_workers``, the stdlib's message).
    """
    if workers is not None and max_workers is not None and workers != max_workers:
        raise TypeError("pass workers or max_workers, not both")
    if max_workers is not None:
        if isinstance(max_workers, bool) or not isinstance(max_workers, int):
            raise TypeError(f"max_workers must be an int, got {max_workers!r}")
        if max_workers <= 0:
            raise ValueError("max_workers must be greater than 0")  # the stdlib's message
        return max_workers, None
    if workers is None:
        return default, None
    return size_or_policy("workers", workers, "an int, a wp.Autoscale or a wp.Adaptive")


def size_or_policy(name: str, value: object,
                   kinds: str) -> tuple[int, Autoscale | Adaptive | None]:
    """A count of workers or tasks (>= 1), or a dynamic policy: the most it allows
    (the policy's ``max``) and the policy, if any. *kinds* names what *name* takes,
    for the error.

    Raises:
        TypeError: *value* is neither an int nor a policy.
        ValueError: an int below 1.
    """
    if isinstance(value, Autoscale | Adaptive):
        return value.max, value
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"{name} must be {kinds}, got {value!r}")
    if value < 1:
        raise ValueError(f"{name} must be >= 1, got {value}")
    return value, None


def check_resize(dynamic: Autoscale | Adaptive | None, workers: int | None,
                 low: int | None, high: int | None) -> None:
    """Check the arguments of a pool's ``resize``: a count for a fixed pool; a count
    (the new ``max``) or ``min=``/``max=`` for a dynamic one.

    Raises:
        TypeError: a count where bounds are expected or the other way round, or not
            an int.
        ValueError: a count below 1, or bounds that break their policy's rules.
    """
    for name, value in (("workers", workers), ("min", low), ("max", high)):
        if value is not None and (isinstance(value, bool) or not isinstance(value, int)):
            raise TypeError(f"{name} must be an int, got {value!r}")
    if dynamic is None:
        if low is not None or high is not None:
            raise TypeError("min= and max= resize a wp.Autoscale or wp.Adaptive pool; "
                            "a fixed pool takes resize(workers)")
        if workers is None:
            raise TypeError("resize() needs the new worker count")
    elif isinstance(dynamic, Adaptive) and workers is not None:
        raise TypeError("an Adaptive pool's limit moves by itself: resize(min=, max=) "
                        "moves its bounds")
    elif workers is None and low is None and high is None:
        raise TypeError("resize() needs workers, min= or max=")
    if workers is not None and workers < 1:
        raise ValueError(f"workers must be >= 1, got {workers}")


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
                   timeout: float | None) -> None:
    """A ``map``'s keywords, at the call (the same on every pool)."""
    check_chunksize(chunksize)
    check_window(window)
    check_on_error(on_error)
    check_map_timeout(timeout)
