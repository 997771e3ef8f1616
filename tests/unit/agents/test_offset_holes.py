"""A hole in a stage's input, at every consuming stage: nothing after it is processed or
acked until it is read, and then everything is processed once, in log order.

Each stage is the real agent of ``create_app``, driven without a broker. The app's Faust
consumer (never started) reports the input partition as assigned, with a committed offset,
and records the seeks asked of it. Agents that read takes get them from a stand-in for
``take_batches`` that acks like the real one: every event of the take except those the body
held (``Take.hold``). The sinks read a fake stream that records ``stream.ack``. Outputs are
recorded instead of sent; changelog records recorded instead of sent; the sinks write the lake.

Three holes per stage: at the committed offset, the first one read after an assignment
(Faust commits past it: ``min(acked) - committed > 1`` is false for committed + 1); at the
log start when nothing was committed (Faust skips that check altogether); and in the middle
of a partition already being read, where the re-read also brings back a copy of a message
processed before, which is acked without being processed again.
"""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType, SimpleNamespace
from typing import Any

import orjson
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from faust.types import TP

import agents.aggregate
import agents.combine
import agents.detect
import agents.identity
import agents.stitch
import agents.validate
from agents.detect import alerts_message
from pipeline import names
from pipeline.alerting.rules import Incident
from pipeline.app import create_app
from pipeline.identity.graph import IdentityGraph
from pipeline.ingest.ingestor import Ingestor, RawMessage
from pipeline.metrics.partials import partials
from pipeline.runtime import wire
from pipeline.runtime.context import Context
from pipeline.runtime.streams import Take
from pipeline.settings import Settings
from tests.records import event_row

UP = 500  # a message's upstream position: its topic offset + UP (they are not the same)
M = 60_000
T0 = 1_795_420_000_000 - 1_795_420_000_000 % 3_600_000  # an hour boundary, epoch ms


# -- the harness ------------------------------------------------------------------------


