"""wp.merge and wp.amerge: every item exactly once, errors raised after the other
sources stopped, and no thread or task left behind however the consumer leaves."""

from __future__ import annotations

import gc
import inspect
import threading
import time
import types
from collections import Counter
from collections.abc import AsyncGenerator, AsyncIterator, Callable, Generator, Iterator

import anyio
import pytest

import workpool as wp
from workpool._sync.merge import AsyncMerge, Merge

WAIT = 10.0  # the bound on every wait below; a correct run never comes near it


class Boom(Exception):
    pass


def tagged(tag: str, n: int) -> Iterator[tuple[str, int]]:
    for i in range(n):
        yield tag, i


def endless(closed: threading.Event, tag: str = "x") -> Generator[str, None, None]:
    try:
        while True:
            yield tag
    finally:
        closed.set()


def failing(after: int, exc: BaseException) -> Iterator[int]:
    yield from range(after)
    raise exc


def drain(items: Iterator[object]) -> None:
    for _ in items:
        pass


def check_order(items: list[tuple[str, int]]) -> None:
    seen: dict[str, int] = {}
    for tag, i in items:
        assert i == seen.get(tag, -1) + 1, f"source {tag} out of order at {i}"
        seen[tag] = i


def merge_threads() -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name.startswith("workpool-merge-")]


def wait_for(check: Callable[[], bool]) -> None:
    # Polls a condition that the code under test makes true; bounded.
    deadline = time.monotonic() + WAIT
    while not check():
        assert time.monotonic() < deadline, "condition not reached"
        time.sleep(0.001)


# -- merge: delivery ---------------------------------------------------------------------

@pytest.mark.parametrize("buffer", [1, 3, 64])
def test_every_item_once_in_source_order(buffer: int) -> None:
    sources = [tagged(tag, 500) for tag in "abcd"]
    items = list(wp.merge(*sources, buffer=buffer))
    assert Counter(items) == Counter((tag, i) for tag in "abcd" for i in range(500))
    check_order(items)


def test_any_iterable() -> None:
    items = list(wp.merge([1, 2], (3,), range(4, 6), iter({6}), "ab"))
    assert sorted(map(str, items)) == sorted(map(str, [1, 2, 3, 4, 5, 6, "a", "b"]))


def test_no_iterables_yield_nothing() -> None:
    merged: Merge[int] = wp.merge()
    with merged:
        assert list(merged) == []
    assert merge_threads() == []


def test_items_arrive_as_they_come() -> None:
    release = threading.Event()

    def late() -> Iterator[str]:
        assert release.wait(WAIT)
        yield "late"

    merged = wp.merge(late(), ["early"])
    assert next(merged) == "early"   # not stuck behind the first source
    release.set()
    assert next(merged) == "late"
    assert list(merged) == []


def test_threads_are_named_and_started_lazily() -> None:
    release = threading.Event()

    def held() -> Iterator[int]:
        assert release.wait(WAIT)
        yield 1

    with wp.merge(held(), [0]) as merged:
        try:
            assert merge_threads() == []
            assert next(merged) == 0
            names = [t.name for t in merge_threads()]  # the list's reader may be done
            assert 1 <= len(names) <= 2
            assert all(n.removeprefix("workpool-merge-").isdigit() for n in names)
        finally:
            release.set()
        assert list(merged) == [1]


def test_buffer_bounds_what_is_read_ahead() -> None:
    produced = 0

    def counting() -> Iterator[int]:
        nonlocal produced
        while True:
            produced += 1
            yield produced

    with wp.merge(counting(), buffer=4) as merged:
        assert next(merged) == 1
        # 4 buffered plus 1 in the reader's hands, waiting for room.
        wait_for(lambda: produced == 1 + 4 + 1)
        time.sleep(0.05)  # room to overrun, were the bound broken
        assert produced == 6
        assert [next(merged) for _ in range(10)] == list(range(2, 12))


