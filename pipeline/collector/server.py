"""``trackflow collect``: the aiohttp server of the Tracking API (DESIGN section 13).

One request: find the source (Basic auth, else the body's ``writeKey``), read and decode
the body, take the source's rate tokens, map the calls to envelopes, produce them and
await Kafka's acknowledgement of all of them, then answer. Answers: 200 only once Kafka
has every event; 400 not JSON or no events; 401 unknown or missing write key; 404 disabled
source; 413 over 500 KiB; 429 over the source's rate (``Retry-After``); 503 Kafka
unavailable. SIGTERM: stop listening, finish the requests in flight, flush, exit.
SIGHUP: re-read the sources file (a bad file keeps the old one).
"""

from __future__ import annotations

import asyncio
import logging
import re
import signal
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from aiohttp import hdrs, web

from pipeline.collector.http import (
    MAX_REQUEST_BYTES,
    Refusal,
    add_cors,
    answer,
    basic_key,
    body_key,
    decode_body,
    preflight,
)
from pipeline.collector.kafka import PROBE_SECONDS, EventProducer
from pipeline.collector.mapping import ENDPOINTS, EVENT_ID_RULE, RequestInfo, build
from pipeline.collector.sources import Source, Sources, SourcesError, load_sources, retry_after
from pipeline.collector.telemetry import UNKNOWN_SOURCE, CollectorMetrics
from pipeline.names import TOPIC_RAW
from pipeline.runtime.kafka_security import KafkaCluster
from pipeline.settings import Settings

log = logging.getLogger("trackflow.collector")
ENSURE_TOPIC_SECONDS = 5.0
METADATA_SECONDS = 30.0  # partition count refresh while all is well


@dataclass(frozen=True)
class Plan:
    """What the collector needs of the tracking plan: the envelope's limits."""

    platforms: tuple[str, ...]
    max_event_bytes: int
    event_id_rule: re.Pattern[str] = EVENT_ID_RULE


@dataclass(slots=True)
class _Seen:
    source: str = UNKNOWN_SOURCE  # the metrics label of the request


