"""Find where the newest complete snapshot of a combine changelog partition starts.

Every group of combine records ends with its progress, which names the offset of the
newest snapshot group written before it (``snap_at``, -1 for none). The newest progress is
near the end of the partition, so it is read backwards in growing steps from there; a
partition whose groups are all cut short, or that has no snapshot yet, is read whole.
"""

from __future__ import annotations

from typing import Any

import orjson

from tables.batchlog import CATCH_UP_POLL_MS
from tables.consumers import KafkaClients, reading_consumer

TAIL_RECORDS = 64  # the first step back from the end; each further step is 4 times longer


async def newest_snapshots(
    kafka: KafkaClients, topic: str, partitions: list[int]
) -> dict[int, int]:
    """{partition: offset of its newest snapshot group} for those that have one."""
    from aiokafka import TopicPartition

    found: dict[int, int] = {}
    async with reading_consumer(kafka) as consumer:
        parts = [TopicPartition(topic, p) for p in partitions]
        begins = await consumer.beginning_offsets(parts)
        ends = await consumer.end_offsets(parts)
        for part in parts:
            at = await _newest(consumer, part, begins[part], ends[part])
            # A start past the end the broker reports (the embedded broker reports it
            # short) is read by the catch-up after Faust's recovery, which finds nothing
            # to read there (its consistency check is off, pipeline.runtime.topology).
            if at is not None and at >= begins[part]:
                found[part.partition] = at
    return found


async def _newest(consumer: Any, part: Any, begin: int, end: int) -> int | None:
    step = TAIL_RECORDS
    low = end
    while low > begin:
        low = max(begin, low - step)
        consumer.assign([part])
        consumer.seek(part, low)
        snap = None
        # Read until a read comes back empty: the embedded broker reports the end short.
        while batches := await consumer.getmany(timeout_ms=CATCH_UP_POLL_MS, max_records=256):
            for records in batches.values():
                for record in records:
                    snap = _snap_at(record.value, snap)
        if snap is not None:
            return snap if snap >= 0 else None
        step *= 4
    return None


def _snap_at(value: bytes | None, current: int | None) -> int | None:
    """The ``snap_at`` of a group's last record (it carries the progress), else ``current``."""
    if not value or b'"applied"' not in value:  # not a group's end: skip the decoding
        return current
    record = orjson.loads(value)
    if not isinstance(record, dict) or "applied" not in record:
        return current
    return int(record.get("snap_at", -1))
