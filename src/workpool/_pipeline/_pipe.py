"""``wp.Pipeline``: the public, immutable description of a pipeline.

Each method returns a new ``Pipeline`` with one more stage; nothing runs until the
pipeline is iterated (``for``, ``async for``) or ``run()``, and each of those starts a
fresh run (so a pipeline over a list can run twice; over a generator, once).
"""

from __future__ import annotations

import itertools
import os
import sqlite3
from collections.abc import AsyncIterable, Awaitable, Callable, Iterable
from typing import Any, Generic, Literal, Never, TypeVar, final, overload

from .._core.dynamic import Adaptive, Autoscale
from .._core.metrics import check_metrics, register
from .._core.options import Cost, OnError, stage_workers
from .._core.outcome import Outcome
from .._core.ratelimit import RateLimit
from .._core.retry import Retry
from .._core.sizing import cpus
from .._sync.memory_budget import Budget
from ._report import PipelineReport
from ._run import AsyncPipelineIterator, PipelineIterator, Run, run_samples
from ._spec import (
    BATCH,
    EACH,
    FILTER,
    FLAT,
    MAP,
    UNBATCH,
    StageSpec,
    Workers,
    check_buffer,
    check_stage,
    check_timeout,
    stage_name,
)

__all__ = ["Pipeline"]

_COUNTER = itertools.count(1)  # names pipelines with metrics=True

T_co = TypeVar("T_co", covariant=True)
U = TypeVar("U")
Key = str | int | bytes
Dropping = Literal["raise", "collect", "skip"]  # on_error values that pass values on as they are
SyncKind = Literal["thread", "process", "dask"]


