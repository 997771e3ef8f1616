"""The collector's Prometheus metrics, on a registry of its own (served at ``/metrics``).

Labels are bounded: ``source`` is a name of the sources file or ``_unknown`` (no or a wrong
write key, or an answer given before the key was read); ``code`` an HTTP status.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    ProcessCollector,
    generate_latest,
)

from pipeline import __version__

UNKNOWN_SOURCE = "_unknown"
# Request latency: a request waits for Kafka's acks (acks=all), a few ms on a healthy
# cluster; the top buckets show the delivery timeout.
LATENCY_BUCKETS = (0.002, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10)
REJECT_REASONS = ("rate_limited", "kafka_unavailable", "source_disabled")


class CollectorMetrics:
    def __init__(self) -> None:
        self._children: dict[tuple[str, int], tuple[Any, Any]] = {}
        r = self.registry = CollectorRegistry()
        ProcessCollector(registry=r)
        self.build_info = Gauge(
            "trackflow_collector_build_info",
            "1 for every running collector (alerts find collector targets by it).",
            ["version"],
            registry=r,
        )
        self.build_info.labels(__version__).set(1)
        self.requests = Counter(
            "trackflow_collector_requests_total",
            "HTTP requests to the Tracking API endpoints, by source and answer code.",
            ["source", "code"],
            registry=r,
        )
        self.events_accepted = Counter(
            "trackflow_collector_events_accepted_total",
            "Events Kafka acknowledged (answered 200); validation may still dead-letter them.",
            ["source"],
            registry=r,
        )
        self.events_rejected = Counter(
            "trackflow_collector_events_rejected_total",
            "Events of requests not accepted (the SDK retries them), by reason.",
            ["source", "reason"],
            registry=r,
        )
        self.events_oversized = Counter(
            "trackflow_collector_events_oversized_total",
            "Events over 32 KiB inside an accepted request (dead-lettered payload_too_large).",
            ["source"],
            registry=r,
        )
        self.latency = Histogram(
            "trackflow_collector_request_duration_seconds",
            "Time from a request's arrival to its answer.",
            ["source"],
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.in_flight = Gauge(
            "trackflow_collector_requests_in_flight",
            "Requests being handled (waiting for Kafka included).",
            registry=r,
        )
        self.queue = Gauge(
            "trackflow_collector_producer_queue_messages",
            "Messages in the Kafka producer's queue, not yet acknowledged.",
            registry=r,
        )
        self.kafka_up = Gauge(
            "trackflow_collector_kafka_up",
            "1 while Kafka takes the collector's events, 0 while it answers 503.",
            registry=r,
        )

    def answered(self, source: str, code: int, seconds: float) -> None:
        """Count one answered request; the labelled children are looked up once."""
        key = (source, code)
        children = self._children.get(key)
        if children is None:
            children = self._children[key] = (
                self.requests.labels(source, str(code)),
                self.latency.labels(source),
            )
        children[0].inc()
        children[1].observe(seconds)

    def watch(self, queue: Callable[[], float], kafka_up: Callable[[], float]) -> None:
        """Read the producer's queue length and Kafka's state at each scrape."""
        self.queue.set_function(queue)
        self.kafka_up.set_function(kafka_up)

    def render(self) -> bytes:
        return generate_latest(self.registry)
