"""The broker, not Faust's cache, says where a partition's input starts after an assignment."""

from __future__ import annotations

import asyncio

from confluent_kafka import Consumer, Producer, TopicPartition
from faust.types import TP

from pipeline.runtime.kafka_admin import ensure_topic
from pipeline.runtime.start_offsets import BrokerStartOffsets
from pipeline.tools.broker import EmbeddedBroker


def test_committed_offset_else_log_start(broker: EmbeddedBroker) -> None:
    topic, group = "start-offsets-test", "start-offsets-group"
    ensure_topic(broker.bootstrap, topic, 2)
    producer = Producer({"bootstrap.servers": broker.bootstrap})
    for i in range(5):
        producer.produce(topic, value=b"x%d" % i, partition=0)
    producer.flush(10)
    committer = Consumer({"bootstrap.servers": broker.bootstrap, "group.id": group})
    committer.commit(offsets=[TopicPartition(topic, 0, 3)], asynchronous=False)
    committer.close()

    async def ask() -> tuple[int | None, int | None]:
        offsets = BrokerStartOffsets(broker.bootstrap, group)
        try:
            return await offsets.start(TP(topic, 0)), await offsets.start(TP(topic, 1))
        finally:
            await offsets.stop()

    assert asyncio.run(ask()) == (3, 0)
