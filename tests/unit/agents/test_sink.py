"""The sink's acking discipline: input is acked only once its rows are on disk."""

from __future__ import annotations

import asyncio
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pyarrow.parquet as pq

from agents.sink import Sink
from pipeline import names
from pipeline.app import create_app
from pipeline.codecs import encode_arrow
from pipeline.settings import Settings


class FakeEvent:
    def __init__(self, value: bytes) -> None:
        self.message = SimpleNamespace(value=value, timestamp=None, partition=2)
        self.acked = False

    def ack(self) -> bool:
        self.acked = True
        return True


class FakeStream:
    def __init__(self, events: list[FakeEvent]) -> None:
        self._events = events

    def noack(self) -> FakeStream:
        return self

    async def events(self) -> Any:
        for e in self._events:
            yield e

    async def ack(self, event: FakeEvent) -> bool:
        return event.ack()


def record(offset: int, index: int = 0) -> dict[str, Any]:
    return {
        "event_id": f"e{offset}-{index}",
        "event_name": "page_view",
        "event_time": 1795420000000,
        "received_at": 1795420000500,
        "anonymous_id": "d1",
        "user_id": None,
        "person_id": None,
        "platform": "web",
        "app_version": None,
        "channel": None,
        "identities": None,
        "consent_marketing": None,
        "schema_version": 1,
        "properties": {"page": "home"},
        "source_partition": 2,
        "source_offset": offset,
        "source_index": index,
    }


def batch(ctx: Any, offsets: list[int]) -> bytes:
    (value,) = encode_arrow(ctx.batches.build([record(o) for o in offsets]))
    return value


def test_acks_only_after_flush_and_replays_are_dropped(tmp_path: Path) -> None:
    settings = Settings(data_dir=tmp_path, sink_flush_rows=1_000_000, sink_flush_seconds=3600)
    _, ctx = create_app(settings, ensure_topics=False)
    sink = Sink(ctx, names.AGENT_SINK_EVENTS, names.LAKE_EVENTS, ctx.lake_events)
    events = [
        FakeEvent(batch(ctx, [1, 2, 3])),
        FakeEvent(batch(ctx, [2, 3, 4, 5])),
    ]  # second overlaps
    asyncio.run(sink.consume(FakeStream(events)))  # type: ignore[arg-type]
    assert not any(e.acked for e in events), "acked before the rows were written"
    asyncio.run(sink.flush_partitions({2}))
    assert all(e.acked for e in events)
    files = list((tmp_path / "lake" / "events").rglob("*.parquet"))
    offsets = sorted(o for f in files for o in pq.read_table(f).column("source_offset").to_pylist())
    assert offsets == [1, 2, 3, 4, 5]
    assert ctx.metrics.events_stored._value.get() == 5


def test_flush_due_by_age(tmp_path: Path) -> None:
    settings = Settings(data_dir=tmp_path, sink_flush_rows=1_000_000, sink_flush_seconds=0.01)
    _, ctx = create_app(settings, ensure_topics=False)
    sink = Sink(ctx, names.AGENT_SINK_EVENTS, names.LAKE_EVENTS, ctx.lake_events)
    event = FakeEvent(batch(ctx, [7]))
    asyncio.run(sink.consume(FakeStream([event])))  # type: ignore[arg-type]

    async def later() -> None:
        await asyncio.sleep(0.05)
        await sink.flush_due()

    asyncio.run(later())
    assert event.acked
