"""Every worker's copy of the privacy requests, and the barrier validate passes per take.

A plain consumer with no group reads ``privacy.requests`` from its start, on every
worker, and applies each record to the worker's ``PrivacyState``. ``sync`` is the
barrier: it asks the broker for the topic's end offset and waits until the follower has
read that far. validate calls it after a take's messages were fetched and before judging
them, so any event produced after a privacy command returned (the command returns once
the broker acknowledged the request) is judged with the request applied: the event was
fetched after it was produced, the end offset asked after it was fetched. The cost is one
ListOffsets round trip per take (docs/privacy.md has the measurement).
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Any

from pipeline.privacy.kafka import COMPACTED
from pipeline.privacy.requests import ACTIONS, STATUSES, BadRequest, Request
from pipeline.privacy.state import PrivacyState
from pipeline.runtime.kafka_admin import ensure_topic
from pipeline.runtime.kafka_security import KafkaCluster
from pipeline.runtime.telemetry import PipelineMetrics
from tables.consumers import reading_consumer

log = logging.getLogger(__name__)

RETRY_SECONDS = 1.0


class PrivacyFollower:
    def __init__(
        self,
        kafka: KafkaCluster,
        topic: str,
        state: PrivacyState,
        metrics: PipelineMetrics,
        barrier: bool = True,
    ) -> None:
        """``barrier`` False: ``sync`` does not wait (an app built without a broker, as
        the agents' unit tests build it)."""
        self.barrier = barrier
        self.kafka = kafka
        self.topic = topic
        self.state = state
        self.metrics = metrics
        self._consumer: Any = None
        self._ends: Any = None  # a second client: a fetch waiting on the first delays it
        self._tp: Any = None
        self._started = asyncio.Event()
        self._tick = asyncio.Event()

    async def run(self, poll_ms: int = 100) -> None:
        """Follow the topic forever (an app task), starting over after a failure (the
        broker unreachable at start-up): validate waits meanwhile, it never goes on
        without the requests."""
        while True:
            try:
                await self._follow(poll_ms)
            except Exception as exc:
                log.warning("privacy: following %s failed (%s); again in 1 s", self.topic, exc)
                await asyncio.sleep(RETRY_SECONDS)

    async def _follow(self, poll_ms: int) -> None:
        """Read the topic from its start (applying a record twice changes nothing)."""
        from aiokafka import TopicPartition

        await asyncio.to_thread(ensure_topic, self.kafka, self.topic, 1, 15.0, COMPACTED)
        # ListOffsets on the follower's own connection would queue behind its fetch, which
        # the broker holds up to fetch.max.wait (500 ms) while there is nothing new.
        async with reading_consumer(self.kafka) as consumer, reading_consumer(self.kafka) as ends:
            tp = TopicPartition(self.topic, 0)
            consumer.assign([tp])
            await consumer.seek_to_beginning(tp)
            self._consumer, self._ends, self._tp = consumer, ends, tp
            self._started.set()
            try:
                while True:
                    batches = await consumer.getmany(tp, timeout_ms=poll_ms, max_records=1000)
                    self._apply(batches.get(tp, []))
                    self.state.position = max(self.state.position, await consumer.position(tp))
                    self._publish()
                    tick, self._tick = self._tick, asyncio.Event()
                    tick.set()
            finally:
                self._consumer = self._ends = None

    def _apply(self, records: list[Any]) -> None:
        requests = []
        for record in records:
            try:
                requests.append(Request.decode(record.value, record.offset))
            except BadRequest as exc:
                log.error("privacy: skipping record %s of %s: %s", record.offset, self.topic, exc)
        if requests:
            self.state.apply(requests)
        if records:
            self.state.position = records[-1].offset + 1

    def _publish(self) -> None:
        m = self.metrics
        counts = self.state.by_status()
        for action in ACTIONS:  # every pair, so a count that fell to 0 shows 0
            for status in STATUSES:
                m.privacy_requests.labels(action, status).set(counts.get((action, status), 0))
        oldest = self.state.oldest_unfinished()
        m.privacy_oldest_pending.set(0 if oldest is None else max(0.0, time.time() - oldest / 1000))

    async def sync(self) -> None:
        """Return once every request recorded before this call is applied here."""
        if not self.barrier:
            self.state.maybe_refresh()
            return
        started = time.perf_counter()
        await self._started.wait()
        while True:
            try:
                end = int((await self._ends.end_offsets([self._tp]))[self._tp])
                break
            except Exception as exc:  # the broker cannot say now: no event goes unjudged
                log.warning("privacy: end offset of %s unavailable (%s); retrying", self.topic, exc)
                await asyncio.sleep(RETRY_SECONDS)
        while self.state.position < end:
            tick = self._tick
            try:
                await asyncio.wait_for(tick.wait(), RETRY_SECONDS)
            except TimeoutError:
                continue
        self.state.maybe_refresh()
        self.metrics.privacy_sync.observe(time.perf_counter() - started)
