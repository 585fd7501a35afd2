"""One event-loop thread per pipeline run: every async stage and an async source run on
it, and it is gone once the run is, however the run ends."""

from __future__ import annotations

import threading
from collections.abc import AsyncIterator
from pathlib import Path

import anyio
import pytest

import workpool as wp

from ._interrupt import interrupt_when_ready

BOUND = 5.0


class Threads:
    """Where the coroutines of a run ran: the thread of each call, by role."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.seen: dict[str, set[threading.Thread]] = {}
        self.others: set[threading.Thread] = set()  # besides the caller's, during the run
        self.before = set(threading.enumerate())

    def note(self, role: str) -> None:
        here = threading.current_thread()
        with self.lock:
            self.seen.setdefault(role, set()).add(here)
            self.others |= set(threading.enumerate()) - self.before

    def loop_threads(self) -> set[threading.Thread]:
        return set().union(*self.seen.values())

    def left(self) -> set[threading.Thread]:
        return {t for t in set(threading.enumerate()) - self.before if t.is_alive()}


def _pipe(threads: Threads, n: int | None, fail_on: int | None = None) -> wp.Pipeline[int]:
    async def source() -> AsyncIterator[int]:
        i = 0
        while n is None or i < n:
            threads.note("source")
            yield i
            i += 1

    async def plus_one(x: int) -> int:
        threads.note("plus_one")
        await anyio.sleep(0)
        return x + 1

    async def is_odd(x: int) -> bool:
        threads.note("is_odd")
        return x % 2 == 1

    async def double(x: int) -> int:
        threads.note("double")
        await anyio.sleep(0)
        if x == fail_on:
            raise ValueError(f"bad {x}")
        return 2 * x

    return (wp.Pipeline(source())
            .map(plus_one, workers=3, kind="async")
            .filter(is_odd, workers=2, kind="async")
            .map(double, workers=4, kind="async"))


def _one_loop_thread(threads: Threads) -> threading.Thread:
    assert set(threads.seen) >= {"source", "plus_one", "is_odd", "double"}
    loops = threads.loop_threads()
    assert len(loops) == 1
    (loop,) = loops
    assert loop is not threading.current_thread()
    assert threads.others == {loop}  # no thread of its own for any stage or the source
    return loop


def test_async_stages_and_source_share_one_loop_thread_gone_at_the_end() -> None:
    threads = Threads()
    assert list(_pipe(threads, 40)) == [2 * (x + 1) for x in range(40) if x % 2 == 0]
    loop = _one_loop_thread(threads)
    assert not loop.is_alive()
    assert threads.left() == set()


def test_an_error_ends_the_loop_thread() -> None:
    threads = Threads()
    with pytest.raises(ValueError, match=r"^bad 11$"):
        for _ in _pipe(threads, None, fail_on=11):
            pass
    loop = _one_loop_thread(threads)
    assert not loop.is_alive()
    assert threads.left() == set()


def test_an_async_source_s_error_ends_the_loop_thread() -> None:
    async def broken() -> AsyncIterator[int]:
        yield 1
        raise LookupError("source broke")

    async def plus_one(x: int) -> int:
        return x + 1

    before = set(threading.enumerate())
    with pytest.raises(LookupError, match=r"^source broke$"):
        list(wp.Pipeline(broken()).map(plus_one, kind="async"))
    assert {t for t in set(threading.enumerate()) - before if t.is_alive()} == set()


def test_a_consumer_leaving_early_ends_the_loop_thread() -> None:
    threads = Threads()
    with iter(_pipe(threads, None)) as items:
        assert [next(items) for _ in range(3)] == [2, 6, 10]
    assert items.report().status == "cancelled"
    loop = _one_loop_thread(threads)
    assert not loop.is_alive()
    assert threads.left() == set()


def test_each_run_has_a_loop_thread_of_its_own() -> None:
    first, second = Threads(), Threads()
    assert list(_pipe(first, 6)) == list(_pipe(second, 6)) == [2, 6, 10]
    assert _one_loop_thread(first) is not _one_loop_thread(second)


def test_a_run_without_async_parts_starts_no_loop_thread() -> None:
    seen: set[str] = set()

    def names(x: int) -> int:
        seen.update(t.name for t in threading.enumerate())  # every thread of the run
        return x

    assert list(wp.Pipeline(range(5)).map(names, workers=1)) == [0, 1, 2, 3, 4]
    assert len(seen) > 1
    assert "pipeline-loop" not in seen


@pytest.mark.anyio
async def test_an_async_consumer_is_served_by_the_run_s_loop_thread() -> None:
    threads = Threads()
    with anyio.fail_after(BOUND):
        async with aiter(_pipe(threads, None)) as items:
            got = []
            async for x in items:
                got.append(x)
                if len(got) == 3:
                    break
    assert got == [2, 6, 10]
    loop = _one_loop_thread_besides_the_consumer_s(threads)
    assert not loop.is_alive()


def _one_loop_thread_besides_the_consumer_s(threads: Threads) -> threading.Thread:
    loops = threads.loop_threads()
    assert len(loops) == 1
    (loop,) = loops
    assert loop is not threading.current_thread()
    return loop


CTRL_C = """
import itertools, signal, sys, threading
signal.signal(signal.SIGINT, signal.default_int_handler)  # even when started in background
import anyio
import workpool as wp

async def numbers():
    for i in itertools.count():
        await anyio.sleep(0.001)
        yield i

async def nap(x):
    await anyio.sleep(0.005)
    return x

def main():
    pipe = (wp.Pipeline(numbers())
            .map(nap, workers=4, kind="async")
            .map(nap, workers=2, kind="async")
            .map(nap, workers=3, kind="async"))
    try:
        for i, _ in enumerate(pipe):
            if i == 0:
                print("ready", [t.name for t in threading.enumerate()
                                if t is not threading.main_thread()], flush=True)
    except KeyboardInterrupt:
        left = [t.name for t in threading.enumerate() if t is not threading.main_thread()]
        print("interrupted", left, flush=True)
        sys.exit(3)

if __name__ == "__main__":
    main()
"""


def test_ctrl_c_ends_the_loop_thread_in_a_real_process(tmp_path: Path) -> None:
    run = interrupt_when_ready(tmp_path, CTRL_C)
    assert run.ready == "ready ['pipeline-loop']\n"
    assert run.seconds < 10
    assert run.returncode == 3, run.err
    assert run.out.strip() == "interrupted []"
