"""Module-level task functions, so that process pools can pickle them too; and what
the invariant tests share to consume a run."""

from __future__ import annotations

import time
from collections.abc import Iterable
from typing import Any, Protocol, TypeVar

import anyio

import workpool as wp


class _Gate(Protocol):
    def wait(self) -> bool: ...


def add(a: int, b: int = 0) -> int:
    return a + b


def square(x: int) -> int:
    return x * x


def invert(x: float) -> float:
    return 1 / x


def fail(message: str) -> None:
    raise ValueError(message)


def fail_type(kind: type[Exception]) -> None:
    raise kind("x")


def wait_gate(gate: _Gate) -> bool:
    return gate.wait()


def wait_gate_or_value(gate: _Gate | None) -> bool:
    return True if gate is None else gate.wait()


def started_at(_: Any) -> float:
    return time.monotonic()


def fail_until_attempt(n: int) -> int:
    attempt = wp.current().attempt
    if attempt < n:
        raise ValueError(f"attempt {attempt}")
    return attempt


def sleep_for(seconds: float) -> None:
    wp.current().sleep(seconds)


def make_state(tag: str) -> str:
    return f"state-{tag}"


def describe() -> tuple[int, int, Any, bool]:
    ctx = wp.current()
    return ctx.attempt, ctx.worker_id, ctx.state, ctx.cancelled


def getpid(_: Any = None) -> int:
    import os

    return os.getpid()


def exit_with(code: int) -> None:
    import os

    os._exit(code)


def kill_self(signum: int) -> None:
    import os

    os.kill(os.getpid(), signum)


def segfault() -> None:
    import ctypes

    ctypes.string_at(0)


def hold_memory(megabytes: int) -> int:
    import os

    global _HELD
    _HELD = bytearray(megabytes << 20)
    for i in range(0, len(_HELD), 4096):
        _HELD[i] = 1
    return os.getpid()


_HELD: bytearray | None = None


def spin(seconds: float) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        pass


def crash_on(x: int, bad: int) -> int:
    import os

    if x == bad:
        os._exit(9)
    return x * x


def spin_square(x: int) -> int:
    spin(0.0005)
    return x * x


class AsyncGauge:
    """An async task that stands for *size* bytes (or tokens) while it runs: the most
    in flight at once is ``most``."""

    def __init__(self) -> None:
        self.now = self.most = 0

    async def __call__(self, size: int) -> int:
        self.now += size
        self.most = max(self.most, self.now)
        await anyio.sleep(0.001)
        self.now -= size
        return size


T = TypeVar("T")


def consume(items: Iterable[T], stop_after: int | None,
            errors: tuple[type[BaseException], ...]) -> tuple[list[T], BaseException | None]:
    """Take what *items* yields, leaving once more than *stop_after* came (None: to the
    end); an error of *errors* ends it too. Returns what came, and that error."""
    got: list[T] = []
    try:
        for out in items:
            got.append(out)
            if stop_after is not None and len(got) > stop_after:
                break
    except errors as exc:
        return got, exc
    return got, None
