"""lake stats numbers against a lake built by hand."""

from __future__ import annotations

from pathlib import Path

import pyarrow.parquet as pq

from pipeline.lake.inventory import lake_stats, table_stats
from pipeline.names import LAKE_DLQ, LAKE_EVENTS, LAKE_IDENTITIES
from tests.unit.lake.lakes import Lake, days_ago


def test_files_bytes_rows_partitions_and_days_per_table(tmp_path: Path) -> None:
    lake = Lake(tmp_path)
    lake.events(7, day=days_ago(40), per_flush=2)  # 4 files in one partition
    lake.events(3, day=days_ago(2), name="login")  # 1 file
    lake.events(2, day=days_ago(2), partition=1)  # 1 file
    lake.dead_letters(5, day=days_ago(3))
    events = table_stats(lake.lake, LAKE_EVENTS)
    files = lake.files()
    assert (events.files, events.rows, events.partitions) == (6, 12, 3)
    assert events.bytes == sum(f.stat().st_size for f in files)
    assert events.max_files_per_partition == 4
    assert (events.oldest, events.newest) == (days_ago(40), days_ago(2))
    dlq = table_stats(lake.lake, LAKE_DLQ)
    assert (dlq.files, dlq.rows, dlq.oldest, dlq.newest) == (1, 5, days_ago(3), days_ago(3))
    every = {s.table: s for s in lake_stats(lake.lake)}
    assert every[LAKE_IDENTITIES].files == 0
    assert every[LAKE_IDENTITIES].oldest is None
    assert every[LAKE_EVENTS] == events
    # Rows agree with what the views count.
    assert lake.query("SELECT count(*) FROM events") == [(events.rows,)]
    assert sum(pq.read_metadata(f).num_rows for f in files) == events.rows


def test_state_directories_are_not_tables() -> None:
    from pipeline.lake.inventory import lake_tables

    tables = lake_tables()
    assert {LAKE_EVENTS, LAKE_DLQ, LAKE_IDENTITIES} <= tables
    assert not [t for t in tables if t.startswith("_")]
