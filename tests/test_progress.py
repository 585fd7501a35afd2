"""``map(..., progress=...)`` on every pool: the counts a callable receives, the plain
lines and the rich bar, bad arguments."""

from __future__ import annotations

import gc
import io
import threading
from typing import Any

import pytest

import workpool as wp
from workpool._core.progress import ProgressState, input_total
from workpool._pools.progress import Bar, plain_line

from . import _process_tasks


def square(x: int) -> int:
    return x * x


def fail_on_threes(x: int) -> int:
    if x % 10 == 3:
        raise ValueError(x)
    return x


class Recorder:
    """A ``progress=`` callable that keeps every count it receives, and the threads
    that called it."""

    def __init__(self) -> None:
        self.calls: list[wp.ProgressCounts] = []
        self.threads: set[int] = set()

    def __call__(self, counts: wp.ProgressCounts) -> None:
        self.calls.append(counts)
        self.threads.add(threading.get_ident())

    @property
    def last(self) -> wp.ProgressCounts:
        return self.calls[-1]


class FakeTerminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_a_callable_gets_the_counts_and_one_last_call() -> None:
    seen = Recorder()
    with wp.ThreadPool(4) as pool:
        assert list(pool.map(square, range(1000), progress=seen)) == [x * x for x in range(1000)]
    assert [c.finished for c in seen.calls].count(True) == 1
    last = seen.last
    assert (last.done, last.total, last.failed, last.finished) == (1000, 1000, 0, True)
    assert (last.eta, last.fraction) == (0.0, 1.0)
    assert last.rate > 0
    assert seen.threads == {threading.get_ident()}  # called in the iterating thread
    dones = [c.done for c in seen.calls]
    assert dones == sorted(dones)


@pytest.mark.parametrize(("on_error", "kept"), [("return", 1000), ("skip", 900)])
def test_failed_items_are_counted(on_error: Any, kept: int) -> None:
    seen = Recorder()
    with wp.ThreadPool(4) as pool:
        out = list(pool.map(fail_on_threes, range(1000), on_error=on_error, progress=seen))
    assert len(out) == kept
    assert (seen.last.done, seen.last.failed) == (1000, 100)


def test_collect_counts_the_failures_before_raising_them() -> None:
    seen = Recorder()
    with wp.ThreadPool(2) as pool, pytest.raises(wp.ItemsFailed) as info:
        list(pool.map(fail_on_threes, range(100), on_error="collect", progress=seen))
    assert len(info.value.errors) == 10
    assert (seen.last.done, seen.last.failed, seen.last.finished) == (100, 10, True)


def test_raise_counts_the_items_before_the_failure() -> None:
    seen = Recorder()
    with wp.ThreadPool(2) as pool, pytest.raises(ValueError, match=r"^3$"):
        list(pool.map(fail_on_threes, range(100), chunksize=10, progress=seen))
    assert (seen.last.done, seen.last.failed, seen.last.finished) == (3, 0, True)


def test_an_input_without_a_length_has_no_total() -> None:
    seen = Recorder()
    with wp.ThreadPool(2) as pool:
        assert sum(pool.map(square, (x for x in range(50)), progress=seen)) == 40425
    assert (seen.last.done, seen.last.total, seen.last.fraction) == (50, None, None)
    assert all(c.eta is None for c in seen.calls)


def test_zipped_inputs_total_the_shortest() -> None:
    assert input_total([range(10), [1, 2, 3]]) == 3
    assert input_total([range(10), iter([1])]) is None
    seen = Recorder()
    with wp.ThreadPool(2) as pool:
        assert list(pool.map(pow, [2, 3, 4], range(10), progress=seen)) == [1, 3, 16]
    assert (seen.last.done, seen.last.total) == (3, 3)


def test_closing_the_map_early_sends_the_last_counts() -> None:
    seen = Recorder()
    with wp.ThreadPool(2) as pool:
        results = pool.map(square, range(100), chunksize=1, progress=seen)
        assert [next(results) for _ in range(3)] == [0, 1, 4]
        results.close()
    assert (seen.last.done, seen.last.total, seen.last.finished) == (3, 100, True)


def test_a_map_never_iterated_shows_nothing() -> None:
    seen = Recorder()
    with wp.ThreadPool(2) as pool:
        pool.map(square, range(10), progress=seen)
    assert seen.calls == []


def test_an_error_in_the_callable_ends_the_map() -> None:
    def broken(counts: wp.ProgressCounts) -> None:
        raise RuntimeError("display broke")

    with wp.ThreadPool(2) as pool, pytest.raises(RuntimeError, match="display broke"):
        list(pool.map(square, range(10), progress=broken))


@pytest.mark.parametrize("bad", [3, "yes", None])
def test_a_bad_progress_is_refused_at_the_call(bad: object) -> None:
    with wp.ThreadPool(1) as pool, pytest.raises(
            TypeError, match=r"^progress must be True, False or a callable taking "
                             r"wp.ProgressCounts, got "):
        pool.map(square, range(3), progress=bad)  # type: ignore[call-overload]


def test_plain_lines_on_stderr_when_not_a_terminal(capsys: pytest.CaptureFixture[str]) -> None:
    with wp.ThreadPool(2) as pool:
        assert sum(pool.map(square, range(10), progress=True)) == 285
    err = capsys.readouterr().err.splitlines()
    assert len(err) == 1
    assert err[0].startswith("map(square): 10/10 (100%) | ")
    assert err[0].endswith(" s, finished")