def test_after_the_end_stays_ended() -> None:
    merged = wp.merge([1])
    assert list(merged) == [1]
    with pytest.raises(StopIteration):
        next(merged)


# -- merge: errors -----------------------------------------------------------------------

def test_error_is_raised_after_the_others_stopped() -> None:
    error = Boom("source 1 failed")
    closed = threading.Event()
    merged: Merge[object] = wp.merge(endless(closed), failing(3, error), buffer=2)
    with pytest.raises(Boom) as info:
        drain(merged)
    assert info.value is error
    assert closed.is_set()          # the endless source was closed first
    assert merge_threads() == []    # and every reader joined
    with pytest.raises(StopIteration):
        next(merged)


def test_error_reaches_a_waiting_consumer() -> None:
    release = threading.Event()
    error = Boom("first item")

    def idle() -> Iterator[int]:
        # Keeps the consumer waiting until the other source fails; yields nothing.
        assert release.wait(WAIT)
        yield from ()

    def fail() -> Iterator[int]:
        release.set()
        yield from failing(0, error)

    merged = wp.merge(idle(), fail())
    with pytest.raises(Boom) as info:
        next(merged)
    assert info.value is error
    assert merge_threads() == []


def test_base_exception_from_a_source() -> None:
    with pytest.raises(SystemExit):
        list(wp.merge(failing(1, SystemExit(3)), [1, 2]))


def test_bad_arguments() -> None:
    with pytest.raises(ValueError, match=r"^buffer must be an int >= 1, got 0$"):
        wp.merge([1], buffer=0)
    with pytest.raises(TypeError):
        wp.merge([1], 5)  # type: ignore[arg-type]
    assert merge_threads() == []


# -- merge: leaving early ----------------------------------------------------------------

def test_break_in_with_closes_every_source() -> None:
    events = [threading.Event() for _ in range(3)]
    with wp.merge(*(endless(e, str(i)) for i, e in enumerate(events)), buffer=1) as merged:
        for _ in merged:
            break
    assert all(e.is_set() for e in events)
    assert merge_threads() == []


def test_close_is_idempotent_and_ends_iteration() -> None:
    closed = threading.Event()
    merged = wp.merge(endless(closed))
    assert next(merged) == "x"
    merged.close()
    merged.close()
    assert closed.is_set()
    assert merge_threads() == []
    with pytest.raises(StopIteration):
        next(merged)


def test_garbage_collection_stops_the_readers() -> None:
    closed = threading.Event()
    for _ in wp.merge(endless(closed), buffer=1):
        break
    gc.collect()  # the merge is unreachable once the loop is left
    assert closed.is_set()
    assert merge_threads() == []


def test_close_before_iterating_closes_the_sources() -> None:
    source = endless(threading.Event())
    merged = wp.merge(source)
    merged.close()
    assert inspect.getgeneratorstate(source) == inspect.GEN_CLOSED
    assert merge_threads() == []
    assert list(merged) == []


def test_reader_stuck_in_its_source_is_joined_with_a_bound() -> None:
    entered, release, closed = threading.Event(), threading.Event(), threading.Event()

    def stuck() -> Iterator[str]:
        try:
            entered.set()
            assert release.wait(WAIT)
            yield "never delivered"
        finally:
            closed.set()

    merged = wp.merge(stuck(), ["ready"])
    assert next(merged) == "ready"
    assert entered.wait(WAIT)
    start = time.monotonic()
    merged.close(timeout=0.05)
    assert time.monotonic() - start < WAIT / 2
    [reader] = merge_threads()      # still inside the source's next()
    release.set()
    reader.join(WAIT)
    assert not reader.is_alive()
    assert closed.is_set()          # the item was dropped and the source closed


def test_closing_an_outer_merge_closes_an_inner_one() -> None:
    closed = threading.Event()
    inner = wp.merge(endless(closed, "inner"), buffer=1)
    with wp.merge(inner, ["outer"], buffer=1) as outer:
        assert {next(outer), next(outer)} >= {"inner"}
    assert closed.is_set()
    assert merge_threads() == []


