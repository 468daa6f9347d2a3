"""Plain-text tables and sizes for terminal output."""

from __future__ import annotations

import unicodedata
from collections.abc import Sequence

# Control characters (newline, escape, ...), format characters (bidi overrides) and
# line/paragraph separators: in a name from a backup they could fake or hide output lines.
_UNPRINTABLE = frozenset({"Cc", "Cf", "Zl", "Zp", "Cs", "Cn"})


def printable(text: str) -> str:
    """``text`` for a terminal: backslashes and unprintable characters as Python escapes.

    ``"a\nb"`` shows as ``a\nb``, so a name can never start a line of its own; a real
    backslash shows doubled, so the two cannot be confused.
    """
    if text.isprintable() and "\\" not in text:
        return text
    return "".join(
        ch.encode("unicode_escape").decode("ascii")
        if ch == "\\" or unicodedata.category(ch) in _UNPRINTABLE
        else ch
        for ch in text
    )


def human_bytes(size: int | None) -> str:
    """1536 -> '1.5 KiB'; None -> '-'."""
    if size is None:
        return "-"
    value = float(size)
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if value < 1024 or unit == "TiB":
            return f"{int(value)} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    raise AssertionError("unreachable")


def render_table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    """Left-aligned columns separated by two spaces; trailing blanks trimmed; cells printable."""
    rows = [[printable(str(cell)) for cell in row] for row in rows]
    widths = [max(len(str(row[i])) for row in [header, *rows]) for i in range(len(header))]
    lines = [
        "  ".join(cell.ljust(width) for cell, width in zip(line, widths, strict=True)).rstrip()
        for line in [header, *rows]
    ]
    return "\n".join(lines)
