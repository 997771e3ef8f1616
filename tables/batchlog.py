"""A Faust table whose changelog records are batches, applied by the subclass.

Faust's own tables write one changelog message per key update, and Faust's cost is per
message (DESIGN section 3). State that changes for many keys per input batch (seen event
ids, window partials) instead logs one record per batch and rebuilds its in-memory
structure from those records on recovery. Faust still does the hard parts: changelog topic
creation, co-partitioned assignment and replay of the changelog on rebalance.

Recovery ends at the end offset the broker reports. The embedded broker (Tansu) reports
the base offset of the last record batch plus one, not the last offset plus one, so the
tail of a multi-record batch was never replayed: a worker that took a partition over lost
the newest dedup ids, progress and window deltas. After Faust's recovery each table
therefore reads its changelog partitions on from the last record applied until a read
comes back empty (``catch_up``); on a correct broker it finds nothing.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Iterable
from typing import Any

import faust
import orjson
from faust.types import TP, EventT

from tables.consumers import KafkaClients, reading_consumer

log = logging.getLogger(__name__)


def release_free_memory() -> None:
    """Hand the heap freed by a recovery back to the OS (glibc keeps it otherwise).

    Replaying a changelog decodes hundreds of MB of records that are dropped once applied;
    measured (bench/state_scale.py), a worker that rebuilt 10 million dedup ids held 48
    bytes an id of RSS, of which 16 are the ids: the rest was free heap glibc kept.
    """
    try:
        import ctypes

        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):  # not glibc: nothing to do
        pass


CATCH_UP_POLL_MS = 300

# Records Faust decodes and holds per changelog partition before it applies them, during a
# recovery. Faust's default (1000) is sized for one key per record; a record here is a
# whole batch, so 1000 of them held a takeover's replay in memory at once: ~25 MB of
# decoded Python objects for a moment, whose freed pymalloc arenas stayed mapped (the
# survivor's RSS step at every takeover, docs/performance.md).
RECOVERY_BUFFER_RECORDS = 16


class BatchLogTable(faust.Table):
    """Subclasses implement ``apply_record`` and ``forget_partition``."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        kwargs.setdefault("recovery_buffer_size", RECOVERY_BUFFER_RECORDS)
        super().__init__(*args, **kwargs)

    def apply_record(self, partition: int, key: Any, value: Any) -> None:
        raise NotImplementedError

    def forget_partition(self, partition: int) -> None:
        raise NotImplementedError

    def revoke_partition(self, partition: int) -> None:
        """The partition went to another worker (forget it unless a subclass must also
        keep an in-flight stage from recreating it)."""
        self.forget_partition(partition)

    async def append(self, partition: int, key: str, value: Any) -> Awaitable[Any]:
        """Append one batch record to the changelog partition of ``partition``; returns
        the delivery (awaiting it gives the record's metadata, its offset).

        Sent straight to the producer, not through Faust's ``send_soon`` buffer: Faust
        flushes the producer before it commits input offsets, but its buffer flush gives up
        after 0.1 s, so a buffered record could still be unsent when the input that made
        it is committed. Awaiting this before acking makes state durable first.
        """
        return await self.changelog_topic.send(
            key=key,
            value=value,
            partition=partition,
            key_serializer=self.key_serializer,
            value_serializer=self.value_serializer,
        )

    kafka: KafkaClients | None = None  # set by the topology; None: no catch-up

    def apply_changelog_batch(self, batch: Iterable[EventT]) -> None:
        for event in batch:
            message = event.message
            self._mark_applied(message.partition, message.offset)
            value = event.value
            if value is None:
                continue
            self.apply_record(message.partition, event.key, value)

    @property
    def applied_offsets(self) -> dict[int, int]:
        """Changelog partition -> the last offset applied; the catch-up reads on from it.
        (In ``__dict__``: Faust builds tables through its own constructor.)"""
        applied: dict[int, int] = self.__dict__.setdefault("_applied", {})
        return applied

    def _mark_applied(self, partition: int, offset: int) -> None:
        applied = self.applied_offsets
        applied[partition] = max(applied.get(partition, -1), offset)

    async def on_recovery_completed(self, active_tps: set[TP], standby_tps: set[TP]) -> None:
        await super().on_recovery_completed(active_tps, standby_tps)
        if self.kafka is not None and active_tps:
            await self.catch_up(active_tps)
        release_free_memory()

    async def catch_up(self, tps: set[TP]) -> int:
        """Apply changelog records past where recovery stopped; returns how many."""
        from aiokafka import TopicPartition

        applied = self.applied_offsets
        assert self.kafka is not None, "catch_up needs the cluster (set by the topology)"
        n = 0
        async with reading_consumer(self.kafka) as consumer:
            parts = [TopicPartition(tp.topic, tp.partition) for tp in tps]
            consumer.assign(parts)
            for part in parts:
                consumer.seek(part, applied.get(part.partition, -1) + 1)
            while batches := await consumer.getmany(
                timeout_ms=CATCH_UP_POLL_MS, max_records=RECOVERY_BUFFER_RECORDS
            ):
                for records in batches.values():
                    for record in records:
                        self._mark_applied(record.partition, record.offset)
                        if record.value is not None:
                            key = orjson.loads(record.key) if record.key else None
                            self.apply_record(record.partition, key, orjson.loads(record.value))
                            n += 1
        if n:
            log.warning("%s: applied %s changelog records past the reported end", self.name, n)
        return n

    async def on_rebalance(
        self,
        assigned: set[TP],
        revoked: set[TP],
        newly_assigned: set[TP],
        generation_id: int = 0,
    ) -> None:
        # A partition read again after assignment is replayed from its changelog: start clean.
        # Only this table's changelog partitions: forgetting state by the partition number
        # of any topic dropped the combine's windows when the worker lost an events.raw
        # partition of that number but kept the metrics.partials one (nothing replays it).
        applied = self.applied_offsets
        changelog = self.changelog_topic.get_topic_name()
        manager: Any = self.app.tables
        recovery = manager.recovery
        for tp in revoked | newly_assigned:
            if tp.topic != changelog:
                continue
            if tp in revoked:
                self.revoke_partition(tp.partition)
            else:
                self.forget_partition(tp.partition)
            applied.pop(tp.partition, None)
            # Faust keeps the offset it had read a partition to across generations when a
            # rebalance is superseded before its recovery runs; reading a re-assigned
            # partition from there would skip what this table just forgot.
            recovery.active_offsets.pop(tp, None)
        await super().on_rebalance(assigned, revoked, newly_assigned, generation_id)
