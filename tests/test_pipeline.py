"""wp.Pipeline: stage kinds and mixes, error policies, ordering, batching, cancellation
from every direction, the report, and flat memory."""

from __future__ import annotations

import io
import itertools
import re
import threading
import time
import tracemalloc
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

import workpool as wp
from workpool._core.options import stage_workers
from workpool._pipeline._progress import Progress
from workpool._pipeline._report import CollectedError, CollectedErrors, Counters, stage_report

from . import _pipeline_tasks as t
from ._interrupt import interrupt_when_ready

KINDS = ["thread", "process", "async"]
SQUARE: dict[str, Callable[[int], Any]] = {"thread": t.square, "process": t.square,
                                           "async": t.asquare}
EVEN: dict[str, Callable[[int], Any]] = {"thread": t.is_even, "process": t.is_even,
                                         "async": t.ais_even}
TWICE: dict[str, Callable[[int], Any]] = {"thread": t.twice, "process": t.twice,
                                          "async": t.atwice}
FAIL: dict[str, Callable[[int], Any]] = {"thread": t.fail_on_3, "process": t.fail_on_3,
                                         "async": t.afail_on_3}


def counting(n: int | None = None, closed: list[str] | None = None) -> Iterator[int]:
    """0, 1, 2, ... (endless without *n*); notes in *closed* when it was closed."""
    try:
        yield from (range(n) if n is not None else itertools.count())
    finally:
        if closed is not None:
            closed.append("closed")


# -- stage kinds and mixes ----------------------------------------------------------------

@pytest.mark.parametrize("kind", KINDS)
def test_map_filter_flat_map_on_each_kind(kind: Any) -> None:
    pipe = (wp.Pipeline(range(40))
            .map(SQUARE[kind], workers=3, kind=kind)
            .filter(EVEN[kind], workers=2, kind=kind)
            .flat_map(TWICE[kind], workers=2, kind=kind))
    assert list(pipe) == [y for x in range(40) if x % 2 == 0 for y in (x * x, x * x)]


def test_async_flat_map_takes_an_async_generator() -> None:
    async def pieces(x: int) -> AsyncIterator[int]:
        yield x
        yield -x

    assert list(wp.Pipeline(range(3)).flat_map(pieces, kind="async")) == [0, 0, 1, -1, 2, -2]


def test_mixed_kinds_in_one_pipeline() -> None:
    pipe = (wp.Pipeline(range(100))
            .map(t.square, workers=4)
            .map(t.square, workers=2, kind="process")
            .map(t.asquare, workers=5, kind="async")
            .filter(t.is_even))
    assert list(pipe) == [x ** 8 for x in range(100) if x % 2 == 0]


def test_process_stage_runs_in_worker_processes() -> None:
    import os

    pids = set(wp.Pipeline(range(20)).map(t.pid, workers=2, kind="process"))
    assert pids
    assert os.getpid() not in pids


def test_each_is_a_sink_and_nothing_comes_out() -> None:
    seen: list[int] = []
    report = wp.Pipeline(range(10)).map(t.square).each(seen.append).run()
    assert sorted(seen) == [x * x for x in range(10)]
    assert report.items == 0
    assert report.stage("each(append)").items_in == 10
    with pytest.raises(ValueError, match=r"each\(append\) is a sink: no stage can follow it"):
        wp.Pipeline(range(3)).each(seen.append).map(t.square)


def test_batch_and_unbatch() -> None:
    assert list(wp.Pipeline(range(10)).batch(4)) == [[0, 1, 2, 3], [4, 5, 6, 7], [8, 9]]
    assert list(wp.Pipeline(range(10)).batch(3).unbatch()) == list(range(10))
    assert list(wp.Pipeline([]).batch(3)) == []


def test_batch_flushes_on_timeout_while_the_source_is_slow() -> None:
    gate = threading.Event()

    def slow_source() -> Iterator[int]:
        yield from (0, 1, 2)
        assert gate.wait(10), "the batch never came out on its timeout"
        yield from (3, 4)

    with iter(wp.Pipeline(slow_source()).batch(10, timeout=0.05)) as batches:
        assert next(batches) == [0, 1, 2]  # the source still waits: this came on timeout
        gate.set()
        assert list(batches) == [[3, 4]]


