"""First activity, kept after retention deletes the events that showed it.

Lifecycle ("new" = first event ever) and ``person_tags.first_seen`` read the whole lake.
Once ``lake maintain`` drops event partitions past their retention, a person whose only
earlier events were in them would look new again. So before it drops them, maintain
folds their earliest event time per identifier triple (``user_id``, ``anonymous_id``,
``person_id``, as stored) into ``<lake>/first_activity/first_activity.parquet``: one row
per triple, the earliest time wins, so a run killed between the fold and the drop folds
the same rows again and nothing changes. It keeps only what the reports need, not the
events; a privacy deletion removes a person's rows like any table's, and the fold drops
rows of persons on the purge list (under the deletion lock the caller gives, so a
deletion cannot run between its read and its rename).
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass, field
from pathlib import Path

import duckdb
import pyarrow as pa
import pyarrow.parquet as pq

from pipeline.contract.sql import path_list, path_literal
from pipeline.lake.durable import fsync_dir, fsync_file
from pipeline.lake.rewrite import hidden_files
from pipeline.lake.schema import TS
from pipeline.names import LAKE_EVENTS, LAKE_FIRST_ACTIVITY

FILE = "first_activity.parquet"
FIRST_ACTIVITY_SCHEMA = pa.schema(
    [
        pa.field("user_id", pa.string()),
        pa.field("anonymous_id", pa.string()),
        pa.field("person_id", pa.string()),
        pa.field("first_time", TS),
    ]
)
Purge = Callable[[pa.Table], tuple[pa.Table, int]]


@dataclass(frozen=True)
class Guard:
    """What the fold runs under: the privacy deletion lock and the purge list (given by
    the caller: the lake layer does not know privacy)."""

    lock: Callable[[], AbstractContextManager[None]] = field(default=nullcontext)
    purge: Purge | None = None


def first_activity_path(lake_dir: Path) -> Path:
    return lake_dir / LAKE_FIRST_ACTIVITY / FILE


def remember(lake_dir: Path, directories: Iterable[Path], guard: Guard | None = None) -> int:
    """Fold the earliest event time per identifier triple of the event partitions in
    ``directories`` into the first-activity file; returns its row count afterwards."""
    hidden = hidden_files(lake_dir, LAKE_EVENTS)  # a rewrite's other side: not the table's
    files = sorted(
        p
        for d in directories
        if d.exists()
        for p in d.rglob("*.parquet")
        if not p.name.startswith(".") and p not in hidden
    )
    if not files:
        return 0
    guard = guard or Guard()
    target = first_activity_path(lake_dir)
    with guard.lock():
        con = duckdb.connect()
        try:
            sources = [
                "SELECT user_id, anonymous_id, person_id, event_time AS first_time "
                f"FROM read_parquet({path_list(files)}, union_by_name = true)"
            ]
            if target.exists():
                sources.append(f"SELECT * FROM read_parquet({path_literal(target)})")
            rows = con.sql(
                "SELECT user_id, anonymous_id, person_id, min(first_time) AS first_time "
                f"FROM ({' UNION ALL '.join(sources)}) GROUP BY ALL "
                "ORDER BY first_time, person_id, user_id, anonymous_id"
            ).to_arrow_table()
        finally:
            con.close()
        if rows is None:
            raise RuntimeError("first activity: the fold returned no result")
        table = rows.cast(FIRST_ACTIVITY_SCHEMA)
        if guard.purge is not None:
            table, _ = guard.purge(table)
        _replace(target, table)
    return table.num_rows


def _replace(target: Path, table: pa.Table) -> None:
    """Old file or new, never half: staged beside it, synced, renamed over it."""
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.parent / f".{target.name}.tmp"
    pq.write_table(table, tmp, compression="zstd")
    fsync_file(tmp)
    os.replace(tmp, target)
    fsync_dir(target.parent)
