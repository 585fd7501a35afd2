"""The loop a worker process runs, and how both sides pickle what crosses the pipe.

Kept small and light to import: it is what every worker process loads first
(cloudpickle is imported only when something must travel by value). May import
``_core.context`` only (in the worker, lazily).

Messages are pickled tuples over a ``multiprocessing`` pipe; whatever holds user
objects travels as bytes inside them (``body``), pickled and unpickled on its own, so
that a value that fails either way fails its task, never the conversation::

    parent -> child   (CALL, attempt, deadline, fn_bytes, payload)   fn_bytes is None
                                                                     for one call
                      (STOP,)
                      (DROP,) | (RESEND,)   the verdict on a chunk of several values
                      (SLOT, worker_id)     a spare child taken by a worker: its id
    child -> parent   (OK, body, 1, retire)       a call returned: body = its value
                      (ERR, body, 1, retire)      a call raised: body = the exception
                      (BADARGS, body, 0, retire)  the function or arguments could not
                                                  be unpickled: body = (error, what)
                      (CHUNK, body, ran, retire)  body = (values, errors, seconds)
                      (PARTS, (parts, seconds), 0, False)  the answer to RESEND:
                                                  bytes per item (a value, or Failed)
    ready, once       (OK, None, False) | (ERR, the initializer's error, True)

``ran`` counts the items the call ran: a worker with ``max_tasks`` runs at most what
is left of its budget, then retires (``retire``: it leaves after this message), and the
parent sends the rest of the chunk to a fresh worker. After a chunk of several values
the child waits for the parent's verdict: DROP once the parent has unpickled them, or
RESEND if it could not (one bad value), when the child sends each value on its own so
that only the bad one fails.

Pickling is the stdlib's, by reference (functions and classes of importable modules and
of ``__main__`` travel by name, so their identity, globals and caches are those of
the receiving process, as with ``ProcessPoolExecutor``), except for functions and
classes that the other side could not import: lambdas, closures, local classes,
``__main__`` of a program without a file (``python -c``, a notebook: a spawned or
forkserver worker cannot import it, and a forked one has it only as it was at the
fork). Those travel by value, pickled by cloudpickle inside the stdlib's pickle, and
what they refer to travels by name again wherever it can. A class sent by value comes
back as itself (cloudpickle tracks it). Replies from a worker name ``__main__``
freely: the pool's process has it (and maps a worker's ``__mp_main__`` to it).
"""

from __future__ import annotations

import functools
import io
import os
import pickle
import signal
import sys
import threading
import time
import traceback
import types
from collections.abc import Callable
from itertools import starmap
from typing import Any

CALL = 0
STOP = 1
DROP = 2
RESEND = 3
SLOT = 4
OK = 0
ERR = 1
CHUNK = 2
BADARGS = 3
PARTS = 4

PROTOCOL = pickle.HIGHEST_PROTOCOL
_PAGE = os.sysconf("SC_PAGE_SIZE") if hasattr(os, "sysconf") else 4096

# -- pickling --------------------------------------------------------------------------

def main_travels() -> bool:
    """Can a worker import this process's ``__main__``? As ``multiprocessing`` prepares
    a spawned or forkserver child: by module name (``python -m mod``; not a package's
    ``__main__``, which it does not rerun) or by file path (``python script.py``).
    (A forked worker has it, but only as it was at the fork: not relied on.)"""
    main = sys.modules.get("__main__")
    name = getattr(getattr(main, "__spec__", None), "name", None)
    if name is not None:
        return name != "__main__" and not name.endswith(".__main__")
    return getattr(main, "__file__", None) is not None


def by_reference(obj: Any, main_ok: bool) -> bool:
    """True if the function or class *obj* can travel by name: its module is
    imported and the other side can import it too (``__main__`` if *main_ok*), and
    the name leads back to *obj* (not a lambda, a closure or a class made in a
    function)."""
    module_name = getattr(obj, "__module__", None)
    qualname = getattr(obj, "__qualname__", None)
    if not isinstance(module_name, str) or not isinstance(qualname, str):
        return False
    module = sys.modules.get(module_name)
    if module is None or (module_name == "__main__" and not main_ok):
        return False
    try:
        found = functools.reduce(getattr, qualname.split("."), module)
    except AttributeError:
        return False
    return found is obj and not _registered_by_value(module_name)


def _registered_by_value(module_name: str) -> bool:
    """Did the program ask cloudpickle to send this module by value?"""
    cloudpickle = sys.modules.get("cloudpickle")
    if cloudpickle is None:
        return False
    registered: set[str] = cloudpickle.list_registry_pickle_by_value()
    return bool(registered) and any(
        module_name == name or module_name.startswith(name + ".") for name in registered)


def _is_function_or_class(obj: Any) -> bool:
    return isinstance(obj, types.FunctionType | type)