@final
class Pipeline(Generic[T_co]):
    """A chain of stages over a source, each on workers of its own, with bounded
    buffers between them: memory is bounded by workers and buffers, never by the
    length of the input.

    Args:
        source: any iterable, or async iterable (read on an event loop of the
            pipeline's own, in its source thread).
        journal: a SQLite file that makes runs resumable: each source item whose
            results all went through is recorded under ``key(item)``, and a later run
            skips the keys recorded. Commits happen at least every 100 ms or 256 keys,
            so a crash redoes at most the items in flight plus one commit's worth
            (at-least-once). ``each(fn, transactional=True)`` makes a sink that writes
            into this same database exactly-once.
        key: the journal key of a source item: a str, int or bytes, unique per item.
        metrics: True (named ``pipeline-N``) or a name: while a run lives, show the
            statistics of each stage that runs on a pool (thread, process and async
            stages) to ``workpool.exporters.prometheus``, as ``name/stage``.

    Stages (each returns a new pipeline): ``map``, ``filter``, ``flat_map``, ``each``
    (a sink), ``batch``, ``unbatch``. Function stages take ``workers`` (an int, or a
    float: that multiple of ``wp.cpus()``, rounded half up, at least 1, so ``1.0`` is
    one per CPU and ``0.5`` on 2 CPUs is 1; or a ``wp.Autoscale`` or ``wp.Adaptive``
    for a dynamic stage, whose current workers or limit the live view shows), ``kind``
    ("thread", "process", "async", "dask": on a ``wp.DaskPool`` over the current
    default ``distributed.Client``, or, when there is none, a ``LocalCluster`` the run
    starts for its dask stages and closes at its end; ``workers`` is then the most
    chunks in flight on the cluster),
    ``buffer`` (the bounded queue to the next stage, default ``max(64, 2 * workers)``),
    ``ordered``, ``timeout``, ``retry``, ``rate``, ``on_error`` ("raise", "return",
    "collect" or "skip", as on every pool's ``map``), ``budget`` and ``cost`` (a
    ``wp.Semaphore`` or ``wp.MemoryBudget`` each item holds ``cost`` tokens of while it
    is out, an int or a function of the item; thread, process and dask stages) and
    ``name`` (in the report, default ``"map(fn)"``).

    Run it by iterating (``for x in pipe``, ``async for x in pipe``) or with
    ``run()``, which returns a ``PipelineReport``. Leaving the loop early, Ctrl-C, or
    the first unhandled error stops every stage promptly and leaves no thread,
    process or task behind.

    Raises:
        ValueError: *journal* without *key*, or *key* without *journal*.

    Example::

        pipe = (wp.Pipeline(urls)
                .map(fetch, workers=32, retry=wp.Retry(attempts=5))
                .map(parse, workers=1.0, kind="process")      # one per CPU
                .filter(is_valid)
                .batch(500, timeout=1.0)
                .each(save))
        print(pipe.run(progress=True))
    """

    __slots__ = ("_journal", "_key", "_metrics", "_source", "_stages")

    @overload
    def __init__(self, source: Iterable[T_co], *,
                 journal: str | os.PathLike[str] | None = None,
                 key: Callable[[T_co], Key] | None = None,
                 metrics: bool | str = False) -> None: ...
    @overload
    def __init__(self, source: AsyncIterable[T_co], *,
                 journal: str | os.PathLike[str] | None = None,
                 key: Callable[[T_co], Key] | None = None,
                 metrics: bool | str = False) -> None: ...

    def __init__(self, source: Iterable[T_co] | AsyncIterable[T_co], *,
                 journal: str | os.PathLike[str] | None = None,
                 key: Callable[[T_co], Key] | None = None,
                 metrics: bool | str = False) -> None:
        check_metrics(metrics)
        if not hasattr(type(source), "__aiter__") and not hasattr(type(source), "__iter__"):
            raise TypeError(f"source must be an iterable or an async iterable, got {source!r}")
        if journal is not None and key is None:
            raise ValueError("journal needs key=: a function from an item to its key "
                             "(a str, int or bytes)")
        if key is not None and journal is None:
            raise ValueError("key= is the journal's item key: pass journal= too")
        if key is not None and not callable(key):
            raise TypeError(f"key must be callable, got {key!r}")
        if journal is not None and not isinstance(journal, str | os.PathLike):
            raise TypeError(f"journal must be a path, got {journal!r}")
        self._source: Any = source
        self._journal = journal
        self._key = key
        self._stages: tuple[StageSpec, ...] = ()
        self._metrics = (None if metrics is False else
                         f"pipeline-{next(_COUNTER)}" if metrics is True else metrics)

    def _then(self, spec: StageSpec) -> Pipeline[Any]:
        if self._stages and self._stages[-1].op == EACH:
            raise ValueError(f"{self._stages[-1].name} is a sink: no stage can follow it")
        names = {s.name for s in self._stages}
        if spec.name in names:
            n = 2
            while f"{spec.name}#{n}" in names:
                n += 1
            spec = _replace_name(spec, f"{spec.name}#{n}")
        new: Pipeline[Any] = Pipeline.__new__(Pipeline)
        new._source = self._source
        new._journal = self._journal
        new._key = self._key
        new._metrics = self._metrics
        new._stages = (*self._stages, spec)
        return new

    def _stage(self, op: str, fn: Any, *, workers: Workers, kind: str, buffer: int | None,
               ordered: bool, timeout: float | None, retry: Retry | None,
               rate: RateLimit | None, on_error: str, name: str | None,
               budget: Budget | None, cost: Cost,
               transactional: bool = False) -> Pipeline[Any]:
        check_stage(op, fn, kind, on_error, retry, rate, budget, cost)
        dynamic: Autoscale | Adaptive | None = None
        if isinstance(workers, Autoscale | Adaptive):
            dynamic, count = workers, workers.max
        else:
            count = stage_workers(workers, cpus)
        if name is not None and not isinstance(name, str):
            raise TypeError(f"name must be a str or None, got {name!r}")
        return self._then(StageSpec(
            op=op, name=name or stage_name(op, fn), fn=fn, kind=kind, workers=count,
            dynamic=dynamic, buffer=check_buffer(buffer, count), ordered=bool(ordered),
            timeout=check_timeout(timeout), retry=retry, rate=rate, on_error=on_error,
            budget=budget, cost=cost, transactional=transactional))

    # -- stages ------------------------------------------------------------------------------

    @overload
    def map(self, fn: Callable[[T_co], Awaitable[U]], *, workers: Workers = 1,
            kind: Literal["async"], buffer: int | None = None, ordered: bool = True,
            timeout: float | None = None, retry: Retry | None = None,
            rate: RateLimit | None = None, on_error: Dropping = "raise",
            budget: Budget | None = None, cost: Cost = 1,
            name: str | None = None) -> Pipeline[U]: ...
    @overload
    def map(self, fn: Callable[[T_co], U], *, workers: Workers = 1,
            kind: SyncKind = "thread", buffer: int | None = None, ordered: bool = True,
            timeout: float | None = None, retry: Retry | None = None,
            rate: RateLimit | None = None, on_error: Dropping = "raise",
            budget: Budget | None = None, cost: Cost = 1,
            name: str | None = None) -> Pipeline[U]: ...
    @overload
    def map(self, fn: Callable[[T_co], Awaitable[U]], *, workers: Workers = 1,
            kind: Literal["async"], buffer: int | None = None, ordered: bool = True,
            timeout: float | None = None, retry: Retry | None = None,
            rate: RateLimit | None = None, on_error: Literal["return"],
            budget: Budget | None = None, cost: Cost = 1,
            name: str | None = None) -> Pipeline[Outcome[U]]: ...
    @overload
    def map(self, fn: Callable[[T_co], U], *, workers: Workers = 1,
            kind: SyncKind = "thread", buffer: int | None = None, ordered: bool = True,
            timeout: float | None = None, retry: Retry | None = None,
            rate: RateLimit | None = None, on_error: Literal["return"],
            budget: Budget | None = None, cost: Cost = 1,
            name: str | None = None) -> Pipeline[Outcome[U]]: ...

    def map(self, fn: Callable[[T_co], Any], *, workers: Workers = 1, kind: str = "thread",
            buffer: int | None = None, ordered: bool = True, timeout: float | None = None,
            retry: Retry | None = None, rate: RateLimit | None = None,
            on_error: OnError = "raise", budget: Budget | None = None,
            cost: Cost = 1, name: str | None = None) -> Pipeline[Any]:
        """Apply *fn* to every item, on *workers* workers of *kind*.

        A thread stage suits I/O and code that releases the GIL, a process stage
        CPU-bound Python (*fn* and the items travel with cloudpickle), an async
        stage coroutines (awaited on an ``wp.AsyncPool`` in the stage's own loop).
        ``timeout`` (seconds per item), ``retry`` (a ``wp.Retry``) and ``rate`` (a
        ``wp.RateLimit`` shared by the stage's workers) apply per item, as on the
        pools. ``ordered=False`` passes results on as they finish. ``on_error``, as
        on every pool's ``map``: an item that raises stops the pipeline with its
        exception ("raise"); or every output is a ``wp.Value`` and a ``wp.Error``
        takes a failed item's place ("return"); or failed items are dropped and
        counted ("skip"), or dropped, kept with their tracebacks, and raised together
        as ``wp.ItemsFailed`` once everything else came out ("collect"). With
        ``budget`` (a ``wp.Semaphore`` or a ``wp.MemoryBudget``, shared with
        anything), each item holds ``cost`` tokens of it from its hand-off to the
        workers to its end: an int, or a function of the item called in this process
        (``cost=len`` for bytes; each item then goes to the workers on its own). An
        async stage waits for tokens in a worker thread, so its event loop goes on.

        Costs a few microseconds per item on threads; items are handed to the
        workers in chunks while they are quick.

        Raises:
            ValueError: an option breaks its rule (``workers >= 1``, a known kind,
                ``cost`` within the budget...).

        Example::

            sizes = wp.Pipeline(paths).map(os.path.getsize, workers=8)
        """
        return self._stage(MAP, fn, workers=workers, kind=kind, buffer=buffer,
                           ordered=ordered, timeout=timeout, retry=retry, rate=rate,
                           on_error=on_error, name=name, budget=budget,
                           cost=cost)

    @overload
    def filter(self, pred: Callable[[T_co], object], *, workers: Workers = 1,
               kind: Literal["thread", "process", "async", "dask"] = "thread",
               buffer: int | None = None, ordered: bool = True,
               timeout: float | None = None, retry: Retry | None = None,
               rate: RateLimit | None = None, on_error: Dropping = "raise",
               budget: Budget | None = None, cost: Cost = 1,
               name: str | None = None) -> Pipeline[T_co]: ...
    @overload
    def filter(self, pred: Callable[[T_co], object], *, workers: Workers = 1,
               kind: Literal["thread", "process", "async", "dask"] = "thread",
               buffer: int | None = None, ordered: bool = True,
               timeout: float | None = None, retry: Retry | None = None,
               rate: RateLimit | None = None, on_error: Literal["return"],
               budget: Budget | None = None, cost: Cost = 1,
               name: str | None = None) -> Pipeline[Outcome[T_co]]: ...

    def filter(self, pred: Callable[[T_co], object], *, workers: Workers = 1,
               kind: Literal["thread", "process", "async", "dask"] = "thread",
               buffer: int | None = None, ordered: bool = True,
               timeout: float | None = None, retry: Retry | None = None,
               rate: RateLimit | None = None, on_error: OnError = "raise",
               budget: Budget | None = None, cost: Cost = 1,
               name: str | None = None) -> Pipeline[Any]:
        """Keep the items for which *pred* is true (awaited when ``kind="async"``).

        Only the predicate's truth travels back from a worker process; the item
        itself stays in this one. Options as for ``map``.

        Example::

            big = wp.Pipeline(paths).filter(lambda p: os.path.getsize(p) > 1 << 20)
        """
        return self._stage(FILTER, pred, workers=workers, kind=kind, buffer=buffer,
                           ordered=ordered, timeout=timeout, retry=retry, rate=rate,
                           on_error=on_error, name=name, budget=budget,
                           cost=cost)

    @overload
    def flat_map(self, fn: Callable[[T_co], Awaitable[Iterable[U]]], *,
                 workers: Workers = 1, kind: Literal["async"], buffer: int | None = None,
                 ordered: bool = True, timeout: float | None = None,
                 retry: Retry | None = None, rate: RateLimit | None = None,
                 on_error: Dropping = "raise", budget: Budget | None = None,
                 cost: Cost = 1, name: str | None = None) -> Pipeline[U]: ...
    @overload
    def flat_map(self, fn: Callable[[T_co], AsyncIterable[U]], *,
                 workers: Workers = 1, kind: Literal["async"], buffer: int | None = None,
                 ordered: bool = True, timeout: float | None = None,
                 retry: Retry | None = None, rate: RateLimit | None = None,
                 on_error: Dropping = "raise", budget: Budget | None = None,
                 cost: Cost = 1, name: str | None = None) -> Pipeline[U]: ...
    @overload
    def flat_map(self, fn: Callable[[T_co], Iterable[U]], *, workers: Workers = 1,
                 kind: SyncKind = "thread", buffer: int | None = None,
                 ordered: bool = True, timeout: float | None = None,
                 retry: Retry | None = None, rate: RateLimit | None = None,
                 on_error: Dropping = "raise", budget: Budget | None = None,
                 cost: Cost = 1, name: str | None = None) -> Pipeline[U]: ...
    @overload
    def flat_map(self, fn: Callable[[T_co], Any], *, workers: Workers = 1,
                 kind: str = "thread", buffer: int | None = None, ordered: bool = True,
                 timeout: float | None = None, retry: Retry | None = None,
                 rate: RateLimit | None = None, on_error: Literal["return"],
                 budget: Budget | None = None, cost: Cost = 1,
                 name: str | None = None) -> Pipeline[Outcome[Any]]: ...

    def flat_map(self, fn: Callable[[T_co], Any], *, workers: Workers = 1,
                 kind: str = "thread", buffer: int | None = None, ordered: bool = True,
                 timeout: float | None = None, retry: Retry | None = None,
                 rate: RateLimit | None = None, on_error: OnError = "raise",
                 budget: Budget | None = None, cost: Cost = 1,
                 name: str | None = None) -> Pipeline[Any]:
        """Replace every item by the items of the iterable *fn* returns (for an async
        stage: an async iterable, or an awaitable of an iterable).

        The worker reads the iterable to its end, so an error while iterating is the
        item's error, and the whole iterable is in memory at once. Options as for
        ``map``.

        Example::

            words = wp.Pipeline(lines).flat_map(str.split)
        """
        return self._stage(FLAT, fn, workers=workers, kind=kind, buffer=buffer,
                           ordered=ordered, timeout=timeout, retry=retry, rate=rate,
                           on_error=on_error, name=name, budget=budget,
                           cost=cost)

    @overload
    def each(self, fn: Callable[[sqlite3.Connection, T_co], object], *,
             transactional: Literal[True], workers: Workers = 1,
             kind: Literal["thread"] = "thread", buffer: int | None = None,
             ordered: bool = True, timeout: None = None, retry: Retry | None = None,
             rate: RateLimit | None = None, on_error: Dropping = "raise",
             budget: Budget | None = None, cost: Cost = 1,
             name: str | None = None) -> Pipeline[Never]: ...
    @overload
    def each(self, fn: Callable[[T_co], object], *, transactional: Literal[False] = False,
             workers: Workers = 1, kind: Literal["thread", "process", "async", "dask"] = "thread",
             buffer: int | None = None, ordered: bool = True,
             timeout: float | None = None, retry: Retry | None = None,
             rate: RateLimit | None = None, on_error: Dropping = "raise",
             budget: Budget | None = None, cost: Cost = 1,
             name: str | None = None) -> Pipeline[Never]: ...

    def each(self, fn: Callable[..., object], *, transactional: bool = False,
             workers: Workers = 1, kind: str = "thread", buffer: int | None = None,
             ordered: bool = True, timeout: float | None = None,
             retry: Retry | None = None, rate: RateLimit | None = None,
             on_error: OnError = "raise", budget: Budget | None = None,
             cost: Cost = 1, name: str | None = None) -> Pipeline[Never]:
        """A sink: call *fn* on every item for its effect; nothing comes out.

        With ``transactional=True`` (a pipeline with a journal), ``fn(connection,
        item)`` runs on the journal's writer thread with the journal's own
        ``sqlite3.Connection``, inside the transaction that records the item's key:
        what *fn* writes to that database and the key commit together, so after a
        crash the rerun writes each item exactly once. *fn* must not commit or roll
        back; each call runs in a savepoint, so a call that raises leaves no write
        behind. The sink must then have one worker and no timeout, and every source
        item must reach it whole (no ``flat_map`` or ``unbatch`` before it; ``batch``
        is fine).

        Raises:
            ValueError: ``transactional=True`` without a journal, with a timeout,
                more than one worker, or after a flat_map or unbatch.

        Example::

            def save(db: sqlite3.Connection, rows: list[Row]) -> None:
                db.executemany("INSERT INTO pages VALUES (?, ?)", rows)

            (wp.Pipeline(urls, journal="run.sqlite", key=str)
               .map(fetch, workers=16).batch(100)
               .each(save, transactional=True)
               .run())
        """
        if transactional:
            self._check_transactional(workers, kind, timeout)
        return self._stage(EACH, fn, workers=workers, kind=kind, buffer=buffer,
                           ordered=ordered, timeout=timeout, retry=retry, rate=rate,
                           on_error=on_error, name=name, budget=budget, cost=cost,
                           transactional=bool(transactional))

    def _check_transactional(self, workers: Workers, kind: str, timeout: float | None) -> None:
        if self._journal is None:
            raise ValueError("each(transactional=True) writes in the journal's "
                             "transaction: wp.Pipeline(source, journal=..., key=...)")
        if workers != 1:
            raise ValueError(f"each(transactional=True) runs on the journal's one writer: "
                             f"workers must be 1, got {workers!r}")
        if kind != "thread":
            raise ValueError(f"each(transactional=True) runs on the journal's writer "
                             f"thread: kind must be 'thread', got {kind!r}")
        if timeout is not None:
            raise ValueError("each(transactional=True) cannot time out a write inside "
                             "the transaction: timeout must be None")
        split = [s.name for s in self._stages if s.op in (FLAT, UNBATCH)]
        if split:
            raise ValueError(f"each(transactional=True) is exactly-once only when every "
                             f"source item reaches it whole; {split[0]} splits items")

    def batch(self, size: int, *, timeout: float | None = None,
              buffer: int | None = None, name: str | None = None) -> Pipeline[list[T_co]]:
        """Group items into lists of *size* (the last one may be shorter).

        With *timeout*, a partial batch goes out *timeout* seconds after its first
        item arrived, so a slow source still makes progress downstream.

        Raises:
            ValueError: ``size < 1`` or ``timeout <= 0``.

        Example::

            wp.Pipeline(rows).batch(500, timeout=1.0).each(insert_many)
        """
        if isinstance(size, bool) or not isinstance(size, int):
            raise TypeError(f"size must be an int, got {size!r}")
        if size < 1:
            raise ValueError(f"size must be >= 1, got {size}")
        return self._then(StageSpec(op=BATCH, name=name or f"batch({size})", size=size,
                                    timeout=check_timeout(timeout),
                                    buffer=check_buffer(buffer, 1)))

    def unbatch(self: Pipeline[Iterable[U]], *, buffer: int | None = None,
                name: str | None = None) -> Pipeline[U]:
        """The items of each incoming iterable, one by one: the inverse of ``batch``.

        Example::

            wp.Pipeline(pages).batch(50).map(classify_many).unbatch()
        """
        return self._then(StageSpec(op=UNBATCH, name=name or "unbatch",
                                    buffer=check_buffer(buffer, 1)))

    # -- running --------------------------------------------------------------------------

    def _start(self) -> Run:
        run = Run(self._source, self._stages, self._journal, self._key)
        if self._metrics is not None:
            register(run, True, self._metrics, run_samples)
        try:
            run.start()
        except BaseException:
            run.close()
            raise
        return run

    def __iter__(self) -> PipelineIterator[T_co]:
        """Start a run; iterate its results as they come out of the last stage.

        In a journaled run, an item counts as finished once the loop asks for the
        next one (its body ran). Breaking out of the loop stops the run.
        """
        return PipelineIterator(self._start())

    def __aiter__(self) -> AsyncPipelineIterator[T_co]:
        """Start a run; ``async for`` over its results without blocking the loop."""
        return AsyncPipelineIterator(self._start())

    def run(self, *, progress: bool = False) -> PipelineReport:
        """Run to the end, dropping what comes out of the last stage; return the
        report. With *progress*, show a live per-stage view on standard output (rich
        in a terminal, a plain line every few seconds otherwise).

        Raises:
            ItemsFailed: stages with ``on_error="collect"`` kept failures: all of them
                (``.errors``), once everything else went through, and the report
                (``.report``).
            Exception: the first unhandled error of a stage or of the source (after
                every stage stopped).

        Example::

            report = pipe.run(progress=True)
            print(report.bottleneck)
        """
        items = iter(self)
        view = None
        if progress:
            from ._progress import Progress

            view = Progress(items._run)
            view.start()
        try:
            for _ in items:
                pass
        finally:
            items.close()
            if view is not None:
                view.stop()
        return items.report()

    @property
    def stages(self) -> tuple[str, ...]:
        """The names of the stages, in order (as the report shows them)."""
        return tuple(s.name for s in self._stages)

    def __repr__(self) -> str:
        chain = " -> ".join(self.stages) or "(no stage)"
        return f"<Pipeline {chain}>"


def _replace_name(spec: StageSpec, name: str) -> StageSpec:
    import dataclasses

    return dataclasses.replace(spec, name=name)
