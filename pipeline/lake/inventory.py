"""What the lake holds, per table: files, bytes, rows, partitions, oldest and newest day.

Read from the directory tree and the Parquet footers (row counts), never from the rows:
``trackflow lake stats`` and the workers' files-per-partition gauge stay cheap on a lake of
many files. A partition is a directory holding files (``event_date=.../event_name=...``,
``received_date=...``); files a rewrite in progress is replacing are not counted
(``rewrite.hidden_files``), so the numbers match what the views show.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from datetime import date
from pathlib import Path

import pyarrow.parquet as pq

from pipeline import names
from pipeline.lake.rewrite import hidden_files

_DAY = re.compile(r"^[a-z_]+_date=(\d{4}-\d{2}-\d{2})$")
COLUMNS = [
    "table",
    "files",
    "bytes",
    "rows",
    "partitions",
    "max_files_per_partition",
    "oldest",
    "newest",
]


def lake_tables() -> set[str]:
    """Every lake table trackflow knows (the ``LAKE_*`` names of ``pipeline.names``; a
    name starting with ``_`` is a state directory, not a table)."""
    return {
        v
        for k, v in vars(names).items()
        if k.startswith("LAKE_") and isinstance(v, str) and not v.startswith("_")
    }


@dataclass
class TableStats:
    table: str
    files: int = 0
    bytes: int = 0
    rows: int = 0
    partitions: int = 0
    max_files_per_partition: int = 0
    oldest: date | None = None  # day of the oldest day partition holding a file
    newest: date | None = None

    def record(self) -> dict[str, object]:
        return {c: getattr(self, c) for c in COLUMNS}


def table_stats(lake_dir: Path, table: str, rows: bool = True) -> TableStats:
    """One table's numbers; ``rows=False`` skips the footers (files and bytes only)."""
    stats = TableStats(table)
    root = lake_dir / table
    if not root.exists():
        return stats
    hidden = hidden_files(lake_dir, table)
    for directory, _, filenames in os.walk(root):
        here = Path(directory)
        files = [here / n for n in filenames if n.endswith(".parquet") and not n.startswith(".")]
        files = [f for f in files if f not in hidden]
        if not files:
            continue
        stats.partitions += 1
        stats.files += len(files)
        stats.max_files_per_partition = max(stats.max_files_per_partition, len(files))
        for f in files:
            stats.bytes += f.stat().st_size
            if rows:
                stats.rows += pq.read_metadata(f).num_rows
        day = _day_of(here.relative_to(root))
        if day is not None:
            stats.oldest = day if stats.oldest is None else min(stats.oldest, day)
            stats.newest = day if stats.newest is None else max(stats.newest, day)
    return stats


def lake_stats(
    lake_dir: Path, tables: list[str] | None = None, rows: bool = True
) -> list[TableStats]:
    """Stats of ``tables`` (default: every known table and any other table directory)."""
    if tables is None:
        tables = lake_stats_tables(lake_dir)
    return [table_stats(lake_dir, t, rows) for t in tables]


def _day_of(rel: Path) -> date | None:
    for part in rel.parts:
        m = _DAY.match(part)
        if m:
            try:
                return date.fromisoformat(m[1])
            except ValueError:
                return None
    return None


def file_counts(lake_dir: Path, settled_before: date) -> dict[str, tuple[int, int]]:
    """table -> (files, most files in one settled partition). Settled: a day partition
    before ``settled_before`` (still written to before then), or a partition without a day.

    The sink adds files to today's partitions all day and daily maintenance compacts a day
    only after it ended, so only settled partitions say whether compaction keeps up.
    """
    out: dict[str, tuple[int, int]] = {}
    for table in lake_stats_tables(lake_dir):
        root = lake_dir / table
        total = most = 0
        for directory, _, filenames in os.walk(root):
            n = sum(1 for f in filenames if f.endswith(".parquet") and not f.startswith("."))
            if not n:
                continue
            total += n
            day = _day_of(Path(directory).relative_to(root))
            if day is None or day < settled_before:
                most = max(most, n)
        out[table] = (total, most)
    return out


def lake_stats_tables(lake_dir: Path) -> list[str]:
    present = {
        p.name
        for p in (lake_dir.iterdir() if lake_dir.exists() else [])
        if p.is_dir() and not p.name.startswith(("_", "."))
    }
    return sorted(lake_tables() | present)
