"""Producing to events.raw: JSON lines from a file, or simulated traffic."""

from __future__ import annotations

import hashlib
import sys
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any, BinaryIO

import orjson
from confluent_kafka import KafkaError, Message, Producer

from pipeline.runtime.kafka_security import KafkaCluster, cluster

MAX_MESSAGE_BYTES = 1_000_000  # the Kafka default message.max.bytes
POLL_EVERY = 1000  # sends between two serves of delivery callbacks
READ_CHUNK = 1 << 20  # bytes read at a time by read_lines
_NOT_JSON = object()


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
    yield from split_decoded(line, decoded)


def split_decoded(line: bytes, decoded: Any) -> Iterator[tuple[bytes, bytes]]:
    """split_line for a line already decoded to ``decoded``."""
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
    """A librdkafka producer to one topic, counting what it sends and what fails.

    Only failed deliveries come back to Python (``delivery.report.only.error``, with one
    producer-wide callback): a Python call and a Message object per delivered message were,
    after JSON decoding, the largest cost of ``trackflow produce``. Sends serve delivery
    reports every ``POLL_EVERY`` messages, ``flush`` serves the rest. ``config`` adds or
    overrides librdkafka settings.
    """

    def __init__(
        self, bootstrap: KafkaCluster | str, topic: str, config: Mapping[str, Any] | None = None
    ) -> None:
        self.topic = topic
        self.stats = ProduceStats()
        self.errors: list[str] = []
        self._unpolled = 0
        self._producer = Producer(
            {
                **cluster(bootstrap).confluent(),  # a bootstrap string: plaintext
                "linger.ms": 5,
                "acks": "all",
                # librdkafka retries a request whose answer timed out; without idempotence
                # the broker may append it twice (the hour soak found 16 such copies under
                # load). The worker would drop them as retries, but counts must be exact.
                "enable.idempotence": True,
                # The worker's aiokafka reads only uncompressed or gzip batches here (no lz4,
                # snappy or zstd module installed), and a local broker has no network to save.
                "compression.type": "none",
                "message.max.bytes": MAX_MESSAGE_BYTES + 10_000,
                "queue.buffering.max.messages": 200_000,
                "log.connection.close": False,
                # librdkafka logs at info level to stderr by default; at close it may say
                # "Purging 1 unserved events from background queue", which broke the
                # one-line summary `trackflow produce` prints there. Warnings and errors
                # (an unreachable broker) still show.
                "log_level": 4,
                "delivery.report.only.error": True,
                "on_delivery": self._delivered,
                **(config or {}),
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
        try:
            self._producer.produce(self.topic, value, key)
        except BufferError:
            self._produce_when_room(key, value)
        self.stats.messages += 1
        self.stats.bytes += len(value)
        self._unpolled += 1
        if self._unpolled >= POLL_EVERY:
            self._unpolled = 0
            self._producer.poll(0)

    def _produce_when_room(self, key: bytes | None, value: bytes) -> None:
        """Produce once the local queue, which was full, has room: wait for deliveries."""
        while True:
            self._producer.poll(0.05)
            try:
                self._producer.produce(self.topic, value, key)
                return
            except BufferError:
                continue

    def send_lines(self, lines: Iterable[bytes]) -> None:
        """``send(key, value)`` for each ``(key, value)`` of ``split_line(line)``, in order.

        The common case, a line that is one event object, is inlined (one JSON decode, no
        Python call per line): at hundreds of thousands of lines a second, each call shows.
        """
        loads, decode_error = orjson.loads, orjson.JSONDecodeError
        produce, poll, topic = self._producer.produce, self._producer.poll, self.topic
        messages = size = 0
        try:
            for line in lines:
                try:
                    decoded = loads(line)
                except decode_error:
                    decoded = _NOT_JSON
                if type(decoded) is not dict or len(line) > MAX_MESSAGE_BYTES:
                    if decoded is _NOT_JSON:
                        self.send(content_key(line), line)
                    else:
                        for key, value in split_decoded(line, decoded):
                            self.send(key, value)
                    continue
                # event_key, inlined: orjson makes exact str objects
                found = decoded.get("anonymous_id")
                if type(found) is not str or not found:
                    found = decoded.get("user_id")
                key = found.encode() if type(found) is str and found else content_key(line)
                try:
                    produce(topic, line, key)
                except BufferError:
                    self._produce_when_room(key, line)
                messages += 1
                size += len(line)
                if not messages % POLL_EVERY:
                    poll(0)
        finally:
            self.stats.messages += messages
            self.stats.bytes += size

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
    producer.send_lines(lines)
    producer.flush()
    return producer.stats


def read_lines(stream: BinaryIO, chunk: int = READ_CHUNK) -> Iterator[bytes]:
    """The lines of ``stream`` (split at \\n, trailing \\r removed), blank ones skipped.

    Reads up to ``chunk`` bytes at a time with ``read1``, which returns what a pipe holds
    rather than waiting for a full chunk, so lines from stdin go out as they arrive.
    """
    read = getattr(stream, "read1", stream.read)
    pending: list[bytes] = []  # the start of a line that no chunk has ended yet
    while data := read(chunk):
        if b"\n" not in data:
            pending.append(data)
            continue
        lines = data.split(b"\n")
        if pending:
            pending.append(lines[0])
            lines[0] = b"".join(pending)
            pending = []
        tail = lines.pop()
        if tail:
            pending.append(tail)
        if b"\r" in data or lines[0].endswith(b"\r"):
            lines = [line.rstrip(b"\r") for line in lines]
        for line in lines:
            if line.strip():
                yield line
    line = b"".join(pending).rstrip(b"\r")
    if line.strip():
        yield line


def open_input(path: str) -> BinaryIO:
    return sys.stdin.buffer if path == "-" else open(path, "rb")
