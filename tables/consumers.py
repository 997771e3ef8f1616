"""A group-less Kafka reader that is closed however its start or its reading ends.

``consumer = AIOKafkaConsumer(...); await consumer.start(); try: ... finally: stop()``
leaves the consumer open when ``start`` itself fails or is cancelled (a rebalance cancels a
recovery; the broker is briefly away), with its connections and metadata task, and
aiokafka reports it only when the object is collected ("Unclosed AIOKafkaConsumer", an
ERROR a replacement worker logged during its recovery in the ninth hour soak). A reader
that retries, as the privacy follower does, would leak one per failed attempt.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any, Protocol


class KafkaClients(Protocol):
    """What tables need of ``pipeline.runtime.kafka_security.KafkaCluster`` (tables do not
    import the runtime: it imports them)."""

    def aiokafka(self) -> dict[str, Any]: ...


@asynccontextmanager
async def reading_consumer(kafka: KafkaClients) -> AsyncIterator[Any]:
    """A started consumer without a group (no commits, no rebalances), stopped on exit."""
    from aiokafka import AIOKafkaConsumer

    consumer = AIOKafkaConsumer(**kafka.aiokafka(), enable_auto_commit=False, group_id=None)
    try:
        await consumer.start()
        yield consumer
    finally:
        await consumer.stop()  # a no-op when closed; safe after a start that failed
