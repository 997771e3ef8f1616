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
import time
from typing import Any

import faust
import orjson

from pipeline.names import AGENT_COMBINE
from pipeline.runtime.context import Context
from pipeline.runtime.streams import consumer_lag, in_offset_order, take_batches

IDLE_INDEX_BASE = 1 << 19  # positions of idle-closed rows, after those of the same offset
GAUGE_SECONDS = 5.0  # provisional metric values refresh at least this often


def register(app: faust.App, ctx: Context) -> Any:
    settings = ctx.settings
    metrics = ctx.metrics
    state = ctx.combine
    table = ctx.combine_windows
    lock = asyncio.Lock()
    last_input = [time.monotonic()]
    finals: dict[tuple[str, str, str], tuple[int, float | None]] = {}

    async def publish(rows: list[dict[str, Any]], offset: int, base: int, reason: str) -> None:
        if rows:
            value = orjson.dumps({"p": 0, "o": offset, "base": base, "rows": rows})
            await (await ctx.topics.rollups.send(value=value, partition=0))
            for row in rows:
                key = (row["metric"], row["window"], row["dimensions"])
                if row["window_start"] >= finals.get(key, (-1, None))[0]:
                    finals[key] = (row["window_start"], row["value"])
            for window in {(r["window"], r["window_start"]) for r in rows}:
                metrics.windows_closed.labels(window[0], reason).inc()
        record = state.take_record()
        if record is not None:
            table.append(0, f"combine:{offset}:{base}", record)

    @app.agent(ctx.topics.partials, name=AGENT_COMBINE)
    async def combine(stream: faust.StreamT) -> None:
        async for events in take_batches(stream, settings.take_max, settings.take_within):
            async with lock:
                late_before = state.late
                for event in in_offset_order(events):
                    m = event.message
                    if m.offset <= state.offset:
                        continue
                    state.apply(orjson.loads(m.value or b"{}"))
                    state.offset = m.offset
                last_input[0] = time.monotonic()
                if state.late > late_before:
                    metrics.late_events.labels("any", AGENT_COMBINE).inc(state.late - late_before)
                # Funnels and uv count persons: windows wait until the identity writer has
                # applied every link sent so far.
                rows = [] if pending_in(links_topics) else state.close_ready()
                await publish(rows, state.offset, 0, "watermark")

    ready = [False]

    @app.on_rebalance_complete.connect  # type: ignore[arg-type]
    async def restart_idle_clock(sender: Any, **kwargs: Any) -> None:
        # Idle means "no input while able to read it": time spent joining the group and
        # recovering tables after a restart must not close windows that input will fill.
        ready[0] = True
        last_input[0] = time.monotonic()

    upstream = {
        name
        for topic in (ctx.topics.raw, ctx.topics.valid, ctx.topics.stitched, ctx.topics.partials)
        for name in topic.topics
    }

    links_topics = set(ctx.topics.links.topics)

    def upstream_pending() -> bool:
        """Input this worker has not yet consumed: the pipeline is catching up, not idle."""
        return pending_in(upstream | links_topics)

    def pending_in(topics: set[str]) -> bool:
        lag = consumer_lag(app)
        return lag is None or any(n for tp, n in lag.items() if tp.topic in topics)

    @app.timer(interval=1.0)
    async def close_idle() -> None:
        if app.rebalancing or not ready[0] or upstream_pending():
            last_input[0] = time.monotonic()
            return
        async with lock:
            idle = time.monotonic() - last_input[0] >= settings.idle_close_seconds
            if state.open and idle and state.offset >= 0:
                await publish(state.close_all(), state.offset, IDLE_INDEX_BASE, "idle")

    @app.timer(interval=GAUGE_SECONDS)
    async def update_gauges() -> None:
        # Its own timer: provisional values must move while input flows too, and resolving
        # uv's identifiers every second would be work nobody reads.
        async with lock:
            show_values()

    def show_values() -> None:
        shown: dict[tuple[str, str, str], tuple[int, float | None]] = dict(finals)
        for row in state.provisional():
            key = (row["metric"], row["window"], row["dimensions"])
            if row["window_start"] >= shown.get(key, (-1, None))[0]:
                shown[key] = (row["window_start"], row["value"])
        for (metric, window, dims), (_, value) in shown.items():
            if value is not None:
                metrics.metric_value.labels(metric, window, dims).set(value)
        metrics.open_windows.set(len({(k[1], k[2]) for k in state.open}))

    return combine