class Harness:
    """One stage of a fresh app, its input partition assigned with ``committed`` (None:
    nothing committed, the log starts at ``log_start``)."""

    def __init__(
        self,
        tmp_path: Path,
        monkeypatch: pytest.MonkeyPatch,
        stage: Stage,
        committed: int | None,
        log_start: int = 0,
    ) -> None:
        settings = Settings(
            data_dir=tmp_path,
            topic_prefix="x.",
            partitions=4,
            combine_partitions=1,  # one partial per aggregate input: traced per offset
            dev=True,
            sink_flush_rows=1,
        )
        self.app, self.ctx = create_app(settings, ensure_topics=False)
        self.stage = stage
        self.lake = tmp_path / "lake"
        self.agent = self.app.agents[stage.agent]
        (topic,) = self.agent.channel.topics
        self.tp = TP(topic, stage.partition)
        self.log_start = log_start
        self.sent: list[tuple[str, bytes]] = []  # (topic, value) of every output
        self.changelog: list[tuple[str, Any]] = []  # (table, key) of every state record
        self.trace: list[tuple[int, int]] = []  # (topic offset, rows) as the stage works
        self.admitted: list[int] = []  # offsets a take agent's body was handed
        self.acked: list[int] = []
        self.seeks: list[tuple[TP, int]] = []
        self.takes: list[Take] = []

        # The real (unstarted) Faust consumer: its committed offsets, its assignment, seek.
        consumer = self.app.consumer
        self.committed = committed
        monkeypatch.setattr(consumer, "assignment", lambda: {self.tp})
        monkeypatch.setattr(consumer, "seek", self._seek)
        monkeypatch.setattr(self.ctx.start_offsets, "start", self._start)
        monkeypatch.setattr(consumer, "highwater", lambda tp: None)  # no lag known (combine)

        for topic_ in vars(self.ctx.topics).values():
            monkeypatch.setattr(topic_, "send", self._sender(topic_.get_topic_name()))
        for table in self.app.tables.values():
            monkeypatch.setattr(table.changelog_topic, "send", self._recorder(table.name))
        for writer in self.ctx.domain.lake.values():
            monkeypatch.setattr(writer, "add", self._adder(writer.add))
        if stage.module is not None:
            monkeypatch.setattr(stage.module, "take_batches", self._take_batches)
            monkeypatch.setattr(stage.module, "admit", self._admit(stage.module.admit))
        if stage.setup is not None:
            stage.setup(self, monkeypatch)

    async def _seek(self, tp: TP, offset: int) -> None:
        self.seeks.append((tp, offset))

    async def _start(self, tp: TP) -> int | None:
        """The broker's answer: the group's committed offset, else the log start."""
        assert tp == self.tp
        return self.committed if self.committed is not None else self.log_start

    def _admit(self, admit: Callable[..., Any]) -> Callable[..., Any]:
        async def traced(ordered: Any, take: Take) -> list[Any]:
            events: list[Any] = await admit(ordered, take)
            self.admitted += [e.message.offset for e in events]
            return events

        return traced

    def _sender(self, topic: str) -> Callable[..., Any]:
        async def send(*, value: bytes, partition: int, headers: Any = None) -> asyncio.Future[Any]:
            self.sent.append((topic, value))
            delivered: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
            offset = sum(1 for t, _ in self.sent if t == topic) - 1  # its offset in the topic
            delivered.set_result(SimpleNamespace(offset=offset))
            return delivered

        return send

    def _recorder(self, table: str) -> Callable[..., Any]:
        async def send(*, key: Any, value: Any, partition: int, **kw: Any) -> None:
            self.changelog.append((table, key))

        return send

    def _adder(self, add: Callable[..., int]) -> Callable[..., int]:
        def traced(topic: str, partition: int, table: pa.Table, token: Any = None) -> int:
            if table.num_rows:  # not the sink's row-less acknowledgement token
                (offset,) = set(table.column("source_offset").to_pylist())
                self.trace.append((offset - UP, table.num_rows))
            return add(topic, partition, table, token)

        return traced

    async def _take_batches(self, stream: Any, max_: int, within: float) -> AsyncIterator[Take]:
        for take in self.takes:
            yield take
            # What streams.take_batches acks once the body returned: all but the held.
            self.acked += [e.message.offset for e in take if id(e) not in take.held]

    def event(self, offset: int) -> Any:
        message = SimpleNamespace(
            tp=self.tp,
            topic=self.tp.topic,
            partition=self.tp.partition,
            offset=offset,
            value=self.stage.value(self.ctx, offset),
            timestamp=time.time(),
        )
        return SimpleNamespace(message=message)

    def deliver(self, *offsets: int) -> None:
        """The consumer hands over these offsets of the input partition, in this order."""
        events = [self.event(o) for o in offsets]
        if self.stage.module is not None:
            self.takes = [Take(events)]
            asyncio.run(self.agent.fun(None))
        else:
            asyncio.run(self.agent.fun(FakeStream(self, events)))

    def processed(self) -> list[int]:
        """Input offsets the stage worked on, in the order it did."""
        return self.stage.processed(self)

    def outputs(self, topic: str) -> list[bytes]:
        return [v for t, v in self.sent if t == f"x.{topic}"]

    def stored(self) -> Counter[int]:
        """Rows in the lake per input offset."""
        return Counter(
            o - UP
            for f in self.lake.rglob("*.parquet")
            for o in pq.read_table(f).column("source_offset").to_pylist()
        )


class FakeStream:
    """What a sink reads: ``stream.noack().events()``; records ``stream.ack``."""

    def __init__(self, h: Harness, events: list[Any]) -> None:
        self.h = h
        self._events = events

    def noack(self) -> FakeStream:
        return self

    async def events(self) -> AsyncIterator[Any]:
        for e in self._events:
            yield e

    async def ack(self, event: Any) -> bool:
        self.h.acked.append(event.message.offset)
        return True


# -- realistic input per stage --------------------------------------------------------


def stored_row(offset: int, person_id: str | None) -> dict[str, Any]:
    """A validated page_view from events.raw partition 2, at upstream position offset+UP."""
    return event_row(
        offset=offset + UP,
        t=T0 + offset * M,
        event_id=f"e{offset}",
        anonymous_id=f"d{offset}",
        user_id=f"u{offset}",
        person_id=person_id,
    )


def events_message(ctx: Context, offset: int, person_id: str | None) -> bytes:
    (value,) = wire.encode_events(ctx.domain.batches.build([stored_row(offset, person_id)]))
    return value


def raw(ctx: Context, offset: int) -> bytes:
    """One tracked event as a client sends it to events.raw."""
    return orjson.dumps(
        {
            "event_id": f"r{offset}-{time.monotonic_ns()}",
            "event_name": "page_view",
            "event_time": int(time.time() * 1000) - 1000,
            "anonymous_id": f"d{offset}",
            "platform": "web",
            "properties": {"page": "home"},
        }
    )


