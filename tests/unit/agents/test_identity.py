"""The identity agent (single writer) and the global table every worker replays."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import orjson
import pytest
from faust.types import TP

import agents.identity
from pipeline import names
from pipeline.app import create_app
from pipeline.identity.graph import IdentityGraph
from pipeline.runtime.streams import Take
from pipeline.settings import Settings
from tables.identity import links_offset


def make(tmp_path: Path) -> Any:
    return create_app(
        Settings(data_dir=tmp_path, topic_prefix="x.", partitions=6), ensure_topics=False
    )


def test_writer_reads_links_and_publishes_changes(tmp_path: Path) -> None:
    app, ctx = make(tmp_path)
    agent = app.agents[names.AGENT_IDENTITY]
    assert agent.name == names.AGENT_IDENTITY
    assert set(agent.channel.topics) == {"x.identity.links"}
    assert set(ctx.topics.changes.topics) == {"x.identity.changes"}
    assert ctx.topics.changes.partitions == 1
    assert set(app.agents[names.AGENT_SINK_IDENTITY].channel.topics) == {"x.identity.changes"}


def test_map_is_a_global_table_kept_forever(tmp_path: Path) -> None:
    app, ctx = make(tmp_path)
    table = app.tables[names.TABLE_IDENTITY]
    assert table is ctx.tables.identity
    assert table.is_global
    assert table.partitions == 1
    assert table.changelog_topic.config["retention.ms"] == "-1"


def record(links: list[list[Any]]) -> Any:
    return SimpleNamespace(key=None, value={"links": links}, message=SimpleNamespace(partition=0))


def test_replaying_the_changelog_rebuilds_the_same_map(tmp_path: Path) -> None:
    _app, ctx = make(tmp_path)
    writer = IdentityGraph(ctx.domain.rules)
    batches = [
        [("anonymous_id:d1", "anonymous_id:d1", 1)],
        [("user_id:a", "anonymous_id:d1", 2)],
        [("user_id:b", "anonymous_id:d1", 3)],
    ]
    for links in batches:
        writer.add(links)
    # A worker replays the writer's records, some twice (standby and recovery overlap).
    ctx.tables.identity.apply_changelog_batch([record([list(x) for x in b]) for b in batches])
    ctx.tables.identity.apply_changelog_batch([record([list(x) for x in batches[1]])])
    assert ctx.domain.graph.person == writer.person
    assert ctx.domain.graph.refused == writer.refused
    assert ctx.domain.graph.lookup("anonymous_id:d1") == ctx.domain.rules.person_id("user_id:a")


def test_a_privacy_tombstone_removes_the_person_from_the_writer_and_every_replica(
    tmp_path: Path,
) -> None:
    """The writer expands a forget to the person's identifiers, publishes what changed for
    others, and logs the expanded list; a replica replaying links then the forget, in one
    batch or twice over, ends with the writer's map."""
    import asyncio

    import orjson

    import agents.identity

    _app, ctx = make(tmp_path)
    graph = ctx.domain.graph
    links = [("user_id:a", "anonymous_id:d1", 1), ("user_id:a", "openid:o", 2)]
    links += [("user_id:b", "anonymous_id:d2", 3), ("user_id:b", "openid:o", 4)]  # refused
    graph.add(links)
    logged: list[tuple[str, str, list[str]]] = []
    sent: list[bytes] = []

    async def record_forget(key: str, kind: str, nodes: list[str]) -> None:
        logged.append((key, kind, nodes))

    async def send(value: bytes, partition: int) -> Any:
        sent.append(value)
        fut: asyncio.Future[None] = asyncio.get_event_loop().create_future()
        fut.set_result(None)
        return fut

    ctx.tables.identity.record_forget = record_forget  # type: ignore[method-assign]
    ctx.topics.changes.send = send
    tombstone = orjson.dumps({"forget": ["anonymous_id:d1"], "request": "r1"})
    message = SimpleNamespace(partition=0, offset=7, value=tombstone)
    asyncio.run(agents.identity._forget(ctx, message, "forget", ["anonymous_id:d1"]))
    assert logged == [
        ("forget:7", "forget", ["anonymous_id:d1", "openid:o", "user_id:a"]),
    ]
    assert set(graph.person) == {"user_id:b", "anonymous_id:d2"}
    assert not graph.add([("user_id:a", "anonymous_id:d9", 5)])  # ignored from now on

    _app2, replica_ctx = make(tmp_path / "replica")
    replica = replica_ctx.tables.identity
    links_record = record([list(x) for x in links])
    forget_record = SimpleNamespace(key="forget:0", value={"forget": logged[0][2]})
    replica.apply_changelog_batch([links_record, forget_record])
    replica.apply_changelog_batch([links_record, forget_record])  # recovery and follower
    assert replica_ctx.domain.graph.person == graph.person
    assert replica_ctx.domain.graph.edges == graph.edges


def test_changelog_keys_tell_how_far_into_identity_links_the_map_is(tmp_path: Path) -> None:
    _app, ctx = make(tmp_path)
    table = ctx.tables.identity
    assert table.known == -1
    assert [links_offset(k) for k in ("links:7", b'"forget:12"', "unforget:3", "odd")] == [
        7,
        12,
        3,
        -1,
    ]
    table.apply_changelog_batch(
        [
            SimpleNamespace(key="links:5", value={"links": []}),
            SimpleNamespace(key="links:9", value={"links": [["user_id:a", "anonymous_id:d", 1]]}),
        ]
    )
    assert table.known == 9
    table.note(3)  # never back
    assert table.known == 9


class WriterHarness:
    """The writer agent with fake takes; changelog records and changes kept in lists."""

    def __init__(self, app: Any, ctx: Any, monkeypatch: pytest.MonkeyPatch) -> None:
        self.agent = app.agents[names.AGENT_IDENTITY]
        self.takes: list[list[Any]] = []
        self.records: list[tuple[str, Any]] = []
        monkeypatch.setattr(agents.identity, "take_batches", self._take_batches)
        monkeypatch.setattr(ctx.tables.identity, "record", self._record)
        monkeypatch.setattr(ctx.topics.changes, "send", self._send)

    async def _take_batches(self, stream: Any, max_: int, within: float) -> AsyncIterator[Take]:
        for take in self.takes:
            yield Take(take)

    async def _record(self, key: str, links: list[Any]) -> None:
        self.records.append((key, links))

    async def _send(self, *, value: bytes, partition: int) -> asyncio.Future[None]:
        done: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        done.set_result(None)
        return done

    def run(self, *takes: list[Any]) -> None:
        self.takes = list(takes)
        asyncio.run(self.agent.fun(None))


def link_message(offset: int, value: bytes) -> Any:
    return SimpleNamespace(
        message=SimpleNamespace(
            partition=0, offset=offset, value=value, timestamp=None, tp=TP("x.identity.links", 0)
        )
    )


def test_a_take_that_changes_nothing_at_its_end_still_records_how_far_it_read(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    app, ctx = make(tmp_path)
    h = WriterHarness(app, ctx, monkeypatch)
    new = orjson.dumps([["user_id:a", "anonymous_id:d", 1]])
    h.run(
        [link_message(0, new), link_message(1, new)],  # the second changes nothing
        [link_message(2, b"not links")],  # undecodable: skipped, still read
        [link_message(3, orjson.dumps([["user_id:b", "anonymous_id:e", 2]]))],
    )
    assert [(k, len(v)) for k, v in h.records] == [
        ("links:0", 1),
        ("links:1", 0),
        ("links:2", 0),
        ("links:3", 1),
    ]
    assert ctx.tables.identity.known == 3  # the writer's own map, before any record comes back
