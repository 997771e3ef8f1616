"""sink: events.valid -> lake ``events``, events.dlq -> lake ``dlq``.

Input is acked only after the Parquet files holding it are renamed into place and the
checkpoint is written, so a SIGKILL at any moment loses nothing (see pipeline/lake.py for
why nothing is stored twice either).
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Any

import faust
import pyarrow as pa

from pipeline.codecs import decode_arrow, decode_batch, unb64
from pipeline.context import Context
from pipeline.lake import TableWriter
from pipeline.lake_schema import dlq_table
from pipeline.names import AGENT_SINK_DLQ, AGENT_SINK_EVENTS, LAKE_DLQ, LAKE_EVENTS, TOPIC_RAW

log = logging.getLogger(__name__)


class Sink:
    """One lake table fed by one internal topic; shared by its agent and the flush timer."""

    def __init__(self, ctx: Context, name: str, table: str, writer: TableWriter):
        self.ctx = ctx
        self.name = name
        self.table = table
        self.writer = writer
        self.stream: faust.StreamT | None = None
        self.lock = asyncio.Lock()

    def decode(self, value: bytes) -> pa.Table:
        if self.table == LAKE_DLQ:
            rows = decode_batch(value)["records"]
            for row in rows:
                row["payload"] = unb64(row["payload"])
            return dlq_table(rows)
        return decode_arrow(value)

    async def consume(self, stream: Any) -> None:
        self.stream = stream
        settings = self.ctx.settings
        async for event in stream.noack().events():
            table = self.decode(event.message.value)
            self.ctx.metrics.stage_in.labels(self.name).inc(table.num_rows)
            async with self.lock:
                self.writer.add(TOPIC_RAW, event.message.partition, table, token=event)
                for key in self.writer.due(settings.sink_flush_seconds, settings.sink_flush_rows):
                    await self._flush(*key)

    async def flush_due(self) -> None:
        async with self.lock:
            for key in self.writer.due(self.ctx.settings.sink_flush_seconds, 1):
                await self._flush(*key)

    async def flush_partitions(self, partitions: set[int]) -> None:
        async with self.lock:
            for topic, partition in self.writer.partitions():
                if partition in partitions:
                    await self._flush(topic, partition)
                    self.writer.forget(topic, partition)

    async def _flush(self, topic: str, partition: int) -> None:
        metrics = self.ctx.metrics
        result, tokens = self.writer.flush(topic, partition)
        if result.files:
            metrics.lake_files.labels(self.table).inc(result.files)
            metrics.lake_bytes.labels(self.table).inc(result.bytes)
            metrics.lake_rows.labels(self.table).inc(result.rows)
            metrics.lake_last_write.labels(self.table).set(time.time())
            metrics.stage_out.labels(self.name).inc(result.rows)
            if self.table == LAKE_EVENTS:
                metrics.events_stored.inc(result.rows)
        now = time.time()
        for token in tokens:
            if token.message.timestamp:
                metrics.latency.labels(self.name).observe(max(0.0, now - token.message.timestamp))
            if self.stream is not None:
                await self.stream.ack(token)
            else:
                token.ack()


def register(app: faust.App, ctx: Context) -> list[Any]:
    events_sink = Sink(ctx, AGENT_SINK_EVENTS, LAKE_EVENTS, ctx.lake_events)
    dlq_sink = Sink(ctx, AGENT_SINK_DLQ, LAKE_DLQ, ctx.lake_dlq)
    sinks = [events_sink, dlq_sink]

    @app.agent(ctx.topics.valid, name=AGENT_SINK_EVENTS)
    async def sink_events(stream: faust.StreamT) -> None:
        await events_sink.consume(stream)

    @app.agent(ctx.topics.dlq, name=AGENT_SINK_DLQ)
    async def sink_dlq(stream: faust.StreamT) -> None:
        await dlq_sink.consume(stream)

    @app.timer(interval=0.25)
    async def flush_sinks() -> None:
        for sink in sinks:
            await sink.flush_due()

    @app.on_partitions_revoked.connect  # type: ignore[arg-type]
    async def flush_revoked(sender: Any, revoked: set[Any], **kwargs: Any) -> None:
        # Write what we hold before the next owner reads its checkpoint.
        for sink, topic in ((events_sink, ctx.topics.valid), (dlq_sink, ctx.topics.dlq)):
            names = set(topic.topics)
            parts = {tp.partition for tp in revoked if tp.topic in names}
            if parts:
                await sink.flush_partitions(parts)

    ctx.agents["sinks"] = sinks
    return [sink_events, sink_dlq]
