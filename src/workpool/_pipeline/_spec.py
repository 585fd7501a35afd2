"""What a stage is: its frozen description, checked when the pipeline is built.

A ``StageSpec`` says what a stage does (``op``), with which function, on which kind of
workers and how many, what it does with errors (``on_error``, as everywhere: see
``_core.options``) and what budget its items hold. The functions that workers call
are plain module-level wrappers (``call_filter``, ``call_flat``...), so that a process
stage can pickle them.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from typing import Any, Final

from .._core.dynamic import Adaptive, Autoscale
from .._core.options import (
    Cost,
    check_budget,
    check_choice,
    check_on_error,
    check_rate,
    check_retry,
    check_timeout,
)
from .._core.ratelimit import RateLimit
from .._core.retry import Retry
from .._sync.memory_budget import Budget, MemoryBudget
from .._sync.semaphore import Semaphore

__all__ = [
    "BATCH", "EACH", "FILTER", "FLAT", "KINDS", "MAP", "UNBATCH",
    "StageSpec", "Workers", "check_buffer", "check_timeout",
    "worker_function",
]

Workers = int | float | Autoscale | Adaptive

MAP: Final = "map"
FILTER: Final = "filter"
FLAT: Final = "flat_map"
EACH: Final = "each"
BATCH: Final = "batch"
UNBATCH: Final = "unbatch"

KINDS: Final = ("thread", "process", "async", "dask")
# The on_error values each op cannot honour, with the rule.
_REFUSED: Final = {EACH: {"return": "on_error='return' puts a failure in its item's place "
                                    "in the output, and each() has none: on_error must "
                                    "be 'raise', 'collect' or 'skip' for a sink"}}


@dataclass(frozen=True, slots=True)
class StageSpec:
    """One stage, as the user described it (checked, with defaults resolved)."""

    op: str
    name: str
    fn: Callable[..., Any] | None = None
    kind: str = "thread"
    workers: int = 1  # the most workers (a dynamic policy's max)
    dynamic: Autoscale | Adaptive | None = None  # a dynamic stage's policy
    buffer: int = 64
    ordered: bool = True
    timeout: float | None = None
    retry: Retry | None = None
    rate: RateLimit | None = None
    on_error: str = "raise"
    budget: Budget | None = None
    cost: Cost = 1  # tokens of the budget per item, or a function of the item
    size: int = 0  # batch
    transactional: bool = False  # each

    @property
    def pool_workers(self) -> int | Autoscale | Adaptive:
        """What the stage's pool takes as ``workers=``."""
        return self.workers if self.dynamic is None else self.dynamic

    @property
    def pooled(self) -> bool:
        """Whether the stage runs its function on a pool (batch and unbatch do not)."""
        return self.op not in (BATCH, UNBATCH)

    @property
    def policies(self) -> bool:
        """Whether a per-item policy (timeout, retry, rate) applies: items then go to
        the workers one at a time, so that the policy sees each of them."""
        return self.timeout is not None or self.retry is not None or self.rate is not None


def check_buffer(buffer: int | None, workers: int) -> int:
    """The capacity of a stage's output channel: *buffer*, or ``max(64, 2 * workers)``."""
    if buffer is None:
        return max(64, 2 * workers)
    if isinstance(buffer, bool) or not isinstance(buffer, int):
        raise TypeError(f"buffer must be an int or None, got {buffer!r}")
    if buffer < 1:
        raise ValueError(f"buffer must be >= 1, got {buffer}")
    return buffer


def check_stage(op: str, fn: Any, kind: str, on_error: str, retry: Any, rate: Any,
                budget: Any, cost: Cost) -> None:
    """Check the options every function stage shares."""
    if not callable(fn):
        raise TypeError(f"fn must be callable, got {fn!r}")
    check_choice(kind, "kind", KINDS)
    check_on_error(on_error, _REFUSED.get(op))
    check_retry(retry)
    check_rate(rate)
    check_budget(budget, (Semaphore, MemoryBudget), cost,
                 bounded=not isinstance(budget, MemoryBudget))


def stage_name(op: str, fn: Any) -> str:
    """``map(fetch)``: the op and the function's name."""
    if fn is None:
        return op
    inner = fn.func if isinstance(fn, partial) else fn
    name = getattr(inner, "__name__", None) or type(inner).__name__
    return f"{op}({name})"


# -- what the workers call ------------------------------------------------------------------

def call_filter(pred: Callable[[Any], object], item: Any) -> bool:
    """A filter stage's worker: the predicate's truth (only a bool travels back)."""
    return bool(pred(item))


def call_flat(fn: Callable[[Any], Any], item: Any) -> list[Any]:
    """A flat_map stage's worker: the iterable, read to the end in the worker, so that
    an error while iterating is the item's error."""
    return list(fn(item))


async def acall_map(fn: Callable[[Any], Any], item: Any) -> Any:
    """An async stage's worker: await what *fn* returns if it is awaitable."""
    result = fn(item)
    if inspect.isawaitable(result):
        result = await result
    return result


async def acall_filter(pred: Callable[[Any], Any], item: Any) -> bool:
    """An async filter's worker."""
    return bool(await acall_map(pred, item))


async def acall_flat(fn: Callable[[Any], Any], item: Any) -> list[Any]:
    """An async flat_map's worker: *fn* returns an async iterable, or an iterable
    (directly or awaited)."""
    result = fn(item)
    if hasattr(type(result), "__aiter__"):
        return [x async for x in result]
    if inspect.isawaitable(result):
        result = await result
    return list(result)


def worker_function(spec: StageSpec) -> Callable[..., Any]:
    """The function a stage's workers call on each item."""
    fn = spec.fn
    assert fn is not None
    if spec.kind == "async":
        wrapper = {FILTER: acall_filter, FLAT: acall_flat}.get(spec.op, acall_map)
        return partial(wrapper, fn)
    if spec.op == FILTER:
        return partial(call_filter, fn)
    if spec.op == FLAT:
        return partial(call_flat, fn)
    return fn