def test_async_source_is_read_on_its_own_loop() -> None:
    async def numbers() -> AsyncIterator[int]:
        for i in range(20):
            yield i

    assert list(wp.Pipeline(numbers()).map(t.square)) == [x * x for x in range(20)]


def test_a_list_source_can_run_twice() -> None:
    pipe = wp.Pipeline([1, 2, 3]).map(t.square)
    assert list(pipe) == list(pipe) == [1, 4, 9]


def test_types_follow_the_functions() -> None:
    lengths: list[int] = list(wp.Pipeline(["a", "bb"]).map(len))
    words: list[str] = list(wp.Pipeline(["a b", "c"]).flat_map(str.split))
    chunks: list[list[int]] = list(wp.Pipeline(range(3)).batch(2))
    flat: list[int] = list(wp.Pipeline(range(3)).batch(2).unbatch())
    assert (lengths, words, chunks, flat) == ([1, 2], ["a", "b", "c"], [[0, 1], [2]], [0, 1, 2])


# -- ordering ----------------------------------------------------------------------------------

@pytest.mark.parametrize("kind", ["thread", "async"])
def test_unordered_passes_results_on_as_they_finish(kind: Any) -> None:
    gate = threading.Event()

    def wait_for_1(x: int) -> int:
        if x == 0:
            assert gate.wait(10)
        return x

    async def await_for_1(x: int) -> int:
        import anyio

        if x == 0:
            with anyio.fail_after(10):
                while not gate.is_set():
                    await anyio.sleep(0.001)
        return x

    fn = wait_for_1 if kind == "thread" else await_for_1
    with iter(wp.Pipeline(range(2)).map(fn, workers=2, kind=kind, ordered=False)) as items:
        assert next(items) == 1  # 0 is still running
        gate.set()
        assert list(items) == [0]


def test_ordered_keeps_the_input_order_whatever_finishes_first() -> None:
    gate = threading.Event()

    def slow_first(x: int) -> int:
        if x == 0:
            assert gate.wait(10)
        if x == 5:
            gate.set()  # 5 finishes before 0 does
        return x

    assert list(wp.Pipeline(range(20)).map(slow_first, workers=4)) == list(range(20))


def test_ordered_and_unordered_give_the_same_items() -> None:
    items = list(wp.Pipeline(range(500)).map(t.square, workers=4, ordered=False))
    assert sorted(items) == [x * x for x in range(500)]


# -- error policies ---------------------------------------------------------------------------

@pytest.mark.parametrize("kind", KINDS)
def test_raise_stops_the_pipeline_with_the_items_exception(kind: Any) -> None:
    with pytest.raises(ValueError, match=r"^bad 3$"):
        list(wp.Pipeline(range(20)).map(FAIL[kind], workers=2, kind=kind))


@pytest.mark.parametrize("kind", KINDS)
def test_skip_drops_and_counts(kind: Any) -> None:
    pipe = wp.Pipeline(range(20)).map(FAIL[kind], workers=2, kind=kind, on_error="skip")
    with iter(pipe) as items:
        assert list(items) == [x * x for x in range(20) if x % 5 != 3]
        report = items.report()
    stage = report.stages[0]
    assert (stage.items_in, stage.items_out, stage.errors, stage.skipped) == (20, 16, 4, 4)
    assert report.errors == ()


def _run_collecting(pipe: wp.Pipeline[Any]) -> wp.PipelineReport:
    """``pipe.run()``, which must end in ``wp.ItemsFailed``: its report."""
    with pytest.raises(wp.ItemsFailed) as failed:
        pipe.run()
    report = failed.value.report
    assert isinstance(report, wp.PipelineReport)
    assert failed.value.errors == report.errors
    assert str(failed.value) == str(report.errors)
    return report


@pytest.mark.parametrize("kind", KINDS)
def test_collect_keeps_item_exception_and_traceback(kind: Any) -> None:
    report = _run_collecting(
        wp.Pipeline(range(10))
        .map(FAIL[kind], workers=2, kind=kind, on_error="collect", name="risky"))
    assert report.status == "finished"
    assert [e.item for e in sorted(report.errors, key=lambda e: e.item)] == [3, 8]
    first = report.errors[0]
    assert first.stage == "risky"
    assert type(first.error) is ValueError
    assert str(first.error) == f"bad {first.item}"
    assert "fail_on_3" in first.traceback
    assert "ValueError: bad" in first.traceback
    assert report.stage("risky").collected == 2


