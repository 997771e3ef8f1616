"""validate: events.raw -> events.valid (batches) + events.dlq, with dedup and PII hashing.

Any bytes on events.raw end as valid events or dead letters and the partition goes on: the
ingest logic judges each event on its own, a row that Arrow cannot hold is dead-lettered
alone, and a message whose processing still fails is dead-lettered whole
(``processing_error``) instead of crashing the agent into a re-read loop.
"""

from __future__ import annotations

import time
from collections import defaultdict
from dataclasses import dataclass
from typing import Any

import faust
import pyarrow as pa

from pipeline.contract import replay
from pipeline.contract.errors import ErrorCode, Rejected
from pipeline.ingest.codecs import source_from_headers
from pipeline.ingest.ingestor import Ingestor, IngestResult, RawMessage, in_log_order
from pipeline.ingest.quality import missing_counts, optional_properties
from pipeline.names import AGENT_VALIDATE, TOPIC_RAW
from pipeline.runtime import wire
from pipeline.runtime.context import Context
from pipeline.runtime.ordered_input import OrderedInput, admit
from pipeline.runtime.streams import Take, take_batches


def register(app: faust.App, ctx: Context) -> Any:
    stage = Validate(app, ctx)

    @app.agent(ctx.topics.raw, name=AGENT_VALIDATE)
    async def validate(stream: faust.StreamT) -> None:
        settings = ctx.settings
        async for events in take_batches(stream, settings.take_max, settings.take_within):
            await stage.process(events)

    return validate


@dataclass
class Outputs:
    """What one partition's messages of a take become."""

    result: IngestResult
    table: pa.Table | None  # the valid events, as stored
    valid: list[bytes]  # events.valid messages
    dlq: list[bytes]  # events.dlq messages