class _Pickler(pickle.Pickler):
    """The stdlib's pickler, except for functions and classes that cannot travel by
    name: those are pickled by value with cloudpickle, inside this pickle."""

    def __init__(self, file: io.BytesIO, main_ok: bool) -> None:
        super().__init__(file, PROTOCOL)
        self.main_ok = main_ok

    def reducer_override(self, obj: Any) -> Any:
        # Called for every object but ints, strs, lists, dicts, ... (not for the bulk
        # of plain data): keep the common case to one isinstance check.
        if _is_function_or_class(obj) and not by_reference(obj, self.main_ok):
            return pickle.loads, (_dumps_by_value(obj, self.main_ok),)
        return NotImplemented


def dumps(obj: Any) -> bytes:
    """Pickle *obj* for a worker process (see the module docstring)."""
    buffer = io.BytesIO()
    _Pickler(buffer, main_travels()).dump(obj)
    return buffer.getvalue()


def dumps_reply(obj: Any) -> bytes:
    """Pickle *obj* in a worker for the pool's process, which has the real
    ``__main__`` (and maps this worker's ``__mp_main__`` to it)."""
    buffer = io.BytesIO()
    _Pickler(buffer, True).dump(obj)
    return buffer.getvalue()


_value_pickler: Callable[[io.BytesIO, bool], pickle.Pickler] | None = None


def prepare_by_value() -> None:
    """Import cloudpickle and build the by-value pickler now, not at first use."""
    global _value_pickler
    if _value_pickler is None:
        _value_pickler = _make_value_pickler()


def _dumps_by_value(obj: Any, main_ok: bool) -> bytes:
    prepare_by_value()
    assert _value_pickler is not None
    buffer = io.BytesIO()
    _value_pickler(buffer, main_ok).dump(obj)
    return buffer.getvalue()


def _make_value_pickler() -> Callable[[io.BytesIO, bool], pickle.Pickler]:
    import copyreg

    import cloudpickle

    # cloudpickle's reducers, less the one that turns an open text file into a copy
    # of its contents: a file cannot travel, as with the stdlib's pickle.
    table = {k: v for k, v in cloudpickle.Pickler.dispatch_table.items()
             if not (isinstance(k, type) and issubclass(k, io.IOBase))}

    class ValuePickler(cloudpickle.Pickler):  # type: ignore[misc]
        """cloudpickle, but what the function or class refers to travels by name
        wherever it can (the ``__main__`` functions and classes it uses included)."""

        def __init__(self, file: io.BytesIO, main_ok: bool) -> None:
            # A plain dict, read by the C pickler (cloudpickle's ChainMap is slow),
            # with copyreg's registrations as of now.
            self.dispatch_table = {**copyreg.dispatch_table, **table}
            super().__init__(file, protocol=PROTOCOL)
            self.main_ok = main_ok

        def reducer_override(self, obj: Any) -> Any:
            if _is_function_or_class(obj) and by_reference(obj, self.main_ok):
                return NotImplemented
            return super().reducer_override(obj)

    return ValuePickler


# -- exceptions ------------------------------------------------------------------------

def with_traceback(exc: BaseException) -> BaseException:
    """Attach *exc*'s formatted traceback as its ``__cause__``, as the stdlib does (the
    cause is the stdlib's ``_RemoteTraceback``), in a form that survives pickling;
    fall back to a RuntimeError if *exc* cannot make the round trip."""
    from concurrent.futures.process import _RemoteTraceback

    tb = "".join(traceback.format_exception(type(exc), exc, exc.__traceback__))
    cause = _RemoteTraceback(f'\n"""\n{tb}"""')  # type: ignore[arg-type]
    try:
        pickle.loads(dumps_reply(exc))
    except BaseException:  # even a SystemExit while pickling
        exc = RuntimeError(f"{type(exc).__name__}: {exc} (the exception could not be pickled)")
    exc.__traceback__ = None
    return _Rebuild(exc, cause)  # type: ignore[return-value]


class _Rebuild:
    """Pickles as "the exception with its cause set" on the other side."""

    def __init__(self, exc: BaseException, cause: BaseException) -> None:
        self.exc = exc
        self.cause = cause

    def __reduce__(self) -> tuple[Any, ...]:
        return _rebuild, (self.exc, self.cause)


def _rebuild(exc: BaseException, cause: BaseException) -> BaseException:
    exc.__cause__ = cause
    return exc


def _dump_error(exc: BaseException) -> bytes:
    return dumps_reply(with_traceback(exc))


# -- the worker's loop -----------------------------------------------------------------

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


