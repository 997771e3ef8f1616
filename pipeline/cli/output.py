"""Printing command results: one switch between a rich table, csv and json.

Imported inside command functions only, so that ``trackflow --help`` does not load rich,
DuckDB or pyarrow.
"""

from __future__ import annotations

import sys
from collections.abc import Mapping, Sequence
from typing import Any

from rich.console import Console

from pipeline.lake import views
from pipeline.tools.console import print_table

Rows = Sequence[tuple[Any, ...]] | Sequence[Mapping[str, Any]]


def emit(columns: list[str], rows: Rows, fmt: str) -> None:
    """Print ``rows`` to stdout as ``json``, ``csv`` or, for any other ``fmt``, a table.

    Rows are tuples in column order (as DuckDB returns them) or records. For records,
    ``columns`` picks what the table and the csv show, while json carries each record whole.
    csv and json show lake values as ``pipeline.lake.views`` renders them (times in ISO 8601).
    """
    if fmt == "json":
        if rows and isinstance(rows[0], Mapping):
            text = views.to_json_object(list(rows))
        else:
            text = views.to_json(columns, [_cells(columns, r) for r in rows])
        sys.stdout.write(text + "\n")
        return
    cells = [_cells(columns, r) for r in rows]
    if fmt == "csv":
        sys.stdout.write(views.to_csv(columns, cells))
    else:
        print_table(columns, cells)


def _cells(columns: list[str], row: tuple[Any, ...] | Mapping[str, Any]) -> tuple[Any, ...]:
    if isinstance(row, Mapping):
        return tuple(row[c] for c in columns)
    return row


def print_trail(trail: Any) -> None:
    console = Console()
    console.print(
        f"[bold]person[/bold] {trail.person_id}   first seen {trail.first_seen}   "
        f"last seen {trail.last_seen}"
    )
    for title, rows in (
        ("identifiers", trail.identifiers),
        ("merges", trail.merges),
        ("events", trail.events),
    ):
        if rows:
            cols = list(rows[0])
            print_table(cols, [tuple(r[c] for c in cols) for r in rows], title=title)
        else:
            console.print(f"{title}: none")
