"""A Faust table whose changelog records are batches, applied by the subclass.

Faust's own tables write one changelog message per key update, and Faust's cost is per
message (DESIGN section 3). State that changes for many keys per input batch (seen event
ids, window partials) instead logs one record per batch and rebuilds its in-memory
structure from those records on recovery. Faust still does the hard parts: changelog topic
creation, co-partitioned assignment and replay of the changelog on rebalance.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import faust
from faust.types import TP, EventT


class BatchLogTable(faust.Table):
    """Subclasses implement ``apply_record`` and ``forget_partition``."""

    def apply_record(self, partition: int, key: Any, value: Any) -> None:
        raise NotImplementedError

    def forget_partition(self, partition: int) -> None:
        raise NotImplementedError

    async def append(self, partition: int, key: str, value: Any) -> None:
        """Append one batch record to the changelog partition of ``partition``.

        Sent straight to the producer, not through Faust's ``send_soon`` buffer: Faust
        flushes the producer before it commits input offsets, but its buffer flush gives up
        after 0.1 s, so a buffered record could still be unsent when the input that made
        it is committed. Awaiting this before acking makes state durable first.
        """
        await self.changelog_topic.send(
            key=key,
            value=value,
            partition=partition,
            key_serializer=self.key_serializer,
            value_serializer=self.value_serializer,
        )

    def apply_changelog_batch(self, batch: Iterable[EventT]) -> None:
        for event in batch:
            message = event.message
            value = event.value
            if value is None:
                continue
            self.apply_record(message.partition, event.key, value)

    async def on_rebalance(
        self,
        assigned: set[TP],
        revoked: set[TP],
        newly_assigned: set[TP],
        generation_id: int = 0,
    ) -> None:
        # A partition read again after assignment is replayed from its changelog: start clean.
        for tp in revoked | newly_assigned:
            self.forget_partition(tp.partition)
        await super().on_rebalance(assigned, revoked, newly_assigned, generation_id)
