"""Dead letters written to a test lake the way the sink writes them."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import orjson
import pyarrow as pa
import pyarrow.parquet as pq

from pipeline.lake.schema import DLQ_SCHEMA, dlq_table

NOW = 1_795_420_800_000  # 2026-11-23T08:00:00Z
TOPIC = "events.raw"


def dead_letter(offset: int, partition: int = 0, **over: Any) -> dict[str, Any]:
    event = {
        "event_id": f"e{offset}",
        "event_name": "page_view",
        "event_time": NOW - 60_000,
        "anonymous_id": f"anon-{offset}",
        "platform": "miniprogram",
        "properties": {"page": "live"},
    }
    row: dict[str, Any] = {
        "error_code": "invalid_value",
        "error_detail": "properties.page must be one of home, category, ...",
        "payload": orjson.dumps(event),
        "payload_truncated": False,
        "payload_size": 0,
        "source_topic": TOPIC,
        "source_partition": partition,
        "source_offset": offset,
        "source_index": 0,
        "event_id": f"e{offset}",
        "event_name": "page_view",
        "received_at": NOW + offset * 1000,
        "failed_at": NOW + offset * 1000,
        "processor_name": "trackflow",
        "processor_version": "test",
    }
    row.update(over)
    return row


def write_dlq(data_dir: Path, rows: list[dict[str, Any]], name: str, old: bool = False) -> None:
    """One Parquet file of ``rows``; ``old``: without the replay_of column, as files
    written before it existed."""
    table = dlq_table(rows)
    if old:
        table = table.drop_columns(["replay_of"])
        assert table.schema == pa.schema([f for f in DLQ_SCHEMA if f.name != "replay_of"])
    folder = data_dir / "lake" / "dlq" / "received_date=2026-11-23"
    folder.mkdir(parents=True, exist_ok=True)
    pq.write_table(table, folder / f"{name}.parquet")
