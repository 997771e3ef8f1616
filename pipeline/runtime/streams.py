"""Batched stream consumption that acks only what was fully processed.

Faust's ``Stream.take_events`` acks the batch in a ``finally`` block, so when the loop body
raises (or is cancelled at shutdown) half-way through sending outputs, the input is still
marked consumed and committed: silent loss. ``take_batches`` is the same buffering, but
acks only after the body returned normally. An unacked message holds the committed offset
back, so after a restart everything from it on is read again, and the offset checks
downstream drop what had been written already.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from typing import Any

from faust.types import EventT, StreamT
from mode.utils.futures import notify

from pipeline.runtime.start_offsets import StartOffsets

log = logging.getLogger(__name__)


class Take(list[EventT]):
    """One take's events. The body may ``hold`` some: they are not acked, so the committed
    offset cannot pass them and a seek back reads them again."""

    def __init__(self, events: list[EventT]) -> None:
        super().__init__(events)
        self.held: set[int] = set()

    def hold(self, event: EventT) -> None:
        self.held.add(id(event))


async def take_batches(stream: StreamT, max_: int, within: float) -> AsyncIterator[Take]:
    events: list[EventT] = []
    buffer_full = asyncio.Event()
    buffer_consumed = asyncio.Event()
    buffer_consuming: asyncio.Future[Any] | None = None
    channel_it = stream.channel.__aiter__()
    s: Any = stream

    async def add_to_buffer(value: Any) -> Any:
        nonlocal buffer_consuming
        if buffer_consuming is not None:
            try:
                await buffer_consuming
            finally:
                buffer_consuming = None
        event = s.current_event
        if event is None:
            raise RuntimeError("take_batches found current_event is None")
        events.append(event)
        if len(events) >= max_:
            buffer_full.set()
            buffer_consumed.clear()
            await s.wait(buffer_consumed)
        return value

    stream_enable_acks = s.enable_acks
    s.enable_acks = False
    s.add_processor(add_to_buffer)
    s._enable_passive(channel_it)
    try:
        while not s.should_stop:
            await s.wait_for_stopped(buffer_full, timeout=within)
            if not events:
                continue
            buffer_consuming = s.loop.create_future()
            batch = Take(list(events))
            events.clear()
            processed = False
            try:
                yield batch
                processed = True
            finally:
                if processed:
                    for event in batch:
                        if id(event) not in batch.held:
                            await s.ack(event)
                notify(buffer_consuming)
                buffer_full.clear()
                buffer_consumed.set()
    finally:
        s.enable_acks = stream_enable_acks
        s._processors.remove(add_to_buffer)


def in_offset_order(events: list[EventT]) -> list[EventT]:
    """A take's events sorted by (partition, offset), each message once.

    After a seek (a rebalance, a restart) a take can hold a message twice and earlier
    offsets after later ones; every stage must see its input in log order.
    """
    out: list[EventT] = []
    seen: set[tuple[int, int]] = set()
    for event in sorted(events, key=lambda e: (e.message.partition, e.message.offset)):
        key = (event.message.partition, event.message.offset)
        if key not in seen:
            seen.add(key)
            out.append(event)
    return out


def consumer_lag(app: Any) -> dict[Any, int] | None:
    """Faust's own view: log end minus this worker's last commit, per assigned partition,
    changelogs included, a partition this worker has not committed yet counted whole.

    Conservative on purpose for the combine stage, which asks only "is some input of these
    topics possibly unread?" before closing windows as idle. Not a lag to show anyone:
    ``InputLag`` is. None while the consumer has no assignment yet.
    """
    consumer = app.consumer
    try:
        assignment = consumer.assignment()
    except Exception:  # not yet assigned
        return None
    committed = getattr(consumer, "_committed_offset", {})
    lag = {}
    for tp in assignment:
        high = consumer.highwater(tp)
        if high is not None:
            lag[tp] = max(0, high - (committed.get(tp) or 0))
    return lag


def agent_input_topics(app: Any) -> set[str]:
    """The topics the app's agents read.

    A worker is assigned more than that: the tables' changelogs (active and standby, read
    by recovery and never committed by the group) and Faust's assignor leader topic. Only
    agent input is work waiting for this worker.
    """
    topics: set[str] = set()
    for agent in app.agents.values():
        topics.update(getattr(agent.channel, "topics", None) or ())
    return topics


def owned_partitions(app: Any, topics: set[str]) -> set[Any] | None:
    """The partitions of ``topics`` assigned to this worker; None while it cannot say."""
    try:
        assignment = app.consumer.assignment()
    except Exception:  # the consumer is not started or not assigned yet
        return None
    return {tp for tp in assignment if tp.topic in topics}


class InputLag:
    """Messages the consumer group has not committed, per agent input partition this
    worker owns.

    Measured against the group's committed offset: Faust's record of this worker's last
    commit once it made one, else what ``StartOffsets`` read from the broker when the
    partition was assigned (the group's committed offset, or the log start where the
    consumer begins when nothing is committed). Faust alone forgets its record on every
    revoke and never learns offsets another worker committed, so a partition taken over
    counted from 0, its whole log, until this worker's first commit. The log end is asked
    of the broker. It can be under-reported (the embedded Tansu broker answers the last
    batch's base offset + 1): a lag below zero is 0.
    """

    def __init__(self, app: Any, offsets: StartOffsets) -> None:
        self.app = app
        self.offsets = offsets
        self._start: dict[Any, int] = {}
        app.on_partitions_revoked.connect(self._revoked)

    async def _revoked(self, sender: Any, revoked: set[Any], **kwargs: Any) -> None:
        for tp in revoked:
            self._start.pop(tp, None)

    async def sample(self) -> dict[Any, int] | None:
        """Lag per owned input partition; None while the assignment is unknown. A
        partition whose start or end the broker cannot say now is left out."""
        owned = owned_partitions(self.app, agent_input_topics(self.app))
        if owned is None:
            return None
        for tp in set(self._start) - owned:
            del self._start[tp]
        for tp in sorted(owned - set(self._start)):
            try:
                start = await self.offsets.start(tp)
            except Exception as exc:  # the broker cannot say now: try at the next sample
                log.debug("no committed offset for %s[%s]: %s", tp.topic, tp.partition, exc)
                continue
            if start is not None:
                self._start[tp] = start
        ends = await self._ends(owned)
        committed = getattr(self.app.consumer, "_committed_offset", {})
        lag = {}
        for tp in owned:
            bases = [b for b in (committed.get(tp), self._start.get(tp)) if b is not None]
            end = ends.get(tp)
            if bases and end is not None:
                lag[tp] = max(0, end - max(bases))
        return lag

    async def _ends(self, owned: set[Any]) -> dict[Any, int]:
        if not owned:
            return {}
        consumer = self.app.consumer
        try:
            ends = await consumer.highwaters(*owned)
            return {tp: int(end) for tp, end in ends.items() if end is not None}
        except Exception as exc:  # fall back on the ends seen by the last fetches
            log.debug("log end offsets unavailable: %s", exc)
        out = {}
        for tp in owned:
            end = consumer.highwater(tp)
            if end is not None:
                out[tp] = int(end)
        return out
