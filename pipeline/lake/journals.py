"""Where a table's rewrite journals live, and the marker that makes its views read them.

A view reads the journals (``lake/rewrite.py``) only if the table has the marker when the
connection is opened: DuckDB's ``read_json`` of a glob that matches nothing is an error, and
the marker is the file that always matches. Every writer of a table that a rewrite can
journal puts the marker there first (the lake writers at their first claim; the member
import's installer for ``profile_changes`` and ``member_rejects``, which workers write
too), so a
connection that sees any file of such a table also reads its journals and shows each row
once during a rewrite, even the table's very first one. Tables whose files are only ever
replaced whole (``person_tags``, ``member_imports``, ...) need no marker.
"""

from __future__ import annotations

import os
import uuid
from pathlib import Path

import orjson

from pipeline.lake.durable import fsync_dir, fsync_file

JOURNALS = "_rewrites"
NO_JOURNAL = "_none.json"


def journal_dir(lake_dir: Path, table: str) -> Path:
    return lake_dir / JOURNALS / table


def prepare(lake_dir: Path, table: str) -> Path:
    """Create the table's journal directory with its marker (idempotent); return it.

    Workers starting on a fresh lake and a member import may mark the same table at the
    same moment, so the marker is staged under a name of its own and renamed into place."""
    directory = journal_dir(lake_dir, table)
    marker = directory / NO_JOURNAL
    if not marker.exists():
        directory.mkdir(parents=True, exist_ok=True)
        tmp = directory / f".{NO_JOURNAL}.{os.getpid()}.{uuid.uuid4().hex}.tmp"
        tmp.write_bytes(orjson.dumps({"state": "none", "old": [], "new": []}))
        fsync_file(tmp)
        os.replace(tmp, marker)
        fsync_dir(directory)
    return directory
