"""The broker side of a replay: send dead letters back to events.raw, find them again.

``Broker`` is what ``pipeline.dlq.replay`` needs; ``KafkaBroker`` is it on librdkafka,
and the unit tests use a fake. Every wait is bounded: a broker that does not answer ends
the command with an error, never a hang.
"""

from __future__ import annotations

import time
import uuid
from dataclasses import dataclass
from functools import partial
from typing import Any, Protocol

from confluent_kafka import Consumer, KafkaError, KafkaException, Message, Producer, TopicPartition

from pipeline.contract.replay import HEADER, ReplayMarker, from_headers
from pipeline.names import HEADER_SOURCE

TIMEOUT_SECONDS = 30.0
# How long a request the producer gave up on may still be appended by the broker: longer
# than a broker takes to handle one request it has read.
SETTLE_GRACE_SECONDS = 3.0
# librdkafka logs every failed connection attempt to stderr (dozens a second while a broker
# is down); the command ends with one message naming the cause instead.
QUIET = {"log.connection.close": False, "log_level": 2}


class BrokerUnavailable(RuntimeError):
    """The broker cannot be reached or lacks the topic; the message says which."""


@dataclass(frozen=True)
class Outgoing:
    dead_letter: str  # its key: results are reported by it
    partition: int
    value: bytes
    key: bytes | None
    marker: ReplayMarker
    source: str | None = None  # the collector source the dead letter came from


@dataclass
class ScanResult:
    found: dict[str, int]  # dead letter key -> offset of its replay
    complete: bool  # every offset from the start to the end was read


class Cluster(Protocol):
    """How to reach the cluster: ``pipeline.runtime.kafka_security.KafkaCluster``."""

    def confluent(self) -> dict[str, Any]: ...


class Broker(Protocol):
    def partitions(self, topic: str) -> int: ...

    def end_offsets(self, topic: str, partitions: set[int]) -> dict[int, int]: ...

    def send(self, topic: str, messages: list[Outgoing]) -> dict[str, int | str]:
        """Offset of each dead letter's message, or the error that kept it out."""
        ...

    def scan(self, topic: str, partition: int, start: int, keys: set[str]) -> ScanResult: ...

    def close(self) -> None: ...


class KafkaBroker:
    def __init__(self, cluster: Cluster, timeout: float = TIMEOUT_SECONDS) -> None:
        self.cluster = cluster
        self.timeout = timeout
        self._meta = Consumer({**cluster.confluent(), **self._consumer_config()})

    def _consumer_config(self) -> dict[str, Any]:
        return {
            "group.id": f"trackflow-dlq-replay-{uuid.uuid4().hex}",  # never joins: assign only
            "enable.auto.commit": False,
            "enable.partition.eof": True,
            **QUIET,
        }

    def partitions(self, topic: str) -> int:
        try:  # all topics: asking for one by name could make the broker auto-create it
            meta = self._meta.list_topics(timeout=self.timeout)
        except KafkaException as exc:
            raise BrokerUnavailable(f"cannot reach the broker: {exc}") from None
        found = meta.topics.get(topic)
        if found is None or found.error is not None or not found.partitions:
            raise BrokerUnavailable(f"topic {topic} does not exist on the broker")
        return len(found.partitions)

    def end_offsets(self, topic: str, partitions: set[int]) -> dict[int, int]:
        try:
            return {
                p: int(
                    self._meta.get_watermark_offsets(
                        TopicPartition(topic, p), timeout=self.timeout, cached=False
                    )[1]
                )
                for p in sorted(partitions)
            }
        except KafkaException as exc:
            raise BrokerUnavailable(f"cannot read the end offsets of {topic}: {exc}") from None

    def send(self, topic: str, messages: list[Outgoing]) -> dict[str, int | str]:
        results: dict[str, int | str] = {}

        def delivered(key: str, err: KafkaError | None, msg: Message) -> None:
            results[key] = str(err) if err is not None else int(msg.offset() or 0)

        producer = Producer(
            {
                **self.cluster.confluent(),
                "acks": "all",
                # No copies from the producer's own retries: replay promises at most once.
                "enable.idempotence": True,
                "linger.ms": 5,
                "compression.type": "none",  # what the worker's aiokafka reads here
                "message.max.bytes": 1_010_000,
                "message.timeout.ms": int(self.timeout * 1000),
                **QUIET,
            }
        )
        for m in messages:
            send = partial(
                producer.produce,
                topic,
                m.value,
                m.key,
                partition=m.partition,
                headers=_headers(m),
                on_delivery=partial(delivered, m.dead_letter),
            )
            while True:
                try:
                    send()
                    break
                except BufferError:
                    producer.poll(0.05)
        if producer.flush(self.timeout + 5):
            # Still queued or in flight: abort them here, so that none is delivered after
            # the caller has read the log and called it not sent (it would then be sent
            # twice by the next run). A request already on the wire may still be
            # appended: the caller waits SETTLE_GRACE_SECONDS before it reads the log.
            producer.purge(in_queue=True, in_flight=True, blocking=False)
            producer.flush(0)  # serves the purged messages' callbacks
        for m in messages:
            results.setdefault(m.dead_letter, "not acknowledged in time")
        return results

    def scan(self, topic: str, partition: int, start: int, keys: set[str]) -> ScanResult:
        """Read ``partition`` from ``start`` to its end for replays of ``keys``."""
        consumer = Consumer({**self.cluster.confluent(), **self._consumer_config()})
        found: dict[str, int] = {}
        try:
            low, _high = consumer.get_watermark_offsets(
                TopicPartition(topic, partition), timeout=self.timeout, cached=False
            )
            consumer.assign([TopicPartition(topic, partition, max(start, low))])
            deadline = time.monotonic() + self.timeout  # without any message read
            while time.monotonic() < deadline:
                msg = consumer.poll(1.0)
                if msg is None:
                    continue
                deadline = time.monotonic() + self.timeout
                err = msg.error()
                if err is not None:
                    if err.code() == KafkaError._PARTITION_EOF:
                        return ScanResult(found, complete=low <= start)
                    raise BrokerUnavailable(f"reading {topic}[{partition}]: {err}")
                marker = from_headers(msg.headers())
                if marker is not None and marker.of in keys:
                    found.setdefault(marker.of, int(msg.offset() or 0))
            return ScanResult(found, complete=False)
        except KafkaException as exc:
            raise BrokerUnavailable(f"reading {topic}[{partition}]: {exc}") from None
        finally:
            consumer.close()

    def close(self) -> None:
        self._meta.close()


def _headers(m: Outgoing) -> list[tuple[str, str | bytes | None]]:
    """The replay marker, and the source: a replayed collector event keeps its source."""
    headers: list[tuple[str, str | bytes | None]] = [(HEADER, m.marker.encode())]
    if m.source:
        headers.append((HEADER_SOURCE, m.source.encode()))
    return headers
