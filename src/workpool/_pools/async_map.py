"""Lazy, windowed ``AsyncPool.map``.

::

    sync input ──the consumer reads, in __anext__──┐
                                                   ├─▶ chunks ─▶ Engine.put ─▶ workers
    async input ──a feeder task in the pool reads──┘                              │
                                                                                  ▼
    consumer ◀── item by item ◀── chunks in input order (by sequence number) ◀─ the
                                  or as they finish (a FIFO)      engine settles the
                                                                  chunk: deliver()

A chunk is one engine ``Task`` (``items``, ``flag`` the run), and its ``Chunk`` is the
task's future: the engine settles it with the chunk's ``ChunkEnd`` (or the error of
its one item, past its retries), which hands the results to the run.

At most ``window`` items are read and not yet consumed, so an endless source maps in
flat memory. A new item joins the last chunk while that chunk still waits in the queue
and is smaller than the chunk size, else starts a new chunk: when workers keep up, every
item goes out on its own at once; when they fall behind, items batch up, one queue entry
and one wake-up per batch. The chunk size grows (at most doubling per chunk) while
measured items are quick, and is 1 for tasks with a timeout, retry, rate limit or a sync
function, whose policies apply per item.

With the pool's budget, an item holds its ``cost`` from before it is read (an int:
reading may be what costs) or from once it is read (a function of the item: an item
the free tokens do not cover waits, read, as ``pending``) until its chunk ends.

``progress=`` is advanced once per chunk the consumer takes (its items that ran, and
those of them that failed), as the sync ``map`` does per chunk it hands out: its cost
is per chunk, not per item.
"""

from __future__ import annotations

import math
import threading
import time
from collections import deque
from collections.abc import AsyncIterator, Callable
from concurrent.futures import InvalidStateError
from typing import TYPE_CHECKING, Any, Final, Generic, TypeVar

import anyio

from .._core.exceptions import Cancelled, ItemsFailed, PoolClosed
from .._core.failures import CollectedError, CollectedErrors, collected
from .._core.options import Cost, OnError, item_cost
from .._core.outcome import Error, Value
from .._core.progress import ProgressArg, input_total
from .._engine.async_task import ChunkEnd, Failure, Spec
from .._engine.contract import ChunkTask
from .._engine.engine import OPEN, SHUTDOWN_MESSAGE
from .progress import make_tracker

if TYPE_CHECKING:
    from .._backends.async_backend import AsyncBackend
    from .._engine.engine import Engine
    from .._sync.async_semaphore import AsyncSemaphore
    from .._sync.loop_budget import LoopBudget

__all__ = ["Chunk", "MapResults", "MapRun"]

T = TypeVar("T")
_TARGET: Final = 0.0005  # seconds an auto-sized chunk should take
_EMPTY: Final[list[Any]] = []
_NO_KWARGS: Final[dict[str, Any]] = {}


def _is_async(iterable: Any) -> bool:
    return hasattr(type(iterable), "__aiter__")


async def _azip(iterables: tuple[Any, ...]) -> AsyncIterator[tuple[Any, ...]]:
    """``zip`` over a mix of sync and async iterables; closes the async ones."""
    its = [(True, aiter(x)) if _is_async(x) else (False, iter(x)) for x in iterables]
    try:
        while True:
            row = []
            for is_async, it in its:
                try:
                    row.append(await anext(it) if is_async else next(it))
                except (StopIteration, StopAsyncIteration):
                    return
            yield tuple(row)
    finally:
        for is_async, it in its:
            if is_async and hasattr(it, "aclose"):
                await it.aclose()


