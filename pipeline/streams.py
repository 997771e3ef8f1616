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


async def take_batches(stream: StreamT, max_: int, within: float) -> AsyncIterator[list[EventT]]:
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
            batch = list(events)
            events.clear()
            processed = False
            try:
                yield batch
                processed = True
            finally:
                if processed:
                    for event in batch:
                        await s.ack(event)
                notify(buffer_consuming)
                buffer_full.clear()
                buffer_consumed.set()
    finally:
        s.enable_acks = stream_enable_acks
        s._processors.remove(add_to_buffer)
