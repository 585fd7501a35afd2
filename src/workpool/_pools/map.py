"""Lazy, windowed, chunked ``map`` for the executor pools.

::

    input ──read up to `window` items ahead──▶ chunks ──pool._submit_chunk()──▶ workers
                                                                          │
    caller ◀── yield item by item ◀── in input order (a FIFO of chunk futures)
                                  ◀── or as chunks finish (a completion queue)

The caller's own thread reads the input, a little at a time as it consumes results,
so nothing runs ahead of the consumer by more than the window and an endless
generator maps in flat memory. With ``chunksize="auto"`` the chunk size starts at 1
and grows (at most 64-fold per chunk) until a chunk takes about ``target`` seconds,
from the measured time per item: joblib's auto-batching, for threads and processes.
While it grows, the window holds one chunk per worker instead of four, so that few
chunks of a size about to be outgrown are sent (each costs a round trip).
"""

from __future__ import annotations

import itertools
import math
import time
from collections import deque
from collections.abc import Callable, Generator, Iterable, Iterator
from concurrent.futures import Future
from itertools import islice
from queue import Empty, SimpleQueue
from typing import Any, TypeVar

from .._core.chunk import Chunk
from .._core.exceptions import ItemsFailed
from .._core.failures import CollectedError, CollectedErrors, collected
from .._core.options import Cost, OnError, item_cost
from .._core.outcome import Error, Value
from .._core.progress import ProgressArg, input_total
from .._core.retry import Retry
from .._engine.engine import Engine
from .._sync.memory_budget import Budget, cost_bound
from .progress import make_tracker

__all__ = ["MapIterator", "MapRun", "results"]

T = TypeVar("T")


