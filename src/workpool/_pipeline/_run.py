"""One run of a pipeline: its source, stages, channels, event-loop thread, and how it
stops.

The async stages and an async source all run on the run's one ``LoopThread``, started
by ``start()`` (when there is any) and joined by ``close()``.

Stopping has one path, whoever asks: the consumer leaving early, Ctrl-C, the first
unhandled error of a stage or of the source. ``stop()`` aborts every channel (whoever
waits on one wakes with ``Aborted``) and cancels every stage (queued work is dropped,
running thread tasks see ``wp.current().cancelled``, processes are killed, async tasks
are cancelled); ``close()`` then waits for every thread, process and task to be gone.
"""

from __future__ import annotations

import os
import threading
import time
from collections import deque
from collections.abc import Callable
from types import TracebackType
from typing import Any, Final, Generic, TypeVar, final

import anyio

from .._core.exceptions import ItemsFailed
from .._core.metrics import MetricsSample
from ._async_stage import AsyncStage, LoopThread
from ._channel import Aborted, Channel, LoopScope, aget_many, aput_many
from ._journal import Book, Journal, Tag
from ._report import CollectedError, CollectedErrors, PipelineReport, elapsed, stage_report
from ._spec import BATCH, EACH, UNBATCH, StageSpec
from ._stages import BatchStage, PoolStage, StageRuntime, UnbatchStage

__all__ = ["AsyncPipelineIterator", "PipelineIterator", "Run", "run_samples"]

T = TypeVar("T")
SOURCE_BUFFER: Final = 64
_TAKE: Final = 256  # items the consumer takes from the last channel at once


class Source:
    """Reads the source, skips the keys the journal has as finished, and feeds the
    first channel: a thread of its own, or a task of the run's loop if it is async."""

    def __init__(self, run: Run, iterable: Any, key: Callable[[Any], Any] | None) -> None:
        self.run = run
        self.iterable = iterable
        self.key = key
        self.output = run.channels[0]
        self.items = 0
        self.resumed = 0
        self.is_async = hasattr(type(iterable), "__aiter__")
        self._scope = LoopScope()  # an async source's task, cancelled from any thread
        self.thread: threading.Thread | None = None
        if self.is_async:
            run.loop.add(self._amain, "pipeline-source")
        else:
            self.thread = threading.Thread(target=self._main, name="pipeline-source")

    def _main(self) -> None:
        try:
            self._feed()
        except Aborted:
            return
        except BaseException as exc:  # raised after the items read before it
            self.run.fail_after(None, exc)
        self.output.close()

    async def _amain(self) -> None:
        try:
            await self._afeed()
        except Aborted:
            raise
        except Exception as exc:  # raised after the items read before it
            self.run.fail_after(None, exc)
        self.output.close()

    def _admit(self, finished: Callable[[Any], bool] | None, item: Any) -> Any:
        """The envelope for *item*, or *self* when the journal has it as finished."""
        self.items += 1
        if finished is None:
            return item
        assert self.key is not None
        key = self.key(item)
        if finished(key):
            self.resumed += 1
            return self
        return (item, Tag(key))

    def _feed(self) -> None:
        iterator = iter(self.iterable)
        journal = self.run.journal
        reader = None if journal is None else journal.reader()
        finished = None if reader is None else reader.finished
        try:
            put, run = self.output.put, self.run
            for item in iterator:
                env = self._admit(finished, item)
                if env is not self:
                    put(env)
                elif run.stopping:
                    return
        finally:
            if reader is not None:
                reader.close()
            close = getattr(iterator, "close", None)
            if close is not None:
                close()

    async def _afeed(self) -> None:
        with self._scope.open() as scope:
            journal = self.run.journal
            reader = None if journal is None else journal.reader()
            finished = None if reader is None else reader.finished
            iterator = aiter(self.iterable)
            try:
                async for item in iterator:
                    env = self._admit(finished, item)
                    if env is not self:
                        await aput_many(self.output, [env])
            finally:
                if reader is not None:
                    reader.close()
                aclose = getattr(iterator, "aclose", None)
                if aclose is not None:
                    with anyio.CancelScope(shield=True):
                        await aclose()
        if scope.cancelled_caught:
            raise Aborted

    def cancel(self) -> None:
        self._scope.cancel()


