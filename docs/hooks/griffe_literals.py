"""Griffe extension: reST literal blocks in docstrings render as code in the reference.

The package's docstrings are Google style with reST literal blocks, which read well in
``help()``::

    Example::

        with wp.ThreadPool(8) as pool:
            ...

Markdown has no ``::``: this turns a paragraph ending in ``::`` into that paragraph
ending in ``:`` (a bare ``Example::`` into a bold "Example:") and its indented block
into a fenced block, Python after an "Example", plain text otherwise.
"""

from __future__ import annotations

import re
import textwrap
from typing import Any

import griffe

_LITERAL = re.compile(
    r"^(?P<indent>[ ]*)(?P<lead>\S.*?)::[ ]*\n"      # a line ending in "::"
    r"(?P<blank>(?:[ ]*\n)+)"                         # blank lines
    r"(?P<block>(?:(?P=indent)[ ]+\S.*\n|[ ]*\n)+)",  # the indented block
    re.M)
_ITEM = re.compile(r"[\w*][\w*, ]*( \(.*\))?: ")  # "name: text", "name (type): text"


def markdown_literals(text: str) -> str:
    """*text* with each reST literal block turned into a fenced Markdown block."""

    def fence(match: re.Match[str]) -> str:
        indent, lead = match["indent"], match["lead"]
        block = textwrap.dedent(match["block"]).strip("\n")
        example = lead.strip().rstrip(":").lower() in ("example", "examples")
        heading = f"**{lead.strip()}:**" if example else f"{lead}:"
        language = "python" if example else "text"
        # The fence goes where the paragraph's text is: under an item of a section
        # ("name: text::"), that is one level deeper than the item's line.
        inner = indent + "    " if _ITEM.match(lead) else indent
        body = textwrap.indent(f"```{language}\n{block}\n```", inner)
        return f"{indent}{heading}\n\n{body}\n\n"

    return _LITERAL.sub(fence, text if text.endswith("\n") else text + "\n").rstrip("\n")


class LiteralBlocks(griffe.Extension):
    """Rewrite every docstring's reST literal blocks as it is loaded."""

    def on_instance(self, *, obj: griffe.Object, **kwargs: Any) -> None:
        """Called by griffe for every object it loads."""
        if obj.docstring is not None and "::" in obj.docstring.value:
            obj.docstring.value = markdown_literals(obj.docstring.value)
