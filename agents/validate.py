"""validate: events.raw -> events.valid (batches) + events.dlq, with dedup and PII hashing."""

from __future__ import annotations

import time
from collections import defaultdict
from typing import Any

import faust

from pipeline.ingest.ingestor import Ingestor, IngestResult, RawMessage
from pipeline.ingest.quality import missing_counts
from pipeline.names import AGENT_VALIDATE, TOPIC_RAW
from pipeline.runtime import wire
from pipeline.runtime.context import Context
from pipeline.runtime.offset_guard import OffsetGuard
from pipeline.runtime.streams import Take, in_offset_order, take_batches


def register(app: faust.App, ctx: Context) -> Any:
    stage = Validate(app, ctx)

    @app.on_partitions_revoked.connect  # type: ignore[arg-type]
    async def forget_offsets(sender: Any, revoked: set[Any], **kwargs: Any) -> None:
        stage.guard.forget()

    @app.agent(ctx.topics.raw, name=AGENT_VALIDATE)
    async def validate(stream: faust.StreamT) -> None:
        settings = ctx.settings
        async for events in take_batches(stream, settings.take_max, settings.take_within):
            await stage.process(events)

    return validate


class Validate:
    """One take of events.raw: per partition, in offset order, ingest and emit."""

    def __init__(self, app: faust.App, ctx: Context) -> None:
        domain = ctx.domain
        self.app = app
        self.ctx = ctx
        self.metrics = ctx.metrics
        self.ingestor = Ingestor(
            domain.plan, domain.validator, domain.hasher, domain.seen, TOPIC_RAW
        )
        self.guard = OffsetGuard()

    async def process(self, events: Take) -> None:
        by_partition: dict[int, list[Any]] = defaultdict(list)
        for event in in_offset_order(events):
            by_partition[event.message.partition].append(event)
        self.metrics.messages_received.labels(TOPIC_RAW).inc(len(events))
        now_ms = int(time.time() * 1000)
        for partition, partition_events in by_partition.items():
            admitted = await self.admit(partition, partition_events, events)
            messages = [
                RawMessage(m.offset, m.value, int(m.timestamp * 1000) if m.timestamp else None)
                for m in (e.message for e in admitted)
            ]
            if not messages:
                continue
            result = self.ingestor.process(partition, messages, now_ms)
            await self.emit(partition, messages, result)
            self.observe(messages, result)

    async def admit(self, partition: int, events: list[Any], take: Take) -> list[Any]:
        """The events to process now: in order, none past a hole (see offset_guard)."""
        admission = self.guard.admit(partition, [e.message for e in events])
        for i in admission.hold:
            take.hold(events[i])
        if admission.seek_to is not None:
            self.app.log.warning(
                "validate: offset %s of partition %s has not arrived before later ones; "
                "reading the partition again from there",
                admission.seek_to,
                partition,
            )
            await self.app.consumer.seek(events[0].message.tp, admission.seek_to)
        if admission.accepted_gap:
            self.metrics.offset_gaps.labels(str(partition)).inc(admission.accepted_gap)
            self.app.log.error(
                "validate: %s offsets of partition %s never arrived after repeated reads",
                admission.accepted_gap,
                partition,
            )
        return [events[i] for i in admission.process]

    async def emit(self, partition: int, messages: list[RawMessage], result: IngestResult) -> None:
        # The dedup record goes first: Faust flushes the producer before committing offsets,
        # so outputs and dedup memory are durable before the input is marked consumed.
        ctx, metrics = self.ctx, self.metrics
        ctx.tables.dedup.record(partition, messages[0].offset, result.generation, result.seen)
        if result.valid:
            batches = ctx.domain.batches
            table = batches.build(result.valid)
            for value in wire.encode_events(table):
                await ctx.topics.valid.send(value=value, partition=partition)
            events, missing = missing_counts(table, batches.by_event)
            for name, n in events.items():
                metrics.events_by_name.labels(name).inc(n)
            for (name, prop), n in missing.items():
                metrics.property_missing.labels(name, prop).inc(n)
        for value in wire.encode_dead_letters(partition, result.dlq):
            await ctx.topics.dlq.send(value=value, partition=partition)

    def observe(self, messages: list[RawMessage], result: IngestResult) -> None:
        metrics = self.metrics
        metrics.events_received.inc(result.received)
        metrics.stage_in.labels(AGENT_VALIDATE).inc(result.received)
        metrics.stage_out.labels(AGENT_VALIDATE).inc(len(result.valid))
        metrics.events_valid.inc(len(result.valid))
        if result.duplicates:
            metrics.duplicates.inc(result.duplicates)
        if result.consent_dropped:
            metrics.consent_dropped.inc(result.consent_dropped)
        for code, n in result.rejected.items():
            metrics.dlq.labels(code).inc(n)
        for event_name, n in result.rejected_by_event.items():
            metrics.dlq_by_event.labels(event_name).inc(n)
        for event_name, prop in result.unknown_properties:
            metrics.count_unknown_property(event_name, prop)
        now = time.time()
        for m in messages:
            if m.timestamp_ms:
                metrics.latency.labels(AGENT_VALIDATE).observe(
                    max(0.0, now - m.timestamp_ms / 1000)
                )
