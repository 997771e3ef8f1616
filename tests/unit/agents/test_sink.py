"""The sink's acking discipline: input is acked only once its rows are on disk."""

from __future__ import annotations

import asyncio
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import orjson
import pyarrow.parquet as pq
from faust.types import TP

from agents.sink import Sink, decode_changes, events_decoder
from pipeline import names
from pipeline.app import create_app
from pipeline.runtime.wire import PositionedRows, encode_events
from pipeline.settings import Settings
from tests.records import event_row


class FakeEvent:
    def __init__(self, value: bytes) -> None:
        self.message = SimpleNamespace(value=value, timestamp=None, partition=2)
        self.acked = False

    def ack(self) -> bool:
        self.acked = True
        return True


class FakeStream:
    def __init__(self, events: list[FakeEvent], first_offset: int = 0) -> None:
        self._events = events
        self._first = first_offset

    def noack(self) -> FakeStream:
        return self

    async def events(self) -> Any:
        for offset, e in enumerate(self._events, self._first):  # one partition's log
            e.message.offset = offset
            e.message.tp = TP("x", e.message.partition)
            yield e

    async def ack(self, event: FakeEvent) -> bool:
        return event.ack()


def record(offset: int, index: int = 0) -> dict[str, Any]:
    return event_row(offset=offset, index=index, event_id=f"e{offset}-{index}")


def batch(ctx: Any, offsets: list[int]) -> bytes:
    (value,) = encode_events(ctx.domain.batches.build([record(o) for o in offsets]))
    return value


def events_sink(ctx: Any) -> Sink:
    tables = (names.LAKE_EVENTS, names.LAKE_PROFILE_CHANGES, names.LAKE_MEMBER_REJECTS)
    writers = {t: ctx.domain.lake[t] for t in tables}
    decode = events_decoder(ctx.domain.identify)
    return Sink(ctx, names.AGENT_SINK_EVENTS, names.TOPIC_RAW, writers, decode)


def test_identify_traits_are_stored_once_with_their_event(tmp_path: Path) -> None:
    """identify calls in an events batch become profile updates (and rejects) positioned by
    their event, so a replayed message stores them once, like the events."""
    from pipeline.lake.views import connect

    settings = Settings(data_dir=tmp_path, sink_flush_rows=1_000_000, sink_flush_seconds=3600)
    app, ctx = create_app(settings, ensure_topics=False)
    sink = events_sink(ctx)
    t0 = record(1)["event_time"]

    def identify(offset: int, t: int = t0, **traits: Any) -> dict[str, Any]:
        row = record(offset)
        return {
            **row,
            "event_name": "identify",
            "user_id": "M1",
            "event_time": t,
            "properties": traits,
        }

    rows = [
        record(1),
        identify(2, level="gold", nickname="阿宝", favourite="tea"),
        identify(3, level="mythic"),  # not an allowed level: rejected whole
        identify(4, t0 - 60_000, nickname=None),  # older than the nickname: ignored
        identify(5, marketing_opt_in=True),
        identify(6, t0 + 1000, marketing_opt_in=None),  # newer: removes it
    ]
    (value,) = encode_events(ctx.domain.batches.build(rows))
    events = [FakeEvent(value), FakeEvent(value)]  # the second: a replay after a crash
    asyncio.run(sink.consume(app, FakeStream(events)))  # type: ignore[arg-type]
    asyncio.run(sink.flush_partitions({2}))
    con = connect(tmp_path)
    assert con.execute("SELECT count(*) FROM events").fetchone() == (6,)
    assert con.execute(
        "SELECT user_id, level, nickname, marketing_opt_in, source FROM profiles"
    ).fetchall() == [("M1", "gold", "阿宝", None, "identify")]
    assert con.execute("SELECT field, error_code, rule, source FROM member_rejects").fetchall() == [
        ("level", "invalid_value", "level.allowed", "identify")
    ]
    assert con.execute("SELECT count(*) FROM profile_updates").fetchone() == (5,)  # per field