def test_collected_errors_print_as_a_short_summary() -> None:
    report = _run_collecting(
        wp.Pipeline(range(125)).map(t.fail_on_3, workers=2, on_error="collect", name="risky"))
    errors = report.errors
    assert isinstance(errors, tuple)  # iterated, indexed and counted as before
    assert len(errors) == 25
    assert sorted(e.item for e in errors) == list(range(3, 125, 5))
    assert errors[0].stage == "risky"
    text = str(errors)
    lines = text.splitlines()
    assert lines[0] == "25 errors collected (25 ValueError)"
    assert [line for line in lines[1:11]
            if not re.fullmatch(r"  risky, item (\d+): ValueError: bad \1", line)] == []
    assert lines[11:] == ["  ... and 15 more (all of them: .tracebacks())"]
    assert "Traceback" not in text
    assert repr(errors) == "<CollectedErrors: 25 errors collected (25 ValueError)>"
    full = errors.tracebacks()
    assert full.count("Traceback (most recent call last):") == 25
    assert full.count("fail_on_3") >= 25
    assert full.startswith(f"{errors[0]}\nTraceback (most recent call last):")


def test_collected_errors_summary_lines() -> None:
    def failure(stage: str, item: object, error: BaseException) -> CollectedError:
        return CollectedError(stage, item, error, "Traceback (most recent call last):\n...\n")

    errors = CollectedErrors([
        failure("fetch", "https://example.org/" + "x" * 80, TimeoutError("slow\nsecond line")),
        failure("parse", 7, ValueError("y" * 200)),
        failure("parse", 8, ValueError()),
        failure("write", (1, 2), KeyError("id")),
    ])
    assert str(errors) == "\n".join([
        "4 errors collected (2 ValueError, 1 TimeoutError, 1 KeyError)",
        "  fetch, item 'https://example.org/" + "x" * 36 + "...: TimeoutError: slow",
        "  parse, item 7: ValueError: " + "y" * 117 + "...",
        "  parse, item 8: ValueError",
        "  write, item (1, 2): KeyError: 'id'",
    ])
    assert repr(errors[3]) == "CollectedError(stage='write', item=(1, 2), error=KeyError('id'))"
    assert errors.tracebacks().split("\n\n")[3] == (
        "write, item (1, 2): KeyError: 'id'\nTraceback (most recent call last):\n...")
    many = CollectedErrors(failure("s", n, type(f"E{n}", (Exception,), {})())
                           for n in range(7))
    assert str(many).splitlines()[0] == (
        "7 errors collected (1 E0, 1 E1, 1 E2, 1 E3, 1 E4, 2 of other types)")
    none = CollectedErrors([])
    assert (str(none), repr(none), none.tracebacks()) == (
        "no errors collected", "<CollectedErrors: no errors collected>", "")
    assert none == ()
    assert wp.Pipeline(range(3)).map(t.square).run().errors == ()


def test_a_sink_reports_what_it_took_in() -> None:
    counters = Counters()
    counters.items_in = 30
    counters.busy_seconds = 1.0
    report = stage_report("store", "thread", 1, counters, 2.0, sink=True)
    assert (report.sink, report.items_out, report.throughput) == (True, 0, 15.0)
    assert stage_report("square", "thread", 1, counters, 2.0).throughput == 0.0
    text = str(wp.PipelineReport(status="finished", seconds=2.0, items_read=30, resumed=0,
                                 items=0, stages=(report,)))
    assert text.splitlines()[0] == "pipeline finished in 2.00 s: 30 read; bottleneck: store"
    assert text.splitlines()[3].split() == [
        "store", "*", "thread", "1", "30", "-", "0", "15.0", "50%", "-", "-", "-"]


def test_a_worker_process_crash_fails_only_its_item() -> None:
    report = _run_collecting(
        wp.Pipeline(range(6)).map(t.crash_on_3, workers=2, kind="process", on_error="collect"))
    assert [e.item for e in report.errors] == [3]
    assert isinstance(report.errors[0].error, wp.WorkerCrashed)
    assert report.stages[0].items_out == 5


