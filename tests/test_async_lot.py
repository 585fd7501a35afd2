"""The parking primitive of the async side (``_backends.aio``: ``Lot``), on asyncio and
trio: FIFO order, weights, cancellation (parked and just woken), waking from threads."""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any

import anyio
import pytest

from workpool._backends.aio import AsyncioLot, Lot, TrioLot, new_lot, no_lot

pytestmark = pytest.mark.anyio
BOUND = 5.0  # seconds any wait here may take at most


async def _until(check: Callable[[], bool]) -> None:
    """Let the other tasks run until *check* holds (bounded)."""
    with anyio.fail_after(BOUND):
        while not check():
            await anyio.sleep(0)


async def _park_and_note(lot: Lot, name: object, woken: list[Any],
                         weight: int = 1) -> None:
    await lot.park(weight)
    woken.append(name)


async def test_the_lot_is_the_running_library_s(anyio_backend: str) -> None:
    lot = new_lot()
    assert type(lot) is (TrioLot if anyio_backend == "trio" else AsyncioLot)


def test_no_lot_outside_a_loop_and_before_a_start() -> None:
    with pytest.raises(RuntimeError, match=r"^AsyncPool must be used inside an asyncio "
                                           r"or trio event loop$"):
        new_lot()
    with pytest.raises(RuntimeError, match=r"^AsyncPool is not running"):
        no_lot()


async def test_tasks_are_woken_in_the_order_they_parked() -> None:
    lot = new_lot()
    woken: list[object] = []
    async with anyio.create_task_group() as tg:
        for i in range(5):
            tg.start_soon(_park_and_note, lot, i, woken)
            await _until(lambda i=i: len(lot.waiters) == i + 1)  # type: ignore[misc]
        for i in range(5):
            assert lot.unpark() is True
            await _until(lambda i=i: len(woken) == i + 1)  # type: ignore[misc]
        assert lot.unpark() is False
    assert woken == [0, 1, 2, 3, 4]


async def test_unpark_all_wakes_every_task_in_order() -> None:
    lot = new_lot()
    woken: list[int] = []
    async with anyio.create_task_group() as tg:
        for i in range(3):
            tg.start_soon(_park_and_note, lot, i, woken)
            await _until(lambda i=i: len(lot.waiters) == i + 1)  # type: ignore[misc]
        lot.unpark_all()
    assert sorted(woken) == [0, 1, 2]  # woken in one turn: trio runs them in any order
    assert not lot.waiters


async def test_unpark_within_serves_the_head_while_it_fits_never_overtaking() -> None:
    lot = new_lot()
    woken: list[int] = []
    async with anyio.create_task_group() as tg:
        for i, weight in enumerate([3, 1, 4, 1]):
            tg.start_soon(_park_and_note, lot, weight, woken, weight)
            await _until(lambda i=i: len(lot.waiters) == i + 1)  # type: ignore[misc]
        assert lot.unpark_within(5) == 4  # 3 and 1; the 4 behind them does not fit
        await _until(lambda: len(woken) == 2)
        assert sorted(woken) == [1, 3]
        assert [weight for weight, _ in lot.waiters] == [4, 1]
        assert lot.unpark_within(3) == 0  # the 4 at the head holds back the 1 behind it
        assert [weight for weight, _ in lot.waiters] == [4, 1]
        assert lot.unpark_within(5) == 5
    assert sorted(woken[2:]) == [1, 4]
    assert not lot.waiters


async def test_a_task_cancelled_while_parked_leaves_the_line() -> None:
    lot = new_lot()
    woken: list[object] = []
    scope = anyio.CancelScope()
    async with anyio.create_task_group() as tg:
        tg.start_soon(_cancellable_park, lot, scope, woken)
        await _until(lambda: len(lot.waiters) == 1)
        scope.cancel()
        await _until(lambda: woken == ["cancelled"])
    assert not lot.waiters
    assert lot.unpark() is False


async def _cancellable_park(lot: Lot, scope: anyio.CancelScope, woken: list[object]) -> None:
    with scope:
        try:
            await lot.park()
        except anyio.get_cancelled_exc_class():
            woken.append("cancelled")
            raise


def test_asyncio_a_task_cancelled_once_woken_hands_its_wake_up_on() -> None:
    """asyncio can deliver a wake-up and a cancellation in the same turn (a bare
    ``task.cancel()``, as ``asyncio.timeout`` or ``wait_for`` do): the cancelled task
    hands the wake-up to the lot's owner (``on_lost``), or else to the next task."""
    import asyncio

    async def main(owned: bool) -> tuple[list[object], list[int], int]:
        lost: list[int] = []
        lot = new_lot(lost.append if owned else None)
        woken: list[object] = []
        first = asyncio.ensure_future(_park_and_note(lot, "first", woken, 2))
        await _until(lambda: len(lot.waiters) == 1)
        second = asyncio.ensure_future(_park_and_note(lot, "second", woken))
        await _until(lambda: len(lot.waiters) == 2)
        assert lot.unpark() is True
        first.cancel()  # before the woken task ran again
        with pytest.raises(asyncio.CancelledError):
            await asyncio.wait_for(first, BOUND)
        if owned:
            lot.unpark()  # what the owner does with a wake-up handed back, here
        await asyncio.wait_for(second, BOUND)
        return woken, lost, len(lot.waiters)

    assert asyncio.run(main(owned=True)) == (["second"], [2], 0)
    assert asyncio.run(main(owned=False)) == (["second"], [], 0)