def test_acks_only_after_flush_and_replays_are_dropped(tmp_path: Path) -> None:
    settings = Settings(data_dir=tmp_path, sink_flush_rows=1_000_000, sink_flush_seconds=3600)
    app, ctx = create_app(settings, ensure_topics=False)
    sink = events_sink(ctx)
    events = [
        FakeEvent(batch(ctx, [1, 2, 3])),
        FakeEvent(batch(ctx, [2, 3, 4, 5])),
    ]  # second overlaps
    asyncio.run(sink.consume(app, FakeStream(events)))  # type: ignore[arg-type]
    assert not any(e.acked for e in events), "acked before the rows were written"
    asyncio.run(sink.flush_partitions({2}))
    assert all(e.acked for e in events)
    files = list((tmp_path / "lake" / "events").rglob("*.parquet"))
    offsets = sorted(o for f in files for o in pq.read_table(f).column("source_offset").to_pylist())
    assert offsets == [1, 2, 3, 4, 5]
    assert ctx.metrics.events_stored._value.get() == 5


def test_flush_due_by_age(tmp_path: Path) -> None:
    settings = Settings(data_dir=tmp_path, sink_flush_rows=1_000_000, sink_flush_seconds=0.01)
    app, ctx = create_app(settings, ensure_topics=False)
    sink = events_sink(ctx)
    event = FakeEvent(batch(ctx, [7]))
    asyncio.run(sink.consume(app, FakeStream([event])))  # type: ignore[arg-type]

    async def later() -> None:
        await asyncio.sleep(0.05)
        await sink.flush_due()

    asyncio.run(later())
    assert event.acked


def changes(offset: int, n_ids: int, n_merges: int) -> bytes:
    ident = {
        "identifier_type": "anonymous_id",
        "identifier": "d1",
        "person_id": "p_1",
        "first_seen": 1795420000000,
        "last_seen": 1795420000000,
    }
    merge = {
        "from_person_id": "p_2",
        "to_person_id": "p_1",
        "reason": "linked",
        "accepted": True,
        "at": 1795420000000,
        "link_from": None,
        "link_to": None,
    }
    return orjson.dumps(
        {
            "partition": 0,
            "offset": offset,
            "decided_at": 1795420001000,
            "identities": [ident] * n_ids,
            "merges": [merge] * n_merges,
        }
    )


def test_identity_changes_fill_two_tables_once_each(tmp_path: Path) -> None:
    settings = Settings(data_dir=tmp_path, sink_flush_rows=1_000_000, sink_flush_seconds=3600)
    app, ctx = create_app(settings, ensure_topics=False)
    writers = {t: ctx.domain.lake[t] for t in (names.LAKE_IDENTITIES, names.LAKE_MERGES)}
    sink = Sink(ctx, names.AGENT_SINK_IDENTITY, names.TOPIC_LINKS, writers, decode_changes)
    events = [FakeEvent(changes(3, 2, 1)), FakeEvent(changes(3, 2, 1)), FakeEvent(changes(4, 1, 0))]
    for e in events:
        e.message.partition = 0
    asyncio.run(sink.consume(app, FakeStream(events)))  # type: ignore[arg-type]
    assert not any(e.acked for e in events)
    asyncio.run(sink.flush_partitions({0}))
    assert all(e.acked for e in events)

    def rows(table: str) -> int:
        files = (tmp_path / "lake" / table).rglob("*.parquet")
        return sum(pq.read_table(f).num_rows for f in files)

    assert rows("identities") == 3  # the replayed offset 3 is stored once
    assert rows("identity_merges") == 1


