"""Plain-text tables in psql's layout, for terminal output that reads like a query result."""

from __future__ import annotations

from collections.abc import Sequence

from pgqueue.text import printable


def format_table(headers: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    """The table as text. Cells may hold anything (queue names, errors): control characters are escaped, so
    no cell can move the cursor, recolour the terminal or start a line of its own."""
    headers = [printable(h) for h in headers]
    rows = [[printable(cell) for cell in row] for row in rows]
    widths = [len(h) for h in headers]
    for row in rows:
        widths = [max(w, len(cell)) for w, cell in zip(widths, row, strict=True)]
    header = " " + " | ".join(h.center(w) for h, w in zip(headers, widths, strict=True))
    rule = "-" + "-+-".join("-" * w for w in widths) + "-"
    body = [" " + " | ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)) for row in rows]
    footer = f"({len(rows)} row{'s' if len(rows) != 1 else ''})"
    return "\n".join(line.rstrip() for line in [header, rule, *body, footer])