def links(ctx: Context, offset: int) -> bytes:
    (value,) = wire.encode_links([(f"user_id:u{offset}", f"anonymous_id:d{offset}", T0 + offset)])
    return value


def changes(ctx: Context, offset: int) -> bytes:
    """What the identity writer sends for the link message at offset+UP."""
    got = IdentityGraph(ctx.domain.rules).add(
        [(f"user_id:u{offset}", f"anonymous_id:d{offset}", T0 + offset)]
    )
    return wire.IdentityChanges(0, offset + UP, T0, got.identities, got.merges).encode()


def partials_message(ctx: Context, offset: int) -> bytes:
    """aggregate's partial of the events.stitched message at offset+UP."""
    table = ctx.domain.batches.build([stored_row(offset, "p_1")])
    defs = ctx.domain.metric_defs
    got = partials(table, defs.values(), ctx.settings.lateness_seconds, -1)
    return wire.encode_partials(2, offset + UP, got.max_time, got, defs)


def rollup_rows(offset: int) -> list[dict[str, Any]]:
    start = T0 + offset * M
    base = {"window": "1m", "window_start": start, "window_end": start + M, "dimensions": "{}"}
    return [
        {**base, "metric": "payment_success_rate", "value": 0.9, "numerator": 54.0},
        {**base, "metric": "pay_requests", "value": 60.0, "numerator": None},
    ]


def rollups(ctx: Context, offset: int) -> bytes:
    """combine's finals, closed by the partial message at offset+UP."""
    rows = [{**r, "denominator": 60.0 if r["numerator"] else None} for r in rollup_rows(offset)]
    return wire.PositionedRows(0, offset + UP, 0, rows).encode()


def alerts(ctx: Context, offset: int) -> bytes:
    """detect's message for an incident found in the rollups message at offset+UP."""
    start = T0 + offset * M
    incident = Incident(
        f"a{offset}",
        "payment_success_rate_drop",
        "payment_success_rate",
        "{}",
        "critical",
        start,
        start + 2 * M,
        0.35,
        0.9,
        "payment_success_rate dropped",
        "docs/runbooks/payment-success-rate.md",
    )
    return alerts_message([("fire", incident)], offset + UP, 0)


def dead_letters(ctx: Context, offset: int) -> bytes:
    """validate's dead letter for a cut-off events.raw message at offset+UP (each one new:
    bad bytes seen before would be a duplicate)."""
    domain = ctx.domain
    ingestor = Ingestor(domain.plan, domain.validator, domain.hasher, domain.seen, names.TOPIC_RAW)
    cut = b'{"event_id": "r%d-%d", "event_name": ' % (offset, time.monotonic_ns())
    result = ingestor.process(2, [RawMessage(offset + UP, cut)], T0)
    (value,) = wire.encode_dead_letters(2, result.dlq)
    return value


# -- what each stage did, read from its outputs -----------------------------------------


def sent_events(h: Harness, topic: str, base: int) -> list[int]:
    return [
        o - base
        for v in h.outputs(topic)
        for o in wire.decode_events(v).column("source_offset").to_pylist()
    ]


def trace_applied(h: Harness, monkeypatch: pytest.MonkeyPatch) -> None:
    state = h.ctx.domain.combine[0]
    apply = state.apply

    def traced(partial: dict[str, Any], **kw: Any) -> Any:
        h.trace.append((partial["o"] - UP, 1))
        return apply(partial, **kw)

    monkeypatch.setattr(state, "apply", traced)


