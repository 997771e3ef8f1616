"""stitch: events.valid -> events.stitched (person_id set) + new links -> identity.links.

A take's links are delivered before its stitched events are sent, and each stitched
message carries (``wire.LINKS_HEADER``) the identity.links offset up to which a map must
hold links to resolve its events as this worker did: the newest link this worker sent,
or the newest its own map held, whichever is later. The combine stage closes windows of
persons only when its map has reached that offset (docs/decisions.md).
"""

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
    identity = ctx.tables.identity
    ordered = OrderedInput(app, AGENT_STITCH, metrics, ctx.start_offsets)
    sent_through = -1  # the newest identity.links offset this worker's links went to

    @app.agent(ctx.topics.valid, name=AGENT_STITCH)
    async def stitch(stream: faust.StreamT) -> None:
        nonlocal sent_through
        async for events in take_batches(stream, settings.take_max, settings.take_within):
            out = []
            links = []
            for event in await admit(ordered, events):
                m = event.message
                table, new_links = stitcher.stitch(wire.decode_events(m.value))
                links.extend(new_links)
                metrics.stage_in.labels(AGENT_STITCH).inc(table.num_rows)
                out.append((m.partition, table))
            through = identity.known  # the map these events were stitched with
            if links:
                # One message per take: the writer's cost is per message, like every agent's.
                pending = [
                    await ctx.topics.links.send(value=value, partition=PARTITION)
                    for value in wire.encode_links(links)
                ]
                for fut in pending:
                    sent_through = max(sent_through, (await fut).offset)
                metrics.links_sent.inc(len(links))
            headers = wire.links_header(max(through, sent_through))
            for partition, table in out:
                for value in wire.encode_events(table):
                    await ctx.topics.stitched.send(
                        value=value, partition=partition, headers=headers
                    )
                metrics.stage_out.labels(AGENT_STITCH).inc(table.num_rows)

    return stitch
