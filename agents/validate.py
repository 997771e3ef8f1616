"""validate: events.raw -> events.valid (batches) + events.dlq, with dedup and PII hashing."""

from __future__ import annotations

import time
from collections import defaultdict
from typing import Any

import faust

from pipeline.codecs import encode_arrow, encode_batches
from pipeline.context import Context
from pipeline.ingest import Ingestor, IngestResult, RawMessage
from pipeline.names import AGENT_VALIDATE, TOPIC_RAW
from pipeline.quality import missing_counts
from pipeline.streams import in_offset_order, take_batches


def register(app: faust.App, ctx: Context) -> Any:
    ingestor = Ingestor(ctx.plan, ctx.validator, ctx.hasher, ctx.seen, TOPIC_RAW)
    metrics = ctx.metrics
    settings = ctx.settings

    last_offset: dict[int, int] = {}

    def check_gaps(partition: int, messages: list[RawMessage]) -> None:
        # Diagnosing the open SIGKILL defect: Faust acks offsets it never received as a
        # "gap", so a hole in a fetch response would skip input silently. Make it loud.
        prev = last_offset.get(partition)
        for m in messages:
            if prev is not None and m.offset > prev + 1:
                metrics.offset_gaps.labels(str(partition)).inc(m.offset - prev - 1)
                app.log.warning(
                    "validate: offsets %s..%s of partition %s never arrived",
                    prev + 1,
                    m.offset - 1,
                    partition,
                )
            prev = m.offset if prev is None else max(prev, m.offset)
        if prev is not None:
            last_offset[partition] = prev

    @app.on_partitions_revoked.connect  # type: ignore[arg-type]
    async def forget_offsets(sender: Any, revoked: set[Any], **kwargs: Any) -> None:
        last_offset.clear()  # after a rebalance the stream restarts from committed offsets

    @app.agent(ctx.topics.raw, name=AGENT_VALIDATE)
    async def validate(stream: faust.StreamT) -> None:
        async for events in take_batches(stream, settings.take_max, settings.take_within):
            by_partition: dict[int, list[RawMessage]] = defaultdict(list)
            for event in in_offset_order(events):
                m = event.message
                by_partition[m.partition].append(
                    RawMessage(m.offset, m.value, int(m.timestamp * 1000) if m.timestamp else None)
                )
            metrics.messages_received.labels(TOPIC_RAW).inc(len(events))
            now_ms = int(time.time() * 1000)
            for partition, messages in by_partition.items():
                check_gaps(partition, messages)
                result = ingestor.process(partition, messages, now_ms)
                await emit(partition, messages, result)
                observe(messages, result)

    async def emit(partition: int, messages: list[RawMessage], result: IngestResult) -> None:
        # The dedup record goes first: Faust flushes the producer before committing offsets,
        # so outputs and dedup memory are durable before the input is marked consumed.
        ctx.dedup.record(partition, messages[0].offset, result.generation, result.seen)
        if result.valid:
            table = ctx.batches.build(result.valid)
            for value in encode_arrow(table):
                await ctx.topics.valid.send(value=value, partition=partition)
            events, missing = missing_counts(table, ctx.batches.by_event)
            for name, n in events.items():
                ctx.metrics.events_by_name.labels(name).inc(n)
            for (name, prop), n in missing.items():
                ctx.metrics.property_missing.labels(name, prop).inc(n)
        for value in encode_batches(partition, "records", result.dlq):
            await ctx.topics.dlq.send(value=value, partition=partition)

    def observe(messages: list[RawMessage], result: IngestResult) -> None:
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
        for event_name, prop in result.unknown_properties:
            metrics.count_unknown_property(event_name, prop)
        now = time.time()
        for m in messages:
            if m.timestamp_ms:
                metrics.latency.labels(AGENT_VALIDATE).observe(
                    max(0.0, now - m.timestamp_ms / 1000)
                )

    return validate