def main(conn: Any, worker_id: int, initializer: bytes | None, initargs: tuple[Any, ...],
         max_tasks: int | None, max_memory: int | None) -> None:
    """Entry point of a worker process."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is the parent's to handle
    threading.Thread(target=_watch_parent, args=(os.getppid(),), daemon=True,
                     name="workpool-parent-watch").start()
    from .._core.context import TaskContext, WorkerSlot, install_slot

    slot = WorkerSlot(worker_id)
    install_slot(slot)
    if initializer is not None:
        try:
            init = pickle.loads(initializer)
            slot.state = init(*initargs)
        except BaseException as exc:  # reported, then this worker leaves
            conn.send_bytes(dumps_reply((ERR, with_traceback(exc), True)))
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
        if message[0] == SLOT:
            slot.worker_id = message[1]
            continue
        if message[0] != CALL:  # a verdict on a chunk already settled: nothing to do
            continue
        _, attempt, deadline, fn_bytes, payload = message
        del message  # the arguments are not kept past their call
        slot.ctx = TaskContext(slot, attempt, deadline)
        budget = None if max_tasks is None else max_tasks - done
        if fn_bytes is None:
            kind, body, ran, ended = _call(payload)
        else:
            kind, body, ran, ended = _run_chunk(fn_bytes, payload, functions, budget)
        del payload
        slot.ctx = None
        done += ran
        retire = (max_tasks is not None and done >= max_tasks) or (
            max_memory is not None and rss_bytes() > max_memory)
        conn.send_bytes(pickle.dumps((kind, body, ran, retire), protocol=PROTOCOL))
        del body
        if ended is not None and not _verdict(conn, *ended):
            return
        del ended  # nothing of a task outlives its reply
        if retire:
            return


def _verdict(conn: Any, values: list[Any], errors: dict[int, BaseException] | None,
             seconds: float) -> bool:
    """Wait for the parent's word on a chunk's values, resending them one by one if
    it could not unpickle them together; False if the parent is gone or says stop."""
    try:
        message = pickle.loads(conn.recv_bytes())
    except (EOFError, OSError):
        return False
    if message[0] == RESEND:
        parts = []
        for i, value in enumerate(values):
            if errors is not None and i in errors:
                value = Failed(errors[i])
            try:
                parts.append(dumps_reply(value))
            except BaseException as exc:  # pickled a moment ago: unlikely
                parts.append(dumps_reply(Failed(with_traceback(exc))))
        conn.send_bytes(pickle.dumps((PARTS, (parts, seconds), 0, False), protocol=PROTOCOL))
    return bool(message[0] != STOP)


class Failed:
    """In a resent chunk, the place of an item that failed: its error."""

    def __init__(self, error: BaseException) -> None:
        self.error = error


_Ended = tuple[list[Any], dict[int, BaseException] | None, float] | None


def _call(payload: bytes) -> tuple[int, bytes, int, _Ended]:
    """Run one call: unpickle it, call it, pickle what it returned or raised."""
    try:
        fn, args, kwargs = pickle.loads(payload)
    except BaseException as exc:  # even sys.exit() while unpickling
        return BADARGS, dumps_reply((with_traceback(exc), "arguments")), 0, None
    try:
        value = fn(*args, **kwargs)
    except BaseException as exc:  # a task's error never kills its worker
        return ERR, _dump_error(exc), 1, None
    del fn, args, kwargs
    try:
        return OK, dumps_reply(value), 1, None
    except BaseException as exc:  # the stdlib's error, e.g. PicklingError
        return ERR, _dump_error(_unsent(exc)), 1, None


def _unsent(exc: BaseException) -> BaseException:
    exc.add_note("(raised while pickling the task's result to send it back)")
    return exc


def _run_chunk(fn_bytes: bytes, payload: bytes, functions: dict[bytes, Callable[..., Any]],
               budget: int | None) -> tuple[int, bytes, int, _Ended]:
    """Run a chunk of a map, at most *budget* items of it (the rest is the parent's
    to send to a fresh worker). Returns what ``_verdict`` needs too, if it ran
    several items."""
    try:
        fn = functions.get(fn_bytes)  # a map sends its function with every chunk
        if fn is None:
            if len(functions) > 32:
                functions.clear()
            fn = functions[fn_bytes] = pickle.loads(fn_bytes)
    except BaseException as exc:
        return BADARGS, dumps_reply((with_traceback(exc), "function")), 0, None
    try:
        star, items = pickle.loads(payload)
    except BaseException as exc:
        return BADARGS, dumps_reply((with_traceback(exc), "arguments")), 0, None
    if budget is not None and budget < len(items):
        del items[budget:]
    values, errors, seconds = _run_items(fn, items, star)
    del items
    body = _dump_chunk(values, errors, seconds)
    return CHUNK, body, len(values), (values, errors, seconds) if len(values) > 1 else None


def _run_items(fn: Callable[..., Any], items: list[Any],
               star: bool) -> tuple[list[Any], dict[int, BaseException] | None, float]:
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
    return values, errors, time.perf_counter() - started


def _dump_chunk(values: list[Any], errors: dict[int, BaseException] | None,
                seconds: float) -> bytes:
    """Pickle a chunk's end; a value that cannot be pickled fails its item alone."""
    try:
        return dumps_reply((values, errors, seconds))
    except BaseException:  # find the culprits, below
        pass
    values = list(values)
    errors = dict(errors or {})
    for i, value in enumerate(values):
        if i in errors:
            continue
        try:
            dumps_reply(value)
        except BaseException as exc:
            values[i] = None
            errors[i] = with_traceback(_unsent(exc))
    try:
        return dumps_reply((values, errors or None, seconds))
    except BaseException as exc:  # not one value alone: fail them all
        error = with_traceback(_unsent(exc))
        failed = dict.fromkeys(range(len(values)), error)
        return dumps_reply(([None] * len(values), failed, seconds))


if __name__ == "__main__":  # pragma: no cover
    sys.exit("this module is run by workpool's process pool")
