"""The identity map as a Faust global table: every worker holds and reads all of it.

Only the identity agent writes. Its changelog records are the link batches it applied;
every worker (the writer too, after a restart or a move) rebuilds the map by applying the
same links to its own ``IdentityGraph``. The graph is a function of the set of links, so
applying a record twice, or records the worker already applied itself, changes nothing.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import faust
import orjson
from faust.types import EventT

from pipeline.identity.graph import IdentityGraph, Link
from tables.batchlog import KafkaClients

PARTITION = 0


def _links(raw: bytes | None) -> list[Link]:
    if not raw:
        return []
    value = orjson.loads(raw)
    return [(a, b, int(t)) for a, b, t in value["links"]]


class IdentityTable(faust.GlobalTable):
    graph: IdentityGraph

    def attach(self, graph: IdentityGraph) -> None:
        self.graph = graph

    def apply_changelog_batch(self, batch: Iterable[EventT]) -> None:
        links: list[Link] = []
        for event in batch:
            value: Any = event.value
            if value:
                links.extend((a, b, int(t)) for a, b, t in value["links"])
        if links:
            self.graph.add(links, emit=False)

    async def follow(self, kafka: KafkaClients, poll_ms: int = 200) -> None:
        """Apply every record of the changelog as it is written, from the beginning.

        Applying is idempotent, so overlapping with Faust's own recovery is harmless.
        """
        from aiokafka import AIOKafkaConsumer, TopicPartition

        topic = self.changelog_topic.get_topic_name()
        consumer = AIOKafkaConsumer(**kafka.aiokafka(), enable_auto_commit=False, group_id=None)
        await consumer.start()
        try:
            tp = TopicPartition(topic, PARTITION)
            consumer.assign([tp])
            await consumer.seek_to_beginning(tp)
            while True:
                batches = await consumer.getmany(timeout_ms=poll_ms, max_records=1000)
                links: list[Link] = []
                for records in batches.values():
                    for record in records:
                        links.extend(_links(record.value))
                if links:
                    self.graph.add(links, emit=False)
        finally:
            await consumer.stop()

    async def record(self, key: str, links: list[Link]) -> None:
        """Straight to the producer, awaited before the input is acked (see
        ``BatchLogTable.append`` for why not Faust's buffered ``send_changelog``)."""
        await self.changelog_topic.send(
            key=key,
            value={"links": [list(link) for link in links]},
            partition=PARTITION,
            key_serializer=self.key_serializer,
            value_serializer=self.value_serializer,
        )
