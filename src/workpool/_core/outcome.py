"""A task's end as data: ``Value`` or ``Error``, each with ``unwrap()``.

``map(..., on_error="return")`` yields one outcome per item, so one failure does not end
the stream (Go's ``Result{Value, Err}``, Python's ``outcome`` library).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Generic, NoReturn, TypeAlias, TypeVar, final

__all__ = ["Error", "Outcome", "Value"]

T = TypeVar("T")


@final
@dataclass(frozen=True, slots=True)
class Value(Generic[T]):
    """A task that returned ``value``.

    Example::

        for out in pool.map(fetch, urls, on_error="return"):
            if isinstance(out, wp.Value):
                save(out.value)
    """

    value: T

    def unwrap(self) -> T:
        """Return the value."""
        return self.value


@final
@dataclass(frozen=True, slots=True)
class Error:
    """A task that raised ``error``."""

    error: BaseException

    def unwrap(self) -> NoReturn:
        """Raise the error."""
        raise self.error


Outcome: TypeAlias = Value[T] | Error