class Chunk:
    """A run of ``map`` items handed to one worker: one engine task, one wake-up and one
    statistics sample for the lot; the ``TaskFuture`` of that task, through which the
    engine hands its end to the run. Items are argument tuples when ``run.star``."""

    __slots__ = ("count", "ended", "failed", "items", "run", "seq", "started", "tokens")

    def __init__(self, run: MapRun, items: list[Any], seq: int, tokens: int = 0) -> None:
        self.run = run
        self.items = items
        self.seq = seq
        self.count = len(items)
        self.tokens = tokens  # of the budget, held by its items (a run with a budget)
        self.failed = 0  # of the items that ran (progress= counts them)
        self.started = self.ended = False

    def set_running_or_notify_cancel(self) -> bool:
        """A worker takes the chunk: False (and the chunk ends, cancelled) once the
        run is stopped (or the chunk was cancelled already)."""
        if self.ended:
            return False
        if self.run.stopped:
            self._end([], 0.0)
            return False
        self.started = True
        return True

    def set_result(self, result: ChunkEnd, /) -> None:
        """The chunk ran (its items' values and errors)."""
        self._end(result.results, result.seconds, result.failed)

    def set_exception(self, exception: BaseException | None, /) -> None:
        """The chunk's one item failed past its retries (a stopped chunk: cancelled)."""
        assert exception is not None
        if isinstance(exception, Cancelled) and self.run.stopped:
            self._end([], 0.0)
        else:
            self._end([Failure(exception)], 0.0, 1)

    def cancel(self) -> bool:
        """Withdrawn by a shutdown before it started: its items are cancelled."""
        if self.ended:
            return False
        self._end([], 0.0)
        return True

    def done(self) -> bool:
        """Whether the chunk's end was handed to the run."""
        return self.ended

    def _end(self, results: list[Any], seconds: float, failed: int = 0) -> None:
        if self.ended:
            raise InvalidStateError("the chunk ended already")
        self.ended = True
        self.failed = failed
        self.run.deliver(self, results, seconds, failed)