def run_samples(run: Run, name: str) -> list[MetricsSample]:
    """What a run of a pipeline with ``metrics=`` shows: a sample per stage that runs
    on a pool, named ``name/stage``."""
    samples = []
    for stage in run.stages:
        stats = stage.statistics()
        if stats is not None:
            samples.append(MetricsSample(f"{name}/{stage.spec.name}", "stage", stats,
                                         stage.workers))
    return samples


class Run:
    """Everything one iteration of a pipeline started. See the module docstring."""

    def __init__(self, source: Any, specs: tuple[StageSpec, ...],
                 journal: str | os.PathLike[str] | None,
                 key: Callable[[Any], Any] | None) -> None:
        self.stopping = False
        self.error: BaseException | None = None
        # The furthest stage that failed under on_error="raise" (-1: the source, -2:
        # none): fail_after stops everything up to it.
        self._failed_at = -2
        self.status = "running"
        self.delivered = 0
        self.collected: list[CollectedError] = []
        self._lock = threading.Lock()
        self._closed = False
        self.journal = None if journal is None else Journal(journal)
        self.book = None if self.journal is None else Book(self.journal)
        self.channels = [Channel(SOURCE_BUFFER, "source")]
        self.channels += [Channel(spec.buffer, spec.name) for spec in specs]
        self.output = self.channels[-1]
        self.loop = LoopThread(self.fail)
        # The client of the LocalCluster the run's dask stages share when there is no
        # default distributed.Client (started by the first, closed at the run's end).
        self._dask: Any = None
        self.stages: list[StageRuntime] = []
        try:
            for index, spec in enumerate(specs):
                self.stages.append(_runtime(self, spec, index))
        except BaseException:
            self.stopping = True
            for stage in self.stages:
                stage.cancel()
                stage.join()
            self._close_dask()
            raise
        self.source = Source(self, source, key)
        self.started = time.perf_counter()
        self.ended: float | None = None

    def start(self) -> None:
        """Start the journal, the stages and then the source."""
        if self.journal is not None:
            self.journal.on_error = self.fail
            self.journal.open()
        for stage in self.stages:
            stage.start()
        self.loop.start()
        if self.source.thread is not None:
            self.source.thread.start()

    # -- the one way to stop -----------------------------------------------------------------

    def fail(self, error: BaseException) -> None:
        """The first unhandled error: remember it and stop everything."""
        with self._lock:
            if self.stopping:
                return
            if self.error is None:  # else an item's, raised in order (fail_after)
                self.error = error
            self.status = "failed"
        self.stop()

    def fail_after(self, stage: StageRuntime | None, error: BaseException) -> None:
        """An item of *stage* failed under ``on_error="raise"`` (or reading the source
        raised, *stage* None), and what came before it was passed on: stop the source
        and the stages up to *stage* (their channels aborted, their work cancelled),
        while the stages after it go on with what they were given; the consumer gets
        *error* once it took that. A failure further down the line comes earlier in
        the output, so its error is the one raised."""
        index = -1 if stage is None else self.stages.index(stage)
        with self._lock:
            if self.stopping or index <= self._failed_at:
                return  # stopped already, by this failure or a later one
            self.error = error
            self._failed_at = index
            self.status = "failed"
        self.source.cancel()
        for channel in self.channels[:index + 1]:
            channel.abort()
        for upstream in self.stages[:index + 1]:
            upstream.halted = True
            upstream.cancel()

    def stop(self) -> None:
        """Abort every channel and cancel every stage; never blocks."""
        with self._lock:
            already = self.stopping
            self.stopping = True
            if self.status == "running":
                self.status = "cancelled"
        if already:
            return
        for channel in self.channels:
            channel.abort()
        self.source.cancel()
        for stage in self.stages:
            stage.cancel()
        if self.journal is not None:
            self.journal.cancelled.set()

    def close(self, finished: bool = False) -> None:
        """Stop (unless the run *finished*), then wait for everything to be gone.

        A second Ctrl-C while waiting gives up on running tasks: processes are
        killed, threads left to finish on their own."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
            if finished and self.status == "running":
                self.status = "finished"
        if not finished:
            self.stop()
        try:
            self._join()
        except KeyboardInterrupt:
            self.stop()
            for stage in self.stages:
                if isinstance(stage, PoolStage):
                    stage.abandon()
            if self.journal is not None:
                self.journal.close()  # what finished stays recorded
            raise
        finally:
            self._close_dask()
            if self.ended is None:
                self.ended = time.perf_counter()

    def dask_client(self) -> Any:
        """The ``distributed.Client`` of the run's dask stages: the current default
        client, or a LocalCluster's that the run starts once and closes at its end."""
        from .._pools.dask import default_client, local_client

        with self._lock:
            if self._dask is None:
                client = default_client()
                if client is not None:
                    return client
                self._dask = local_client()
            return self._dask

    def _close_dask(self) -> None:
        with self._lock:
            client, self._dask = self._dask, None
        if client is not None:
            client.close()

    def _join(self) -> None:
        if self.source.thread is not None and self.source.thread.ident is not None:
            self.source.thread.join()
        for stage in self.stages:
            stage.join()
        self.loop.join()
        if self.journal is not None:
            self.journal.close()

    def collect(self, failure: CollectedError) -> None:
        """Keep an item dropped by ``on_error="collect"``."""
        with self._lock:
            self.collected.append(failure)

    def raise_collected(self) -> None:
        """At the end of the run: ``wp.ItemsFailed`` if ``on_error="collect"`` kept
        failures (with the report)."""
        if self.collected:
            raise ItemsFailed(CollectedErrors(self.collected), self.report())

    def report(self) -> PipelineReport:
        """The run's numbers so far (or in the end)."""
        seconds = elapsed(self.started, self.ended)
        stages = tuple(stage_report(s.spec.name, s.kind, s.spec.workers, s.counters, seconds,
                                    None if s.spec.rate is None else s.spec.rate.per_second,
                                    sink=s.spec.op == EACH)
                       for s in self.stages)
        with self._lock:
            errors = tuple(self.collected)
        return PipelineReport(
            status=self.status, seconds=seconds, items_read=self.source.items,
            resumed=self.source.resumed, items=self.delivered, stages=stages, errors=errors)


