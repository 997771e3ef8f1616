"""The dedup memory's Faust table: one changelog record per validated batch.

The memory itself is ``pipeline.ingest.dedup.SeenIds``; this table persists and replays it.
"""

from __future__ import annotations

import base64
from typing import Any

import numpy as np

from pipeline.ingest.dedup import SeenIds, fingerprint
from tables.batchlog import BatchLogTable

__all__ = ["DedupTable"]

RECORD_IDS = 8192  # ids per changelog record: 16 bytes each, about 175 KB in base64


class DedupTable(BatchLogTable):
    """Changelog record: key ``"<partition>:<first offset>"``, value ``{"g": gen, "k": ..,
    "v": ..}``: the ids' fingerprints (uint64) and packed positions (int64), little-endian
    arrays in base64, so recovery rebuilds the memory without per-id Python work. Records
    of versions before 2026-11-30 (``"ids": [[event_id, packed], ..]``) still apply.
    """

    seen: SeenIds

    def attach(self, seen: SeenIds) -> None:
        self.seen = seen

    def apply_record(self, partition: int, key: Any, value: Any) -> None:
        gen = int(value["g"])
        if "ids" in value:
            for event_id, packed in value["ids"]:
                self.seen.add(partition, gen, event_id, packed >> 1, bool(packed & 1))
            return
        keys = np.frombuffer(base64.b64decode(value["k"]), "<u8").astype(np.uint64)
        values = np.frombuffer(base64.b64decode(value["v"]), "<i8").astype(np.int64)
        self.seen.add_run(partition, gen, keys, values)

    def forget_partition(self, partition: int) -> None:
        self.seen.forget(partition)

    async def record(self, partition: int, first_offset: int, gen: int, entries: list[Any]) -> None:
        # Chunked: one take may hold a 20,000-event message, and a changelog record must fit
        # in one Kafka message.
        for start in range(0, len(entries), RECORD_IDS):
            await self.append(
                partition,
                f"{partition}:{first_offset}" + (f":{start}" if start else ""),
                encode_record(gen, entries[start : start + RECORD_IDS]),
            )


def encode_record(gen: int, entries: list[Any]) -> dict[str, Any]:
    """A changelog record of ``[fingerprint or event_id, packed position]`` entries."""
    keys = np.fromiter(
        (e[0] if isinstance(e[0], int) else fingerprint(e[0]) for e in entries),
        "<u8",
        len(entries),
    )
    values = np.fromiter((e[1] for e in entries), "<i8", len(entries))
    return {
        "g": gen,
        "k": base64.b64encode(keys.tobytes()).decode(),
        "v": base64.b64encode(values.tobytes()).decode(),
    }
