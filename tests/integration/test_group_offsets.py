"""The group-wide view of unread input (``GroupOffsets``) against the embedded broker."""

from __future__ import annotations

import uuid

import pytest
from confluent_kafka import Consumer, Producer, TopicPartition

from pipeline.runtime.group_offsets import GroupOffsets, GroupOffsetsUnavailable, all_read
from pipeline.runtime.kafka_admin import ensure_topic
from pipeline.tools.broker import EmbeddedBroker, free_port


def test_positions_follow_the_groups_commits_and_the_log_ends(broker: EmbeddedBroker) -> None:
    topic, group = f"go-{uuid.uuid4().hex[:8]}", f"g-{uuid.uuid4().hex[:8]}"
    ensure_topic(broker.bootstrap, topic, 2)
    offsets = GroupOffsets(broker.bootstrap, group)
    tps = [(topic, 0), (topic, 1)]
    assert all_read(offsets.positions(tps))  # empty logs, nothing committed: nothing unread
    producer = Producer({"bootstrap.servers": broker.bootstrap})
    for _ in range(3):  # one message a batch: Tansu reports a batch's base offset + 1 as end
        producer.produce(topic, b"x", partition=1)
        producer.flush()
    got = offsets.positions(tps)
    assert got[(topic, 1)].committed is None
    assert got[(topic, 1)].unread == 3
    assert got[(topic, 0)].unread == 0
    member = Consumer({"bootstrap.servers": broker.bootstrap, "group.id": group})
    try:
        member.commit(offsets=[TopicPartition(topic, 1, 2)], asynchronous=False)
        assert offsets.positions(tps)[(topic, 1)].unread == 1
        member.commit(offsets=[TopicPartition(topic, 1, 3)], asynchronous=False)
        assert all_read(offsets.positions(tps))
    finally:
        member.close()


def test_an_unreachable_broker_is_an_error_not_an_answer() -> None:
    offsets = GroupOffsets(f"127.0.0.1:{free_port()}", "g", timeout=1.0)
    with pytest.raises(GroupOffsetsUnavailable):
        offsets.positions([("t", 0)])