def test_timeout_retry_and_rate_apply_per_item() -> None:
    pipe = wp.Pipeline(range(6)).map(t.nap_on_3, workers=2, timeout=0.2, on_error="collect")
    got: list[int] = []
    with iter(pipe) as items, pytest.raises(wp.ItemsFailed) as failed:
        got.extend(items)
    assert got == [0, 1, 2, 4, 5]
    errors = failed.value.errors
    assert errors == items.report().errors
    assert [e.item for e in errors] == [3]
    assert isinstance(errors[0].error, wp.TaskTimeout)

    retry = wp.Retry(attempts=2, backoff=0)
    assert list(wp.Pipeline(range(5)).map(t.flaky, workers=2, retry=retry)) == list(range(5))

    started = time.monotonic()
    rated = wp.Pipeline(range(11)).map(t.square, workers=4, rate=wp.RateLimit(per_second=100))
    assert list(rated) == [x * x for x in range(11)]
    assert time.monotonic() - started >= 0.095  # 11 starts, 10 ms apart


def test_source_error_stops_the_pipeline() -> None:
    def broken() -> Iterator[int]:
        yield from range(5)
        raise RuntimeError("source broke")

    with pytest.raises(RuntimeError, match=r"^source broke$"):
        list(wp.Pipeline(broken()).map(t.square, workers=2).map(t.square))


# -- cancellation from every direction ---------------------------------------------------

def test_consumer_break_stops_an_endless_pipeline() -> None:
    closed: list[str] = []
    started = time.monotonic()
    pipe = (wp.Pipeline(counting(closed=closed))
            .map(t.nap_if_big, workers=2)
            .map(t.square, workers=2, kind="process"))
    for x in pipe:  # items from 1 on are sleeping in their workers
        assert x == 0
        break
    assert closed == ["closed"]
    assert time.monotonic() - started < 10  # the sleeping tasks were cancelled


@pytest.mark.parametrize("kind", KINDS)
def test_closing_cancels_running_tasks_of_each_kind(kind: Any) -> None:
    fn = {"thread": t.nap_if_big, "process": t.sleep_if_big, "async": t.asleep_if_big}[kind]
    items = iter(wp.Pipeline(counting()).map(fn, workers=2, kind=kind))
    assert next(items) == 0  # items from 1 on are sleeping in their workers
    started = time.monotonic()
    items.close()
    assert time.monotonic() - started < 5
    assert items.report().status == "cancelled"


def test_a_failing_stage_stops_every_other_stage() -> None:
    closed: list[str] = []
    pipe = (wp.Pipeline(counting(closed=closed))
            .map(t.same, workers=2)
            .map(t.fail_at_50, workers=2, kind="process")
            .map(t.asquare, workers=2, kind="async"))
    with pytest.raises(ValueError, match=r"^bad 50$"):
        list(pipe)
    assert closed == ["closed"]


def test_a_failing_sink_stops_the_run() -> None:
    with pytest.raises(ValueError, match=r"^bad 50$"):
        wp.Pipeline(counting()).map(t.same).each(t.fail_at_50).run()


CTRL_C = """
import itertools, multiprocessing, signal, sys, threading
signal.signal(signal.SIGINT, signal.default_int_handler)  # even when started in background
import anyio
import workpool as wp

def nap(x):
    wp.current().sleep(0.005)
    return x

async def anap(x):
    await anyio.sleep(0.005)
    return x

def main():
    pipe = (wp.Pipeline(itertools.count())
            .map(nap, workers=4)
            .map(abs, workers=2, kind="process")
            .batch(10, timeout=0.1)
            .unbatch()
            .map(anap, workers=4, kind="async"))
    try:
        for i, _ in enumerate(pipe):  # Ctrl-C here or in the loop body: both stop it
            if i == 0:
                print("ready", flush=True)
    except KeyboardInterrupt:
        left = [t.name for t in threading.enumerate() if t is not threading.main_thread()]
        print("interrupted", left, multiprocessing.active_children(), flush=True)
        sys.exit(3)

if __name__ == "__main__":
    main()
"""