def test_trio_a_task_cancelled_once_woken_still_proceeds() -> None:
    """trio never cancels a rescheduled task out of its park: it proceeds (and sees
    the cancellation at its next checkpoint), and the next task stays parked."""
    async def main() -> tuple[list[object], list[int], int]:
        lost: list[int] = []
        lot = new_lot(lost.append)
        woken: list[object] = []
        first = anyio.CancelScope()
        async with anyio.create_task_group() as tg:
            tg.start_soon(_park_in_scope, lot, first, "first", woken)
            await _until(lambda: len(lot.waiters) == 1)
            tg.start_soon(_park_in_scope, lot, anyio.CancelScope(), "second", woken)
            await _until(lambda: len(lot.waiters) == 2)
            assert lot.unpark() is True
            first.cancel()  # before the woken task ran again
            await _until(lambda: len(woken) == 1)
            parked = len(lot.waiters)
            lot.unpark()
        return woken, lost, parked

    woken, lost, parked = anyio.run(main, backend="trio")
    assert (woken, lost, parked) == (["first", "second"], [], 1)


async def _park_in_scope(lot: Lot, scope: anyio.CancelScope, name: str,
                         woken: list[object]) -> None:
    with scope:
        await lot.park()
        woken.append(name)


async def test_unpark_soon_from_another_thread_wakes_the_task() -> None:
    lot = new_lot()
    woken: list[object] = []
    async with anyio.create_task_group() as tg:
        tg.start_soon(_park_and_note, lot, "parked", woken)
        await _until(lambda: len(lot.waiters) == 1)
        thread = threading.Thread(target=lot.unpark_soon)
        thread.start()
        await _until(lambda: woken == ["parked"])
    thread.join(BOUND)
    assert not thread.is_alive()


async def test_unpark_soon_on_the_loop_s_thread_wakes_at_once() -> None:
    lot = new_lot()
    woken: list[object] = []
    async with anyio.create_task_group() as tg:
        tg.start_soon(_park_and_note, lot, "parked", woken)
        await _until(lambda: len(lot.waiters) == 1)
        lot.unpark_soon()
        assert not lot.waiters  # unparked now, not at a later turn
    assert woken == ["parked"]


@pytest.mark.parametrize("backend", ["asyncio", "trio"])
def test_unpark_soon_after_the_loop_ended_does_nothing(backend: str) -> None:
    async def make() -> Lot:
        return new_lot()

    lot = anyio.run(make, backend=backend)
    lot.unpark_soon()  # from this thread, the loop's, and from another one
    thread = threading.Thread(target=lot.unpark_soon)
    thread.start()
    thread.join(BOUND)
    assert not thread.is_alive()


def test_semaphore_tokens_of_a_waiter_cancelled_once_served_go_to_the_next() -> None:
    """``AsyncSemaphore`` parks in a lot: a waiter served and cancelled in the same
    turn (asyncio) hands its tokens on to the waiters behind it that now fit."""
    import asyncio

    import workpool as wp

    async def main() -> None:
        sem = wp.AsyncSemaphore(3)
        await sem.acquire(3)
        served: list[str] = []

        async def take(name: str, n: int) -> None:
            await sem.acquire(n)
            served.append(name)

        big = asyncio.ensure_future(take("big", 2))
        await _until(lambda: sem.statistics().waiters == 1)
        small = [asyncio.ensure_future(take(f"small{i}", 1)) for i in range(2)]
        await _until(lambda: sem.statistics().waiters == 3)
        sem.release(2)  # the big one is served: the small ones behind it wait
        assert (sem.statistics().held, sem.statistics().waiters) == (3, 2)
        big.cancel()  # before it ran again: its 2 tokens go to both small ones
        with pytest.raises(asyncio.CancelledError):
            await asyncio.wait_for(big, BOUND)
        await asyncio.wait_for(asyncio.gather(*small), BOUND)
        assert sorted(served) == ["small0", "small1"]
        assert (sem.statistics().held, sem.statistics().waiters) == (3, 0)

    asyncio.run(main())


def test_semaphore_a_waiter_joining_a_line_leaves_it_cleanly_when_cancelled() -> None:
    """On asyncio a waiter that joins a line others stand in waits on the lot's future
    in its own frame (``join``/``quit``): cancelled while parked it leaves the line;
    cancelled once served, its token comes back."""
    import asyncio

    import workpool as wp

    async def main() -> None:
        sem = wp.AsyncSemaphore(2)
        await sem.acquire(2)
        served: list[str] = []

        async def take(name: str) -> None:
            await sem.acquire()
            served.append(name)

        a = asyncio.ensure_future(take("a"))  # the head: its line is new
        await _until(lambda: sem.statistics().waiters == 1)
        b, c = asyncio.ensure_future(take("b")), asyncio.ensure_future(take("c"))
        await _until(lambda: sem.statistics().waiters == 3)
        c.cancel()  # parked: it leaves the line
        with pytest.raises(asyncio.CancelledError):
            await asyncio.wait_for(c, BOUND)
        assert (sem.statistics().held, sem.statistics().waiters) == (2, 2)
        sem.release()
        await asyncio.wait_for(a, BOUND)
        sem.release()  # b is served; cancelled before it runs, it gives its token back
        assert (sem.statistics().held, sem.statistics().waiters) == (2, 0)
        b.cancel()
        with pytest.raises(asyncio.CancelledError):
            await asyncio.wait_for(b, BOUND)
        assert served == ["a"]
        assert (sem.statistics().held, sem.statistics().waiters) == (1, 0)

    asyncio.run(main())
