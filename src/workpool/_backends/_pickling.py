"""What a call to a worker process is pickled as in the caller, and the errors that
say what could not cross.

Owns the caller's side of sending work to a child: ``dumps_call`` (a call),
``dumps_items`` (a chunk of ``map`` items), ``can_send``, and ``raise_send_error``,
which raises a pickling error again, of its own type, naming the argument or item
that could not be sent (what ``submit`` and ``map`` raise); and the errors of a call
whose pickles failed on the way (``unpicklable``, ``bad_call``: ``WorkerCrashed``
caused by the pickling error). What crosses the pipe and how it is pickled is
``_child``'s. May import ``_core`` and ``_child``.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any, NoReturn

from .._core.process_errors import WorkerCrashed
from . import _child

__all__ = ["bad_call", "can_send", "dumps_call", "dumps_items", "fn_name",
           "raise_send_error", "unpicklable"]


# -- pickling in the caller ---------------------------------------------------------------

def dumps_call(fn: Callable[..., Any], args: tuple[Any, ...], kwargs: dict[str, Any]) -> bytes:
    """Pickle a call for a worker process (see ``_child``).

    Raises:
        The pickling error, of its own type (``TypeError`` for an open file or a lock,
        ``PicklingError``, ...), its message naming what could not be sent.
    """
    try:
        return _child.dumps((fn, args, kwargs))
    except Exception as exc:
        parts = [("the function", fn), *((f"argument {i}", a) for i, a in enumerate(args)),
                 *((f"keyword argument {k!r}", v) for k, v in kwargs.items())]
        raise_send_error(exc, parts, f" of {fn_name(fn)}")


def can_send(obj: Any) -> bool:
    """True if *obj* can be pickled for a worker process."""
    try:
        _child.dumps(obj)
    except Exception:
        return False
    return True


def fn_name(fn: Any) -> str:
    """How an error message names the function *fn*."""
    return str(getattr(fn, "__qualname__", None) or repr(fn))


def raise_send_error(exc: Exception, parts: Iterable[tuple[str, Any]],
                      where: str) -> NoReturn:
    """Raise *exc* again, as an error of its own type (the one the stdlib's pool would
    have set on the future) whose message says which of *parts* could not be sent."""
    culprit, what = exc, "a call"
    for name, obj in parts:
        try:
            _child.dumps(obj)
        except Exception as inner:
            culprit, what = inner, name
            break
    message = f"cannot send {what}{where} to a worker process: {culprit}"
    try:
        restated = type(culprit)(message)
    except Exception:
        restated = None
    if restated is None or type(restated) is not type(culprit) or str(restated) != message:
        culprit.add_note(message)  # a type that takes no message: the note says it
        raise culprit
    raise restated from culprit


def dumps_items(star: bool, items: list[Any]) -> bytes:
    """Pickle a chunk of ``map`` items for a worker process (``raise_send_error``
    restates what cannot be pickled)."""
    return _child.dumps((star, items))


# -- the errors of a call that failed as a whole --------------------------------------------

def _describe(error: BaseException) -> str:
    text = str(error)
    return f"{type(error).__name__}: {text}" if text else type(error).__name__


def unpicklable(what: str, error: BaseException) -> WorkerCrashed:
    """The task's result (or exception) came back but cannot be unpickled here."""
    crashed = WorkerCrashed(f"the task's {what} could not be unpickled: {_describe(error)}")
    crashed.__cause__ = error
    return crashed


def bad_call(what: str, error: BaseException) -> WorkerCrashed:
    """The child could not unpickle the task's function or arguments (the stdlib's
    pool breaks there; only this task fails here)."""
    crashed = WorkerCrashed(
        f"the worker process could not unpickle the task's {what}: {_describe(error)}")
    crashed.__cause__ = error
    return crashed