def test_ctrl_c_stops_everything_in_a_real_process(tmp_path: Path) -> None:
    run = interrupt_when_ready(tmp_path, CTRL_C)
    assert run.ready == "ready\n"
    assert run.seconds < 10
    assert run.returncode == 3, run.err
    assert run.out.strip() == "interrupted [] []"


# -- consuming asynchronously --------------------------------------------------------------

@pytest.mark.anyio
async def test_async_for_over_a_pipeline() -> None:
    got = [x async for x in wp.Pipeline(range(30)).map(t.square, workers=2).map(t.asquare,
                                                                                  kind="async")]
    assert got == [x ** 4 for x in range(30)]


@pytest.mark.anyio
async def test_async_for_break_and_aclose() -> None:
    async with aiter(wp.Pipeline(counting()).map(t.nap_if_big, workers=2)) as items:
        async for x in items:
            assert x == 0
            break
    assert items.report().status == "cancelled"


@pytest.mark.anyio
async def test_cancelling_the_async_consumer_stops_the_run() -> None:
    import anyio

    items = aiter(wp.Pipeline(counting()).map(t.nap_if_big, workers=2))
    with anyio.move_on_after(0.2) as scope:
        async for _ in items:  # 0 comes out; the rest sleep in their workers
            pass
    assert scope.cancelled_caught
    await items.aclose()
    assert items.report().status == "cancelled"


@pytest.mark.anyio
async def test_async_for_raises_the_stage_error() -> None:
    with pytest.raises(ValueError, match=r"^bad 3$"):
        async for _ in wp.Pipeline(range(10)).map(t.fail_on_3):
            pass


# -- the report ------------------------------------------------------------------------------

def test_report_counts_are_exact() -> None:
    report = (wp.Pipeline(range(100))
              .map(t.square, workers=3)
              .filter(t.is_even, workers=2, kind="process")
              .flat_map(t.twice)
              .batch(7)
              .run())
    counts = [(s.name, s.items_in, s.items_out, s.errors) for s in report.stages]
    assert counts == [("map(square)", 100, 100, 0), ("filter(is_even)", 100, 50, 0),
                      ("flat_map(twice)", 50, 100, 0), ("batch(7)", 100, 15, 0)]
    assert (report.status, report.items_read, report.resumed, report.items) == (
        "finished", 100, 0, 15)
    assert [s.workers for s in report.stages] == [3, 2, 1, 1]


def test_bottleneck_is_the_busiest_stage() -> None:
    def slow(x: int) -> int:
        time.sleep(0.005)
        return x

    report = (wp.Pipeline(range(40)).map(t.square, workers=2).map(slow, name="slow")
              .map(t.square).run())
    assert report.bottleneck is not None
    assert report.bottleneck.name == "slow"
    slowest = report.stage("slow")
    assert slowest.busy > 0.5
    assert 0.004 < slowest.latency_p50 < 0.1
    text = str(report)
    assert text.startswith("pipeline finished in ")
    assert "bottleneck: slow" in text
    assert "slow *" in text


def test_stage_names_are_unique() -> None:
    pipe = wp.Pipeline(range(3)).map(t.square).map(t.square).map(t.square, name="last")
    assert pipe.stages == ("map(square)", "map(square)#2", "last")
    assert repr(pipe) == "<Pipeline map(square) -> map(square)#2 -> last>"


def test_progress_prints_plain_lines_when_not_a_terminal(
        capsys: pytest.CaptureFixture[str]) -> None:
    wp.Pipeline(range(50)).map(t.square).run(progress=True)
    out = capsys.readouterr().out
    # Shorter than the first 2 s frame: the final line alone, once.
    assert re.fullmatch(r"progress \d+\.\d s, finished: 50 read \| map\(square\) 50 "
                        r"\| [\d,]+/s\n", out), out


def test_plain_progress_lines_are_short(capsys: pytest.CaptureFixture[str]) -> None:
    pipe = wp.Pipeline(range(60))
    for n in range(12):
        pipe = pipe.map(t.same, name=f"a-rather-long-stage-name-{n}")
    pipe.run(progress=True)
    line = capsys.readouterr().out.rstrip("\n")
    assert "\n" not in line
    # Middle stages left out, the names of the first and last shortened (start~end).
    assert re.fullmatch(r"progress \d+\.\d s, finished: 60 read \| a-rather~-name-0 60 "
                        r"\| \.\.\. \| a-rather~name-11 60 \| [\d,]+/s", line), line
    assert len(line) <= 100