def test_exception_in_the_loop_body_stops_the_readers() -> None:
    closed = threading.Event()

    def consume() -> None:
        with wp.merge(endless(closed)) as merged:
            for _ in merged:
                raise KeyError("consumer")

    with pytest.raises(KeyError):
        consume()
    assert closed.is_set()


# -- amerge ------------------------------------------------------------------------------

async def atagged(tag: str, n: int) -> AsyncIterator[tuple[str, int]]:
    for i in range(n):
        yield tag, i
        if i % 7 == 0:
            await anyio.lowlevel.checkpoint()


async def aendless(closed: anyio.Event, tag: str = "x") -> AsyncGenerator[str, None]:
    try:
        while True:
            yield tag
            await anyio.lowlevel.checkpoint()
    finally:
        closed.set()


async def adrain(merged: AsyncMerge[object], check: Callable[[], None] = lambda: None) -> None:
    """Enter *merged*, consume it all, and run *check* as the error leaves the loop."""
    async with merged as it:
        try:
            async for _ in it:
                pass
        finally:
            check()


async def afailing(after: int, exc: Exception) -> AsyncIterator[int]:
    for i in range(after):
        yield i
        await anyio.lowlevel.checkpoint()
    raise exc


class Countdown:
    """A plain async iterator: no aclose()."""

    def __init__(self, n: int) -> None:
        self.n = n

    def __aiter__(self) -> Countdown:
        return self

    async def __anext__(self) -> int:
        await anyio.lowlevel.checkpoint()
        if self.n == 0:
            raise StopAsyncIteration
        self.n -= 1
        return self.n


@pytest.mark.anyio
@pytest.mark.parametrize("buffer", [1, 64])
async def test_amerge_every_item_once_in_source_order(buffer: int) -> None:
    with anyio.fail_after(WAIT):
        async with wp.amerge(*(atagged(tag, 300) for tag in "abc"), buffer=buffer) as it:
            items = [item async for item in it]
    assert Counter(items) == Counter((tag, i) for tag in "abc" for i in range(300))
    check_order(items)


@pytest.mark.anyio
async def test_amerge_plain_async_iterators_and_no_sources() -> None:
    with anyio.fail_after(WAIT):
        async with wp.amerge(Countdown(3), Countdown(2)) as it:
            assert sorted([x async for x in it]) == [0, 0, 1, 1, 2]
        empty: AsyncMerge[int] = wp.amerge()
        async with empty:
            assert [x async for x in empty] == []


@pytest.mark.anyio
async def test_amerge_items_arrive_as_they_come() -> None:
    release = anyio.Event()

    async def late() -> AsyncIterator[str]:
        await release.wait()
        yield "late"

    with anyio.fail_after(WAIT):
        async with wp.amerge(late(), Countdown(1)) as it:
            assert await it.__anext__() == 0
            release.set()
            assert await it.__anext__() == "late"
            with pytest.raises(StopAsyncIteration):
                await it.__anext__()


@pytest.mark.anyio
async def test_amerge_error_is_raised_after_the_others_were_cancelled() -> None:
    error = Boom("source 1 failed")
    closed = anyio.Event()
    closed_first = []
    merged: AsyncMerge[object] = wp.amerge(aendless(closed), afailing(3, error), buffer=2)
    with anyio.fail_after(WAIT), pytest.raises(Boom) as info:
        await adrain(merged, lambda: closed_first.append(closed.is_set()))
    assert info.value is error            # the exception itself, not a group
    assert closed_first == [True]         # cancelled and closed before the raise


@pytest.mark.anyio
async def test_amerge_error_reaches_a_waiting_consumer() -> None:
    error = Boom("first item")
    merged: AsyncMerge[object] = wp.amerge(afailing(0, error), aendless(anyio.Event()),
                                           buffer=1)
    with anyio.fail_after(WAIT), pytest.raises(Boom) as info:
        await adrain(merged)
    assert info.value is error