class Collector:
    """The request handlers and the Kafka watch of one collector process."""

    def __init__(
        self,
        settings: Settings,
        kafka: KafkaCluster,
        sources: Sources,
        plan: Plan,
        producer: EventProducer,
    ) -> None:
        self.settings = settings
        self.kafka = kafka
        self.sources = sources
        self.plan = plan
        self.producer = producer
        self.metrics = CollectorMetrics()
        self.metrics.watch(lambda: len(producer), lambda: 1.0 if producer.available else 0.0)
        self.topic = settings.topic(TOPIC_RAW)
        self.topic_ready = False
        self.stopping = False

    def app(self) -> web.Application:
        app = web.Application(client_max_size=MAX_REQUEST_BYTES)
        # With a trailing slash too: Segment's Java SDK posts to /v1/import/.
        for path in ("/v1/{call}", "/v1/{call}/"):
            app.router.add_post(path, self.handle)
            app.router.add_route("OPTIONS", path, preflight)
        app.router.add_get("/health", self.health)
        app.router.add_get("/ready", self.ready)
        app.router.add_get("/metrics", self.metrics_page)
        app.on_response_prepare.append(add_cors)
        return app

    async def handle(self, request: web.Request) -> web.Response:
        started = time.perf_counter()
        seen = _Seen()
        self.metrics.in_flight.inc()
        try:
            response = await self._handle(request, seen)
        except Refusal as refusal:
            response = refusal.response()
        except Exception:  # a collector bug: answer 500 (SDKs retry), never crash
            log.exception("collector: request to %s failed", request.path)
            response = answer(500, "internal error")
        finally:
            self.metrics.in_flight.dec()
        self.metrics.answered(seen.source, response.status, time.perf_counter() - started)
        return response

    async def _handle(self, request: web.Request, seen: _Seen) -> web.Response:
        kind = ENDPOINTS.get(request.match_info["call"])
        if kind is None:
            raise Refusal(404, "no such endpoint")
        header_key = basic_key(request.headers.get(hdrs.AUTHORIZATION))
        source = self._source(header_key, seen) if header_key is not None else None
        if request.content_length is not None and request.content_length > MAX_REQUEST_BYTES:
            raise Refusal(413, "the request is over 500 KiB")
        try:
            raw = await request.read()
        except web.HTTPRequestEntityTooLarge:
            raise Refusal(413, "the request is over 500 KiB") from None
        received_ms = int(time.time() * 1000)
        body, size = decode_body(raw, request.headers.get(hdrs.CONTENT_ENCODING))
        if not isinstance(body, dict):
            raise Refusal(400, "the body must be a JSON object")
        calls = body.get("batch") if kind == "batch" else [body]
        if not isinstance(calls, list) or not calls:
            raise Refusal(400, "no events: batch must be a non-empty array")
        if source is None:
            key = body_key(body, calls)
            if key is None:
                raise Refusal(401, "no write key: use Basic auth or writeKey in the body")
            source = self._source(key, seen)
        self._admit(source, len(calls))
        context = body.get("context") if kind == "batch" else None
        info = RequestInfo(
            received_ms,
            source.platform,
            body.get("sentAt") if kind == "batch" else None,
            context if isinstance(context, dict) else None,
            self.plan.event_id_rule,
        )
        max_event = self.plan.max_event_bytes
        endpoint = None if kind == "batch" else kind
        partitions = self.producer.partitions
        out = build(calls, endpoint, info, size > max_event, max_event, partitions)
        delivery = self.producer.send(out.messages, source.headers)
        acknowledged = await delivery.wait(self.settings.collect_delivery_timeout + 1.0)
        self.producer.delivered(delivery)
        if not acknowledged:
            self.metrics.events_rejected.labels(source.name, "kafka_unavailable").inc(out.events)
            raise Refusal(503, "Kafka is unavailable: retry later")
        self.metrics.events_accepted.labels(source.name).inc(out.events)
        if out.oversized:
            self.metrics.events_oversized.labels(source.name).inc(out.oversized)
        return answer()

    def _source(self, key: str, seen: _Seen) -> Source:
        source = self.sources.lookup(key)
        if source is None:
            raise Refusal(401, "unknown write key")
        seen.source = source.name
        if not source.enabled:
            raise Refusal(404, "this source is disabled")
        return source

    def _admit(self, source: Source, events: int) -> None:
        """503 while Kafka is known to be down (first: a refused request must not spend
        the source's rate tokens), 429 over the source's rate."""
        if not self.producer.available or not self.producer.partitions:
            self.metrics.events_rejected.labels(source.name, "kafka_unavailable").inc(events)
            raise Refusal(503, "Kafka is unavailable: retry later")
        if source.bucket is not None:
            wait = source.bucket.take(events)
            if wait > 0:
                self.metrics.events_rejected.labels(source.name, "rate_limited").inc(events)
                raise Refusal(
                    429,
                    f"over the source's rate of {source.events_per_second:g} events/s",
                    {hdrs.RETRY_AFTER: retry_after(wait)},
                )

    async def health(self, _request: web.Request) -> web.Response:
        """Liveness: 200 while the process serves; 503 after a fatal producer error (the
        producer cannot recover; a restart does)."""
        if self.producer.fatal is not None:
            return web.json_response({"status": "failed", "kafka": "fatal error"}, status=503)
        kafka = "up" if self.producer.available else "down"
        return web.json_response({"status": "ok", "kafka": kafka})

    async def ready(self, _request: web.Request) -> web.Response:
        """Readiness: 503 while Kafka is unavailable or the collector is stopping."""
        if self.stopping:
            return web.json_response({"ready": False, "reason": "stopping"}, status=503)
        if not self.producer.available:
            return web.json_response({"ready": False, "reason": "kafka unavailable"}, status=503)
        return web.json_response({"ready": True})

    async def metrics_page(self, _request: web.Request) -> web.Response:
        return web.Response(body=self.metrics.render(), content_type="text/plain")

    def check_kafka(self) -> None:
        """Blocking (run in a thread): create events.raw if missing, then probe Kafka."""
        if not self.topic_ready:
            from pipeline.runtime.kafka_admin import ensure_topic

            try:
                ensure_topic(self.kafka, self.topic, self.settings.partitions, ENSURE_TOPIC_SECONDS)
            except Exception as exc:  # any client error: Kafka is not usable yet
                self.producer.available = False
                log.warning("Kafka unavailable: cannot check %s (%s)", self.topic, exc)
                return
            self.topic_ready = True
        self.producer.probe()

    async def watch_kafka(self) -> None:
        """Probe Kafka every second while it is unavailable, and every 30 s anyway (the
        topic may have gained partitions)."""
        loop = asyncio.get_running_loop()
        last = time.monotonic()
        while True:
            await asyncio.sleep(PROBE_SECONDS)
            if not self.topic_ready or not self.producer.available:
                await loop.run_in_executor(None, self.check_kafka)
                last = time.monotonic()
            elif time.monotonic() - last >= METADATA_SECONDS:
                await loop.run_in_executor(None, self.producer.probe)
                last = time.monotonic()

    def reload_sources(self) -> None:
        try:
            self.sources = load_sources(self.settings.sources, self.plan.platforms)
        except SourcesError as exc:
            log.error("sources file not reloaded, the old one stays: %s", exc)
            return
        log.info("sources file reloaded: %d sources", len(self.sources))


