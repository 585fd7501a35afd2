"""How a stage runs: on a pool (thread, process, dask, the journal's writer) or inline.

A pooled stage is two threads around a pool::

    input channel ──▶ dispatcher ── chunk of what is there (never waits to fill one)
                        │  waits for a slot: at most 2 x workers chunks in flight
                        ▼
                      pool (ThreadPool / ProcessPool / DaskPool chunks, or the journal
                      writer)
                        │  done callback
                        ▼
                      emitter ── in input order (a reorder buffer by sequence number)
                        │        or as chunks finish; applies the error policy
                        ▼
                      output channel (bounded: ``buffer``) ── then the slot is freed

The dispatcher takes the items already in the input channel, up to the chunk size, so a
slow source never waits for a chunk to fill; the chunk size grows while items are quick
(a chunk should take about 2 ms on threads, 20 ms on processes, 100 ms on Dask) and
stays 1 under a timeout, retry or rate policy, which then apply per item. With a
``budget``, the dispatcher takes ``cost`` tokens per item of a chunk before handing it to
the pool, and they go back when the chunk ends (a chunk is never larger than the budget
allows, items with a cost function go one per chunk, and a cancelled stage stops waiting
for tokens within 50 ms). The emitter frees a slot only
once the output channel took the chunk's results, so a slow stage downstream holds
everything upstream within its buffers.

An item that fails under ``on_error="raise"`` fails the run in output order: the
emitter passes on what came before it, closes the stage's output and stops the stage
and what feeds it (``RunContext.fail_after``); the stages after it go on with what they
were given, and the consumer gets the error once it took those items.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from concurrent.futures import Future
from functools import partial
from queue import SimpleQueue
from typing import TYPE_CHECKING, Any, Final, Protocol

from .._core.chunk import Chunk
from .._core.failures import CollectedError, collected
from .._core.options import item_cost
from .._core.outcome import Error, Value
from .._core.stats import PoolStatistics
from .._sync.memory_budget import cost_bound
from ._channel import Aborted, Channel, Slots
from ._journal import Book, Journal, Tag
from ._report import Counters
from ._spec import EACH, FILTER, FLAT, MAP, StageSpec, worker_function

if TYPE_CHECKING:
    from .._pools.executor import ExecutorPool
    from .._sync.memory_budget import Budget

__all__ = ["BatchStage", "PoolStage", "RunContext", "StageRuntime", "UnbatchStage"]

MAX_CHUNK: Final = 256
_ABORT: Final = object()
_TOKEN_WAIT: Final = 0.05  # seconds between looks at `closed` while waiting for a budget


class RunContext(Protocol):
    """What a stage needs from the run it belongs to."""

    book: Book | None
    journal: Journal | None
    stopping: bool

    def fail(self, error: BaseException) -> None: ...

    def fail_after(self, stage: StageRuntime | None, error: BaseException) -> None: ...

    def collect(self, failure: CollectedError) -> None: ...

    def dask_client(self) -> Any: ...


class StageRuntime:
    """A running stage: its spec, channels and counters, and how outputs are made."""

    kind = "inline"

    def __init__(self, run: RunContext, spec: StageSpec, source: Channel,
                 sink: Channel) -> None:
        self.run = run
        self.spec = spec
        self.input = source
        self.output = sink
        self.book = run.book
        self.outcomes = spec.on_error == "return"
        self.counters = Counters()
        self.threads: list[threading.Thread] = []
        # Stopped by the run as the stage that failed under on_error="raise", or one
        # before it (fail_after): what it still has to pass on is dropped.
        self.halted = False
        self.raising: BaseException | None = None  # the item error settle() stopped at

    @property
    def stopped(self) -> bool:
        """Whether the run stopped, or stopped this stage (``halted``): what it still
        has to pass on is dropped."""
        return self.run.stopping or self.halted

    @property
    def workers(self) -> int:
        """Workers the stage runs its function on now: a dynamic stage's current
        workers (``wp.Autoscale``) or limit (``wp.Adaptive``), as the live view shows."""
        if self.spec.dynamic is not None:
            stats = self.statistics()
            if stats is not None:
                return stats.limit if stats.limit is not None else stats.workers
        return self.spec.workers

    def start(self) -> None:
        """Start the stage's threads."""
        for thread in self.threads:
            thread.start()

    def cancel(self) -> None:
        """Stop at once (the channels are aborted by the run); never blocks."""

    def join(self) -> None:
        """Wait for the stage's threads (and pool) to be gone."""
        for thread in self.threads:
            if thread.ident is not None:
                thread.join()

    def busy(self) -> int:
        """Workers running an item now."""
        return 0

    def statistics(self) -> PoolStatistics | None:
        """The statistics of the pool the stage runs its items on, if it has one."""
        return None

    def thread(self, target: Callable[[], None], role: str) -> None:
        """Add a thread that runs *target*, failing the run if it raises."""
        def main() -> None:
            try:
                target()
            except Aborted:
                pass
            except BaseException as exc:
                if not self.halted:  # a stopped stage's pool refuses work: expected
                    self.run.fail(exc)

        self.threads.append(threading.Thread(target=main, name=f"{self.spec.name}-{role}"))

    # -- results into outputs ---------------------------------------------------------------

    def settle(self, envs: list[Any], values: list[Any],
               errors: dict[int, BaseException] | None) -> list[Any]:
        """The outputs of *envs* given their *values* and *errors*; applies the error
        policy (``raise``: the outputs before the failed item, which is left in
        ``raising`` for the caller to stop at, once it passed them on; ``return`` makes
        every output a ``wp.Value`` and puts a ``wp.Error`` in a failed item's place)
        and releases journal tags."""
        op = self.spec.op
        book = self.book
        wrap = self.outcomes
        if errors is None and book is None and op == MAP and not wrap:
            return values  # the hot path
        out: list[Any] = []
        drop: list[Tag] = []
        for index, env in enumerate(envs):
            error = errors.get(index) if errors else None
            if error is not None:
                if self.spec.on_error == "raise" and not self.stopped:
                    self.counters.failed += 1
                    self.raising = error
                    break
                if self.failed(env, error):
                    out.append(Error(error) if book is None else (Error(error), env[1]))
                continue
            value = values[index]
            if op == MAP:
                if wrap:
                    value = Value(value)
                out.append(value if book is None else (value, env[1]))
            elif op == FILTER:
                if not value:
                    if book is not None:
                        drop.append(env[1])
                elif not wrap:
                    out.append(env)
                else:
                    out.append(Value(env) if book is None else (Value(env[0]), env[1]))
            elif op == FLAT:
                if wrap:
                    value = [Value(v) for v in value]
                if book is None:
                    out.extend(value)
                else:
                    book.split(env[1], len(value))
                    out.extend((v, env[1]) for v in value)
            elif op == EACH and book is not None and not self.spec.transactional:
                drop.append(env[1])
        if drop and book is not None:
            book.release(drop)
        return out

    def failed(self, env: Any, error: BaseException) -> bool:
        """Apply the stage's ``on_error`` (but "raise", which ``settle`` applies) to an
        item that raised *error*: return True to pass a ``wp.Error`` on in its place,
        or drop it (False), as every item of a stopped stage."""
        policy = self.spec.on_error
        if self.stopped or policy == "raise":
            return False
        book = self.book
        counters = self.counters
        if policy == "return":
            counters.returned += 1
            return True
        if policy == "skip":
            counters.skipped += 1
        else:
            counters.collected += 1
            item = env if book is None else env[0]
            self.run.collect(collected(self.spec.name, item, error))
        if book is not None:
            book.release([env[1]], failed=True)
        return False

    def stop_at_failure(self) -> None:
        """``settle`` stopped at an item that failed under ``on_error="raise"``, and
        what came before it was passed on: end the stage's output there, and stop
        this stage and what feeds it; the run raises the error once the consumer
        took the rest (``RunContext.fail_after``)."""
        error, self.raising = self.raising, None
        assert error is not None
        self.run.fail_after(self, error)
        self.output.close()


