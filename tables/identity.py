"""The identity map as a Faust global table: every worker holds and reads all of it.

Only the identity agent writes. Its changelog records are the link batches it applied;
every worker (the writer too, after a restart or a move) rebuilds the map by applying the
same links to its own ``IdentityGraph``. The graph is a function of the set of links, so
applying a record twice, or records the worker already applied itself, changes nothing.
A privacy deletion adds ``forget`` records (the person's identifiers, as the writer
expanded them): applied in order, they drop the person, and links touching them later
are ignored, so a replay from the start ends with the same map.

Each record's key ends with the identity.links offset it comes from, and the writer
records the end of every take even when nothing changed, so ``known`` says how far into
identity.links this worker's map is: the combine stage closes a window of persons only
once it is past the links the window's events made (docs/decisions.md).
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import faust
import orjson
from faust.types import EventT

from pipeline.identity.graph import IdentityGraph, Link
from tables.consumers import KafkaClients, reading_consumer

PARTITION = 0


def links_offset(key: Any) -> int:
    """The identity.links offset in a changelog key (``links:12``, ``forget:13``, JSON
    encoded or not); -1 for a key that has none."""
    if isinstance(key, bytes):
        key = key.decode(errors="replace")
    _, _, tail = str(key).strip('"').rpartition(":")
    return int(tail) if tail.isdigit() else -1


def _apply(graph: IdentityGraph, values: Iterable[Any]) -> None:
    """Apply changelog values in order: link batches, and the privacy tombstones of
    deleted (``forget``) or readmitted (``unforget``) identifiers between them."""
    links: list[Link] = []
    for value in values:
        if not value:
            continue
        if "links" in value:
            links.extend((a, b, int(t)) for a, b, t in value["links"])
            continue
        if links:
            graph.add(links, emit=False)
            links = []
        if "forget" in value:
            graph.forget(value["forget"], emit=False)
        elif "unforget" in value:
            graph.unforget(value["unforget"])
    if links:
        graph.add(links, emit=False)


class IdentityTable(faust.GlobalTable):
    graph: IdentityGraph
    known: int = -1  # identity.links offsets up to this one are in ``graph``

    def attach(self, graph: IdentityGraph) -> None:
        self.graph = graph

    def note(self, offset: int) -> None:
        """The links of identity.links ``offset`` (and all before it) are in the graph."""
        if offset > self.known:
            self.known = offset

    def apply_changelog_batch(self, batch: Iterable[EventT]) -> None:
        events = list(batch)
        _apply(self.graph, (event.value for event in events))
        for event in events:
            self.note(links_offset(event.key))

    async def follow(self, kafka: KafkaClients, poll_ms: int = 200) -> None:
        """Apply every record of the changelog as it is written, from the beginning.

        Applying is idempotent, so overlapping with Faust's own recovery is harmless.
        """
        from aiokafka import TopicPartition

        topic = self.changelog_topic.get_topic_name()
        async with reading_consumer(kafka) as consumer:
            tp = TopicPartition(topic, PARTITION)
            consumer.assign([tp])
            await consumer.seek_to_beginning(tp)
            while True:
                batches = await consumer.getmany(timeout_ms=poll_ms, max_records=1000)
                for records in batches.values():
                    _apply(self.graph, (orjson.loads(r.value) for r in records if r.value))
                    for r in records:
                        self.note(links_offset(r.key))

    async def record_forget(self, key: str, kind: str, nodes: list[str]) -> None:
        """A privacy tombstone: ``kind`` "forget" (the identifiers removed, as the writer
        expanded them) or "unforget"."""
        await self.changelog_topic.send(
            key=key,
            value={kind: sorted(nodes)},
            partition=PARTITION,
            key_serializer=self.key_serializer,
            value_serializer=self.value_serializer,
        )

    async def record_progress(self, offset: int) -> None:
        """The writer has read identity.links up to ``offset``, with no change left to
        record: workers' ``known`` moves on although no link was new."""
        await self.record(f"links:{offset}", [])

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
