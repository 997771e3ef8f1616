"""Where a table's rewrite journals live, and the marker that makes its views read them.

A view reads the journals (``lake/rewrite.py``) only if the table has the marker when the
connection is opened: DuckDB's ``read_json`` of a glob that matches nothing is an error, and
the marker is the file that always matches. Every writer that adds files to a table puts the
marker there first, so a connection that sees any file of the table also reads its journals
and shows each row once during a rewrite, even the table's very first one.
"""

from __future__ import annotations

from pathlib import Path

import orjson

from pipeline.lake.durable import atomic_write_bytes

JOURNALS = "_rewrites"
NO_JOURNAL = "_none.json"


def journal_dir(lake_dir: Path, table: str) -> Path:
    return lake_dir / JOURNALS / table


def prepare(lake_dir: Path, table: str) -> Path:
    """Create the table's journal directory with its marker (idempotent); return it."""
    directory = journal_dir(lake_dir, table)
    if not (directory / NO_JOURNAL).exists():
        directory.mkdir(parents=True, exist_ok=True)
        empty = {"state": "none", "old": [], "new": []}
        atomic_write_bytes(directory / NO_JOURNAL, orjson.dumps(empty))
    return directory
