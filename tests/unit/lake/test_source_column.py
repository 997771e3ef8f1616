"""The lake's ``source`` column: written by the sink, null for old files and Kafka events."""

from __future__ import annotations

from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from pipeline.contract.plan import load_plan
from pipeline.lake.schema import EventBatches, dlq_table
from pipeline.lake.views import connect
from tests.records import T0, event_row


def write(path: Path, table: pa.Table) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    pq.write_table(table, path)


def test_events_and_dlq_views_have_source_and_read_old_files_as_null(tmp_path: Path) -> None:
    batches = EventBatches(load_plan())
    folder = tmp_path / "lake" / "events" / "event_date=2026-11-23" / "event_name=page_view"
    new = batches.build([event_row(offset=1, source="web"), event_row(offset=2, source=None)])
    assert new.column("source").to_pylist() == ["web", None]
    write(folder / "new.parquet", new)
    # A file written before the column existed (and rows built without the key).
    old = batches.build([event_row(offset=3)]).drop_columns(["source"])
    write(folder / "old.parquet", old)
    dlq_folder = tmp_path / "lake" / "dlq" / "received_date=2026-11-23"
    dead = {"error_code": "invalid_value", "source_offset": 9, "received_at": T0}
    write(dlq_folder / "new.parquet", dlq_table([{**dead, "source": "app"}]))
    write(dlq_folder / "old.parquet", dlq_table([dead]).drop_columns(["source"]))

    con = connect(tmp_path)
    rows = con.execute("SELECT source_offset, source FROM events ORDER BY 1").fetchall()
    assert rows == [(1, "web"), (2, None), (3, None)]
    rows = con.execute("SELECT source FROM events_resolved ORDER BY source_offset").fetchall()
    assert rows == [("web",), (None,), (None,)]
    rows = con.execute("SELECT source FROM dlq ORDER BY source NULLS LAST").fetchall()
    assert rows == [("app",), (None,)]
