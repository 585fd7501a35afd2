"""Work for ``workpool tune`` tests, imported by name (``tests._tune_tasks:wait``)."""

from __future__ import annotations

import asyncio
import time


def wait(item: str) -> None:
    """Wait 2 ms: the throughput grows with the workers."""
    time.sleep(0.002)


async def await_(item: str) -> None:
    """The async twin of ``wait``."""
    await asyncio.sleep(0.002)


def fails(item: str) -> None:
    """Fail on the item "3"."""
    if item == "3":
        raise ValueError(f"no {item}")