def trace_fed(h: Harness, monkeypatch: pytest.MonkeyPatch) -> None:
    feed = agents.detect.Detect.feed

    def traced(self: Any, rows: list[dict[str, Any]]) -> Any:
        (start,) = {r["window_start"] for r in rows}
        h.trace.append(((start - T0) // M, len(rows)))
        return feed(self, rows)

    monkeypatch.setattr(agents.detect.Detect, "feed", traced)


def traced(h: Harness) -> list[int]:
    return [o for o, _ in h.trace]


@dataclass(frozen=True)
class Stage:
    agent: str
    partition: int  # of its input topic
    value: Callable[[Context, int], bytes]  # its input message at a topic offset
    processed: Callable[[Harness], list[int]]  # input offsets worked on, in order
    module: ModuleType | None = None  # reads takes: whose take_batches to replace
    setup: Callable[[Harness, pytest.MonkeyPatch], None] | None = None
    sink: bool = False

    def __str__(self) -> str:
        return self.agent


STAGES = [
    Stage(
        names.AGENT_VALIDATE,
        2,
        raw,
        lambda h: sent_events(h, names.TOPIC_VALID, 0),
        module=agents.validate,
    ),
    Stage(
        names.AGENT_STITCH,
        2,
        lambda ctx, o: events_message(ctx, o, None),
        lambda h: sent_events(h, names.TOPIC_STITCHED, UP),
        module=agents.stitch,
    ),
    Stage(
        names.AGENT_IDENTITY,
        0,
        links,
        lambda h: [wire.IdentityChanges.decode(v).offset for v in h.outputs(names.TOPIC_CHANGES)],
        module=agents.identity,
    ),
    Stage(
        names.AGENT_AGGREGATE,
        2,
        lambda ctx, o: events_message(ctx, o, "p_1"),
        lambda h: [wire.decode_partials(v)["o"] for v in h.outputs(names.TOPIC_PARTIALS)],
        module=agents.aggregate,
    ),
    Stage(names.AGENT_COMBINE, 0, partials_message, traced, agents.combine, setup=trace_applied),
    Stage(names.AGENT_DETECT, 0, rollups, traced, agents.detect, setup=trace_fed),
    Stage(
        names.AGENT_SINK_EVENTS,
        2,
        lambda ctx, o: events_message(ctx, o, "p_1"),
        traced,
        sink=True,
    ),
    Stage(names.AGENT_SINK_DLQ, 2, dead_letters, traced, sink=True),
    Stage(names.AGENT_SINK_IDENTITY, 0, changes, traced, sink=True),
    Stage(names.AGENT_SINK_ROLLUPS, 0, rollups, traced, sink=True),
    Stage(names.AGENT_SINK_ALERTS, 0, alerts, traced, sink=True),
]


def nothing_done(h: Harness) -> None:
    assert h.admitted == []
    assert h.processed() == []
    assert h.sent == []
    assert h.changelog == []
    assert h.stored() == Counter()


def done_once(h: Harness, offsets: list[int]) -> None:
    """Each of ``offsets`` processed once, in order, and (sinks) stored once."""
    if h.stage.module is not None:
        # Not only the outcome: identity, aggregate and combine would also drop a copy
        # handed to them again by their own replay checks.
        assert h.admitted == offsets
    assert h.processed() == offsets
    if h.stage.sink:
        assert h.stored() == Counter({o: n for o, n in h.trace})
        assert len({o for o, _ in h.trace}) == len(h.trace)


# -- the tests ----------------------------------------------------------------------------


@pytest.mark.parametrize("stage", STAGES, ids=str)
def test_a_hole_at_the_committed_offset_holds_what_follows_until_it_is_read(
    stage: Stage, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    h = Harness(tmp_path, monkeypatch, stage, committed=7)
    h.deliver(8, 9)  # 7 has not arrived: Faust alone would process these and commit 10
    nothing_done(h)
    assert h.acked == []
    assert set(h.seeks) == {(h.tp, 7)}
    seeks = len(h.seeks)

    h.deliver(7, 8, 9)  # read again from 7
    done_once(h, [7, 8, 9])
    assert h.acked == [7, 8, 9]
    assert len(h.seeks) == seeks


@pytest.mark.parametrize("stage", STAGES, ids=str)
def test_a_hole_at_the_log_start_with_nothing_committed_is_read_first(
    stage: Stage, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    h = Harness(tmp_path, monkeypatch, stage, committed=None, log_start=3)
    h.deliver(4, 5)
    nothing_done(h)
    assert h.acked == []
    assert set(h.seeks) == {(h.tp, 3)}

    h.deliver(3, 4, 5)
    done_once(h, [3, 4, 5])
    assert h.acked == [3, 4, 5]


@pytest.mark.parametrize("stage", STAGES, ids=str)
def test_a_hole_in_a_partition_being_read_and_copies_after_the_seek_back(
    stage: Stage, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    h = Harness(tmp_path, monkeypatch, stage, committed=7)
    h.deliver(7)
    done_once(h, [7])
    assert h.acked == [7]
    before = (list(h.admitted), list(h.sent), list(h.changelog))

    h.deliver(9, 10)  # 8 has not arrived
    assert (h.admitted, h.sent, h.changelog) == before
    assert h.processed() == [7]
    assert h.acked == [7]
    assert set(h.seeks) == {(h.tp, 8)}

    h.acked.clear()
    h.deliver(7, 8, 9, 10)  # the re-read brings 7 again: acked, not processed again
    done_once(h, [7, 8, 9, 10])
    assert h.acked == [7, 8, 9, 10]