def test_plain_progress_draws_the_final_frame_once() -> None:
    screen = io.StringIO()
    items = iter(wp.Pipeline(range(30)).map(t.square, name="squares"))
    view = Progress(items._run, out=screen, interval=0.01)
    view.start()
    assert list(items) == [x * x for x in range(30)]  # the run has ended...
    time.sleep(0.2)  # ...and 20 frames' time passes before stop()
    view.stop()
    lines = screen.getvalue().splitlines()
    assert [line for line in lines if "finished" in line] == lines[-1:]
    assert re.fullmatch(r"progress \d+\.\d s, finished: 30 read \| squares 30 \| "
                        r"[\d,]+/s", lines[-1]), lines[-1]
    assert all(line.startswith("progress ") and len(line) < 100 for line in lines)


class Terminal(io.StringIO):
    """A screen that says it is a terminal: the live view draws its table there."""

    def isatty(self) -> bool:
        return True


def test_progress_draws_a_live_table_in_a_terminal() -> None:
    screen = Terminal()
    items = iter(wp.Pipeline(range(50)).map(t.square, name="squares"))
    view = Progress(items._run, out=screen, interval=0.01)
    view.start()
    assert list(items) == [x * x for x in range(50)]
    view.stop()
    text = screen.getvalue()
    for word in ("squares", "busy", "50"):
        assert word in text


def test_live_table_draws_the_final_frame_once() -> None:
    screen = Terminal()
    items = iter(wp.Pipeline(range(30)).map(t.square, name="squares"))
    view = Progress(items._run, out=screen, interval=0.01)
    view.start()
    assert list(items) == [x * x for x in range(30)]
    time.sleep(0.2)
    view.stop()
    assert screen.getvalue().count("pipeline finished") == 1


def test_progress_shows_what_a_sink_did(capsys: pytest.CaptureFixture[str]) -> None:
    seen: list[int] = []
    items = iter(wp.Pipeline(range(40)).map(t.square, name="squares")
                 .batch(10, name="tens").each(seen.extend, name="store"))
    view = Progress(items._run, out=io.StringIO())
    assert list(items) == []
    header, squares, tens, store = view.rows(final=True)
    assert header == ("stage", "kind", "in", "out", "items/s", "errors", "queue", "busy")
    assert squares[:4] == ("squares", "thread", "40", "40")
    assert tens[:4] == ("tens", "inline", "40", "4")
    assert store[:4] == ("store", "thread", "4", "-")  # took 4 batches, passes nothing on
    assert float(store[4].replace(",", "")) > 0  # the rate of what it took in
    assert re.fullmatch(r"progress \d+\.\d s, finished: 40 read \| squares 40 \| "
                        r"tens 4 \| store 4 in \| [\d,]+/s", view.line(final=True))
    assert view._header().endswith(": 40 read")  # no "0 out" for a pipeline into a sink
    assert sorted(seen) == [x * x for x in range(40)]


# -- options --------------------------------------------------------------------------------

def test_workers_as_a_multiple_of_cpus() -> None:
    assert stage_workers(3, lambda: 8) == 3
    assert stage_workers(0.5, lambda: 4) == 2
    assert stage_workers(0.1, lambda: 2) == 1
    assert stage_workers(1.5, lambda: 2) == 3
    assert stage_workers(1.25, lambda: 2) == 3  # 2.5 rounds half up
    report = wp.Pipeline(range(3)).map(t.square, workers=1.0).run()
    assert report.stages[0].workers == wp.cpus()