@pytest.mark.anyio
async def test_amerge_break_cancels_every_source() -> None:
    events = [anyio.Event() for _ in range(3)]
    with anyio.fail_after(WAIT):
        async with wp.amerge(*(aendless(e, str(i)) for i, e in enumerate(events)),
                             buffer=1) as it:
            async for _ in it:
                break
    assert all(e.is_set() for e in events)


@pytest.mark.anyio
async def test_amerge_aclose_ends_iteration() -> None:
    closed = anyio.Event()
    with anyio.fail_after(WAIT):
        async with wp.amerge(aendless(closed)) as it:
            assert await it.__anext__() == "x"
            await it.aclose()
            assert closed.is_set()
            with pytest.raises(StopAsyncIteration):
                await it.__anext__()
            await it.aclose()


@pytest.mark.anyio
async def test_amerge_aclose_right_after_entering() -> None:
    closed = anyio.Event()
    with anyio.fail_after(WAIT):
        async with wp.amerge(aendless(closed)) as it:
            await it.aclose()
            assert [x async for x in it] == []
    assert closed.is_set()


@pytest.mark.anyio
async def test_amerge_body_exception_propagates_unchanged() -> None:
    closed = anyio.Event()

    async def consume() -> None:
        async with wp.amerge(aendless(closed)) as it:
            async for _ in it:
                raise KeyError("consumer")

    with anyio.fail_after(WAIT), pytest.raises(KeyError):
        await consume()
    assert closed.is_set()


@pytest.mark.anyio
async def test_amerge_outer_cancellation() -> None:
    closed = anyio.Event()
    with anyio.fail_after(WAIT):
        with anyio.CancelScope() as scope:
            async with wp.amerge(aendless(closed)) as it:
                async for _ in it:
                    scope.cancel()
                    await anyio.lowlevel.checkpoint()
        assert scope.cancelled_caught
    assert closed.is_set()


def live_tasks(backend: str) -> int:
    """Tasks running below the current one (trio) or in the loop (asyncio)."""
    if backend == "trio":
        import trio

        def below(task: trio.lowlevel.Task) -> int:
            children = [t for n in task.child_nurseries for t in n.child_tasks]
            return len(children) + sum(below(t) for t in children)

        return below(trio.lowlevel.current_task())
    import asyncio

    return len(asyncio.all_tasks())


@pytest.mark.anyio
async def test_amerge_leaves_no_task_behind(anyio_backend: str) -> None:
    before = live_tasks(anyio_backend)
    with anyio.fail_after(WAIT):
        async with wp.amerge(aendless(anyio.Event()), aendless(anyio.Event())) as it:
            async for _ in it:
                assert live_tasks(anyio_backend) >= before + 3  # a supervisor, 2 sources
                break
    assert live_tasks(anyio_backend) == before


@pytest.mark.anyio
async def test_amerge_must_be_entered() -> None:
    source = aendless(anyio.Event())
    merged = wp.amerge(source)
    with pytest.raises(RuntimeError, match="must be entered"):
        await merged.__anext__()
    await merged.aclose()             # closes the never-started source
    assert isinstance(source, types.AsyncGeneratorType)
    assert source.ag_frame is None    # closed
    with pytest.raises(StopAsyncIteration):
        await merged.__anext__()


@pytest.mark.anyio
async def test_amerge_enters_once() -> None:
    with anyio.fail_after(WAIT):
        async with wp.amerge(Countdown(1)) as it:
            with pytest.raises(RuntimeError, match="entered only once"):
                await it.__aenter__()
            assert [x async for x in it] == [0]


def test_amerge_bad_arguments() -> None:
    with pytest.raises(ValueError, match=r"^buffer must be an int >= 1, got 0$"):
        wp.amerge(Countdown(1), buffer=0)
    with pytest.raises(TypeError):
        wp.amerge([1, 2])  # type: ignore[arg-type]
