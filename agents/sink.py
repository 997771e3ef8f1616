"""sink: the lake writer. events.stitched -> ``events``, events.dlq -> ``dlq``,
identity.changes -> ``identities`` and ``identity_merges``.

Input is acked only after the Parquet files holding it are renamed into place and the
checkpoint is written, so a SIGKILL at any moment loses nothing (see pipeline/lake/writer.py for
why nothing is stored twice either).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from typing import Any

import faust
import pyarrow as pa

from pipeline.lake.profiles import MEMBER_REJECT_SCHEMA, PROFILE_UPDATE_SCHEMA
from pipeline.lake.schema import (
    ALERT_SCHEMA,
    IDENTITY_SCHEMA,
    MERGE_SCHEMA,
    ROLLUP_SCHEMA,
    dlq_table,
    positioned_table,
)
from pipeline.lake.writer import Fenced, TableWriter
from pipeline.members.identify import IdentifyProfiles
from pipeline.names import (
    AGENT_SINK_ALERTS,
    AGENT_SINK_DLQ,
    AGENT_SINK_EVENTS,
    AGENT_SINK_IDENTITY,
    AGENT_SINK_ROLLUPS,
    LAKE_ALERTS,
    LAKE_DLQ,
    LAKE_EVENTS,
    LAKE_IDENTITIES,
    LAKE_MEMBER_REJECTS,
    LAKE_MERGES,
    LAKE_PROFILE_CHANGES,
    LAKE_ROLLUPS,
    TOPIC_LINKS,
    TOPIC_PARTIALS,
    TOPIC_RAW,
    TOPIC_ROLLUPS,
)
from pipeline.runtime import wire
from pipeline.runtime.context import Context
from pipeline.runtime.ordered_input import OrderedInput

log = logging.getLogger(__name__)

_EMPTY = pa.table(
    {"source_offset": pa.array([], pa.int64()), "source_index": pa.array([], pa.int32())}
)


Decoder = Callable[[bytes], dict[str, pa.Table]]
# The partition the rows' positions count in (their checkpoint), from the message and its
# value; the input partition itself, except for rollups (one topic partition holds the
# finals of every combine partition, each positioned in its own).
Positioned = Callable[[Any], int]


class Sink:
    """Lake tables fed by one internal topic; shared by its agent and the flush timer.

    ``writers`` maps lake table -> writer; a message may hold rows for several of them
    (identity.changes carries identifier rows and merges). The first writer holds the
    acknowledgement tokens; a flush writes every table of the partition, then acks.
    """

    def __init__(
        self,
        ctx: Context,
        name: str,
        source_topic: str,
        writers: dict[str, TableWriter],
        decode: Decoder,
        positioned_in: Positioned = lambda m: int(m.partition),
    ) -> None:
        self.ctx = ctx
        self.name = name
        self.source_topic = source_topic
        self.writers = writers
        self.primary = next(iter(writers.values()))
        self.decode = decode
        self.positioned_in = positioned_in
        self.owner: dict[int, int] = {}  # checkpoint partition -> input partition
        self.stream: faust.StreamT | None = None
        self.lock = asyncio.Lock()
        self.input: OrderedInput | None = None
        # Partitions this worker was fenced out of: nothing more of them is processed or
        # acked until they are revoked (a zombie) or assigned again, when reading restarts
        # from the committed offset. Going on would write later rows past ones it dropped.
        self.fenced: set[int] = set()

    async def consume(self, app: faust.App, stream: Any) -> None:
        self.stream = stream
        self.input = self.input or OrderedInput(
            app, self.name, self.ctx.metrics, self.ctx.start_offsets
        )
        settings = self.ctx.settings
        async for event in stream.noack().events():
            admitted = await self.input.admit([event])
            if admitted.already:
                await stream.ack(event)  # read before (a seek back): already written
            if not admitted.process:
                continue  # past a hole: not acked, read again after the seek
            m = event.message
            if m.partition in self.fenced:
                continue
            tables = self.decode(m.value)
            part = self.positioned_in(m)
            self.owner[part] = m.partition
            async with self.lock:
                await self._claim(part)
                await self._claim(m.partition)
                for table, rows in tables.items():
                    self.ctx.metrics.stage_in.labels(self.name).inc(rows.num_rows)
                    self.writers[table].add(self.source_topic, part, rows)
                # Acks are kept per input partition, in offset order, and given only when
                # every row partition it feeds is flushed (_flush): acked out of order,
                # Faust could commit past a message whose rows were not yet stored.
                self.primary.add(self.source_topic, m.partition, _EMPTY, token=event)
                due = self.primary.due(settings.sink_flush_seconds, settings.sink_flush_rows)
                for topic, partition in due:
                    await self._flush(topic, partition)

    async def flush_due(self) -> None:
        async with self.lock:
            for key in self.primary.due(self.ctx.settings.sink_flush_seconds, 1):
                await self._flush(*key)

    async def flush_partitions(self, partitions: set[int]) -> None:
        """Flush what came from the input ``partitions`` (revoked) and let it go."""
        async with self.lock:
            for partition in sorted(partitions):
                await self._flush(self.source_topic, partition)
                for key in self._row_keys(partition):
                    for writer in self.writers.values():
                        writer.forget(self.source_topic, key)

    def _row_keys(self, partition: int) -> list[int]:
        """Row partitions fed by input ``partition``, itself last (it holds the acks)."""
        fed = sorted(k for k, owner in self.owner.items() if owner == partition and k != partition)
        return [*fed, partition]

    async def _claim(self, partition: int) -> None:
        """Own the partition's lake files before the first rows after an assignment (in a
        thread: the claim waits for a flush of the previous owner)."""
        for writer in self.writers.values():
            if not writer.claimed(self.source_topic, partition):
                await asyncio.to_thread(writer.claim, self.source_topic, partition)

    async def _flush(self, topic: str, partition: int) -> None:
        """Write every row partition input ``partition`` feeds, then ack its messages."""
        metrics = self.ctx.metrics
        tokens: list[Any] = []
        for key, (table, writer) in [
            (k, tw) for k in self._row_keys(partition) for tw in self.writers.items()
        ]:
            try:
                result, got = await asyncio.to_thread(writer.flush, topic, key)
            except Fenced as exc:
                # A zombie: another worker owns the partition now and re-reads these rows.
                log.warning("%s: %s", self.name, exc)
                metrics.lake_fenced.labels(table).inc()
                for k in self._row_keys(partition):
                    for other in self.writers.values():
                        other.forget(topic, k)
                self.fenced.add(partition)
                return
            tokens.extend(got)
            if result.purged:
                metrics.privacy_purged.labels(table).inc(result.purged)
            if result.files:
                metrics.lake_files.labels(table).inc(result.files)
                metrics.lake_bytes.labels(table).inc(result.bytes)
                metrics.lake_rows.labels(table).inc(result.rows)
                metrics.lake_last_write.labels(table).set(time.time())
                metrics.stage_out.labels(self.name).inc(result.rows)
                if table == LAKE_EVENTS:
                    metrics.events_stored.inc(result.rows)
        now = time.time()
        for token in tokens:
            if token.message.timestamp:
                metrics.latency.labels(self.name).observe(max(0.0, now - token.message.timestamp))
            if self.stream is not None:
                await self.stream.ack(token)
            else:
                token.ack()


def events_decoder(identify: IdentifyProfiles) -> Decoder:
    """Events, and the member profile updates and rejects of their identify calls (each
    positioned by its event, so stored exactly once with it)."""

    def decode(value: bytes) -> dict[str, pa.Table]:
        events = wire.decode_events(value)
        updates, rejects = identify.rows(events)
        tables = {LAKE_EVENTS: events}
        if updates:
            tables[LAKE_PROFILE_CHANGES] = pa.Table.from_pylist(updates, PROFILE_UPDATE_SCHEMA)
        if rejects:
            tables[LAKE_MEMBER_REJECTS] = pa.Table.from_pylist(rejects, MEMBER_REJECT_SCHEMA)
        return tables

    return decode


def decode_dlq(value: bytes) -> dict[str, pa.Table]:
    return {LAKE_DLQ: dlq_table(wire.decode_dead_letters(value))}


def decode_rollups(value: bytes) -> dict[str, pa.Table]:
    msg = wire.PositionedRows.decode(value)
    now = int(time.time() * 1000)
    for row in msg.rows:
        row["finalised_at"] = now
    return {LAKE_ROLLUPS: _positioned(msg, ROLLUP_SCHEMA)}


def decode_alerts(value: bytes) -> dict[str, pa.Table]:
    return {LAKE_ALERTS: _positioned(wire.PositionedRows.decode(value), ALERT_SCHEMA)}


def _positioned(msg: wire.PositionedRows, schema: pa.Schema) -> pa.Table:
    return positioned_table(msg.rows, schema, msg.partition, msg.offset, msg.base)


def decode_changes(value: bytes) -> dict[str, pa.Table]:
    msg = wire.IdentityChanges.decode(value)
    for row in msg.identities:
        row["updated_at"] = msg.decided_at
    for row in msg.merges:
        row["decided_at"] = msg.decided_at
    return {
        LAKE_IDENTITIES: positioned_table(
            msg.identities, IDENTITY_SCHEMA, msg.partition, msg.offset, msg.base
        ),
        LAKE_MERGES: positioned_table(
            msg.merges, MERGE_SCHEMA, msg.partition, msg.offset, msg.base
        ),
    }


def register(app: faust.App, ctx: Context) -> list[Any]:
    lake = ctx.domain.lake
    profile_tables = (LAKE_EVENTS, LAKE_PROFILE_CHANGES, LAKE_MEMBER_REJECTS)
    events_sink = Sink(
        ctx,
        AGENT_SINK_EVENTS,
        TOPIC_RAW,
        {table: lake[table] for table in profile_tables},
        events_decoder(ctx.domain.identify),
    )
    dlq_sink = Sink(ctx, AGENT_SINK_DLQ, TOPIC_RAW, {LAKE_DLQ: lake[LAKE_DLQ]}, decode_dlq)
    identity_sink = Sink(
        ctx,
        AGENT_SINK_IDENTITY,
        TOPIC_LINKS,
        {LAKE_IDENTITIES: lake[LAKE_IDENTITIES], LAKE_MERGES: lake[LAKE_MERGES]},
        decode_changes,
    )
    rollups_sink = Sink(
        ctx,
        AGENT_SINK_ROLLUPS,
        TOPIC_PARTIALS,
        {LAKE_ROLLUPS: lake[LAKE_ROLLUPS]},
        decode_rollups,
        positioned_in=lambda m: wire.PositionedRows.decode(m.value).partition,
    )
    alerts_sink = Sink(
        ctx, AGENT_SINK_ALERTS, TOPIC_ROLLUPS, {LAKE_ALERTS: lake[LAKE_ALERTS]}, decode_alerts
    )
    sinks = [events_sink, dlq_sink, identity_sink, rollups_sink, alerts_sink]

    # Without the stitch stage (stages=ingest) the sink stores validated events directly.
    events_topic = ctx.topics.stitched if ctx.settings.stages == "full" else ctx.topics.valid

    @app.agent(events_topic, name=AGENT_SINK_EVENTS)
    async def sink_events(stream: faust.StreamT) -> None:
        await events_sink.consume(app, stream)

    @app.agent(ctx.topics.dlq, name=AGENT_SINK_DLQ)
    async def sink_dlq(stream: faust.StreamT) -> None:
        await dlq_sink.consume(app, stream)

    @app.agent(ctx.topics.rollups, name=AGENT_SINK_ROLLUPS)
    async def sink_rollups(stream: faust.StreamT) -> None:
        await rollups_sink.consume(app, stream)

    @app.agent(ctx.topics.alerts, name=AGENT_SINK_ALERTS)
    async def sink_alerts(stream: faust.StreamT) -> None:
        await alerts_sink.consume(app, stream)

    @app.agent(ctx.topics.changes, name=AGENT_SINK_IDENTITY)
    async def sink_identity(stream: faust.StreamT) -> None:
        await identity_sink.consume(app, stream)

    @app.timer(interval=0.25)
    async def flush_sinks() -> None:
        for sink in sinks:
            await sink.flush_due()

    @app.on_partitions_revoked.connect  # type: ignore[arg-type]
    async def flush_revoked(sender: Any, revoked: set[Any], **kwargs: Any) -> None:
        # Write what we hold before the next owner reads its checkpoint.
        pairs = (
            (events_sink, events_topic),
            (dlq_sink, ctx.topics.dlq),
            (identity_sink, ctx.topics.changes),
            (rollups_sink, ctx.topics.rollups),
            (alerts_sink, ctx.topics.alerts),
        )
        for sink, topic in pairs:
            names = set(topic.topics)
            parts = {tp.partition for tp in revoked if tp.topic in names}
            if parts:
                await sink.flush_partitions(parts)
                sink.fenced -= parts  # read again from the committed offset if assigned

    return [sink_events, sink_dlq, sink_identity, sink_rollups, sink_alerts]
