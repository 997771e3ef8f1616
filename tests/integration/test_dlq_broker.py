"""The replay's broker side on the embedded broker: sends with the marker, finds them again,
and settles a crashed run's sends from the log instead of sending twice."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from confluent_kafka import Consumer, TopicPartition
from confluent_kafka.admin import AdminClient, NewTopic

from pipeline.contract.replay import ReplayMarker, from_headers
from pipeline.dlq.kafka import BrokerUnavailable, KafkaBroker, Outgoing
from pipeline.dlq.ledger import SENDING, SENT, Entry, Ledger
from pipeline.dlq.replay import Replay
from pipeline.dlq.selection import make_filters
from pipeline.dlq.suppression import NoSuppressions
from pipeline.lake.views import connect
from pipeline.runtime.kafka_security import cluster
from pipeline.tools.broker import EmbeddedBroker
from tests.unit.dlq.lake import dead_letter, write_dlq


@pytest.fixture
def topic(broker: EmbeddedBroker) -> str:
    name = f"replay-{uuid.uuid4().hex[:8]}.events.raw"
    admin = AdminClient({"bootstrap.servers": broker.bootstrap})
    for future in admin.create_topics([NewTopic(name, 2, 1)]).values():
        future.result(30)
    return name


@pytest.fixture
def kafka(broker: EmbeddedBroker) -> Iterator[KafkaBroker]:
    client = KafkaBroker(cluster(broker.bootstrap), timeout=20)
    yield client
    client.close()


def message(key: str, partition: int) -> Outgoing:
    return Outgoing(key, partition, b'{"event_id": "e1"}', b"anon", ReplayMarker(key, 1, True))


def test_sends_land_on_their_partition_and_a_scan_finds_them(
    kafka: KafkaBroker, topic: str
) -> None:
    assert kafka.partitions(topic) == 2
    results = kafka.send(topic, [message("k0", 1), message("k1", 1), message("k2", 0)])
    assert results == {"k0": 0, "k1": 1, "k2": 0}
    ends = kafka.end_offsets(topic, {0, 1})
    assert ends[0] == 1
    # The embedded broker may report the end of a batch sent at once one short; a scan
    # from an end offset read before sending starts early, never late.
    assert 1 <= ends[1] <= 2
    found = kafka.scan(topic, 1, 0, {"k0", "k1", "never"})
    assert found.found == {"k0": 0, "k1": 1}
    assert found.complete
    assert kafka.scan(topic, 1, 1, {"k0", "k1"}).found == {"k1": 1}  # from its start only


def test_a_missing_topic_is_a_clear_error(kafka: KafkaBroker) -> None:
    with pytest.raises(BrokerUnavailable, match="does not exist"):
        kafka.partitions("no-such-topic.events.raw")


def markers(broker: EmbeddedBroker, topic: str, partition: int) -> list[str]:
    """The replay markers of every message of the partition, in order."""
    consumer = Consumer(
        {
            "bootstrap.servers": broker.bootstrap,
            "group.id": "test-markers",
            "enable.partition.eof": True,
        }
    )
    consumer.assign([TopicPartition(topic, partition, 0)])
    out = []
    try:
        while (msg := consumer.poll(20)) is not None and msg.error() is None:
            marker = from_headers(msg.headers())
            out.append(marker.of if marker else "")
    finally:
        consumer.close()
    return out


def test_a_crashed_runs_send_is_found_and_not_sent_again(
    broker: EmbeddedBroker, kafka: KafkaBroker, topic: str, tmp_path: Path
) -> None:
    write_dlq(tmp_path, [dead_letter(1, partition=1), dead_letter(2, partition=1)], "a")
    ledger = Ledger(tmp_path / "lake")
    # The crashed run: both recorded as sending, only the first went out.
    ledger.write(
        [
            Entry("events.raw:1:1:0", SENDING, "crashed", topic, 1, 0),
            Entry("events.raw:1:2:0", SENDING, "crashed", topic, 1, 0),
        ]
    )
    kafka.send(topic, [message("events.raw:1:1:0", 1)])

    report = Replay(connect(tmp_path), ledger, kafka, topic, NoSuppressions()).run(
        make_filters(), dry_run=False
    )
    assert report.settled == 2
    assert report.already_replayed == 1
    assert report.replayed == 1  # the one the crash kept from going out
    assert markers(broker, topic, 1) == ["events.raw:1:1:0", "events.raw:1:2:0"]  # once each
    found = kafka.scan(topic, 1, 0, {"events.raw:1:1:0", "events.raw:1:2:0"}).found
    assert found == {"events.raw:1:1:0": 0, "events.raw:1:2:0": 1}
    states = Ledger(tmp_path / "lake").states()
    assert {k: (e.state, e.sent_offset) for k, e in states.items()} == {
        "events.raw:1:1:0": (SENT, 0),
        "events.raw:1:2:0": (SENT, 1),
    }
