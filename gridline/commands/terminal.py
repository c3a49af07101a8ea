"""How commands print: tables that never cut a value, piped or not.

Piped into a file, ``grep`` or a mail, rich has no terminal to measure and assumes 80
columns, where it would shorten a case number or a grid's name to "罗布社区第…". A piped
command prints wide instead, and any cell still too wide wraps inside its column."""

from __future__ import annotations

import os
import sys

from rich.console import Console
from rich.table import Table

# What a piped command may use: wide enough for a case row with its grid and category.
PIPED_WIDTH = 200


def make_console(*, stderr: bool = False) -> Console:
    stream = sys.stderr if stderr else sys.stdout
    piped = not stream.isatty() and not os.environ.get("COLUMNS")
    return Console(stderr=stderr, width=PIPED_WIDTH if piped else None)


def table(*headers: str, **options) -> Table:  # noqa: ANN003 (rich's Table options)
    """A table whose cells wrap (fold) when the width runs out, never end in "…"."""
    out = Table(**options)
    for header in headers:
        out.add_column(header, overflow="fold")
    return out