def test_a_fenced_sink_touches_nothing_more_of_that_partition(tmp_path: Path) -> None:
    """A zombie's flush is refused; its later messages of the partition are neither
    written (they would skip the rows it dropped) nor acked, until the partition moves."""
    settings = Settings(data_dir=tmp_path, sink_flush_rows=1_000_000, sink_flush_seconds=3600)
    zombie_app, zombie_ctx = create_app(settings, ensure_topics=False)
    owner_app, owner_ctx = create_app(settings, ensure_topics=False)
    zombie, owner = events_sink(zombie_ctx), events_sink(owner_ctx)
    held = [FakeEvent(batch(zombie_ctx, [1, 2]))]
    asyncio.run(zombie.consume(zombie_app, FakeStream(held)))  # buffered, then paused
    taken = [FakeEvent(batch(owner_ctx, [1, 2, 3]))]
    asyncio.run(owner.consume(owner_app, FakeStream(taken)))  # the new owner claims
    asyncio.run(owner.flush_partitions({2}))
    asyncio.run(zombie.flush_partitions({2}))  # wakes up: refused
    assert not held[0].acked
    assert zombie.fenced == {2}
    later = FakeEvent(batch(zombie_ctx, [4]))
    asyncio.run(zombie.consume(zombie_app, FakeStream([later], first_offset=1)))
    asyncio.run(zombie.flush_due())
    assert not later.acked
    files = list((tmp_path / "lake" / "events").rglob("*.parquet"))
    offsets = sorted(o for f in files for o in pq.read_table(f).column("source_offset").to_pylist())
    assert offsets == [1, 2, 3]
    assert (
        zombie_ctx.metrics.registry.get_sample_value(
            "trackflow_lake_fenced_flushes_total", {"table": "events"}
        )
        == 1
    )


def rollups_message(c: int, offset: int, start: int) -> bytes:
    row = {
        "metric": "pv",
        "window": "1m",
        "window_start": start,
        "window_end": start + 60_000,
        "dimensions": "{}",
        "value": 1.0,
        "numerator": None,
        "denominator": None,
    }
    return PositionedRows(c, offset, 0, [row]).encode()


def test_rollups_of_several_combine_partitions_are_acked_only_when_all_are_stored(
    tmp_path: Path,
) -> None:
    """Found in review: with acks kept per combine partition, partition 0's flush could ack
    offset 1 while offset 0's rows (of partition 1) were still buffered, and Faust commits
    past one unacked message at the committed offset. Now every row partition an input
    partition feeds is stored before any of its messages is acked."""
    settings = Settings(data_dir=tmp_path, sink_flush_rows=1_000_000, sink_flush_seconds=3600)
    app, ctx = create_app(settings, ensure_topics=False)
    sink = next(s for s in ctx_sinks(app, ctx) if s.name == names.AGENT_SINK_ROLLUPS)
    events = [
        FakeEvent(rollups_message(1, 40, 0)),  # rollups offset 0, combine partition 1
        FakeEvent(rollups_message(0, 7, 60_000)),  # rollups offset 1, combine partition 0
    ]
    log: list[str] = []
    writer = sink.primary
    flush = writer.flush

    def logged_flush(topic: str, partition: int) -> Any:
        result, tokens = flush(topic, partition)
        log.append(f"stored {partition}" if result.rows else f"empty {partition}")
        return result, tokens

    writer.flush = logged_flush  # type: ignore[method-assign]
    for i, e in enumerate(events):
        e.message.partition = 0
        e.ack = lambda i=i, e=e: (log.append(f"ack {i}"), setattr(e, "acked", True))[1]  # type: ignore[method-assign]
    asyncio.run(sink.consume(app, FakeStream(events)))  # type: ignore[arg-type]
    assert not any(e.acked for e in events)
    asyncio.run(sink.flush_due())
    assert [e.acked for e in events] == [True, True]
    assert log.index("stored 1") < log.index("ack 0")
    assert log.index("stored 0") < log.index("ack 0")  # nothing acked before all is stored
    files = list((tmp_path / "lake" / "rollups").rglob("*.parquet"))
    assert sorted(f.name.split("-p")[1][:1] for f in files) == ["0", "1"]  # each checkpointed
    stored = sorted(
        (r["source_partition"], r["source_offset"])
        for f in files
        for r in pq.read_table(f).to_pylist()
    )
    assert stored == [(0, 7), (1, 40)]


def ctx_sinks(app: Any, ctx: Any) -> list[Sink]:
    """The Sink objects the app registered (its agents' closures hold them)."""
    import agents.sink as module

    made: list[Sink] = []
    original = module.Sink.__init__

    def record_init(self: Sink, *args: Any, **kwargs: Any) -> None:
        original(self, *args, **kwargs)
        made.append(self)

    module.Sink.__init__ = record_init  # type: ignore[method-assign]
    try:
        module.register(app, ctx)
    finally:
        module.Sink.__init__ = original  # type: ignore[method-assign]
    return made
