"""The collector's Kafka side: an idempotent producer and one delivery wait per request.

A request is answered 200 only after Kafka acknowledged every message of it (``acks=all``,
idempotent: a librdkafka retry never writes a message twice). Producing never waits: each
message gets the request's ``Delivery`` as its callback and the request awaits one future,
resolved by the last callback. The callbacks are served on the event loop itself (a
``poll(0)`` every millisecond while deliveries are outstanding, every 100 ms otherwise):
no thread, no lock, no thread hop and no GIL hand-over per request (the first version's
poll thread had all three; the loop-served reports measured less CPU per request).

Kafka is "unavailable" (503 at once, nothing produced) after librdkafka reports that every
broker is down or a delivery failed, until a metadata request succeeds again; a fatal
producer error (idempotence broken) makes it unavailable for good, and ``/health`` fails
so that the process is restarted.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Sequence

from confluent_kafka import KafkaError, KafkaException, Message, Producer

from pipeline.runtime.kafka_security import KafkaCluster

log = logging.getLogger("trackflow.collector")

PROBE_SECONDS = 1.0  # while unavailable: how often a metadata request checks Kafka
ERROR_LOG_SECONDS = 60.0  # one log line per kind of client error and minute
BUSY_POLL_SECONDS = 0.001  # serve delivery reports this often while requests wait
IDLE_POLL_SECONDS = 0.1  # and this often otherwise (client errors, statistics)

Headers = list[tuple[str, str | bytes | None]]


class Delivery:
    """The acknowledgements of one request's messages: ``wait`` until all are in.

    Everything here runs on the event loop (callbacks are served by ``poll(0)`` there).
    """

    __slots__ = ("_future", "_owner", "_pending", "_timer", "error", "failed")

    def __init__(self, owner: EventProducer, messages: int) -> None:
        self._owner = owner
        self._future: asyncio.Future[None] = owner.loop.create_future()
        self._pending = messages
        self._timer: asyncio.TimerHandle | None = None
        self.failed = 0
        self.error: str | None = None
        if messages == 0:
            self._future.set_result(None)
        else:
            owner.outstanding += 1

    def __call__(self, err: KafkaError | None, _msg: Message) -> None:
        if err is not None:
            self.failed += 1
            if self.error is None:
                self.error = err.name()
        self._pending -= 1
        if self._pending == 0:
            self._finish()

    def unsent(self, n: int, error: str) -> None:
        """``n`` messages were never handed to the producer (its queue was full)."""
        self.failed += n
        self.error = self.error or error
        self._pending -= n
        if self._pending == 0:
            self._finish()

    def _finish(self) -> None:
        if not self._future.done():
            self._future.set_result(None)
            self._owner.outstanding -= 1
        if self._timer is not None:
            self._timer.cancel()

    def _expire(self) -> None:
        if self.error is None:
            self.error = "timed out waiting for Kafka"
        if not self._future.done():
            self._future.set_result(None)
            self._owner.outstanding -= 1

    async def wait(self, seconds: float) -> bool:
        """True when every message was acknowledged within ``seconds``."""
        if not self._future.done():
            self._timer = self._owner.loop.call_later(seconds, self._expire)
            await self._future
        return self.failed == 0 and self._pending == 0


class EventProducer:
    """events.raw's producer for the collector; ``send`` never blocks. ``start`` on the
    event loop that will await the deliveries."""

    def __init__(self, kafka: KafkaCluster, topic: str, delivery_timeout: float) -> None:
        self.topic = topic
        self.available = True
        self.fatal: str | None = None
        self.last_error: str | None = None
        self.outstanding = 0  # requests waiting for acknowledgements
        self.partitions = 0  # of the topic, from metadata; 0 until known
        self._warned: dict[str, float] = {}
        self._timer: asyncio.TimerHandle | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        timeout_ms = int(delivery_timeout * 1000)
        self._producer = Producer(
            {
                **kafka.confluent(),
                "enable.idempotence": True,
                "acks": "all",
                # A request waits for its acks: a short linger keeps that wait short, and
                # concurrent requests still share produce batches.
                "linger.ms": 2,
                # The worker's aiokafka reads only uncompressed or gzip batches here.
                "compression.type": "none",
                "message.timeout.ms": timeout_ms,
                "request.timeout.ms": max(1000, min(timeout_ms, 30_000)),
                "queue.buffering.max.messages": 100_000,
                "log.connection.close": False,
                # librdkafka's own lines (a connection refused every few ms while a broker
                # is down) stay quiet: errors reach _on_error and are logged from there.
                "log_level": 2,
                "error_cb": self._on_error,
            }
        )

    def start(self, loop: asyncio.AbstractEventLoop) -> None:
        self._loop = loop
        self._serve()

    @property
    def loop(self) -> asyncio.AbstractEventLoop:
        if self._loop is None:
            raise RuntimeError("EventProducer.start(loop) was not called")
        return self._loop

    def _serve(self) -> None:
        self._producer.poll(0)
        delay = BUSY_POLL_SECONDS if self.outstanding else IDLE_POLL_SECONDS
        self._timer = self.loop.call_later(delay, self._serve)

    def __len__(self) -> int:
        """Messages waiting in the producer's queue (not yet acknowledged)."""
        return len(self._producer)

    def _on_error(self, err: KafkaError) -> None:
        self.last_error = err.name()
        if err.fatal():
            self.fatal = err.str()
            self.available = False
            log.critical("Kafka producer fatal error, the collector must restart: %s", err.str())
        elif err.code() == KafkaError._ALL_BROKERS_DOWN:
            if self.available:
                log.warning("Kafka unavailable: all brokers are down")
            self.available = False
        else:  # e.g. one broker gone, authentication: once a minute per kind
            now = time.monotonic()
            if now - self._warned.get(err.name(), -ERROR_LOG_SECONDS) >= ERROR_LOG_SECONDS:
                self._warned[err.name()] = now
                log.warning("Kafka client error: %s", err.str())

    def send(self, messages: Sequence[tuple[int, bytes, bytes]], headers: Headers) -> Delivery:
        """Produce ``(partition, key, value)`` messages; the returned ``Delivery`` says when
        Kafka has them all."""
        delivery = Delivery(self, len(messages))
        produce, topic = self._producer.produce, self.topic
        sent = 0
        try:
            for partition, key, value in messages:
                produce(topic, value, key, partition, headers=headers, on_delivery=delivery)
                sent += 1
        except BufferError:
            delivery.unsent(len(messages) - sent, "the producer queue is full")
        except KafkaException as exc:
            error = exc.args[0].name() if exc.args else "produce failed"
            delivery.unsent(len(messages) - sent, error)
        if self._timer is not None and sent:  # serve the acks at the busy pace from now
            self._timer.cancel()
            self._timer = self.loop.call_later(BUSY_POLL_SECONDS, self._serve)
        return delivery

    def delivered(self, delivery: Delivery) -> None:
        """Learn from a request's outcome: a failure makes Kafka unavailable until a probe
        succeeds; an acknowledged request shows it is back."""
        if delivery.failed or delivery.error:
            if self.available:
                log.warning("Kafka unavailable: %s", delivery.error)
            self.available = False
            self.last_error = delivery.error
        elif self.fatal is None:
            self.available = True

    def probe(self) -> bool:
        """One metadata request (blocking, run in a thread): is Kafka reachable, and how
        many partitions has the topic (they may be added while the collector runs)?"""
        if self.fatal is not None:
            return False
        try:
            metadata = self._producer.list_topics(self.topic, timeout=PROBE_SECONDS)
        except KafkaException:
            return False
        topic = metadata.topics.get(self.topic)
        if topic is None or topic.error is not None or not topic.partitions:
            return False
        self.partitions = len(topic.partitions)
        if not self.available:
            log.warning("Kafka available again")
        self.available = True
        return True

    def close(self, timeout: float) -> int:
        """Wait up to ``timeout`` seconds for what was produced (on the loop's thread: the
        delivery callbacks touch its futures); the number of messages left unsent."""
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        return int(self._producer.flush(max(0.0, timeout)))
