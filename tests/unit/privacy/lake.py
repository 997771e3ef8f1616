"""A small lake written by the real writers, for the privacy tests."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from pipeline.contract.plan import load_plan
from pipeline.lake.schema import IDENTITY_SCHEMA, EventBatches, dlq_table, positioned_table
from pipeline.names import LAKE_DLQ, LAKE_EVENTS, LAKE_IDENTITIES, TOPIC_LINKS, TOPIC_RAW
from pipeline.runtime.context import lake_writers
from tests.records import T0, event_row

PLAN = load_plan()


def write_events(lake: Path, rows: list[dict[str, Any]], partition: int = 0) -> None:
    """One flush (one file per event name and day) of ``rows`` to ``events``."""
    writer = lake_writers(lake, PLAN)[LAKE_EVENTS]
    writer.add(TOPIC_RAW, partition, EventBatches(PLAN).build(rows))
    writer.flush(TOPIC_RAW, partition)


def write_identities(lake: Path, pairs: list[tuple[str, str]], offset: int) -> None:
    rows = [
        {
            "identifier_type": n.split(":")[0],
            "identifier": n.split(":", 1)[1],
            "person_id": pid,
            "first_seen": T0,
            "last_seen": T0,
            "updated_at": T0,
        }
        for n, pid in pairs
    ]
    writer = lake_writers(lake, PLAN)[LAKE_IDENTITIES]
    writer.add(TOPIC_LINKS, 0, positioned_table(rows, IDENTITY_SCHEMA, 0, offset))
    writer.flush(TOPIC_LINKS, 0)


def write_dead_letter(lake: Path, payload: bytes, offset: int) -> None:
    row = {
        "error_code": "invalid_value",
        "error_detail": "x",
        "payload": payload,
        "payload_truncated": False,
        "payload_size": len(payload),
        "source_topic": TOPIC_RAW,
        "source_partition": 1,
        "source_offset": offset,
        "source_index": 0,
        "received_at": T0,
        "failed_at": T0,
    }
    writer = lake_writers(lake, PLAN)[LAKE_DLQ]
    writer.add(TOPIC_RAW, 1, dlq_table([row]))
    writer.flush(TOPIC_RAW, 1)


def person_events(offset: int, n: int, **over: Any) -> list[dict[str, Any]]:
    return [event_row(partition=0, offset=offset + i, **over) for i in range(n)]
