"""combine: metrics.partials -> metrics.rollups (final windows) and the metric gauges.

One partition, so one worker merges every source partition's partials and sees every
watermark. A window is finalised when all partitions' watermarks have passed its end plus
the allowed lateness, or, after ``TRACKFLOW_IDLE_CLOSE_SECONDS`` without input, every open
window is (the last windows of a replay). Finals are delivered before the state record
that drops them is written, and carry the position of the partial message that closed
them, so a replay after a crash is stored once.
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Any

import faust

from pipeline.names import AGENT_COMBINE
from pipeline.runtime import wire
from pipeline.runtime.context import Context
from pipeline.runtime.ordered_input import OrderedInput, admit
from pipeline.runtime.streams import Take, consumer_lag, take_batches

log = logging.getLogger(__name__)

IDLE_INDEX_BASE = 1 << 19  # positions of idle-closed rows, after those of the same offset
GAUGE_SECONDS = 5.0  # provisional metric values refresh at least this often

SeriesId = tuple[str, str, str]  # metric, window label, dimensions


def register(app: faust.App, ctx: Context) -> Any:
    stage = Combine(app, ctx)

    @app.agent(ctx.topics.partials, name=AGENT_COMBINE)
    async def combine(stream: faust.StreamT) -> None:
        settings = ctx.settings
        async for events in take_batches(stream, settings.take_max, settings.take_within):
            await stage.process(events)

    @app.on_rebalance_complete.connect  # type: ignore[arg-type]
    async def restart_idle_clock(sender: Any, **kwargs: Any) -> None:
        # Idle means "no input while able to read it": time spent joining the group and
        # recovering tables after a restart must not close windows that input will fill.
        stage.ready = True
        stage.last_input = time.monotonic()

    @app.timer(interval=1.0)
    async def close_idle() -> None:
        await stage.close_if_idle()

    @app.timer(interval=GAUGE_SECONDS)
    async def update_gauges() -> None:
        # Its own timer: provisional values must move while input flows too, and resolving
        # uv's identifiers every second would be work nobody reads.
        async with stage.lock:
            stage.show_values()

    return combine


class Combine:
    """The combine stage of this worker: merging, closing, publishing, and its gauges."""

    def __init__(self, app: faust.App, ctx: Context) -> None:
        self.app = app
        self.ctx = ctx
        self.metrics = ctx.metrics
        self.state = ctx.domain.combine
        self.table = ctx.tables.combine_windows
        self.lock = asyncio.Lock()
        self.input = OrderedInput(app, AGENT_COMBINE, ctx.metrics, ctx.start_offsets)
        self.ready = False
        self.last_input = time.monotonic()
        self.finals: dict[SeriesId, tuple[int, float | None]] = {}
        topics = ctx.topics
        self.links_topics = set(topics.links.topics)
        self.upstream = {
            name
            for topic in (topics.raw, topics.valid, topics.stitched, topics.partials)
            for name in topic.topics
        }

    async def process(self, events: Take) -> None:
        state = self.state
        async with self.lock:
            await self.send_unsent()
            late_before = state.late
            for event in await admit(self.input, events):
                m = event.message
                if m.offset <= state.offset:
                    continue
                state.apply(wire.decode_partials(m.value), now_ms=_monotonic_ms())
                state.offset = m.offset
            self.last_input = time.monotonic()
            if state.late > late_before:
                self.metrics.late_events.labels("any", AGENT_COMBINE).inc(state.late - late_before)
            # Funnels and uv count persons: windows wait until the identity writer has
            # applied every link sent so far.
            pending = self.pending_in(self.links_topics)
            rows = [] if pending else state.close_ready(now_ms=_monotonic_ms())
            await self.publish(rows, state.offset, 0, "watermark")

    async def close_if_idle(self) -> None:
        if self.app.rebalancing or not self.ready or self.upstream_pending():
            self.last_input = time.monotonic()
            return
        async with self.lock:
            await self.send_unsent()
            state = self.state
            idle = time.monotonic() - self.last_input >= self.ctx.settings.idle_close_seconds
            if state.open and idle and state.offset >= 0:
                await self.publish(state.close_all(), state.offset, IDLE_INDEX_BASE, "idle")

    async def publish(
        self, rows: list[dict[str, Any]], offset: int, base: int, reason: str
    ) -> None:
        """Log the state change with ``rows`` as its outbox, then deliver the rows."""
        outbox = (offset, base, rows) if rows else None
        records = self.state.take_records(outbox=outbox)
        for i, record in enumerate(records):
            await self.table.append(0, f"combine:{offset}:{base}:{i}", record)
        if rows:
            await self.send(offset, base, rows)
            for row in rows:
                key = (row["metric"], row["window"], row["dimensions"])
                if row["window_start"] >= self.finals.get(key, (-1, None))[0]:
                    self.finals[key] = (row["window_start"], row["value"])
            for window in {(r["window"], r["window_start"]) for r in rows}:
                self.metrics.windows_closed.labels(window[0], reason).inc()

    async def send(self, offset: int, base: int, rows: list[dict[str, Any]]) -> None:
        for value in wire.PositionedRows(0, offset, base, rows).encode_all():
            await (await self.ctx.topics.rollups.send(value=value, partition=0))

    async def send_unsent(self) -> None:
        """After a recovery: the last outbox may never have been sent (a crash between
        logging and sending); sending it again is harmless, it keeps its position."""
        unsent, self.state.unsent = self.state.unsent, None
        if unsent is not None and unsent[2]:
            log.info("combine: re-sending %s final rows of the last outbox", len(unsent[2]))
            await self.send(*unsent)

    def upstream_pending(self) -> bool:
        """Input this worker has not yet consumed: the pipeline is catching up, not idle."""
        return self.pending_in(self.upstream | self.links_topics)

    def pending_in(self, topics: set[str]) -> bool:
        lag = consumer_lag(self.app)
        return lag is None or any(n for tp, n in lag.items() if tp.topic in topics)

    def show_values(self) -> None:
        shown: dict[SeriesId, tuple[int, float | None]] = dict(self.finals)
        for row in self.state.provisional():
            key = (row["metric"], row["window"], row["dimensions"])
            if row["window_start"] >= shown.get(key, (-1, None))[0]:
                shown[key] = (row["window_start"], row["value"])
        for (metric, window, dims), (_, value) in shown.items():
            if value is not None:
                self.metrics.metric_value.labels(metric, window, dims).set(value)
        self.metrics.open_windows.set(len({(k[1], k[2]) for k in self.state.open}))


def _monotonic_ms() -> int:
    """Processing time for partition idleness: immune to wall-clock jumps."""
    return int(time.monotonic() * 1000)