def _runtime(run: Run, spec: StageSpec, index: int) -> StageRuntime:
    source, sink = run.channels[index], run.channels[index + 1]
    if spec.op == BATCH:
        return BatchStage(run, spec, source, sink)
    if spec.op == UNBATCH:
        return UnbatchStage(run, spec, source, sink)
    if spec.kind == "async":
        return AsyncStage(run, spec, source, sink, run.loop)
    return PoolStage(run, spec, source, sink)


@final
class PipelineIterator(Generic[T]):
    """The items coming out of a running pipeline (``iter(pipe)``); closing it, or
    leaving ``with``, stops the run and waits for its threads and processes.

    Example::

        with iter(pipe) as items:
            for item in items:
                ...
            print(items.report())
    """

    __slots__ = ("__weakref__", "_buf", "_closed", "_last", "_run")

    def __init__(self, run: Run) -> None:
        self._run = run
        self._buf: deque[Any] = deque()
        self._last: Tag | None = None
        self._closed = False

    def __iter__(self) -> PipelineIterator[T]:
        return self

    def __next__(self) -> T:
        run = self._run
        if self._last is not None:
            assert run.book is not None
            tag, self._last = self._last, None
            run.book.release([tag])  # the consumer asked for more: the last one is done
        buf = self._buf
        if not buf:
            if self._closed:
                raise StopIteration
            try:
                got = run.output.get_many(_TAKE)
            except Aborted:
                got = []
            except BaseException:  # Ctrl-C while waiting
                self.close()
                raise
            if not got:
                self._end()
            assert got is not None
            buf.extend(got)
        env = buf.popleft()
        run.delivered += 1
        if run.book is None:
            value: T = env
            return value
        value, self._last = env
        return value

    def _end(self) -> None:
        run = self._run
        self._closed = True
        run.close(finished=run.error is None and not run.stopping)
        if run.error is not None:
            raise run.error
        run.raise_collected()
        raise StopIteration

    def close(self) -> None:
        """Stop the run (if it is still going) and wait for it to be gone."""
        self._closed = True
        self._buf.clear()
        self._run.close()

    def report(self) -> PipelineReport:
        """The run's ``PipelineReport`` (a snapshot while it runs)."""
        return self._run.report()

    def __enter__(self) -> PipelineIterator[T]:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.close()

    def __del__(self) -> None:
        try:
            if not self._run._closed:
                self._run.close()
        except AttributeError:  # half-built
            pass


