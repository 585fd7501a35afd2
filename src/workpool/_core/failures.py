"""Failures kept by ``on_error="collect"``, whoever collects them (a pool's ``map``,
a pipeline stage): ``CollectedError`` per item, ``CollectedErrors`` for all of them, and
``collected()``, which makes one. Imports nothing above ``_core``; the exception that
carries them at the end, ``ItemsFailed``, is in ``exceptions``.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from typing import Any, Final, final

__all__ = ["CollectedError", "CollectedErrors", "collected"]

_SHOWN: Final = 10  # failures listed by str(errors)
_TYPES: Final = 5  # exception types named in its first line
_ITEM: Final = 60  # characters of an item's repr in that listing
_MESSAGE: Final = 120  # characters of an exception's message


def collected(where: str, item: Any, error: BaseException) -> CollectedError:
    """*error*, which *item* raised in *where*, kept: its traceback formatted, and let go
    of (its frames would keep every local of the failed call alive)."""
    import traceback

    text = "".join(traceback.format_exception(error))
    error.__traceback__ = None
    return CollectedError(where, item, error, text)


@final
@dataclass(frozen=True, slots=True)
class CollectedError:
    """An item that failed under ``on_error="collect"`` (a pool's ``map`` or a pipeline
    stage): where (the stage's name, or ``map(fn)``), the item it was given, the
    exception and its formatted traceback (the exception's own ``__traceback__`` is
    dropped, so that its frames are not kept alive).

    ``str()`` is one line (stage, item, exception type and message); ``repr()`` leaves
    the traceback out, which is in ``.traceback`` in full.

    Example::

        try:
            report = pipe.run()
        except wp.ItemsFailed as failed:
            for failure in failed.errors:
                print(failure)            # map(parse), item 'a.json': ValueError: bad
                print(failure.traceback)  # the whole traceback, from the worker
    """

    stage: str
    item: Any
    error: BaseException
    traceback: str = field(repr=False)

    def __str__(self) -> str:
        return f"{self.stage}, item {_clip(repr(self.item), _ITEM)}: {_describe(self.error)}"


@final
class CollectedErrors(tuple[CollectedError, ...]):
    """The items that failed under ``on_error="collect"``, in the order they failed:
    a tuple of ``CollectedError`` (iterate it, index it, ``len()`` it).

    ``str()`` is a short summary, however many failed: the count and the exception
    types on one line, then one line per failure (stage, item, exception type and
    message) for the first ten. ``repr()`` is the first line alone. The tracebacks,
    often kilobytes each, are on request: ``tracebacks()`` returns all of them, and
    each failure keeps its own in ``.traceback``.

    Example::

        try:
            pipe.run()
        except wp.ItemsFailed as failed:
            print(failed.errors)               # "2 errors collected (2 ValueError)" + a line each
            print(failed.errors.tracebacks())  # each failure's line and full traceback
            retry_later([failure.item for failure in failed.errors])
    """

    __slots__ = ()

    def __str__(self) -> str:
        lines = [self._headline()]
        lines += [f"  {failure}" for failure in self[:_SHOWN]]
        if len(self) > _SHOWN:
            lines.append(f"  ... and {len(self) - _SHOWN:,} more (all of them: .tracebacks())")
        return "\n".join(lines)

    def __repr__(self) -> str:
        return f"<CollectedErrors: {self._headline()}>"

    def tracebacks(self) -> str:
        """Every failure's one-line description followed by its full traceback, with a
        blank line between failures ("" when there is none)."""
        return "\n\n".join(f"{failure}\n{failure.traceback.rstrip()}" for failure in self)

    def _headline(self) -> str:
        if not self:
            return "no errors collected"
        types = Counter(type(failure.error).__name__ for failure in self).most_common()
        named = ", ".join(f"{count:,} {name}" for name, count in types[:_TYPES])
        if len(types) > _TYPES:
            named += f", {sum(count for _, count in types[_TYPES:]):,} of other types"
        return f"{len(self):,} error{'s' if len(self) != 1 else ''} collected ({named})"


def _describe(error: BaseException) -> str:
    """``Type: first line of the message``, clipped."""
    lines = str(error).strip().splitlines()
    name = type(error).__name__
    return f"{name}: {_clip(lines[0], _MESSAGE)}" if lines else name


def _clip(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[:limit - 3] + "..."