def test_plain_line_format() -> None:
    counts = wp.ProgressCounts(done=4781, total=10000, failed=0, rate=2390.4, eta=2.18,
                               elapsed=2.0)
    assert plain_line("map(f)", counts) == "map(f): 4,781/10,000 (48%) | 2,390/s | eta 2.2 s"
    counts = wp.ProgressCounts(done=12, total=None, failed=2, rate=3.0, eta=None,
                               elapsed=4.04, finished=True)
    assert plain_line("map(f)", counts) == "map(f): 12 | 2 failed | 3/s | 4.0 s, finished"


def test_plain_lines_come_on_a_timer_while_items_are_slow() -> None:
    out = io.StringIO()
    state = ProgressState(total=2)
    bar = Bar(state, "map(wait)", out, interval=0.01)
    drawn = threading.Event()

    def print_line(line: str) -> None:
        out.write(line + "\n")
        drawn.set()

    bar._print = print_line  # type: ignore[method-assign]
    bar.start()
    assert drawn.wait(5)
    bar.advance(2)
    bar.stop()
    lines = out.getvalue().splitlines()
    assert lines[0].startswith("map(wait): 0/2 (0%) | 0/s")
    assert lines[-1].startswith("map(wait): 2/2 (100%) | ")
    assert lines[-1].endswith(", finished")


def test_a_rich_bar_on_a_terminal(monkeypatch: pytest.MonkeyPatch) -> None:
    pytest.importorskip("rich")
    monkeypatch.delenv("WORKPOOL_PLAIN", raising=False)
    out = FakeTerminal()
    bar = Bar(ProgressState(total=10), "map(square)", out)
    bar.start()
    bar.advance(10, 1)
    bar.stop()
    text = out.getvalue()
    assert "map(square)" in text
    assert "10/10 \x1b[31m1 failed\x1b[0m" in text  # failures in red
    assert "━" in text  # the bar itself


def test_workpool_plain_turns_the_bar_into_lines(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("WORKPOOL_PLAIN", "1")
    out = FakeTerminal()
    bar = Bar(ProgressState(total=3), "map(f)", out)
    bar.start()
    bar.advance(3)
    bar.stop()
    assert out.getvalue().startswith("map(f): 3/3 (100%) | ")


def test_a_bar_inside_a_bar_falls_back_to_lines(monkeypatch: pytest.MonkeyPatch) -> None:
    pytest.importorskip("rich")
    monkeypatch.delenv("WORKPOOL_PLAIN", raising=False)
    outer_out, inner_out = FakeTerminal(), FakeTerminal()
    outer = Bar(ProgressState(total=1), "map(outer)", outer_out)
    inner = Bar(ProgressState(total=1), "map(inner)", inner_out)
    outer.start()
    inner.start()
    inner.advance(1)
    inner.stop()
    outer.advance(1)
    outer.stop()
    assert inner_out.getvalue().startswith("map(inner): 1/1 (100%) | ")
    assert "━" in outer_out.getvalue()


def test_process_pool_map_progress() -> None:
    seen = Recorder()
    with wp.ProcessPool(2) as pool:
        assert list(pool.map(_process_tasks.double, range(20), progress=seen)) == [
            2 * x for x in range(20)]
    assert (seen.last.done, seen.last.total, seen.last.finished) == (20, 20, True)



async def square_async(x: int) -> int:
    return x * x


async def fail_async(x: int) -> int:
    if x % 10 == 3:
        raise ValueError(x)
    return x


@pytest.mark.anyio
async def test_async_map_progress_callable() -> None:
    seen = Recorder()
    async with wp.AsyncPool(8) as pool:
        results = pool.map(square_async, range(200), progress=seen)
        got = [x async for x in results]
        await results.aclose()
        del results  # closing and collecting it calls no more
        gc.collect()
    assert got == [x * x for x in range(200)]
    assert [c.finished for c in seen.calls].count(True) == 1
    assert (seen.last.done, seen.last.total, seen.last.failed, seen.last.finished) == (
        200, 200, 0, True)


@pytest.mark.anyio
async def test_async_map_counts_returned_and_collected_failures() -> None:
    returned, collected = Recorder(), Recorder()
    async with wp.AsyncPool(4) as pool:
        out = [x async for x in pool.map(fail_async, range(50), on_error="return",
                                         progress=returned)]
        assert sum(isinstance(x, wp.Error) for x in out) == 5
        with pytest.raises(wp.ItemsFailed):
            async for _ in pool.map(fail_async, range(50), on_error="collect",
                                    progress=collected):
                pass
    assert (returned.last.done, returned.last.failed) == (50, 5)
    assert (collected.last.done, collected.last.failed, collected.last.finished) == (
        50, 5, True)


@pytest.mark.anyio
async def test_async_map_counts_skipped_failures_as_the_sync_map_does() -> None:
    seen = Recorder()
    async with wp.AsyncPool(4) as pool:
        out = [x async for x in pool.map(fail_async, range(500), on_error="skip",
                                         progress=seen)]
    assert len(out) == 450
    assert (seen.last.done, seen.last.failed, seen.last.finished) == (500, 50, True)
    assert [c.finished for c in seen.calls].count(True) == 1


@pytest.mark.anyio
async def test_async_map_closed_early_and_bad_progress() -> None:
    seen = Recorder()
    async with wp.AsyncPool(2) as pool:
        async with pool.map(square_async, range(100), progress=seen) as results:
            async for x in results:
                if x == 4:
                    break
        with pytest.raises(TypeError, match=r"^progress must be True, False or a callable"):
            pool.map(square_async, range(3), progress=1)  # type: ignore[call-overload]
    assert (seen.last.done, seen.last.finished) == (3, True)
    assert [c.finished for c in seen.calls].count(True) == 1