class _Pending:
    """A chunk handed to the pool: its place in the input order and its envelopes."""

    __slots__ = ("envs", "future", "seq")

    def __init__(self, seq: int, envs: list[Any], future: Future[Chunk]) -> None:
        self.seq = seq
        self.envs = envs
        self.future = future


def _finished(done: SimpleQueue[Any], pending: _Pending, _: Future[Chunk]) -> None:
    done.put(pending)


def _give_back(budget: Budget, tokens: int, _: Future[Chunk]) -> None:
    budget.release(tokens)


class _End:
    __slots__ = ("count",)

    def __init__(self, count: int) -> None:
        self.count = count


class PoolStage(StageRuntime):
    """A stage whose function runs on a ``ThreadPool``, a ``ProcessPool``, a
    ``DaskPool`` or (for a transactional sink) the journal's writer thread. See the
    module docstring."""

    def __init__(self, run: RunContext, spec: StageSpec, source: Channel,
                 sink: Channel) -> None:
        super().__init__(run, spec, source, sink)
        self.kind = spec.kind
        self.closed = False  # read by running thread chunks: stop between items
        self.chunk = 1
        # With a budget, a chunk's tokens must all be free at once: never more than it
        # has (but for one item larger than a MemoryBudget, which runs it alone). With a
        # cost function, one item per chunk: each holds its own cost.
        self.max_chunk = MAX_CHUNK
        self.bound = cost_bound(spec.budget)  # what cost(item) may not exceed
        if spec.budget is not None:
            capacity = spec.budget.capacity
            per_item = spec.cost if isinstance(spec.cost, int) else capacity
            self.max_chunk = max(1, min(MAX_CHUNK, capacity // per_item))
        self.inflight = 0  # chunks handed to the pool and not yet passed on
        self.fixed = spec.policies or spec.transactional
        # Seconds a chunk should take: longer where a chunk's round trip costs more.
        self.target = {"process": 0.02, "dask": 0.1}.get(spec.kind, 0.002)
        self.slots = Slots(2 * spec.workers)
        self.done: SimpleQueue[Any] = SimpleQueue()
        self.fn = worker_function(spec)
        self.pool: ExecutorPool | None = None
        self.bucket = None if spec.rate is None else spec.rate.bucket()
        if not spec.transactional:
            self.pool = self._make_pool()
        self.thread(self._dispatch, "dispatch")
        self.thread(self._emit, "emit")

    def _make_pool(self) -> ExecutorPool:
        spec = self.spec
        name = f"pipeline-{spec.name}"
        if spec.kind == "process":
            from .._pools.process import ProcessPool

            return ProcessPool(spec.pool_workers, rate=spec.rate, name=name)
        if spec.kind == "dask":
            from .._pools.dask import DaskPool

            return DaskPool(self.run.dask_client(), workers=spec.pool_workers, rate=spec.rate,
                            name=name)
        from .._pools.executor import ThreadPool

        return ThreadPool(spec.pool_workers, rate=spec.rate, name=name)

    def _submit(self, values: list[Any], envs: list[Any]) -> Future[Chunk]:
        spec = self.spec
        if self.pool is None:
            journal = self.run.journal
            assert journal is not None
            assert self.book is not None
            tags = [env[1] for env in envs]
            return journal.submit_sink(spec.fn, values, tags,  # type: ignore[arg-type]
                                       self.book, spec.retry, self.bucket)
        # The pools' chunk API (what their map() uses): per-item errors, a rate limit
        # per item, crash isolation per item on processes, and `self.closed` to stop a
        # thread chunk between items.
        return self.pool._submit_chunk(self.fn, values, flag=self, timeout=spec.timeout,
                                       retry=spec.retry)

    def _take_tokens(self, budget: Budget, n: int) -> None:
        """Wait for *n* tokens of *budget* (the stage's items' cost), looking at
        ``closed`` every ``_TOKEN_WAIT`` seconds: the budget may be held elsewhere."""
        while not budget.acquire(n, _TOKEN_WAIT):
            if self.closed:
                raise Aborted

    def _dispatch(self) -> None:
        seq = 0
        source, slots, done, counters = self.input, self.slots, self.done, self.counters
        tagged = self.book is not None
        budget, cost = self.spec.budget, self.spec.cost
        try:
            while True:
                slots.acquire()
                envs = source.get_many(self.chunk)
                if not envs:
                    return
                values = [env[0] for env in envs] if tagged else envs
                counters.items_in += len(envs)
                if budget is None:
                    future = self._submit(values, envs)
                else:
                    tokens = sum(item_cost(cost, v, self.bound) for v in values)
                    self._take_tokens(budget, tokens)
                    try:
                        future = self._submit(values, envs)
                    except BaseException:
                        budget.release(tokens)
                        raise
                    future.add_done_callback(partial(_give_back, budget, tokens))
                pending = _Pending(seq, envs, future)
                self.inflight += 1
                seq += 1
                pending.future.add_done_callback(partial(_finished, done, pending))
        except Exception:
            if self.stopped:
                return  # the pool was shut down under us: we are stopping anyway
            raise
        finally:
            done.put(_End(seq))

    def _emit(self) -> None:
        done, ordered = self.done, self.spec.ordered
        expected: int | None = None
        handled = 0
        held: dict[int, _Pending] = {}
        while expected is None or handled < expected:
            msg = done.get()
            if msg is _ABORT:
                return
            if isinstance(msg, _End):
                expected = msg.count
                continue
            if not ordered:
                if not self._handle(msg):
                    return
                handled += 1
                continue
            held[msg.seq] = msg
            while handled in held:
                if not self._handle(held.pop(handled)):
                    return
                handled += 1
        self.output.close()

    def _handle(self, pending: _Pending) -> bool:
        """Pass on the outputs of a chunk that ended; False once the stage stopped
        (at an item that failed under ``on_error="raise"``, or stopped by the run)."""
        if self.stopped:
            pending.envs = pending.future = None  # type: ignore[assignment]
            return not self.halted
        envs, future = pending.envs, pending.future
        # The future's callback holds `pending`, which holds the future: break the
        # cycle, so that the items go as soon as they are passed on, not at the next
        # garbage collection.
        pending.envs = pending.future = None  # type: ignore[assignment]
        n = len(envs)
        try:
            chunk = future.result()
        except BaseException as exc:  # the whole chunk failed (timeout, retries spent)
            chunk = Chunk([None] * n, dict.fromkeys(range(n), exc), 0.0)
        counters = self.counters
        seconds = chunk.seconds
        if seconds > 0:
            counters.busy_seconds += seconds
            counters.sample(seconds / n)
            if not self.fixed:
                ideal = int(self.target * n / seconds)
                self.chunk = max(1, min(ideal, 2 * self.chunk, self.max_chunk))
        elif not self.fixed and chunk.errors is None:
            self.chunk = min(2 * self.chunk, self.max_chunk)
        out = self.settle(envs, chunk.values, chunk.errors)
        if out:
            counters.items_out += len(out)
            self.output.put_many(out)
        if self.raising is not None:
            self.stop_at_failure()
            return False
        self.inflight -= 1
        self.slots.release()
        return True

    def cancel(self) -> None:
        self.closed = True
        self.slots.abort()
        self.done.put(_ABORT)
        if self.pool is not None:
            self.pool._cancel_all()  # a cancelled stage stops its running tasks too

    def join(self) -> None:
        super().join()
        if self.pool is not None:
            # Waits for every worker, child processes stopped (a thread abandoned by a
            # timeout is stuck in its task: not waited for).
            self.pool.shutdown(wait=True, cancel_futures=self.stopped)

    def abandon(self) -> None:
        """Give up on running tasks (a second Ctrl-C): kill processes, leave threads."""
        if self.pool is not None:
            self.pool.shutdown(wait=True, cancel_futures=True, timeout=0.01)

    def busy(self) -> int:
        if self.pool is None:
            return min(1, self.inflight)
        return self.pool.statistics().running

    def statistics(self) -> PoolStatistics | None:
        return None if self.pool is None else self.pool.statistics()


class BatchStage(StageRuntime):
    """``batch(size, timeout)``: lists of up to *size* items, a partial one going out
    *timeout* seconds after its first item arrived (and at the end of the input)."""

    def __init__(self, run: RunContext, spec: StageSpec, source: Channel,
                 sink: Channel) -> None:
        super().__init__(run, spec, source, sink)
        self.thread(self._main, "batch")

    def _main(self) -> None:
        size, timeout = self.spec.size, self.spec.timeout
        pending: list[Any] = []
        deadline: float | None = None
        while True:
            wait = None if deadline is None else deadline - time.monotonic()
            if wait is not None and wait <= 0:
                self._flush(pending)
                pending, deadline = [], None
                continue
            got = self.input.get_many(size - len(pending), wait)
            if got is None:
                continue  # the deadline passed: flushed above
            if not got:
                break
            self.counters.items_in += len(got)
            if not pending and timeout is not None:
                deadline = time.monotonic() + timeout
            pending.extend(got)
            if len(pending) >= size:
                self._flush(pending)
                pending, deadline = [], None
        if pending:
            self._flush(pending)
        self.output.close()

    def _flush(self, pending: list[Any]) -> None:
        if self.book is None:
            env: Any = pending
        else:
            env = ([e[0] for e in pending], Tag(None, [e[1] for e in pending]))
        self.output.put(env)
        self.counters.items_out += 1


class UnbatchStage(StageRuntime):
    """``unbatch()``: each item of each incoming iterable, in order."""

    def __init__(self, run: RunContext, spec: StageSpec, source: Channel,
                 sink: Channel) -> None:
        super().__init__(run, spec, source, sink)
        self.thread(self._main, "unbatch")

    def _main(self) -> None:
        book = self.book
        while True:
            got = self.input.get_many(64)
            if not got:
                break
            self.counters.items_in += len(got)
            out: list[Any] = []
            for env in got:
                if book is None:
                    out.extend(env)
                else:
                    values = list(env[0])
                    book.split(env[1], len(values))
                    out.extend((v, env[1]) for v in values)
            if out:
                self.counters.items_out += len(out)
                self.output.put_many(out)
        self.output.close()
