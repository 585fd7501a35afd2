"""Terminal output for the CLI: rich tables when the ``cli`` extra is installed, aligned
plain text otherwise (or when ``WORKPOOL_PLAIN`` is set), with the same call either way.

    table = Table("results", [Column("name"), Column("us/task", right=True)])
    table.add_row("ThreadPool.map", "0.9")
    table.add_row("broken", ("FAIL", "red"))     # a cell may carry a rich style
    table.print()
"""

from __future__ import annotations

import argparse
import importlib.util
import os
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, TextIO

if TYPE_CHECKING:
    import rich.console

__all__ = ["USAGE", "Cell", "Column", "Table", "echo", "fail", "use_rich"]

#: The exit status of a command that could not start: a bad option, a missing file
#: (argparse's own status for a usage error).
USAGE = 2

#: A cell: its text, or (text, rich style) such as ``("PASS", "green")``.
Cell = str | tuple[str, str]


def use_rich() -> bool:
    """Whether output is drawn with rich: installed, and ``WORKPOOL_PLAIN`` unset."""
    if os.environ.get("WORKPOOL_PLAIN"):
        return False
    return importlib.util.find_spec("rich") is not None


def echo(text: str = "", *, style: str | None = None, file: TextIO | None = None) -> None:
    """Print a line, styled when rich is in use (the text is never parsed as markup)."""
    out = sys.stdout if file is None else file
    if use_rich() and style:
        from rich.text import Text

        _console(out).print(Text(text, style=style), soft_wrap=True)
    else:
        print(text, file=out, flush=True)


def fail(command: str, message: str, status: int = USAGE) -> int:
    """Print ``workpool COMMAND: MESSAGE`` on standard error, one line and no
    traceback; return *status*, for the handler to return.

    Example::

        if not path.is_dir():
            return fail("bench", f"--suite {path} is not a folder")
    """
    print(f"workpool {command}: {message}", file=sys.stderr, flush=True)
    return status


@dataclass(frozen=True, slots=True)
class Column:
    """A table column: its header, and whether its cells are right-aligned (numbers)."""

    header: str
    right: bool = False


class Table:
    """A titled table of text cells, printed with rich or as aligned plain text."""

    def __init__(self, title: str, columns: Sequence[Column | str], caption: str = "") -> None:
        self.title = title
        self.caption = caption
        self.columns = [c if isinstance(c, Column) else Column(c) for c in columns]
        self.rows: list[list[Cell]] = []

    def add_row(self, *cells: Cell) -> None:
        """Add a row of ``len(columns)`` cells."""
        if len(cells) != len(self.columns):
            raise ValueError(f"a row needs {len(self.columns)} cells, got {len(cells)}")
        self.rows.append(list(cells))

    def print(self, file: TextIO | None = None) -> None:
        """Print the table to *file* (standard output by default)."""
        out = sys.stdout if file is None else file
        if use_rich():
            self._print_rich(out)
        else:
            out.write(self.plain())
            out.flush()

    def plain(self) -> str:
        """The table as aligned plain text."""
        texts = [[_text(cell) for cell in row] for row in self.rows]
        headers = [c.header for c in self.columns]
        widths = [max([len(h), *(len(r[i]) for r in texts)]) for i, h in enumerate(headers)]

        def line(cells: Sequence[str]) -> str:
            parts = [
                cell.rjust(w) if col.right else cell.ljust(w)
                for cell, w, col in zip(cells, widths, self.columns, strict=True)
            ]
            return "  ".join(parts).rstrip()

        lines = [self.title, line(headers), "  ".join("-" * w for w in widths)]
        lines += [line(r) for r in texts]
        if self.caption:
            lines.append(self.caption)
        return "\n".join(lines) + "\n\n"

    def _print_rich(self, out: TextIO) -> None:
        from rich import box
        from rich.table import Table as RichTable
        from rich.text import Text

        table = RichTable(
            title=self.title, caption=self.caption or None, box=box.SIMPLE_HEAD,
            title_justify="left", caption_justify="left", title_style="bold",
        )
        for col in self.columns:
            table.add_column(col.header, justify="right" if col.right else "left")
        for row in self.rows:
            table.add_row(*(Text(c) if isinstance(c, str) else Text(c[0], style=c[1])
                            for c in row))
        _console(out).print(table)


def _console(out: TextIO) -> rich.console.Console:
    from rich.console import Console

    # Not a terminal (a pipe, a log file): rich would assume 80 columns and wrap the tables.
    width = None if out.isatty() else int(os.environ.get("COLUMNS", "120"))
    return Console(file=out, highlight=False, width=width)


def _text(cell: Cell) -> str:
    return cell if isinstance(cell, str) else cell[0]


def positive_int(text: str) -> int:
    """argparse type: an int >= 1."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be an int >= 1, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be an int >= 1, got {value}")
    return value