class MapRun:
    """The state of one ``map`` call, shared by its consumer, feeder and workers."""

    def __init__(self, engine: Engine, backend: AsyncBackend, fn: Callable[..., Any],
                 spec: Spec, iterables: tuple[Any, ...], *, ordered: bool,
                 window: int | None, chunksize: int | str, on_error: OnError,
                 timeout: float | None, budget: AsyncSemaphore | LoopBudget | None = None,
                 cost: Cost = 1, bound: int | None = None,
                 progress: ProgressArg = False) -> None:
        self.engine = engine
        self.backend = backend
        # Each item holds `cost` tokens of the pool's budget (an int: taken before the
        # item is read; a function of the item: once it is read) until its chunk ends
        # (deliver, or removed from the queue by close).
        self.budget = budget
        self.cost = cost
        self.per_item = cost if isinstance(cost, int) else None
        self.bound = bound  # what cost(item) may not exceed (None: a MemoryBudget)
        self.held = 0  # tokens held by items read and not yet ended
        self.spare = 0  # tokens the consumer waited for, for the next item read
        self.pending: tuple[Any, int] | None = None  # read, its tokens not yet taken
        self.starved = False  # the last fill stopped for want of tokens
        self.fn = fn
        self.where = f"map({getattr(fn, '__name__', type(fn).__name__)})"  # "collect"
        # Advanced once per chunk the consumer takes (None: no progress=), stopped at
        # close.
        self.progress = make_tracker(progress, input_total(iterables), self.where)
        self.spec = spec
        self.star = len(iterables) != 1
        self.is_async = any(_is_async(x) for x in iterables)
        self.source: Any
        if not self.is_async:
            self.source = zip(*iterables, strict=False) if self.star else iter(iterables[0])
        else:
            self.source = _azip(iterables) if self.star else aiter(iterables[0])
        self.ordered = ordered
        self.raise_errors = on_error == "raise"
        self.end_time = (None if timeout is None or math.isinf(timeout)
                         else time.monotonic() + timeout)
        self.auto = chunksize == "auto" and spec.fast
        self.chunk = int(chunksize) if isinstance(chunksize, int) and spec.fast else 1
        # Four items per worker the pool may have (a dynamic pool's most, not its
        # current count: an adaptive limit could not grow past a window sized on it).
        most = engine.target if engine.limiter is None else engine.limiter.max
        self.window = window if window is not None else 4 * most
        self.max_chunk = max(1, self.window // 4)
        # The consumer reads the input in steps of an eighth of the window.
        self.refill_at = self.window - max(1, self.window // 8)
        self.started = self.stopped = self.closed = self.exhausted = False
        self.failed_seen = False  # an item failed (raise mode): read no further
        self.failure: BaseException | None = None  # what the consumer raises next
        self.input_error: Exception | None = None  # what reading the input raised
        self.outstanding = 0  # items read and not yet consumed
        self.seq = 0  # chunks made
        self.want = 0  # ordered: the next chunk the consumer takes
        self.tail: Chunk | None = None
        self.tail_task: ChunkTask | None = None  # the last chunk's task, while it may grow
        self.inflight = 0  # chunks put and not yet ended
        self.ready: dict[int, tuple[Chunk, list[Any]]] = {}
        self.finished: deque[tuple[Chunk, list[Any]]] = deque()
        self.lot = backend.new_lot()  # the consumer waits here
        self.room = backend.new_lot()  # the feeder waits here for the window
        self.feeder: anyio.CancelScope | None = None
        self.feeding = False
        self.thread = threading.get_ident()

    # -- the producer side -------------------------------------------------------------

    def start(self) -> None:
        self.check_open()
        self.started = True
        if self.progress is not None:
            self.progress.start()
        self.engine.remember_map(self)
        if self.is_async:
            self.feeding = True
            self.backend.tg.start_soon(self._feed, name=f"{self.engine.name}_map_feeder")

    def check_open(self) -> None:
        """Raise ``PoolClosed`` unless the pool takes work."""
        if self.engine.state != OPEN:
            raise PoolClosed(SHUTDOWN_MESSAGE)

    def _put(self, item: Any, tokens: int = 0) -> None:
        """Join *item* (holding *tokens* of the budget) to the last chunk while no
        worker took it and it is smaller than the chunk size (batching costs no
        latency then), else put a new chunk. A chunk waits in the engine's queue past
        its bound: the window bounds a run."""
        tail = self.tail
        task = self.tail_task
        if (task is not None and tail is not None and not tail.started
                and tail.count < self.chunk):
            tail.items.append(item)
            tail.count += 1
            tail.tokens += tokens
            self._sync_tail()
            return
        self._put_new(item, tokens)

    def _put_new(self, item: Any, tokens: int = 0) -> Chunk:
        """Put *item* in a chunk of its own, the new tail (returned)."""
        self._sync_tail()
        self.tail = tail = Chunk(self, [item], self.seq, tokens)
        self.seq += 1
        self.inflight += 1
        self.tail_task = task = ChunkTask(self.fn, tail, tail.items, star=self.star,
                                          flag=self, timeout=self.spec.timeout,
                                          retry=self.spec.retry, payload=self.spec)
        self.engine.put(task, False, bounded=False)
        return tail

    def fill(self) -> None:
        """Read the sync input up to the window (the consumer's own task)."""
        self.starved = False
        if self.exhausted or self.failed_seen or self.closed:
            return
        self.check_open()
        if self.budget is not None:
            self._fill_budgeted(self.budget)
            return
        source = self.source
        read = 0
        room = self.window - self.outstanding
        size = self.chunk
        # The tail, as a local: nothing else runs while this reads (no await).
        tail = self.tail
        try:
            while read < room:
                try:
                    item = next(source)
                except StopIteration:
                    self.exhausted = True
                    break
                except Exception as exc:  # raised after the items read before it
                    self.input_error = exc
                    self.exhausted = True
                    break
                read += 1
                # _put(), inline for the common case: the item joins the tail (its
                # task's count follows in _sync_tail: no worker runs meanwhile).
                if tail is not None and not tail.started and tail.count < size:
                    tail.items.append(item)
                    tail.count += 1
                else:
                    tail = self._put_new(item)
        finally:
            self.outstanding += read
            self._sync_tail()

    def _sync_tail(self) -> None:
        """Items joined the tail since its task was put: count them (``Task.count``,
        and submitted)."""
        task = self.tail_task
        if task is not None and self.tail is not None:
            joined = self.tail.count - task.count
            if joined:
                task.count += joined
                self.engine.count_submitted(joined)

    def _fill_budgeted(self, budget: AsyncSemaphore | LoopBudget) -> None:
        """``fill`` with a budget: each item is read (or queued, once read) only
        with its tokens taken, without waiting. An item whose cost function says
        more than is free waits as ``pending``; an error of the cost function ends
        the input, as an error reading it does."""
        source = self.source
        per_item = self.per_item
        read = 0
        room = self.window - self.outstanding
        try:
            while read < room:
                if self.pending is not None:
                    item, tokens = self.pending
                    if not self._take_tokens(budget, tokens):
                        self.starved = True
                        break
                    self.pending = None
                else:
                    if per_item is not None and not self._take_tokens(budget, per_item):
                        self.starved = True
                        break
                    try:
                        item = next(source)
                        tokens = (per_item if per_item is not None
                                  else item_cost(self.cost, item, self.bound))
                    except StopIteration:
                        self._return_tokens(per_item or 0)
                        self.exhausted = True
                        break
                    except Exception as exc:  # raised after the items read before it
                        self._return_tokens(per_item or 0)
                        self.input_error = exc
                        self.exhausted = True
                        break
                    if per_item is None and not self._take_tokens(budget, tokens):
                        self.pending = (item, tokens)
                        self.starved = True
                        break
                read += 1
                self._put(item, tokens)
        finally:
            self.outstanding += read
            self._sync_tail()

    def _take_tokens(self, budget: AsyncSemaphore | LoopBudget, n: int) -> bool:
        """Take *n* tokens for the next item without waiting (those the consumer
        waited for first)."""
        spare = self.spare
        if spare == n:
            self.spare = 0
        else:
            if spare:  # waited for another item's cost (the run was closed meanwhile)
                self.spare = 0
                budget.release(spare)
            if not budget.try_acquire(n):
                return False
        self.held += n
        return True

    def _return_tokens(self, n: int) -> None:
        """Items holding *n* tokens ended (or were never read)."""
        budget = self.budget
        if budget is not None and n:
            self.held -= n
            budget.release(n)

    async def wait_token(self) -> None:
        """Wait for the next item's tokens when none of this map's items is out to
        return any (the budget is held by other tasks); keep them for that item."""
        assert self.budget is not None
        n = self.pending[1] if self.pending is not None else self.per_item
        assert n is not None  # a cost function's item is read before its wait
        remaining = None if self.end_time is None else self.end_time - time.monotonic()
        if not await self.budget.acquire(n, remaining):
            raise TimeoutError()
        if self.closed:
            self.budget.release(n)
        else:
            self.spare = n

    def feed(self, item: Any, tokens: int = 0) -> None:
        """Queue one item read by the feeder (holding *tokens* of the budget)."""
        if self.closed:
            self._return_tokens(tokens)
            return
        self.check_open()
        self._put(item, tokens)
        self.outstanding += 1

    async def _feed(self) -> None:
        """The feeder task of an async input."""
        source = self.source
        try:
            with anyio.CancelScope() as scope:
                self.feeder = scope
                while not (self.closed or self.failed_seen):
                    if self.outstanding >= self.window:
                        await self.room.park()
                        continue
                    budget = self.budget
                    tokens = 0 if budget is None else self.per_item
                    if tokens:
                        assert budget is not None
                        await budget.acquire(tokens)
                        self.held += tokens
                    try:
                        item = await anext(source)
                    except BaseException as exc:
                        self._return_tokens(tokens or 0)
                        if not isinstance(exc, StopAsyncIteration):
                            raise
                        self.exhausted = True
                        break
                    if tokens is None:  # a cost function: the item says
                        assert budget is not None
                        tokens = item_cost(self.cost, item, self.bound)
                        await budget.acquire(tokens)
                        self.held += tokens
                    self.feed(item, tokens)
        except Exception as exc:  # raised after the items read before it
            if not self.closed:
                self.input_error = exc
                self.exhausted = True
        finally:
            self.feeding = False
            self.lot.unpark()
            if hasattr(source, "aclose"):
                with anyio.CancelScope(shield=True):
                    await source.aclose()

    # -- what workers call -------------------------------------------------------------

    def deliver(self, chunk: Chunk, results: list[Any], seconds: float,
                failed: int = 0) -> None:
        """A chunk ended: a value or ``Failure`` per item that ran (the rest was
        cancelled)."""
        self.inflight -= 1
        if chunk is self.tail:
            self.tail = self.tail_task = None
        if self.budget is not None:
            self._return_tokens(chunk.tokens)
        if self.closed:
            self.lot.unpark()  # aclose() may wait for the chunks it interrupted
            return
        if failed and self.raise_errors:
            self.failed_seen = True
        if self.auto and results and seconds > 0:
            per_item = seconds / len(results)
            ideal = int(_TARGET / per_item)
            self.chunk = max(1, min(ideal, 2 * self.chunk, self.max_chunk))
        if self.ordered:
            self.ready[chunk.seq] = (chunk, results)
            if chunk.seq == self.want and self.lot.waiters:
                self.lot.unpark()
        else:
            self.finished.append((chunk, results))
            if self.lot.waiters:
                self.lot.unpark()

    # -- the consumer side -------------------------------------------------------------

    def take(self) -> tuple[Chunk, list[Any]] | None:
        if self.ordered:
            got = self.ready.pop(self.want, None)
            if got is not None:
                self.want += 1
            return got
        return self.finished.popleft() if self.finished else None

    def at_end(self) -> bool:
        return self.exhausted and self.outstanding == 0 and not self.feeding

    async def wait(self) -> None:
        if self.end_time is None:
            await self.lot.park()
            return
        remaining = self.end_time - time.monotonic()
        with anyio.move_on_after(remaining) as scope:
            await self.lot.park()
        if scope.cancelled_caught:
            raise TimeoutError()

    def close(self) -> None:
        """Stop: cancel what is queued and running, stop the feeder (sync, so that it
        also works from ``__del__`` and in a cancelled task)."""
        if self.closed:
            return
        self.closed = self.stopped = True
        self.ready.clear()
        self.finished.clear()
        self.engine.forget_map(self)
        if self.started:
            # Queued chunks end cancelled now (their items never delivered); running
            # ones are interrupted and end on their own.
            self.backend.cancel_where(lambda task: task.flag is self, "map cancelled",
                                      None)
        if self.spare:
            assert self.budget is not None
            self.budget.release(self.spare)
            self.spare = 0
        if self.feeder is not None:
            self.feeder.cancel()
        self.room.unpark_all()
        self.lot.unpark_all()
        if self.started and self.progress is not None:
            self.progress.stop()

    def abandon(self) -> None:
        """The pool is closing: the consumer gets ``Cancelled`` at its next item."""
        if self.failure is None:
            self.failure = Cancelled("map cancelled: the pool is closing")
        self.close()

    def busy(self) -> bool:
        """Whether a worker or the feeder still runs something of this map."""
        return self.feeding or self.inflight > 0


class MapResults(Generic[T]):
    """The async iterator ``AsyncPool.map`` returns; also an async context manager.

    Leaving ``async with`` (or calling ``aclose()``) before the end cancels the items
    queued and running. ``break`` alone cancels them as soon as the iterator is garbage
    collected (at once, in CPython).
    """

    __slots__ = ("__weakref__", "_chunk", "_count", "_cur", "_failures", "_mode",
                 "_outcomes", "_pos", "_run")

    def __init__(self, run: MapRun, on_error: OnError) -> None:
        self._run = run
        self._mode = on_error
        self._outcomes = on_error == "return"
        self._failures: list[CollectedError] = []  # on_error="collect"
        self._chunk: Chunk | None = None  # the chunk being consumed
        self._cur: list[Any] = _EMPTY
        self._pos = 0
        self._count = 0  # items in the chunk being consumed

    def __aiter__(self) -> MapResults[T]:
        return self

    async def __anext__(self) -> T:
        # The hot path: one list index per item while a chunk lasts. The rest runs
        # once per chunk (and per failed item), which with slow items (chunks of one)
        # is once per item: hence inline, reading the input in steps of an eighth of
        # the window.
        pos = self._pos
        cur = self._cur
        if pos < len(cur):
            value = cur[pos]
            if type(value) is not Failure:
                self._pos = pos + 1
                if self._outcomes:
                    outcome: T = Value(value)  # type: ignore[assignment]
                    return outcome
                result: T = value
                return result
        run = self._run
        try:
            while True:
                cur, pos = self._cur, self._pos
                while pos < len(cur):  # the rest of the chunk, from a failed item
                    value = cur[pos]
                    pos += 1
                    if type(value) is Failure:
                        if not self._failed(value, pos - 1):
                            continue  # dropped: skip or collect
                        self._pos = pos
                        error: T = Error(value.error)  # type: ignore[assignment]
                        return error
                    self._pos = pos
                    item: T = Value(value) if self._outcomes else value  # type: ignore[assignment]
                    return item
                self._pos = pos
                # The chunk is done: take the next finished one.
                if self._count:
                    if len(cur) < self._count and not run.closed:  # cut short
                        run.failure = run.failure or Cancelled("map item cancelled")
                    run.outstanding -= self._count
                    if run.room.waiters:
                        run.room.unpark()
                    self._cur, self._count, self._chunk = _EMPTY, 0, None
                elif not run.started:
                    run.start()
                sync = not run.is_async
                while True:  # until a chunk that ran, or the end
                    if run.failure is not None:
                        failure, run.failure = run.failure, None
                        raise failure
                    if run.closed:
                        raise StopAsyncIteration
                    if sync and run.outstanding <= run.refill_at:
                        run.fill()
                    got = run.take()
                    if got is not None:
                        chunk, cur = got
                        if run.progress is not None:  # counted as it is taken
                            run.progress.advance(len(cur), chunk.failed)
                        self._chunk, self._cur, self._count = chunk, cur, chunk.count
                        self._pos = 0
                        if cur:
                            head = cur[0]
                            if type(head) is Failure:
                                break  # the loop above applies on_error
                            self._pos = 1
                            first: T = Value(head) if self._outcomes else head  # type: ignore[assignment]
                            return first
                        # cancelled before it ran
                        run.failure = run.failure or Cancelled("map item cancelled")
                        continue
                    if run.at_end():
                        ended, run.input_error = run.input_error, None
                        if ended is not None:
                            raise ended
                        if self._failures:
                            failures, self._failures = self._failures, []
                            raise ItemsFailed(CollectedErrors(failures))
                        raise StopAsyncIteration
                    if sync:
                        run.fill()  # top the window up before waiting
                    if run.starved and not run.held:
                        await run.wait_token()  # nothing of ours is out to return one
                    else:
                        await run.wait()
        except BaseException:
            run.close()
            raise

    def _failed(self, failure: Failure, pos: int) -> bool:
        """A failed item under ``on_error``: raise it, return True to yield it as a
        ``wp.Error``, or drop it (False), kept to be raised at the end if collecting."""
        mode = self._mode
        if mode == "raise":
            self._cur, self._pos = _EMPTY, 0  # the error ends the map
            raise failure.error
        if mode == "return":
            return True
        if mode == "collect":
            assert self._chunk is not None
            self._failures.append(
                collected(self._run.where, self._chunk.items[pos], failure.error))
        return False

    async def aclose(self) -> None:
        """Cancel what is queued and running, and wait until it has stopped."""
        run = self._run
        run.close()
        while run.busy():
            await run.lot.park()

    async def __aenter__(self) -> MapResults[T]:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.aclose()

    def __del__(self) -> None:
        run = self._run
        if not run.closed and run.thread == threading.get_ident():
            run.close()
