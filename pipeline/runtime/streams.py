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
from collections.abc import AsyncIterator
from typing import Any

from faust.types import EventT, StreamT
from mode.utils.futures import notify


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
    """Messages between the log end and the committed offset, per assigned partition.

    None while the consumer has no assignment yet.
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