class Validate:
    """One take of events.raw: per partition, in offset order, ingest and emit."""

    def __init__(self, app: faust.App, ctx: Context) -> None:
        domain = ctx.domain
        self.app = app
        self.ctx = ctx
        self.metrics = ctx.metrics
        self.ingestor = Ingestor(
            domain.plan,
            domain.validator,
            domain.hasher,
            domain.seen,
            TOPIC_RAW,
            max_payload_bytes=ctx.settings.dlq_max_payload_bytes,
            suppression=domain.privacy,
        )
        self.input = OrderedInput(app, AGENT_VALIDATE, ctx.metrics, ctx.start_offsets)
        self.optional = optional_properties(domain.plan)
        # Every series at 0 from the start: the missing-property alert compares a share with
        # its own past, and a property never missing before must have a past of 0, not none.
        for name, props in self.optional.items():
            self.metrics.events_by_name.labels(name)
            for prop in props:
                self.metrics.property_missing.labels(name, prop)

    async def process(self, events: Take) -> None:
        # Fetched before this point: read every privacy request recorded until now first,
        # so an event produced after a privacy command returned is judged with it.
        await self.ctx.privacy.sync()
        self.metrics.messages_received.labels(TOPIC_RAW).inc(len(events))
        by_partition: dict[int, list[RawMessage]] = defaultdict(list)
        for m in (e.message for e in await admit(self.input, events)):
            timestamp = int(m.timestamp * 1000) if m.timestamp else None
            # A dead letter re-sent by ``trackflow dlq replay`` carries a marker header.
            headers = getattr(m, "headers", None)
            marker = replay.from_headers(headers)
            source = source_from_headers(headers)  # the HTTP collector's source, if any
            by_partition[m.partition].append(
                RawMessage(m.offset, m.value, timestamp, marker, source)
            )
        now_ms = int(time.time() * 1000)
        for partition, messages in by_partition.items():
            out = self.prepare(partition, messages, now_ms)
            await self.emit(partition, messages, out)
            self.observe(messages, out.result)

    def prepare(self, partition: int, messages: list[RawMessage], now_ms: int) -> Outputs:
        """The outputs of ``messages``, without Kafka; never raises on any input bytes."""
        try:
            return self._prepare(partition, messages, now_ms)
        except Exception:
            if len(messages) == 1:
                return self._dead_letter_whole(partition, messages[0], now_ms)
        # Find the message that fails by halving; every other message is processed normally.
        half = len(messages) // 2
        return _merge(
            self.prepare(partition, messages[:half], now_ms),
            self.prepare(partition, messages[half:], now_ms),
        )

    def _prepare(self, partition: int, messages: list[RawMessage], now_ms: int) -> Outputs:
        # The dedup memory is written only once every output exists: if building them fails,
        # the halves are judged against the memory as it was (no "seen at this position").
        result = self.ingestor.process(partition, messages, now_ms, remember=False)
        table = None
        if result.valid:
            table, failed = self.ctx.domain.batches.build_each(result.valid)
            by_offset = {m.offset: m for m in messages}
            for row, exc in failed:
                rejected = Rejected(ErrorCode.PROCESSING_ERROR, _describe(exc))
                msg = by_offset[row["source_offset"]]
                self.ingestor.reject_later(
                    partition, msg, row["source_index"], rejected, now_ms, result
                )
        valid = wire.encode_events(table) if table is not None else []
        in_log_order(result.dlq)  # records of reject_later come after the others
        dlq = wire.encode_dead_letters(partition, result.dlq)
        self.ingestor.remember(result)
        return Outputs(result, table, valid, dlq)

    def _dead_letter_whole(self, partition: int, msg: RawMessage, now_ms: int) -> Outputs:
        self.app.log.exception("validate: message %s of partition %s", msg.offset, partition)
        result = IngestResult(generation=self.ctx.domain.seen.generation(now_ms), received=1)
        rejected = Rejected(ErrorCode.PROCESSING_ERROR, "the message could not be processed")
        self.ingestor.reject_later(partition, msg, None, rejected, now_ms, result)
        return Outputs(result, None, [], wire.encode_dead_letters(partition, result.dlq))

    async def emit(self, partition: int, messages: list[RawMessage], out: Outputs) -> None:
        # The dedup record goes first: Faust flushes the producer before committing offsets,
        # so outputs and dedup memory are durable before the input is marked consumed.
        ctx, metrics, result = self.ctx, self.metrics, out.result
        await ctx.tables.dedup.record(partition, messages[0].offset, result.generation, result.seen)
        for value in out.valid:
            await ctx.topics.valid.send(value=value, partition=partition)
        if out.table is not None:
            events, missing = missing_counts(out.table, self.optional)
            for name, n in events.items():
                metrics.events_by_name.labels(name).inc(n)
            for (name, prop), n in missing.items():
                metrics.property_missing.labels(name, prop).inc(n)
        for value in out.dlq:
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
        if result.suppressed:
            metrics.privacy_suppressed.inc(result.suppressed)
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


def _describe(exc: Exception) -> str:
    """A processing error's detail: the error's type and where, never the offending value."""
    return f"the event could not be stored ({type(exc).__name__})"


def _merge(a: Outputs, b: Outputs) -> Outputs:
    ra, rb = a.result, b.result
    result = IngestResult(
        valid=ra.valid + rb.valid,
        dlq=ra.dlq + rb.dlq,
        seen=ra.seen + rb.seen,
        generation=ra.generation,
        received=ra.received + rb.received,
        duplicates=ra.duplicates + rb.duplicates,
        consent_dropped=ra.consent_dropped + rb.consent_dropped,
        suppressed=ra.suppressed + rb.suppressed,
        rejected=ra.rejected + rb.rejected,
        rejected_by_event=ra.rejected_by_event + rb.rejected_by_event,
        unknown_properties=ra.unknown_properties + rb.unknown_properties,
    )
    tables = [t for t in (a.table, b.table) if t is not None]
    table = pa.concat_tables(tables) if tables else None
    return Outputs(result, table, a.valid + b.valid, a.dlq + b.dlq)
