"""Terminal rendering with rich."""

from __future__ import annotations

from typing import Any

from rich.console import Console
from rich.table import Table


def print_table(columns: list[str], rows: list[tuple[Any, ...]], title: str | None = None) -> None:
    table = Table(title=title, show_lines=False)
    for col in columns:
        table.add_column(col, overflow="fold")
    for row in rows:
        table.add_row(*("" if v is None else str(v) for v in row))
    Console().print(table)


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