@final
class AsyncPipelineIterator(Generic[T]):
    """The items of a running pipeline for ``async for`` (``aiter(pipe)``): items are
    awaited without blocking the event loop; ``aclose()`` (or leaving ``async with``)
    stops the run and waits for it in a worker thread.

    Example::

        async with aiter(pipe) as items:
            async for item in items:
                ...
    """

    __slots__ = ("__weakref__", "_buf", "_closed", "_last", "_run")

    def __init__(self, run: Run) -> None:
        self._run = run
        self._buf: deque[Any] = deque()
        self._last: Tag | None = None
        self._closed = False

    def __aiter__(self) -> AsyncPipelineIterator[T]:
        return self

    async def __anext__(self) -> T:
        run = self._run
        if self._last is not None:
            assert run.book is not None
            tag, self._last = self._last, None
            run.book.release([tag])
        buf = self._buf
        if not buf:
            if self._closed:
                raise StopAsyncIteration
            try:
                got = await aget_many(run.output, _TAKE)
            except Aborted:
                got = []
            except BaseException:  # cancelled: stop now, aclose() or __del__ waits
                run.stop()
                raise
            if not got:
                await self._end()
            buf.extend(got)
        env = buf.popleft()
        run.delivered += 1
        if run.book is None:
            value: T = env
            return value
        value, self._last = env
        return value

    async def _end(self) -> None:
        run = self._run
        self._closed = True
        finished = run.error is None and not run.stopping
        with anyio.CancelScope(shield=True):
            await anyio.to_thread.run_sync(lambda: run.close(finished))
        if run.error is not None:
            raise run.error
        run.raise_collected()
        raise StopAsyncIteration

    async def aclose(self) -> None:
        """Stop the run (if it is still going) and wait for it to be gone."""
        self._closed = True
        self._buf.clear()
        run = self._run
        if not run._closed:
            run.stop()  # at once; the wait for the threads happens off the loop
        with anyio.CancelScope(shield=True):
            await anyio.to_thread.run_sync(run.close)

    def report(self) -> PipelineReport:
        """The run's ``PipelineReport`` (a snapshot while it runs)."""
        return self._run.report()

    async def __aenter__(self) -> AsyncPipelineIterator[T]:
        return self

    async def __aexit__(self, exc_type: type[BaseException] | None,
                        exc: BaseException | None, tb: TracebackType | None) -> None:
        await self.aclose()

    def __del__(self) -> None:
        try:
            if not self._run._closed:
                self._run.close()
        except AttributeError:
            pass
