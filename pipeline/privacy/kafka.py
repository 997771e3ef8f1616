"""The broker side of privacy for the CLI and the deletion: the request log, map tombstones.

Every record goes out alone (one message per produce request, flushed and acknowledged
before the call returns): the embedded broker reports a partition's end as its last
batch's base offset + 1, so a batch of one keeps the end exact for the workers' barrier.
"""

from __future__ import annotations

import time
import uuid
from typing import Any, Protocol

import orjson
from confluent_kafka import Consumer, KafkaError, KafkaException, Message, Producer, TopicPartition

from pipeline.privacy.requests import BadRequest, Request

TIMEOUT_SECONDS = 30.0
QUIET = {"log.connection.close": False, "log_level": 2}
COMPACTED = {"cleanup.policy": "compact"}


class BrokerUnavailable(RuntimeError):
    """The broker did not acknowledge or answer in time; the message says what."""


class Cluster(Protocol):
    def confluent(self) -> dict[str, Any]: ...


class RequestLog:
    """``privacy.requests`` (and tombstones to ``identity.links``) over librdkafka."""

    def __init__(
        self, cluster: Cluster, topic: str, links_topic: str, timeout: float = TIMEOUT_SECONDS
    ) -> None:
        self.cluster = cluster
        self.topic = topic
        self.links_topic = links_topic
        self.timeout = timeout
        self._producer: Producer | None = None

    def _produce(self, topic: str, key: bytes, value: bytes) -> int:
        if self._producer is None:
            self._producer = Producer(
                {
                    **self.cluster.confluent(),
                    "acks": "all",
                    "enable.idempotence": True,
                    "linger.ms": 0,
                    "compression.type": "none",
                    "message.timeout.ms": int(self.timeout * 1000),
                    **QUIET,
                }
            )
        result: dict[str, Any] = {}

        def delivered(err: KafkaError | None, msg: Message) -> None:
            result["err"], result["offset"] = err, msg.offset()

        self._producer.produce(topic, value, key, partition=0, on_delivery=delivered)
        self._producer.flush(self.timeout + 5)
        if "err" not in result:
            raise BrokerUnavailable(f"{topic}: not acknowledged within {self.timeout:.0f} s")
        if result["err"] is not None:
            raise BrokerUnavailable(f"{topic}: {result['err']}")
        return int(result["offset"])

    def append(self, request: Request) -> int:
        """Record ``request``; returns its offset once the broker acknowledged it."""
        return self._produce(self.topic, request.request_id.encode(), request.encode())

    def forget(self, request_id: str, nodes: list[str], undo: bool = False) -> int:
        """Ask the identity writer to drop (``undo``: readmit) identifiers from the map."""
        value = orjson.dumps(
            {"unforget" if undo else "forget": sorted(nodes), "request": request_id}
        )
        return self._produce(self.links_topic, request_id.encode(), value)

    def has_topic(self, topic: str) -> bool:
        consumer = self._consumer()
        try:
            meta = consumer.list_topics(timeout=self.timeout)
        except KafkaException as exc:
            raise BrokerUnavailable(f"cannot reach the broker: {exc}") from None
        finally:
            consumer.close()
        found = meta.topics.get(topic)
        return found is not None and found.error is None and bool(found.partitions)

    def _consumer(self) -> Consumer:
        return Consumer(
            {
                **self.cluster.confluent(),
                "group.id": f"trackflow-privacy-{uuid.uuid4().hex}",  # assign only
                "enable.auto.commit": False,
                "enable.partition.eof": True,
                **QUIET,
            }
        )

    def read_all(self) -> list[Request]:
        """Every request record from the start to the end of the log, in log order."""
        consumer = self._consumer()
        out: list[Request] = []
        try:
            consumer.assign([TopicPartition(self.topic, 0, 0)])
            deadline = time.monotonic() + self.timeout
            while time.monotonic() < deadline:
                msg = consumer.poll(0.5)
                if msg is None:
                    continue
                err = msg.error()
                if err is not None:
                    if err.code() == KafkaError._PARTITION_EOF:
                        return out
                    raise BrokerUnavailable(f"reading {self.topic}: {err}")
                deadline = time.monotonic() + self.timeout
                try:
                    out.append(Request.decode(msg.value(), int(msg.offset() or 0)))
                except BadRequest:
                    continue  # not ours: skipped, as the workers do
            raise BrokerUnavailable(f"reading {self.topic}: no answer within {self.timeout:.0f} s")
        except KafkaException as exc:
            raise BrokerUnavailable(f"reading {self.topic}: {exc}") from None
        finally:
            consumer.close()

    def close(self) -> None:
        if self._producer is not None:
            self._producer.flush(5)
            self._producer = None
