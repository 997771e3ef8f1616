"""Changelog records past the broker's reported end are applied after recovery.

The embedded broker reports the end of a partition as the base offset of its last record
batch plus one, so Faust's recovery stopped before the tail of a multi-record batch.
"""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import orjson
from confluent_kafka import Consumer, Producer, TopicPartition
from faust.types import TP

from pipeline.app import create_app
from pipeline.runtime.kafka_admin import ensure_topic
from pipeline.settings import Settings
from pipeline.tools.broker import EmbeddedBroker


def test_the_tail_of_a_batch_is_applied(broker: EmbeddedBroker, tmp_path: Path) -> None:
    settings = Settings(
        data_dir=tmp_path, broker=broker.url, app_id="catch-up", topic_prefix="cu.", dev=True
    )
    _app, ctx = create_app(settings, ensure_topics=False)
    table = ctx.tables.dedup
    topic = table.changelog_topic.get_topic_name()
    ensure_topic(broker.bootstrap, topic, 8)
    producer = Producer({"bootstrap.servers": broker.bootstrap, "linger.ms": 50})
    gen = int(time.time() * 1000) // (settings.dedup_horizon_hours * 3_600_000)
    for i in range(5):  # one produce request: one record batch
        value = {"g": gen, "ids": [[f"e{i}", (i << 20) << 1]]}
        producer.produce(topic, key=orjson.dumps(f"3:{i}"), value=orjson.dumps(value), partition=3)
    assert producer.flush(10) == 0
    probe = Consumer({"bootstrap.servers": broker.bootstrap, "group.id": "probe"})
    _, reported_end = probe.get_watermark_offsets(TopicPartition(topic, 3), timeout=10)
    probe.close()

    applied = asyncio.run(table.catch_up({TP(topic, 3)}))
    assert applied == 5, f"the broker reported the end at {reported_end}"
    now = int(time.time() * 1000)
    assert all(ctx.domain.seen.lookup(3, f"e{i}", now) is not None for i in range(5))
    assert asyncio.run(table.catch_up({TP(topic, 3)})) == 0  # nothing twice
