"""Which async library runs the calling task: the one place workpool asks.

The async side runs on asyncio (uvloop included) and on trio, through anyio, and most
of it never needs to know which. What goes below anyio, for speed or to be woken from
other threads, is the parking primitive of ``_backends/aio.py`` (``Lot``, and its
thread-safe ``call_soon_threadsafe``): it asks ``current_library()`` here when a lot is
made, once per object and never per task, for ``AsyncPool`` and ``AsyncGroup`` when
they start (the pool also keeps the answer for its sync tasks' threads),
``AsyncSemaphore`` when a wait finds its line empty, and a pipeline's async channel
ends and slots. Nothing else in workpool asks which library runs.

Nothing is imported to answer: an asyncio loop can run only once asyncio is loaded, and
a trio run only once trio is.
"""

from __future__ import annotations

import sys
from typing import Final, Literal

__all__ = ["ASYNCIO", "TRIO", "Library", "current_library", "require_library"]

Library = Literal["asyncio", "trio"]
ASYNCIO: Final = "asyncio"
TRIO: Final = "trio"


def current_library() -> Library | None:
    """``"asyncio"`` or ``"trio"``, whichever runs an event loop in this thread; None
    when neither does. Costs a fraction of a microsecond (asyncio is tried first)."""
    asyncio = sys.modules.get("asyncio")
    if asyncio is not None:
        try:
            asyncio.get_running_loop()
        except RuntimeError:
            pass
        else:
            return ASYNCIO
    trio = sys.modules.get("trio")
    if trio is not None and trio.lowlevel.in_trio_run():
        return TRIO
    return None


def require_library(message: str) -> Library:
    """``current_library()``, where one must be running.

    Raises:
        RuntimeError: with *message*, when neither asyncio nor trio runs in this thread.
    """
    library = current_library()
    if library is None:
        raise RuntimeError(message)
    return library