class MapRun:
    """The state of one ``map`` call. ``closed`` is read by running chunks."""

    def __init__(self, engine: Engine, submit: Callable[..., Future[Chunk]],
                 fn: Callable[..., Any], iterables: tuple[Iterable[Any], ...],
                 *, timeout: float | None, chunksize: int | str, ordered: bool,
                 window: int | None, on_error: OnError, workers: int, target: float,
                 max_chunk: int, task_timeout: float | None = None,
                 task_retry: Retry | None = None, budget: Budget | None = None,
                 cost: Cost = 1, progress: ProgressArg = False) -> None:
        self.engine = engine  # remembers a map nobody iterated (drained at shutdown)
        self.submit = submit  # the pool's chunk API (ExecutorPool._submit_chunk)
        self.fn = fn
        self.star = len(iterables) != 1
        self._input: Iterator[Any] = (zip(*iterables, strict=False) if self.star
                                      else iter(iterables[0]))
        self.end_time = (None if timeout is None or math.isinf(timeout)
                         else time.monotonic() + timeout)
        self.auto = chunksize == "auto"
        self.chunk = 1 if self.auto else int(chunksize)
        self.growing = self.auto  # see the module docstring
        self.max_chunk = max_chunk if window is None else max(1, min(max_chunk, window // 2))
        # Each item of a chunk holds `cost` tokens of the budget while it is out (taken
        # by _submit_chunk): a chunk never costs more than the budget, but for one item
        # costlier than a MemoryBudget (which runs it alone). A cost function: one item
        # per chunk, each holding its own cost.
        self.cost = cost
        self.bound = cost_bound(budget)  # what cost(item) may not exceed
        if budget is not None:
            per_item = cost if isinstance(cost, int) else budget.capacity
            self.max_chunk = max(1, min(self.max_chunk, budget.capacity // per_item))
            self.chunk = min(self.chunk, self.max_chunk)
        self.workers = workers
        self.target = target
        self.fixed_window = window
        self.ordered = ordered
        self.task_timeout = task_timeout
        self.task_retry = task_retry
        self.on_error = on_error
        # on_error="collect": the items of the chunks out (to name a failed one), and
        # the failures so far.
        self.keep = on_error == "collect"
        self.sent: dict[Future[Chunk], list[Any]] = {}
        self.items: list[Any] = []  # the chunk next_chunk returned last
        self.failures: list[CollectedError] = []
        self.where = f"map({getattr(fn, '__name__', type(fn).__name__)})"
        # Advanced once per chunk handed out (None: no progress=).
        self.progress = make_tracker(progress, input_total(iterables), self.where)
        self.closed = False
        self.exhausted = False
        self.input_error: Exception | None = None  # what reading the input raised
        self.outstanding = 0  # items read and not yet handed to the caller
        self.inflight: deque[tuple[Future[Chunk], int]] = deque()
        self.done: SimpleQueue[Future[Chunk]] = SimpleQueue()
        # Unordered: chunks submitted and not yet taken, with their sizes.
        self.live: dict[Future[Chunk], int] = {}

    # -- the producer side --------------------------------------------------------------

    def window(self) -> int:
        if self.fixed_window is not None:
            return self.fixed_window
        return (1 if self.growing else 4) * self.workers * self.chunk

    def fill(self) -> None:
        """Read and submit chunks until the window is full or the input ends."""
        window = self.window()
        while not self.exhausted:
            size = self.chunk
            # Only whole chunks while others are in flight: a remnant sized to the
            # space left would free just as much space when consumed, and small chunks
            # would then stay in the window for good.
            if self.outstanding and self.outstanding + size > window:
                return
            items: list[Any] = []
            try:
                items.extend(islice(self._input, size))  # keeps what came before an error
            except Exception as exc:
                # Raised once the items read before it have come out (next_chunk).
                self.input_error = exc
                self.exhausted = True
                if not items:
                    return
            if len(items) < size:
                self.exhausted = True
                if not items:
                    return
            tokens = None if self.cost == 1 else sum(
                item_cost(self.cost, item, self.bound) for item in items)
            future = self.submit(self.fn, items, star=self.star, flag=self,
                                 timeout=self.task_timeout, retry=self.task_retry,
                                 tokens=tokens)
            self.outstanding += len(items)
            if self.keep:
                self.sent[future] = items
            if self.ordered:
                self.inflight.append((future, len(items)))
            else:
                self.live[future] = len(items)
                future.add_done_callback(self.done.put)

    def learn(self, chunk: Chunk, size: int) -> None:
        """Grow or shrink the auto chunk size from a finished chunk's timing."""
        if not self.auto or size == 0:
            return
        per_item = chunk.seconds / size
        ideal = self.max_chunk if per_item <= 0 else int(self.target / per_item)
        new = max(1, min(ideal, 64 * self.chunk, self.max_chunk))
        self.growing = new > self.chunk
        self.chunk = new

    # -- the consumer side --------------------------------------------------------------

    def next_chunk(self) -> tuple[Chunk, int] | None:
        """The next finished chunk (in order, or as they finish), or None at the end.
        When collecting, ``self.items`` are then its items."""
        self.fill()
        remaining = None if self.end_time is None else self.end_time - time.monotonic()
        if self.ordered:
            if not self.inflight:
                self._end()
                return None
            future, size = self.inflight[0]
            error = future.exception(remaining)  # TimeoutError, as the stdlib's map
            self.inflight.popleft()
            if self.keep:
                self.items = self.sent.pop(future)
            if error is not None:
                return _failed(error, size), size
            return future.result(), size
        if not self.live:
            self._end()
            return None
        try:
            future = self.done.get(timeout=remaining)
        except Empty:
            raise TimeoutError() from None
        size = self.live.pop(future)
        if self.keep:
            self.items = self.sent.pop(future)
        error = future.exception()
        return (future.result() if error is None else _failed(error, size)), size

    def _end(self) -> None:
        """Every item read came out: the end, the error that ended the input, or the
        failures collected."""
        error, self.input_error = self.input_error, None
        if error is not None:
            raise error
        if self.failures:
            failures, self.failures = self.failures, []
            raise ItemsFailed(CollectedErrors(failures))

    def close(self) -> None:
        """Stop: cancel chunks not started, ask running ones to stop."""
        self.closed = True
        self.engine.forget_map(self)
        for future, _ in self.inflight:
            future.cancel()
        self.inflight.clear()
        for future in list(self.live):
            future.cancel()
        self.live.clear()
        self.sent.clear()

    def drain(self) -> None:
        """Run everything to the end, dropping the results (an unconsumed map at
        shutdown runs all its items, as the stdlib's eager map does)."""
        self.progress = None  # nobody watches it
        try:
            for _ in _chunks(self, started=True):
                pass
        except Exception:
            pass


def _failed(error: BaseException, size: int) -> Chunk:
    """A chunk whose task failed as a whole (a one-item chunk under a retry or timeout
    policy, or the pool breaking)."""
    return Chunk([None] * size, dict.fromkeys(range(size), error), 0.0)


class MapIterator(itertools.chain[T]):
    """The iterator ``map`` returns: a chain over the finished chunks, so that items
    come out at C speed, with no Python frame per item; ``close()`` stops the map
    (cancels what is queued), as closing the stdlib's generator does."""

    __slots__ = ("_chunks",)

    _chunks: Generator[Iterator[Any], None, None]

    def close(self) -> None:
        """Stop the map: cancel the chunks not started, ask running ones to stop."""
        self._chunks.close()


def results(run: MapRun, started: bool = False) -> MapIterator[Any]:
    """The caller's iterator over *run*'s results."""
    chunks = _chunks(run, started)
    it: MapIterator[Any] = MapIterator.from_iterable(chunks)  # type: ignore[assignment]
    it._chunks = chunks
    return it


def _handing_out(values: list[Any]) -> Iterator[Any]:
    """*values* in order, each let go of as it is handed out (as the stdlib's map does:
    the caller may be the last to hold a result), still with no Python frame per item:
    pops from the end of the reversed list, in C."""
    values.reverse()
    return map(list.pop, itertools.repeat(values, len(values)))


def _chunks(run: MapRun, started: bool) -> Generator[Iterator[Any], None, None]:
    """*run*'s results, a list per chunk, under its ``on_error`` (see ``_core.options``):
    the first error raised after the items before it, ending the map ("raise"); an
    outcome per item ("return"); failed items dropped ("skip"), and kept to be raised
    at the end ("collect"). Advances ``run.progress``, if any, once per chunk."""
    if not started:
        run.engine.forget_map(run)
    mode = run.on_error
    outcomes = mode == "return"
    progress = run.progress
    if progress is not None:
        progress.start()
    try:
        while True:
            got = run.next_chunk()
            if got is None:
                return
            chunk, size = got
            run.learn(chunk, size)
            errors = chunk.errors
            # Results are held only by the list handed out, which lets go of each.
            values, chunk.values = chunk.values, []
            if outcomes:
                values = ([Value(v) for v in values] if not errors else
                          [Value(v) if i not in errors else Error(errors[i])
                           for i, v in enumerate(values)])
            elif errors and mode == "raise":
                first = min(errors)
                if first:
                    del values[first:]
                    if progress is not None:
                        progress.advance(first)
                    yield _handing_out(values)
                raise errors[first]
            elif errors:  # skip, collect
                if run.keep:
                    run.failures += [collected(run.where, run.items[i], errors[i])
                                     for i in sorted(errors)]
                values = [v for i, v in enumerate(values) if i not in errors]
            if progress is not None:  # counted as it is handed out
                progress.advance(size, chunk.failed)
            yield _handing_out(values)
            # Resumed once the chain took every item of the chunk: consumed.
            run.outstanding -= size
    finally:
        run.close()
        if progress is not None:
            progress.stop()
