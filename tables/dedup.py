"""The dedup memory's Faust table: one changelog record per validated batch.

The memory itself is ``pipeline.ingest.dedup.SeenIds``; this table persists and replays it.
"""

from __future__ import annotations

from typing import Any

from pipeline.ingest.dedup import SeenIds
from tables.batchlog import BatchLogTable

__all__ = ["DedupTable"]

RECORD_IDS = 4096  # ids per changelog record: at most about 350 KB


class DedupTable(BatchLogTable):
    """Changelog record: key ``"<partition>:<first offset>"``, value ``{"g": gen, "ids": [..]}``."""

    seen: SeenIds

    def attach(self, seen: SeenIds) -> None:
        self.seen = seen

    def apply_record(self, partition: int, key: Any, value: Any) -> None:
        gen = int(value["g"])
        for event_id, packed in value["ids"]:
            self.seen.add(partition, gen, event_id, packed >> 1, bool(packed & 1))

    def forget_partition(self, partition: int) -> None:
        self.seen.forget(partition)

    async def record(self, partition: int, first_offset: int, gen: int, entries: list[Any]) -> None:
        # Chunked: one take may hold a 20,000-event message, and a changelog record must fit
        # in one Kafka message (ids are at most 64 characters).
        for start in range(0, len(entries), RECORD_IDS):
            chunk = entries[start : start + RECORD_IDS]
            key = f"{partition}:{first_offset}" + (f":{start}" if start else "")
            await self.append(partition, key, {"g": gen, "ids": chunk})