@pytest.mark.parametrize(("call", "error", "message"), [
    (lambda p: p.map(t.square, workers=0), ValueError, "workers must be >= 1, got 0"),
    (lambda p: p.map(t.square, workers=-0.5), ValueError, "must be > 0, got -0.5"),
    (lambda p: p.map(t.square, workers="2"), TypeError, "workers must be an int or a float"),
    (lambda p: p.map(t.square, kind="fiber"), ValueError,
     "kind must be 'thread', 'process', 'async' or 'dask', got 'fiber'"),
    (lambda p: p.map(t.square, on_error="ignore"), ValueError,
     "on_error must be one of 'raise', 'return', 'collect', 'skip', not 'ignore'"),
    (lambda p: p.map(t.square, buffer=0), ValueError, "buffer must be >= 1, got 0"),
    (lambda p: p.map(t.square, timeout=0), ValueError, "timeout must be > 0, got 0"),
    (lambda p: p.map(t.square, retry=3), TypeError, "retry must be a wp.Retry or None"),
    (lambda p: p.map(42), TypeError, "fn must be callable, got 42"),
    (lambda p: p.batch(0), ValueError, "size must be >= 1, got 0"),
    (lambda p: p.batch(2, timeout=-1), ValueError, "timeout must be > 0, got -1"),
    (lambda p: p.each(t.square, transactional=True), ValueError,
     "each\\(transactional=True\\) writes in the journal's transaction"),
])
def test_options_are_checked_when_the_stage_is_added(
        call: Callable[[wp.Pipeline[int]], object], error: type[Exception],
        message: str) -> None:
    with pytest.raises(error, match=message):
        call(wp.Pipeline(range(3)))


def test_a_journal_that_cannot_open_fails_the_start(tmp_path: Path) -> None:
    import sqlite3

    pipe = wp.Pipeline(range(3), journal=tmp_path / "missing" / "j.sqlite", key=int)
    with pytest.raises(sqlite3.OperationalError, match="unable to open database file"):
        list(pipe.map(t.square, workers=2, kind="process"))


def test_source_and_journal_arguments_are_checked(tmp_path: Path) -> None:
    with pytest.raises(TypeError, match="source must be an iterable"):
        wp.Pipeline(42)  # type: ignore[call-overload]
    with pytest.raises(ValueError, match="journal needs key="):
        wp.Pipeline(range(3), journal=tmp_path / "j.sqlite")
    with pytest.raises(ValueError, match="pass journal= too"):
        wp.Pipeline(range(3), key=str)


# -- memory ----------------------------------------------------------------------------------

def _payloads() -> Iterator[bytes]:
    for i in itertools.count():
        yield b"%01000d" % i  # 1,000 new bytes per item


def _consume(n: int) -> int:
    pipe = (wp.Pipeline(_payloads())
            .map(bytes.upper, workers=2)
            .map(bytes.lower, workers=2, buffer=32)
            .batch(16).unbatch())
    with iter(pipe) as items:
        for i, _ in enumerate(items, 1):
            if i == n:
                break
    return tracemalloc.get_traced_memory()[1]


def test_memory_stays_flat_over_an_endless_source() -> None:
    import gc

    # What a run may hold is bounded by its buffers and chunks in flight (about 3 MiB
    # of these 1 KB items here), reached once the chunks have grown: compare two runs
    # past that point, five times as long as each other.
    tracemalloc.start()
    try:
        peaks = []
        for n in (10_000, 50_000):  # 50 MB of items in the second run
            gc.collect()  # the previous run's garbage
            tracemalloc.reset_peak()
            peaks.append(_consume(n))
    finally:
        tracemalloc.stop()
    short, long = peaks
    # 50 MB went through: a run that held its items would peak near that.
    assert long < 8 << 20, f"peak {long / 2**20:.1f} MiB"
    # Under load the chunks of the short run may not have grown to full size yet: the
    # slack covers that (the long run peaked at 3.7 MiB against 1.1 MiB once).
    assert long < 1.5 * short + (4 << 20), (short, long)


# -- the loop scope that stages and async sources are cancelled through --------------------

@pytest.mark.anyio
async def test_loop_scope_remembers_a_cancel_from_before_it_opened() -> None:
    import anyio

    from workpool._pipeline._channel import LoopScope

    scope = LoopScope()
    scope.cancel()
    with scope.open() as cs:
        await anyio.sleep(10)  # bounded: the cancel ends it at once
    assert cs.cancelled_caught


@pytest.mark.anyio
async def test_loop_scope_is_cancelled_from_another_thread() -> None:
    import anyio

    from workpool._pipeline._channel import LoopScope

    scope = LoopScope()
    with scope.open() as cs:
        threading.Thread(target=scope.cancel).start()
        await anyio.sleep(10)  # bounded: the cancel ends it at once
    assert cs.cancelled_caught
    scope.cancel()  # closed: nothing left to cancel, and no error
