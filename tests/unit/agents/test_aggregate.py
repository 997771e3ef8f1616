"""The aggregate agent: one partial message per stitched message, nothing counted twice.

The agent's loop is driven without a broker: ``take_batches`` is replaced by a generator
of prepared takes, the partials topic by a fake whose sends are delivered a moment later,
and the progress changelog by a list.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import orjson
import pytest
from faust.types import TP

import agents.aggregate
from pipeline import names
from pipeline.app import create_app
from pipeline.contract.positions import pack
from pipeline.runtime import wire
from pipeline.runtime.context import Context
from pipeline.runtime.streams import Take
from pipeline.settings import Settings
from tests.records import event_row

T0 = 1_795_420_000_000 - 1_795_420_000_000 % 3_600_000  # an hour boundary, epoch ms
MIN = 60_000
PAGE_VIEW = orjson.dumps({"event_name": "page_view"}).decode()


def make(tmp_path: Path, combine_partitions: int = 1) -> tuple[Any, Context]:
    """An app whose combine stage has one partition unless asked: one partial a message."""
    settings = Settings(
        data_dir=tmp_path,
        topic_prefix="x.",
        partitions=6,
        lateness_seconds=60,
        combine_partitions=combine_partitions,
    )
    return create_app(settings, ensure_topics=False)


def event(partition: int, offset: int, index: int, t: int) -> dict[str, Any]:
    """A stitched page_view of events.raw ``partition`` at position (offset, index)."""
    return event_row(partition=partition, offset=offset, index=index, t=t, person_id="p_1")


def message(ctx: Context, partition: int, offset: int, rows: list[dict[str, Any]]) -> Any:
    """An events.stitched message (partition, offset) holding ``rows`` as Arrow."""
    (value,) = wire.encode_events(ctx.domain.batches.build(rows))
    return SimpleNamespace(
        message=SimpleNamespace(
            partition=partition, offset=offset, value=value, tp=TP("x.events.stitched", partition)
        )
    )


class Harness:
    """The aggregate agent with fake input takes, partials topic and progress changelog."""

    def __init__(self, app: Any, ctx: Context, monkeypatch: pytest.MonkeyPatch) -> None:
        self.agent = app.agents[names.AGENT_AGGREGATE]
        self.progress = ctx.tables.aggregate_progress
        self.takes: list[list[Any]] = []
        self.sent: list[tuple[int, dict[str, Any]]] = []  # (topic partition, decoded partial)
        self.deliveries: list[asyncio.Future[None]] = []
        # (partition, key, value, were all partials sent so far delivered at that moment)
        self.records: list[tuple[int, str, dict[str, int], bool]] = []
        self.fail_at: int | None = None  # the n-th send (0-based) raises
        monkeypatch.setattr(agents.aggregate, "take_batches", self._take_batches)
        monkeypatch.setattr(ctx.topics.partials, "send", self._send)
        monkeypatch.setattr(self.progress, "append", self._append)

    async def _take_batches(self, stream: Any, max_: int, within: float) -> AsyncIterator[Take]:
        for take in self.takes:
            yield Take(take)

    async def _send(self, *, value: bytes, partition: int) -> asyncio.Future[None]:
        if self.fail_at == len(self.sent):
            raise RuntimeError("broker unavailable")
        self.sent.append((partition, wire.decode_partials(value)))
        delivered: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        asyncio.get_running_loop().call_later(0.01, delivered.set_result, None)
        self.deliveries.append(delivered)
        return delivered

    async def _append(self, partition: int, key: str, value: dict[str, int]) -> None:
        delivered = all(f.done() for f in self.deliveries)
        self.records.append((partition, key, value, delivered))

    def run(self, *takes: list[Any]) -> None:
        self.takes = list(takes)
        asyncio.run(self.agent.fun(None))


def series(partial: dict[str, Any], metric: str, size: int) -> dict[tuple[int, str], Any]:
    """{(window start, dimensions): value} of one metric and window size in a partial."""
    return {(s, d): v for m, z, s, d, v in partial["s"] if m == metric and z == size}


def test_aggregate_reads_stitched_and_writes_partials_of_every_combine_partition(
    tmp_path: Path,
) -> None:
    app, ctx = make(tmp_path, combine_partitions=3)
    agent = app.agents[names.AGENT_AGGREGATE]
    assert agent.name == names.AGENT_AGGREGATE == "aggregate"
    assert set(agent.channel.topics) == {"x.events.stitched"}
    assert set(ctx.topics.partials.topics) == {"x.metrics.partials"}
    assert ctx.topics.partials.partitions == 3
    assert app.tables[names.TABLE_COMBINE].partitions == 3  # co-partitioned with partials
    assert ctx.topics.partials.internal
    # The progress is co-partitioned with events.stitched, one compacted key per partition.
    table = app.tables[names.TABLE_AGGREGATE]
    assert table is ctx.tables.aggregate_progress
    assert table.partitions == 6
    assert table.changelog_topic.config["cleanup.policy"] == "compact"


def test_each_combine_partition_gets_its_metrics_and_every_watermark(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    app, ctx = make(tmp_path, combine_partitions=3)
    h = Harness(app, ctx, monkeypatch)
    h.run([message(ctx, 2, 7, [event(2, 70, 0, T0 + 5_000), event(2, 70, 1, T0 + 9_000)])])
    assert sorted(tp for tp, _ in h.sent) == [0, 1, 2]
    place = ctx.domain.combine_place
    for tp, p in h.sent:
        assert (p["p"], p["o"], p["wm"]) == (2, 7, T0 + 9_000)
        assert {m for m, *_ in p["s"]} <= {m for m, c in place.items() if c == tp}
        assert set(p["f"]) <= {m for m, c in place.items() if c == tp}
    one = Harness(*make(tmp_path / "one"), monkeypatch)
    one.run([message(ctx, 2, 7, [event(2, 70, 0, T0 + 5_000), event(2, 70, 1, T0 + 9_000)])])
    ((_, whole),) = one.sent
    assert sorted(s for _, p in h.sent for s in p["s"]) == sorted(whole["s"])


def test_one_partial_per_message_with_its_position_watermark_and_counts(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    app, ctx = make(tmp_path)
    h = Harness(app, ctx, monkeypatch)
    m10 = message(ctx, 3, 10, [event(3, 100, 0, T0 + 5_000), event(3, 100, 1, T0 + 70_000)])
    m11 = message(ctx, 3, 11, [event(3, 101, 0, T0 + 30_000)])  # older than m10's newest
    m4 = message(ctx, 1, 4, [event(1, 40, 0, T0 + 2 * MIN)])
    h.run([m11, m4, m10, m10])  # out of order, m10 delivered twice in the take

    assert [(tp, p["p"], p["o"]) for tp, p in h.sent] == [(0, 1, 4), (0, 3, 10), (0, 3, 11)]
    p4, p10, p11 = (p for _, p in h.sent)
    assert p4["wm"] == T0 + 2 * MIN
    assert p10["wm"] == T0 + 70_000
    assert p11["wm"] == T0 + 70_000  # the watermark never goes back
    assert series(p10, "events", 60) == {(T0, PAGE_VIEW): 1, (T0 + MIN, PAGE_VIEW): 1}
    assert series(p10, "events", 3600) == {(T0, PAGE_VIEW): 2}
    assert series(p11, "events", 60) == {(T0, PAGE_VIEW): 1}  # only its own rows
    assert series(p4, "pv", 60) == {(T0 + 2 * MIN, '{"page":"home"}'): 1}

    # One progress record per partition: the highest events.raw position and the watermark.
    by_partition = {p: (key, value) for p, key, value, _ in h.records}
    assert by_partition == {
        1: ("1", {"pos": pack(40, 0), "wm": T0 + 2 * MIN}),
        3: ("3", {"pos": pack(101, 0), "wm": T0 + 70_000}),
    }
    assert h.progress.get_progress(3) == (pack(101, 0), T0 + 70_000)
    assert ctx.metrics.stage_in.labels(names.AGENT_AGGREGATE)._value.get() == 4


def test_progress_is_recorded_only_after_the_partials_were_delivered(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    app, ctx = make(tmp_path)
    h = Harness(app, ctx, monkeypatch)
    h.run(
        [message(ctx, 0, 1, [event(0, 1, 0, T0)]), message(ctx, 2, 1, [event(2, 1, 0, T0)])],
        [message(ctx, 0, 2, [event(0, 2, 0, T0 + 1)])],
    )
    assert len(h.sent) == 3
    assert [(p, delivered) for p, _, _, delivered in h.records] == [
        (0, True),
        (2, True),
        (0, True),
    ]


def test_a_failed_send_records_no_progress(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    app, ctx = make(tmp_path)
    h = Harness(app, ctx, monkeypatch)
    h.fail_at = 1
    with pytest.raises(RuntimeError, match="broker unavailable"):
        h.run([message(ctx, 0, 1, [event(0, 1, 0, T0)]), message(ctx, 0, 2, [event(0, 2, 0, T0)])])
    assert len(h.sent) == 1
    assert h.records == []  # the take is re-read and re-sent; combine skips (p, o) it has
    assert h.progress.get_progress(0)[0] == -1


def test_rows_at_or_below_the_recorded_position_are_skipped_after_a_restart(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    app, ctx = make(tmp_path)
    h = Harness(app, ctx, monkeypatch)
    # State recovered from the changelog: positions up to (100, 1) were sent as partials.
    h.progress.apply_changelog_batch(
        [
            SimpleNamespace(
                message=SimpleNamespace(partition=3, offset=0, tp=TP("x.events.stitched", 3)),
                key="3",
                value={"pos": pack(100, 1), "wm": T0 + 70_000},
            )
        ]
    )
    # Upstream re-sends after its own crash, in new messages: one all old, one overlapping.
    old = message(ctx, 3, 20, [event(3, 99, 0, T0), event(3, 100, 0, T0)])
    overlap = message(
        ctx,
        3,
        21,
        [
            event(3, 100, 1, T0 + 70_000),
            event(3, 100, 2, T0 + 80_000),
            event(3, 101, 0, T0 - 5 * MIN),  # its windows closed at the recovered watermark
        ],
    )
    h.run([old, overlap])

    assert [p["o"] for _, p in h.sent] == [21]  # nothing left of message 20: no partial
    (_, partial) = h.sent[0]
    assert series(partial, "events", 60) == {(T0 + MIN, PAGE_VIEW): 1}  # only (100, 2)
    assert partial["wm"] == T0 + 80_000
    assert ctx.metrics.stage_in.labels(names.AGENT_AGGREGATE)._value.get() == 2
    assert ctx.metrics.late_events.labels("1m", names.AGENT_AGGREGATE)._value.get() == 1
    assert h.progress.get_progress(3) == (pack(101, 0), T0 + 80_000)


def test_a_replayed_message_after_the_recorded_position_is_sent_with_the_same_position(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Crash after sending, before recording: the partial is re-sent as (p, o) again."""
    app, ctx = make(tmp_path)
    h = Harness(app, ctx, monkeypatch)
    m = message(ctx, 5, 7, [event(5, 70, 0, T0)])
    h.fail_at = 1
    with pytest.raises(RuntimeError):
        h.run([m, message(ctx, 5, 8, [event(5, 71, 0, T0)])])
    first = h.sent[0][1]
    # The restarted worker: a new app, nothing of the crashed take recorded.
    app, ctx = make(tmp_path)
    h = Harness(app, ctx, monkeypatch)
    h.run([message(ctx, 5, 7, [event(5, 70, 0, T0)])])
    assert h.sent[0][1] == first


def test_partials_carry_the_links_offset_their_message_was_stitched_with(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    app, ctx = make(tmp_path, combine_partitions=2)
    h = Harness(app, ctx, monkeypatch)
    stitched = message(ctx, 0, 1, [event(0, 1, 0, T0)])
    stitched.message.headers = wire.links_header(12)
    foreign = message(ctx, 1, 1, [event(1, 1, 0, T0)])  # no header: written by something else
    h.run([stitched, foreign])
    got = sorted((p["p"], p.get("l")) for _, p in h.sent)
    assert got == [(0, 12), (0, 12), (1, None), (1, None)]
