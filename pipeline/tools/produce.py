"""Producing to events.raw: JSON lines from a file, or simulated traffic."""

from __future__ import annotations

import hashlib
import sys
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import Any, BinaryIO

import orjson
from confluent_kafka import KafkaError, Message, Producer

from pipeline.runtime.kafka_security import KafkaCluster, cluster

MAX_MESSAGE_BYTES = 1_000_000  # the Kafka default message.max.bytes


def event_key(event: Any) -> bytes | None:
    """Producers key by anonymous_id, else user_id (DESIGN section 5)."""
    if isinstance(event, dict):
        for field in ("anonymous_id", "user_id"):
            value = event.get(field)
            if isinstance(value, str) and value:
                return value.encode()
    return None


def content_key(value: bytes) -> bytes:
    """Key of a message with no usable id: its digest, so an identical retry meets the
    first copy's dedup memory on the same partition."""
    return b"~" + hashlib.blake2b(value, digest_size=8).hexdigest().encode()


def split_line(line: bytes) -> Iterator[tuple[bytes, bytes]]:
    """(key, value) messages for one JSON line.

    A batch whose events belong to several keys is split into one batch per key, in first
    appearance order: dedup memory is per partition, so an event must land on its own
    key's partition whether it was first sent alone or inside some batch. Lines that are not
    JSON are sent as they are (the pipeline dead-letters them).
    """
    try:
        decoded = orjson.loads(line)
    except orjson.JSONDecodeError:
        yield content_key(line), line
        return
    if not isinstance(decoded, list) or not decoded:
        yield event_key(decoded) or content_key(line), line
        return
    groups: dict[bytes, list[Any]] = {}
    for element in decoded:
        groups.setdefault(event_key(element) or content_key(orjson.dumps(element)), []).append(
            element
        )
    if len(groups) == 1:
        yield next(iter(groups)), line
        return
    for key, elements in groups.items():
        yield key, orjson.dumps(elements)


@dataclass
class ProduceStats:
    messages: int = 0
    failed: int = 0
    bytes: int = 0


class RawProducer:
    def __init__(self, bootstrap: KafkaCluster | str, topic: str) -> None:
        self.topic = topic
        self.stats = ProduceStats()
        self.errors: list[str] = []
        self._producer = Producer(
            {
                **cluster(bootstrap).confluent(),  # a bootstrap string: plaintext
                "linger.ms": 5,
                "acks": "all",
                "compression.type": "none",
                "message.max.bytes": MAX_MESSAGE_BYTES + 10_000,
                "queue.buffering.max.messages": 200_000,
                "log.connection.close": False,
            }
        )

    def _delivered(self, err: KafkaError | None, msg: Message) -> None:
        if err is not None:
            self.stats.failed += 1
            if len(self.errors) < 20:
                self.errors.append(str(err))

    def send(self, key: bytes | None, value: bytes) -> None:
        if len(value) > MAX_MESSAGE_BYTES:
            self.stats.failed += 1
            self.errors.append(f"message of {len(value)} bytes is over the broker limit")
            return
        while True:
            try:
                self._producer.produce(
                    self.topic, value=value, key=key, on_delivery=self._delivered
                )
                break
            except BufferError:
                self._producer.poll(0.05)
        self.stats.messages += 1
        self.stats.bytes += len(value)
        self._producer.poll(0)

    def flush_soon(self) -> None:
        """Serve delivery callbacks without blocking (pacing loops call this while idle)."""
        self._producer.poll(0)

    def close(self, timeout: float = 5.0) -> None:
        """Deliver what is queued and release the client, so that it does not keep
        reconnecting (and logging) once the broker is gone."""
        self.flush(timeout)
        self._producer = None  # type: ignore[assignment]  # the last reference: destroyed

    def flush(self, timeout: float = 60.0) -> int:
        remaining = int(self._producer.flush(timeout))
        if remaining:
            self.errors.append(f"{remaining} messages still undelivered after {timeout}s")
        self.stats.failed += remaining
        return remaining


def produce_lines(producer: RawProducer, lines: Iterable[bytes]) -> ProduceStats:
    for line in lines:
        for key, value in split_line(line):
            producer.send(key, value)
    producer.flush()
    return producer.stats


def read_lines(stream: BinaryIO) -> Iterator[bytes]:
    for raw in stream:
        line = raw.rstrip(b"\r\n")
        if line.strip():
            yield line


def open_input(path: str) -> BinaryIO:
    return sys.stdin.buffer if path == "-" else open(path, "rb")
