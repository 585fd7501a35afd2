"""Chunks of ``map`` items: how a worker runs one, and what it sends back.

May import ``_core`` only.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any, Protocol

from .context import TaskContext
from .exceptions import Cancelled
from .ratelimit import TokenBucket

__all__ = ["Chunk", "ChunkRun", "run_chunk"]


class ChunkRun(Protocol):
    """The run a chunk belongs to (a ``map`` call, a pipeline stage), as the pools'
    chunk API (``ExecutorPool._submit_chunk``) reads it: the pool keeps what it
    prepares once per run (the pickled function) itself, keyed by the run."""

    #: Read between items of a running thread chunk: once true, the rest fail with
    #: ``Cancelled`` (the consumer went away).
    closed: bool


class Chunk:
    """The end of a chunk: a value per item that ran, and the errors by index."""

    __slots__ = ("errors", "failed", "seconds", "values")

    def __init__(self, values: list[Any], errors: dict[int, BaseException] | None,
                 seconds: float) -> None:
        self.values = values
        self.errors = errors
        self.failed = 0 if errors is None else len(errors)
        self.seconds = seconds

    def __reduce__(self) -> tuple[Any, ...]:
        return Chunk, (self.values, self.errors, self.seconds)


class _Never:
    closed = False


def run_chunk(fn: Callable[..., Any], items: list[Any], star: bool,
              ctx: TaskContext | None, flag: Any = None,
              bucket: TokenBucket | None = None, stop: Any = None) -> Chunk:
    """Call *fn* on each item (``fn(*item)`` when *star*), catching each error.

    Stops early, failing the rest with ``Cancelled``, once *ctx* is cancelled or
    *flag*.closed turns true (the map's consumer went away).
    """
    values: list[Any] = []
    append = values.append
    errors: dict[int, BaseException] | None = None
    if flag is None:
        flag = _Never
    started = time.perf_counter()
    # The loop is the per-item hot path of map(): keep it to an attribute check, a
    # call and an append.
    for item in items:
        if flag.closed or (ctx is not None and ctx._cancelled):
            break
        if bucket is not None and not bucket.acquire(stop):
            break
        try:
            append(fn(*item) if star else fn(item))
        except BaseException as exc:  # a task's error never kills its worker
            if errors is None:
                errors = {}
            errors[len(values)] = exc
            append(None)
    if len(values) < len(items):
        if errors is None:
            errors = {}
        for index in range(len(values), len(items)):
            errors[index] = Cancelled("map was cancelled")
            append(None)
    return Chunk(values, errors, time.perf_counter() - started)
