"""The stitch agent: it reads events.valid and feeds the sink and the writer; links are
delivered before the events that made them, which carry the offset a map must reach."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
from faust.types import TP

import agents.stitch
from pipeline import names
from pipeline.app import create_app
from pipeline.runtime import wire
from pipeline.runtime.context import Context
from pipeline.runtime.streams import Take
from pipeline.settings import Settings
from tests.records import event_row


def test_stitch_reads_valid_and_writes_stitched_copartitioned(tmp_path: Path) -> None:
    app, ctx = create_app(
        Settings(data_dir=tmp_path, topic_prefix="x.", partitions=6), ensure_topics=False
    )
    agent = app.agents[names.AGENT_STITCH]
    assert agent.name == names.AGENT_STITCH
    assert set(agent.channel.topics) == {"x.events.valid"}
    assert set(ctx.topics.stitched.topics) == {"x.events.stitched"}
    assert ctx.topics.stitched.partitions == 6
    # The events sink reads the stitched events, not the validated ones.
    assert set(app.agents[names.AGENT_SINK_EVENTS].channel.topics) == {"x.events.stitched"}


def test_links_go_to_a_single_partition_topic(tmp_path: Path) -> None:
    _app, ctx = create_app(
        Settings(data_dir=tmp_path, topic_prefix="x.", partitions=6), ensure_topics=False
    )
    assert set(ctx.topics.links.topics) == {"x.identity.links"}
    assert ctx.topics.links.partitions == 1
    assert ctx.topics.links.internal


# -- links before events, and the offset they travel with ---------------------------


class Harness:
    """The stitch agent with fake takes; links and stitched sends recorded in order."""

    def __init__(self, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
        app, ctx = create_app(
            Settings(data_dir=tmp_path, topic_prefix="x.", partitions=6), ensure_topics=False
        )
        self.agent = app.agents[names.AGENT_STITCH]
        self.ctx = ctx
        self.takes: list[list[Any]] = []
        self.log: list[tuple[str, Any]] = []  # ("links", offset) / ("stitched", headers)
        self.next_links_offset = 40
        self.deliveries: list[asyncio.Future[Any]] = []
        monkeypatch.setattr(agents.stitch, "take_batches", self._take_batches)
        monkeypatch.setattr(ctx.topics.links, "send", self._send_links)
        monkeypatch.setattr(ctx.topics.stitched, "send", self._send_stitched)

    async def _take_batches(self, stream: Any, max_: int, within: float) -> AsyncIterator[Take]:
        for take in self.takes:
            yield Take(take)

    async def _send_links(self, *, value: bytes, partition: int) -> asyncio.Future[Any]:
        offset, self.next_links_offset = self.next_links_offset, self.next_links_offset + 1
        delivered: asyncio.Future[Any] = asyncio.get_running_loop().create_future()

        def deliver() -> None:
            self.log.append(("links", offset))
            delivered.set_result(SimpleNamespace(offset=offset))

        asyncio.get_running_loop().call_later(0.01, deliver)
        return delivered

    async def _send_stitched(self, *, value: bytes, partition: int, headers: Any) -> None:
        self.log.append(("stitched", wire.links_through(headers)))

    def run(self, *takes: list[Any]) -> None:
        self.takes = list(takes)
        asyncio.run(self.agent.fun(None))


def valid(ctx: Context, offset: int, rows: list[dict[str, Any]]) -> Any:
    (value,) = wire.encode_events(ctx.domain.batches.build(rows))
    return SimpleNamespace(
        message=SimpleNamespace(partition=2, offset=offset, value=value, tp=TP("x.events.valid", 2))
    )


def test_links_are_delivered_before_the_events_that_made_them_are_sent(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    h = Harness(tmp_path, monkeypatch)
    ctx = h.ctx
    login = valid(ctx, 1, [event_row(offset=1, user_id="U1", anonymous_id="d1")])
    browse = valid(ctx, 2, [event_row(offset=2, anonymous_id="d1")])
    h.run([login, browse])
    # The take's links first (delivered at offset 40), then both events, each saying that a
    # map must hold identity.links up to 40 to resolve them as stitch did.
    assert h.log == [("links", 40), ("stitched", 40), ("stitched", 40)]


def test_without_new_links_events_carry_the_newest_offset_the_map_or_stitch_knew(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    h = Harness(tmp_path, monkeypatch)
    ctx = h.ctx
    first = valid(ctx, 1, [event_row(offset=1, user_id="U1", anonymous_id="d1")])
    again = valid(ctx, 2, [event_row(offset=2, user_id="U1", anonymous_id="d1")])
    h.run([first], [again])  # the second take's links are known to stitch: none sent
    assert h.log == [("links", 40), ("stitched", 40), ("stitched", 40)]

    ctx.tables.identity.note(77)  # the map has moved on (another worker's links)
    h.log.clear()
    h.run([valid(ctx, 3, [event_row(offset=3, user_id="U1", anonymous_id="d1")])])
    assert h.log == [("stitched", 77)]
