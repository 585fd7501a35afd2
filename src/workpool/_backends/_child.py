"""The loop a worker process runs: receive a task, run it, send back its end.

Kept small and light to import: it is what every worker process loads first.

Messages are pickled tuples over a ``multiprocessing`` pipe::

    parent -> child   (CALL, attempt, deadline, fn_bytes, payload_bytes)
                      (STOP,)
    child -> parent   (OK, value, retire)        a call returned
                      (ERR, error, retire)       a call raised (traceback attached)
                      (CHUNK, values, errors, seconds, retire)

``retire`` is True when the worker leaves after this task (``max_tasks`` or
``max_memory`` reached).
"""

from __future__ import annotations

import os
import pickle
import signal
import sys
import threading
import time
import traceback
from collections.abc import Callable
from itertools import starmap
from typing import Any

CALL = 0
STOP = 1
OK = 0
ERR = 1
CHUNK = 2

_PAGE = os.sysconf("SC_PAGE_SIZE") if hasattr(os, "sysconf") else 4096


class RemoteTraceback(Exception):
    """The formatted traceback of an exception raised in a worker process."""

    def __init__(self, tb: str) -> None:
        super().__init__(tb)
        self.tb = tb

    def __str__(self) -> str:
        return self.tb


def with_traceback(exc: BaseException) -> BaseException:
    """Attach *exc*'s formatted traceback as its ``__cause__``, as the stdlib does, in a
    form that survives pickling; fall back to a RuntimeError if *exc* does not pickle."""
    tb = "".join(traceback.format_exception(type(exc), exc, exc.__traceback__))
    cause = RemoteTraceback(f'\n"""\n{tb}"""')
    try:
        pickle.loads(pickle.dumps(exc))
    except Exception:
        exc = RuntimeError(f"{type(exc).__name__}: {exc} (the exception could not be pickled)")
    exc.__traceback__ = None
    return _Rebuild(exc, cause)  # type: ignore[return-value]


class _Rebuild:
    """Pickles as "the exception with its cause set" on the other side."""

    def __init__(self, exc: BaseException, cause: RemoteTraceback) -> None:
        self.exc = exc
        self.cause = cause

    def __reduce__(self) -> tuple[Any, ...]:
        return _rebuild, (self.exc, self.cause)


def _rebuild(exc: BaseException, cause: RemoteTraceback) -> BaseException:
    exc.__cause__ = cause
    return exc


def rss_bytes() -> int:
    """This process's resident memory now (not its peak)."""
    try:
        with open("/proc/self/statm", "rb") as f:
            return int(f.read().split()[1]) * _PAGE
    except OSError:  # pragma: no cover - not Linux
        import resource

        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def _watch_parent(parent: int) -> None:
    # When the pool's process dies (even by SIGKILL) our parent changes: for fork and
    # spawn it was the pool's process, for forkserver the server, which exits with it.
    while True:
        time.sleep(0.1)
        if os.getppid() != parent:
            os._exit(70)


def main(conn: Any, worker_id: int, initializer: bytes | None,
         max_tasks: int | None, max_memory: int | None) -> None:
    """Entry point of a worker process."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is the parent's to handle
    threading.Thread(target=_watch_parent, args=(os.getppid(),), daemon=True,
                     name="workpool-parent-watch").start()
    from .._core.context import TaskContext, WorkerSlot, install_slot

    slot = WorkerSlot(worker_id)
    install_slot(slot)
    if initializer is not None:
        init, initargs = pickle.loads(initializer)
        try:
            slot.state = init(*initargs)
        except BaseException as exc:
            conn.send_bytes(pickle.dumps((ERR, with_traceback(exc), True)))
            return
    conn.send_bytes(pickle.dumps((OK, None, False)))  # ready
    functions: dict[bytes, Callable[..., Any]] = {}
    done = 0
    while True:
        try:
            message = pickle.loads(conn.recv_bytes())
        except (EOFError, OSError):
            return
        if message[0] == STOP:
            return
        _, attempt, deadline, fn_bytes, payload = message
        slot.ctx = TaskContext(slot, attempt, deadline)
        done += 1
        reply = _run(fn_bytes, payload, functions)
        slot.ctx = None
        retire = (max_tasks is not None and done >= max_tasks) or (
            max_memory is not None and rss_bytes() > max_memory)
        try:
            data = pickle.dumps((*reply, retire), protocol=pickle.HIGHEST_PROTOCOL)
        except Exception as exc:
            error = TypeError(f"the result could not be pickled: {exc}")
            data = pickle.dumps((ERR, with_traceback(error), retire))
        conn.send_bytes(data)
        if retire:
            return


def _run(fn_bytes: bytes | None, payload: bytes,
         functions: dict[bytes, Callable[..., Any]]) -> tuple[Any, ...]:
    if fn_bytes is None:
        try:
            fn, args, kwargs = pickle.loads(payload)
            return OK, fn(*args, **kwargs)
        except BaseException as exc:  # a task's error never kills its worker
            return ERR, with_traceback(exc)
    try:
        fn = functions.get(fn_bytes)  # a map sends its function with every chunk
        if fn is None:
            if len(functions) > 32:
                functions.clear()
            fn = functions[fn_bytes] = pickle.loads(fn_bytes)
        star, items = pickle.loads(payload)
    except BaseException as exc:
        return ERR, with_traceback(exc)
    return _run_chunk(fn, items, star)


def _run_chunk(fn: Callable[..., Any], items: list[Any], star: bool) -> tuple[Any, ...]:
    values: list[Any] = []
    errors: dict[int, BaseException] | None = None
    started = time.perf_counter()
    rest = iter(items)
    # The per-item hot path of a process map runs in C: list.extend over map(). When
    # an item raises, extend keeps what it appended before it, so the failing index is
    # len(values); the loop records the error and goes on with the rest.
    while True:
        try:
            values.extend(starmap(fn, rest) if star else map(fn, rest))
            break
        except BaseException as exc:  # a task's error never kills its worker
            if errors is None:
                errors = {}
            errors[len(values)] = with_traceback(exc)
            values.append(None)
    return CHUNK, values, errors, time.perf_counter() - started


if __name__ == "__main__":  # pragma: no cover
    sys.exit("this module is run by workpool's process pool")
