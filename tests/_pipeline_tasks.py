"""Module-level stage functions for the pipeline tests, so that process stages can
pickle them by reference."""

from __future__ import annotations

import os
import time

import anyio

import workpool as wp


def same(x: int) -> int:
    return x


def square(x: int) -> int:
    return x * x


def is_even(x: int) -> bool:
    return x % 2 == 0


def twice(x: int) -> list[int]:
    return [x, x]


def fail_on_3(x: int) -> int:
    """Raises for 3, 8, 13, ...: every fifth item."""
    if x % 5 == 3:
        raise ValueError(f"bad {x}")
    return x * x


def fail_at_50(x: int) -> int:
    if x == 50:
        raise ValueError(f"bad {x}")
    return x


def nap_if_big(x: int) -> int:
    """Items from 1 on sleep (cooperatively, in a thread) for a long time."""
    if x >= 1:
        wp.current().sleep(30)
    return x


def sleep_if_big(x: int) -> int:
    """Items from 1 on sleep for a long time (uninterruptible: for process stages)."""
    if x >= 1:
        time.sleep(30)
    return x


def nap_on_3(x: int) -> int:
    if x == 3:
        wp.current().sleep(30)
    return x


def flaky(x: int) -> int:
    if wp.current().attempt < 2:
        raise OSError(f"flaky {x}")
    return x


def crash_on_3(x: int) -> int:
    if x == 3:
        os._exit(9)
    return x


def pid(_: object) -> int:
    return os.getpid()


async def asquare(x: int) -> int:
    await anyio.sleep(0)
    return x * x


async def ais_even(x: int) -> bool:
    await anyio.sleep(0)
    return x % 2 == 0


async def atwice(x: int) -> list[int]:
    await anyio.sleep(0)
    return [x, x]


async def afail_on_3(x: int) -> int:
    await anyio.sleep(0)
    return fail_on_3(x)


async def asleep_if_big(x: int) -> int:
    if x >= 1:
        await anyio.sleep(30)
    return x