async def serve(collector: Collector, on_listening: Any = None) -> None:
    """Serve until SIGTERM or SIGINT, then shut down gracefully."""
    loop = asyncio.get_running_loop()
    settings = collector.settings
    collector.producer.start(loop)
    await loop.run_in_executor(None, collector.check_kafka)
    runner = web.AppRunner(
        collector.app(),
        access_log=None,  # request lines are not logged: nothing to leak, nothing to flood
        auto_decompress=False,  # gzip is inflated under the 500 KiB limit (http.inflate)
        keepalive_timeout=75,
        shutdown_timeout=settings.collect_shutdown_seconds,
    )
    await runner.setup()
    site = web.TCPSite(runner, settings.collect_host, settings.collect_port)
    await site.start()
    stop = asyncio.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    loop.add_signal_handler(signal.SIGHUP, collector.reload_sources)
    watch = asyncio.create_task(collector.watch_kafka())
    log.info(
        "collector listening on %s:%s, %d sources, producing to %s",
        settings.collect_host,
        settings.collect_port,
        len(collector.sources),
        collector.topic,
    )
    if on_listening is not None:
        on_listening()
    await stop.wait()
    collector.stopping = True
    log.info("collector stopping: finishing requests in flight, then flushing")
    await runner.cleanup()  # closes the listener, waits for requests in flight
    watch.cancel()
    # Blocking on purpose: nothing else runs any more, and the callbacks touch the loop's
    # futures, so they are served on its thread.
    left = collector.producer.close(max(1.0, settings.collect_shutdown_seconds))
    if left:
        log.error("collector stopped with %d messages Kafka did not acknowledge", left)


def run_collector(settings: Settings, kafka: KafkaCluster, sources: Sources, plan: Plan) -> int:
    producer = EventProducer(kafka, settings.topic(TOPIC_RAW), settings.collect_delivery_timeout)
    collector = Collector(settings, kafka, sources, plan, producer)
    with asyncio.Runner(loop_factory=_loop_factory()) as runner:
        runner.run(serve(collector))
    return 0


def _loop_factory() -> Any:
    """uvloop's event loop when it is installed (a dependency: measured 15-20% less CPU per
    20-event request than asyncio's own loop), else asyncio's."""
    try:
        import uvloop
    except ImportError:
        return None
    return uvloop.new_event_loop


def plan_limits(schemas_dir: Path | None) -> Plan:
    """The envelope's platforms and event size limit, from the tracking plan."""
    from pipeline.contract.plan import load_plan

    envelope = load_plan(schemas_dir).envelope
    pattern = envelope.fields["event_id"].pattern
    rule = re.compile(pattern) if pattern else EVENT_ID_RULE
    return Plan(envelope.fields["platform"].symbols, envelope.max_event_bytes, rule)
