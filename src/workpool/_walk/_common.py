"""What every walk shares: its statistics, the checks of its arguments, what a node's
end becomes under ``on_error``, and the consumer's side of a walk's output.

Imports only ``_core``.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Hashable, Iterable
from dataclasses import dataclass
from types import TracebackType
from typing import Any, Final, Protocol, final

from .._core.exceptions import ItemsFailed
from .._core.failures import CollectedError, CollectedErrors, collected
from .._core.options import check_on_error
from .._core.outcome import Error, Value

__all__ = ["Failure", "Outcomes", "Run", "Walk", "WalkStatistics", "check_walk_args", "pair"]

BATCH: Final = 64  # results a worker hands over at once ...
BATCH_SECONDS: Final = 0.005  # ... or after this long, whichever comes first


@final
@dataclass(frozen=True, slots=True)
class WalkStatistics:
    """A snapshot of a walk (``w.statistics()``).

    Attributes:
        visited: nodes whose ``fn`` ran (failed ones included).
        failed: nodes whose ``fn`` (or ``key``, or the iteration of their children)
            raised.
        pending: children waiting to run now (queued, in a worker's deque or on their
            way to one); a child being run inline by its parent's worker is running,
            not pending.
        max_pending: the most that ever waited at once (never above ``max_pending=``,
            or one per worker process if that is more; on processes, as the workers
            last reported it).
        max_depth: the deepest node visited (roots are at depth 0).
        steals: processes: batches of work moved from a busy worker to an idle one.
        messages: processes: messages the parent sent and received.
    """

    visited: int = 0
    failed: int = 0
    pending: int = 0
    max_pending: int = 0
    max_depth: int = 0
    steals: int = 0
    messages: int = 0


class Failure:
    """A node that failed, on its way to the consumer: the item and the error."""

    __slots__ = ("error", "item")

    def __init__(self, item: Any, error: BaseException) -> None:
        self.item = item
        self.error = error


def check_walk_args(fn: object, max_pending: object, key: object, on_error: object,
                    kind: object, kinds: tuple[str, ...]) -> None:
    """Refuse bad arguments at the call, with the rule in the message."""
    if not callable(fn):
        raise TypeError(f"fn must be callable, got {fn!r}")
    if isinstance(max_pending, bool) or not isinstance(max_pending, int):
        raise TypeError(f"max_pending must be an int, got {max_pending!r}")
    if max_pending < 1:
        raise ValueError(f"max_pending must be >= 1, got {max_pending}")
    if key is not None and not callable(key):
        raise TypeError(f"key must be callable or None, got {key!r}")
    check_on_error(on_error)
    if kind not in kinds:
        names = " or ".join(repr(k) for k in kinds)
        raise ValueError(f"kind must be {names}, got {kind!r}")


def pair(out: object) -> tuple[Any, Iterable[Any]]:
    """What ``fn`` returned, checked: ``(result, children)``."""
    if not isinstance(out, tuple) or len(out) != 2:
        raise TypeError("a walk's fn must return a pair (result, children), got "
                        f"{type(out).__name__}: {out!r:.80}")
    return out


def first_time(seen: set[Hashable], key: Callable[[Any], Hashable], item: Any) -> bool:
    """Record *item*'s key; False if it was seen before."""
    k = key(item)
    if k in seen:
        return False
    seen.add(k)
    return True


class Outcomes:
    """The consumer's side of ``on_error``: what a node's end becomes on the way out.

    A result goes out as it is (``"return"``: as a ``wp.Value``); a ``Failure`` is
    raised (``"raise"``), goes out as a ``wp.Error`` (``"return"``), is kept for one
    ``wp.ItemsFailed`` at the end (``"collect"``); ``"skip"`` failures never reach the
    consumer.
    """

    def __init__(self, on_error: str, where: str) -> None:
        self.on_error = on_error
        self.where = where
        self.collected: list[CollectedError] = []

    def out(self, entry: Any) -> tuple[bool, Any]:
        """(True, what to yield), or (False, None) for a failure kept; raises under
        ``"raise"``."""
        if type(entry) is not Failure:
            return True, Value(entry) if self.on_error == "return" else entry
        if self.on_error == "return":
            return True, Error(entry.error)
        if self.on_error == "collect":
            self.collected.append(collected(self.where, entry.item, entry.error))
            return False, None
        raise entry.error

    def finish(self) -> None:
        """At the end of the walk: raise what ``"collect"`` kept."""
        if self.collected:
            errors, self.collected = self.collected, []
            raise ItemsFailed(CollectedErrors(errors))


class Run(Protocol):
    """A walk's machinery on one kind of worker (``_threads``, ``_process``)."""

    def next_batch(self) -> list[Any] | None:
        """The next results (and ``Failure``s), waiting for them; None once the walk
        is over (or closed). Raises what ended the walk, if it failed as a whole."""

    def close(self) -> None:
        """Stop the walk; return once nothing of it runs."""

    def statistics(self) -> WalkStatistics:
        """A snapshot of the counts."""


class Walk:
    """A running walk: iterate it for the results, in completion order.

    Made by ``wp.walk``; a context manager (leaving the block stops the walk), with
    ``close()`` and ``statistics()``. The threads that run the walk hold its ``Run``,
    never this object: a walk the program drops is closed by the garbage collector.
    """

    def __init__(self, run: Run, on_error: str, where: str) -> None:
        self._run = run
        self._outcomes = Outcomes(on_error, where)
        self._ready: deque[Any] = deque()
        self._over = False

    def __iter__(self) -> Walk:
        return self

    def __next__(self) -> Any:
        try:
            while True:
                while self._ready:
                    keep, value = self._outcomes.out(self._ready.popleft())
                    if keep:
                        return value
                batch = None if self._over else self._run.next_batch()
                if batch is None:
                    self._over = True
                    self.close()
                    self._outcomes.finish()
                    raise StopIteration
                self._ready.extend(batch)
        except BaseException:  # the first error, Ctrl-C, ...: nothing left behind
            self.close()
            raise

    def close(self) -> None:
        """Stop the walk: nodes not started never start; return once nothing of the
        walk runs (on threads, running nodes finish their ``fn`` call; worker
        processes are stopped). Calling it again does nothing."""
        self._over = True
        self._ready.clear()
        self._run.close()

    def statistics(self) -> WalkStatistics:
        """A snapshot of the counts (``wp.walk``'s docstring says what each means)."""
        return self._run.statistics()

    def __enter__(self) -> Walk:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.close()

    def __del__(self) -> None:
        if hasattr(self, "_run"):
            self.close()


def describe(fn: object) -> str:
    """How errors and reports name the walk: ``walk(fn)``."""
    return f"walk({getattr(fn, '__qualname__', None) or repr(fn)})"
