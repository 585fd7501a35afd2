"""The command template of ``workpool run``: GNU parallel's replacement strings.

``Template("convert {} {.}.png")`` is parsed once into literal text and replacement
fields; ``expand(args, seq, slot)`` builds one job's shell command. Every value taken
from the input is shell-quoted (``shlex.quote``) where it replaces a field, so an input
line can never inject a command; ``{#}`` and ``{%}`` are numbers and need no quoting.

=========  ==========================================  ===========================
string     replaced by                                 for ``dir/file.tar.gz``
=========  ==========================================  ===========================
``{}``     the argument (all of them, space-separated)  ``dir/file.tar.gz``
``{.}``    without its extension                        ``dir/file.tar``
``{/}``    its base name                                ``file.tar.gz``
``{//}``   its directory (``.`` when there is none)     ``dir``
``{/.}``   its base name without extension              ``file.tar``
``{n}``    argument or column *n* (1-based), with the   ``{2}``, ``{1/.}``
           same modifiers: ``{n.}`` ``{n/}`` ...
``{#}``    the job's sequence number                    ``1``
``{%}``    the job slot, 1 to ``-j``                    ``1``
=========  ==========================================  ===========================

A command with no replacement string gets the arguments appended, as with GNU parallel.
Imports only the standard library.
"""

from __future__ import annotations

import os
import re
import shlex
from collections.abc import Callable, Sequence

__all__ = ["Template"]

_FIELD = re.compile(r"\{(?:([1-9]\d*)?(\.|//|/\.|/)?|(#)|(%))\}")

_MODIFIERS: dict[str, Callable[[str], str]] = {
    "": lambda s: s,
    ".": lambda s: os.path.splitext(s)[0],
    "/": lambda s: s.rsplit("/", 1)[-1],
    "//": lambda s: os.path.dirname(s) or ".",
    "/.": lambda s: os.path.splitext(s.rsplit("/", 1)[-1])[0],
}

# One part of a parsed template: literal text, or a function of (args, seq, slot).
_Part = str | Callable[[Sequence[str], int, int], str]


class Template:
    """A ``workpool run`` command with its replacement strings parsed.

    Example::

        >>> Template("gzip -c {} > {/.}.gz").expand(["logs/a b.txt"], 1, 1)
        "gzip -c 'logs/a b.txt' > 'a b.gz'"
        >>> Template("echo").expand(["it's"], 1, 1)
        "echo 'it'\\"'\\"'s'"
    """

    __slots__ = ("_parts", "text", "uses_slot")

    def __init__(self, text: str) -> None:
        self.text = text
        #: Whether the command holds ``{%}``: it is then known only once a slot is.
        self.uses_slot = any(m.group(4) for m in _FIELD.finditer(text))
        parts: list[_Part] = []
        pos = 0
        for match in _FIELD.finditer(text):
            if match.start() > pos:
                parts.append(text[pos:match.start()])
            parts.append(_field(match))
            pos = match.end()
        if pos < len(text):
            parts.append(text[pos:])
        if all(isinstance(p, str) for p in parts):  # no replacement string: append them
            parts.append(" ")
            parts.append(_field(_FIELD.fullmatch("{}")))  # type: ignore[arg-type]
        self._parts = parts

    def expand(self, args: Sequence[str], seq: int, slot: int) -> str:
        """The shell command of the job numbered *seq* with *args*, run in *slot*."""
        return "".join([p if isinstance(p, str) else p(args, seq, slot) for p in self._parts])


def _field(match: re.Match[str]) -> Callable[[Sequence[str], int, int], str]:
    position, modifier, seq, slot = match.groups()
    if seq:
        return lambda args, n, s: str(n)
    if slot:
        return lambda args, n, s: str(s)
    change = _MODIFIERS[modifier or ""]
    quote = shlex.quote
    if position is None:
        return lambda args, n, s: " ".join([quote(change(a)) for a in args])
    index = int(position) - 1
    # A position past the arguments this line has is empty, as with GNU parallel.
    return lambda args, n, s: quote(change(args[index]) if index < len(args) else "")
