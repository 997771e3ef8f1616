"""aggregate: events.stitched -> metrics.partials, one partial message per input message
and combine partition.

Per input message (a batch of one partition), one value per (metric, window, dimensions),
and the partition's watermark after it, split by the combine partition of each metric
(``pipeline.metrics.routing``); every combine partition gets the watermark. Exactly once
without transactions, twice over: rows at or below the recorded events.raw position were
counted before a crash (upstream re-sends them in new messages), and a partial message
re-sent for the same input message carries the same (partition, offset), which the
combine stage has applied and skips. Each partial carries its message's identity.links
offset (``wire.LINKS_HEADER``), which windows of persons wait for.
"""

from __future__ import annotations

from typing import Any

import faust
import pyarrow.compute as pc

from pipeline.lake.writer import positions
from pipeline.metrics.partials import partials
from pipeline.metrics.windows import window_label
from pipeline.names import AGENT_AGGREGATE
from pipeline.runtime import wire
from pipeline.runtime.context import Context
from pipeline.runtime.ordered_input import OrderedInput, admit
from pipeline.runtime.streams import take_batches


def register(app: faust.App, ctx: Context) -> Any:
    settings = ctx.settings
    metrics = ctx.metrics
    progress = ctx.tables.aggregate_progress
    defs = ctx.domain.metric_defs
    place = ctx.domain.combine_place
    ordered = OrderedInput(app, AGENT_AGGREGATE, metrics, ctx.start_offsets)

    @app.agent(ctx.topics.stitched, name=AGENT_AGGREGATE)
    async def aggregate(stream: faust.StreamT) -> None:
        async for events in take_batches(stream, settings.take_max, settings.take_within):
            pending = []
            done: dict[int, tuple[int, int]] = {}
            for event in await admit(ordered, events):
                m = event.message
                high, watermark = done.get(m.partition) or progress.get_progress(m.partition)
                table = wire.decode_events(m.value)
                pos = positions(table)
                if table.num_rows and pc.min(pos).as_py() <= high:
                    fresh = pc.greater(pos, high)  # rows counted before a restart drop out
                    table, pos = table.filter(fresh), pos.filter(fresh)
                if table.num_rows == 0:
                    continue
                got = partials(table, defs.values(), settings.lateness_seconds, watermark)
                watermark = max(watermark, got.max_time)
                values = wire.split_partials(
                    m.partition,
                    m.offset,
                    watermark,
                    got,
                    defs,
                    place,
                    settings.combine_partitions,
                    wire.links_through(getattr(m, "headers", None)),
                )
                for c, value in enumerate(values):
                    pending.append(await ctx.topics.partials.send(value=value, partition=c))
                done[m.partition] = (max(high, pc.max(pos).as_py()), watermark)
                metrics.stage_in.labels(AGENT_AGGREGATE).inc(table.num_rows)
                for size, n in got.late.items():
                    if n:
                        metrics.late_events.labels(window_label(size), AGENT_AGGREGATE).inc(n)
            for fut in pending:
                await fut  # partials delivered before the progress says they were sent
            for partition, (offset, watermark) in done.items():
                await progress.record(partition, offset, watermark)

    return aggregate
