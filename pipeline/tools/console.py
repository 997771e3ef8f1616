"""Rich tables on the terminal, for the demo's summary and the CLI's table format."""

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
