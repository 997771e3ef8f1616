"""The collector's Kafka side: an idempotent producer and one delivery wait per request.

A request is answered 200 only after Kafka acknowledged every message of it (``acks=all``,
idempotent: a librdkafka retry never writes a message twice). Producing never waits: each
message gets the request's ``Delivery`` as its callback, a background thread serves the
callbacks, and the request's coroutine awaits one future, resolved by the last callback.
No per-event await, one thread hop per request.

Kafka is "unavailable" (503 at once, nothing produced) after librdkafka reports that every
broker is down or a delivery failed, until a metadata request succeeds again; a fatal
producer error (idempotence broken) makes it unavailable for good, and ``/health`` fails
so that the process is restarted.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
import time
from collections.abc import Sequence
from typing import Any

from confluent_kafka import KafkaError, KafkaException, Message, Producer

from pipeline.runtime.kafka_security import KafkaCluster

log = logging.getLogger("trackflow.collector")

PROBE_SECONDS = 1.0  # while unavailable: how often a metadata request checks Kafka
ERROR_LOG_SECONDS = 60.0  # one log line per kind of client error and minute


class Delivery:
    """Waits for the acknowledgements of one request's messages.

    The callback runs on the poll thread, the guard release on the event loop: the count
    is kept under a lock, and the future is resolved on the loop once it reaches zero.
    """

    __slots__ = ("_future", "_lock", "_loop", "_pending", "error", "failed")

    def __init__(self, loop: asyncio.AbstractEventLoop, messages: int) -> None:
        self._loop = loop
        self._future: asyncio.Future[None] = loop.create_future()
        self._lock = threading.Lock()
        self._pending = messages + 1  # +1: released once every message was handed over
        self.failed = 0
        self.error: str | None = None

    def __call__(self, err: KafkaError | None, _msg: Message) -> None:
        if err is None:
            self._release(1)
        else:
            self._release(1, 1, err.name())

    def _release(self, n: int, failed: int = 0, error: str | None = None) -> None:
        with self._lock:
            self._pending -= n
            self.failed += failed
            if error is not None and self.error is None:
                self.error = error
            done = self._pending == 0
        if done:
            # RuntimeError: the loop is closed, nobody waits any more.
            with contextlib.suppress(RuntimeError):
                self._loop.call_soon_threadsafe(self._resolve)

    def _resolve(self) -> None:
        if not self._future.done():
            self._future.set_result(None)

    async def wait(self, seconds: float) -> bool:
        """True when every message was acknowledged within ``seconds``."""
        try:
            await asyncio.wait_for(asyncio.shield(self._future), seconds)
        except TimeoutError:
            with self._lock:
                if self.error is None:
                    self.error = "timed out waiting for Kafka"
            return False
        return self.failed == 0


class EventProducer:
    """events.raw's producer for the collector; ``send`` never blocks."""

    def __init__(self, kafka: KafkaCluster, topic: str, delivery_timeout: float) -> None:
        self.topic = topic
        self.available = True
        self.fatal: str | None = None
        self.last_error: str | None = None
        self._warned: dict[str, float] = {}
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
        self._stop = threading.Event()
        self._poller = threading.Thread(target=self._poll, name="collector-kafka", daemon=True)
        self._poller.start()

    def __len__(self) -> int:
        """Messages waiting in the producer's queue (not yet acknowledged)."""
        return len(self._producer)

    def _poll(self) -> None:
        while not self._stop.is_set():
            self._producer.poll(0.1)

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

    def send(
        self,
        loop: asyncio.AbstractEventLoop,
        messages: Sequence[tuple[bytes, bytes]],
        headers: list[tuple[str, str | bytes | None]],
    ) -> Delivery:
        """Produce ``messages``; the returned ``Delivery`` says when Kafka has them all."""
        delivery = Delivery(loop, len(messages))
        produce, topic = self._producer.produce, self.topic
        sent = 0
        error: str | None = None
        try:
            for key, value in messages:
                produce(topic, value, key, headers=headers, on_delivery=delivery)
                sent += 1
        except BufferError:
            error = "the producer queue is full"
        except KafkaException as exc:
            error = exc.args[0].name() if exc.args else "produce failed"
        unsent = len(messages) - sent
        delivery._release(1 + unsent, unsent, error)
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
        """One metadata request (blocking, run in a thread): is Kafka reachable again?"""
        if self.fatal is not None:
            return False
        try:
            self._producer.list_topics(self.topic, timeout=PROBE_SECONDS)
        except KafkaException:
            return False
        if not self.available:
            log.warning("Kafka available again")
        self.available = True
        return True

    def close(self, timeout: float) -> int:
        """Wait up to ``timeout`` seconds for what was produced; the number left unsent."""
        deadline = time.monotonic() + timeout
        left = self._producer.flush(max(0.0, timeout))
        self._stop.set()
        self._poller.join(max(0.1, deadline - time.monotonic()))
        return int(left)

    def metadata_ok(self, timeout: float) -> Any:
        """The topic's metadata (start-up check), or raises ``KafkaException``."""
        return self._producer.list_topics(self.topic, timeout=timeout)
