"""stitch: events.valid -> events.stitched (person_id set) + new links -> identity.links."""

from __future__ import annotations

from typing import Any

import faust

from pipeline.names import AGENT_STITCH
from pipeline.runtime import wire
from pipeline.runtime.context import Context
from pipeline.runtime.ordered_input import OrderedInput, admit
from pipeline.runtime.streams import take_batches
from tables.identity import PARTITION


def register(app: faust.App, ctx: Context) -> Any:
    stitcher = ctx.domain.stitcher
    metrics = ctx.metrics
    settings = ctx.settings
    ordered = OrderedInput(app, AGENT_STITCH, metrics, ctx.start_offsets)

    @app.agent(ctx.topics.valid, name=AGENT_STITCH)
    async def stitch(stream: faust.StreamT) -> None:
        async for events in take_batches(stream, settings.take_max, settings.take_within):
            links = []
            for event in await admit(ordered, events):
                m = event.message
                table, new_links = stitcher.stitch(wire.decode_events(m.value))
                links.extend(new_links)
                metrics.stage_in.labels(AGENT_STITCH).inc(table.num_rows)
                for value in wire.encode_events(table):
                    await ctx.topics.stitched.send(value=value, partition=m.partition)
                metrics.stage_out.labels(AGENT_STITCH).inc(table.num_rows)
            if links:
                # One message per take: the writer's cost is per message, like every agent's.
                for value in wire.encode_links(links):
                    await ctx.topics.links.send(value=value, partition=PARTITION)
                metrics.links_sent.inc(len(links))

    return stitch
