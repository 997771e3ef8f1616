"""String literals for the DuckDB SQL trackflow builds: one quoting rule for every caller.

DuckDB cannot bind a parameter where a file path goes in ``read_parquet(...)`` or
``COPY ... TO``, so paths and a few names are written into the SQL text; a quote in a data
directory's name must not end the literal.
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path


def literal(text: str) -> str:
    """``text`` as a single-quoted SQL string literal."""
    return "'" + text.replace("'", "''") + "'"


def path_literal(path: Path) -> str:
    """A path as a SQL string literal (forward slashes, as DuckDB's globs expect)."""
    return literal(path.as_posix())


def path_list(paths: Iterable[Path]) -> str:
    """Paths as a SQL list literal, for ``read_parquet([...])``."""
    return "[" + ", ".join(path_literal(p) for p in paths) + "]"
