"""identity: the single writer. identity.links -> identity map (global table) + identity.changes.

identity.links has one partition, so one worker at a time applies links, in one order.
For each link message it sends what changed (identifier rows, merges and refusals) to
identity.changes, waits until that is delivered, and only then appends the links to the
map's changelog: after a crash between the two, the replayed message recomputes the same
changes from the same map, and the sink keeps the first copy (same source position).
A take whose last message changed nothing still ends with a record of its offset, so
every worker's map knows how far into identity.links it is (``IdentityTable.known``).
"""

from __future__ import annotations

import time
from typing import Any

import faust

from pipeline.identity.graph import Link
from pipeline.names import AGENT_IDENTITY
from pipeline.runtime import wire
from pipeline.runtime.context import Context
from pipeline.runtime.ordered_input import OrderedInput, admit
from pipeline.runtime.streams import take_batches


def register(app: faust.App, ctx: Context) -> Any:
    graph = ctx.domain.graph
    metrics = ctx.metrics
    settings = ctx.settings
    ordered = OrderedInput(app, AGENT_IDENTITY, metrics, ctx.start_offsets)

    @app.agent(ctx.topics.links, name=AGENT_IDENTITY)
    async def identity(stream: faust.StreamT) -> None:
        async for events in take_batches(stream, settings.take_max, settings.take_within):
            applied: list[tuple[int, list[Link]]] = []
            pending: list[Any] = []
            last = recorded = -1  # the take's last offset read, and the last recorded
            for event in await admit(ordered, events):
                m = event.message
                last = m.offset
                try:
                    tombstone = wire.decode_forget(m.value)
                except (ValueError, TypeError):
                    tombstone = None
                if tombstone is not None:
                    # Links so far first: the changelog keeps the writer's order.
                    await _record(ctx, pending, applied)
                    pending, applied = [], []
                    await _forget(ctx, m, *tombstone)
                    ctx.tables.identity.note(m.offset)
                    recorded = m.offset
                    continue
                try:
                    links = wire.decode_links(m.value)
                except (ValueError, TypeError):
                    # Only stitch writes this topic; a foreign message is logged and skipped.
                    app.log.error("identity: skipping undecodable link message at %s", m.offset)
                    continue
                changes = graph.add(links)
                ctx.tables.identity.note(m.offset)  # this worker's map has them now
                if not changes:
                    continue
                applied.append((m.offset, links))
                metrics.links_applied.inc(changes.applied)
                for merge in changes.merges:
                    metrics.merges.labels(str(merge["accepted"]).lower(), merge["reason"]).inc()
                if changes.identities or changes.merges:
                    message = wire.IdentityChanges(
                        m.partition,
                        m.offset,
                        int(time.time() * 1000),
                        changes.identities,
                        changes.merges,
                    )
                    for value in message.encode_all():
                        pending.append(await ctx.topics.changes.send(value=value, partition=0))
                if m.timestamp:
                    metrics.writer_lag.set(max(0.0, time.time() - m.timestamp))
            await _record(ctx, pending, applied)
            if applied:
                recorded = applied[-1][0]
            if last > recorded:
                await ctx.tables.identity.record_progress(last)

    return identity


async def _record(ctx: Context, pending: list[Any], applied: list[tuple[int, list[Link]]]) -> None:
    for fut in pending:
        await fut  # delivered before the changelog says these links are applied
    for offset, links in applied:
        await ctx.tables.identity.record(f"links:{offset}", links)


async def _forget(ctx: Context, m: Any, kind: str, nodes: list[str]) -> None:
    """A privacy tombstone (DESIGN 15): drop a deleted person's identifiers from the map
    (every identifier of their persons, as this map knows them), or readmit them. Persons
    recomputed because of it are sent like any change; then the changelog tells every
    worker, with the identifiers expanded, so their maps do exactly the same."""
    graph = ctx.domain.graph
    if kind == "unforget":
        graph.unforget(nodes)
        await ctx.tables.identity.record_forget(f"unforget:{m.offset}", kind, nodes)
        return
    gone = sorted(graph.person_nodes(nodes) | set(nodes))
    changes = graph.forget(gone)
    if changes.identities or changes.merges:
        message = wire.IdentityChanges(
            m.partition, m.offset, int(time.time() * 1000), changes.identities, changes.merges
        )
        for value in message.encode_all():
            await (await ctx.topics.changes.send(value=value, partition=0))
    ctx.metrics.identities_forgotten.inc(changes.applied)
    await ctx.tables.identity.record_forget(f"forget:{m.offset}", kind, gone)
