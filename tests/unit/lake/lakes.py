"""Hand-built lakes for the lifecycle tests: real writers, real splitters, chosen days."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

from pipeline.contract.plan import load_plan
from pipeline.lake.rewrite import live_files
from pipeline.lake.schema import EventBatches, dlq_table
from pipeline.lake.views import connect
from pipeline.names import LAKE_DLQ, LAKE_EVENTS, TOPIC_RAW
from pipeline.runtime.context import lake_writers
from tests.records import event_row

PLAN = load_plan()


def today() -> date:
    return datetime.now(UTC).date()


def ms(day: date, hour: int = 12) -> int:
    return int(datetime(day.year, day.month, day.day, hour, tzinfo=UTC).timestamp() * 1000)


class Lake:
    """A data directory whose lake is written through the sink's own writers."""

    def __init__(self, data_dir: Path) -> None:
        self.data_dir = data_dir
        self.lake = data_dir / "lake"
        self.writers = lake_writers(self.lake, PLAN)
        self.batches = EventBatches(PLAN)
        self.next: dict[int, int] = {}  # source partition -> next offset

    def events(
        self, n: int, *, day: date, name: str = "page_view", partition: int = 0, per_flush: int = 0
    ) -> None:
        """``n`` events of ``name`` on ``day``, one flush (one file) per ``per_flush``."""
        per_flush = per_flush or n
        writer = self.writers[LAKE_EVENTS]
        for start in range(0, n, per_flush):
            rows = []
            for _ in range(min(per_flush, n - start)):
                offset = self.next.get(partition, 0)
                self.next[partition] = offset + 1
                rows.append(
                    event_row(
                        partition=partition,
                        offset=offset,
                        t=ms(day),
                        event_name=name,
                        properties=_props(name),
                    )
                )
            writer.add(TOPIC_RAW, partition, self.batches.build(rows))
            writer.flush(TOPIC_RAW, partition)

    def dead_letters(self, n: int, *, day: date, partition: int = 0) -> None:
        rows = []
        for _ in range(n):
            offset = self.next.get(100 + partition, 0)
            self.next[100 + partition] = offset + 1
            rows.append(
                {
                    "error_code": "E_SCHEMA",
                    "error_detail": "bad",
                    "payload": b"{}",
                    "source_topic": TOPIC_RAW,
                    "source_partition": partition,
                    "source_offset": offset,
                    "source_index": 0,
                    "received_at": ms(day),
                }
            )
        writer = self.writers[LAKE_DLQ]
        writer.add(TOPIC_RAW, partition, dlq_table(rows))
        writer.flush(TOPIC_RAW, partition)

    def query(self, sql: str) -> list[tuple[Any, ...]]:
        return connect(self.data_dir, PLAN).execute(sql).fetchall()

    def event_ids(self) -> list[str]:
        return [r[0] for r in self.query("SELECT event_id FROM events ORDER BY event_id")]

    def files(self, table: str = LAKE_EVENTS) -> list[Path]:
        """The files the views read (compaction keeps merged ones a while, hidden)."""
        return live_files(self.lake, table)


def _props(name: str) -> dict[str, Any]:
    if name == "checkout":
        return {"order_id": "o1", "amount": "10.00", "item_count": 1}
    if name == "pay_success":
        return {"order_id": "o1", "amount": "10.00", "pay_method": "wechat_pay"}
    return {"page": "home"}


def days_ago(n: int) -> date:
    return today() - timedelta(days=n)
