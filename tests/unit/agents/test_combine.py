"""The combine stage: merging partials, closing windows, publishing finals, its gauges.

``Combine`` is driven directly with hand-written partial messages. The rollups topic, the
changelog of its table and the consumer lag are fakes, so no broker is needed.
"""

from __future__ import annotations

import asyncio
import time
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import orjson
import pytest
from faust.types import TP

import agents.combine
from agents.combine import IDLE_INDEX_BASE, Combine
from pipeline import names
from pipeline.app import create_app
from pipeline.runtime import wire
from pipeline.runtime.group_offsets import GroupOffsetsUnavailable, Position, TopicPartitionId
from pipeline.runtime.streams import Take
from pipeline.settings import Settings

T0 = 1_795_420_000_000 - 1_795_420_000_000 % 3_600_000  # an hour boundary, epoch ms
MIN = 60_000
LATENESS_MS = 10_000
PAGE_VIEW = orjson.dumps({"event_name": "page_view"}).decode()
HOME = orjson.dumps({"page": "home"}).decode()


def partial(
    partition: int, offset: int, wm: int, series: list[list[Any]] | None = None
) -> dict[str, Any]:
    """A metrics.partials value: events.stitched (partition, offset), its watermark, series."""
    return {"p": partition, "o": offset, "wm": wm, "s": series or [], "f": {}}


def pv_events(size: int, start: int, n: int) -> list[list[Any]]:
    """``n`` page_view events of one window, as the events and pv series hold them."""
    return [["events", size, start, PAGE_VIEW, n], ["pv", size, start, HOME, n]]


def take(*messages: tuple[int, dict[str, Any]], on: int = 0) -> Take:
    """A take of metrics.partials messages given as (topic offset, partial), of partition
    ``on`` (a combine partition)."""
    return Take(
        [
            SimpleNamespace(
                message=SimpleNamespace(
                    partition=on, offset=o, value=orjson.dumps(p), tp=TP("x.metrics.partials", on)
                )
            )
            for o, p in messages
        ]
    )


class FakeGroup:
    """The broker's view of the consumer group: every partition read to its end (0), but
    for ``unread`` messages and the ``ends`` given; ``down``: the broker cannot answer."""

    def __init__(self) -> None:
        self.unread: dict[TopicPartitionId, int] = {}
        self.ends: dict[TopicPartitionId, int] = {}
        self.down = False
        self.asked: list[list[TopicPartitionId]] = []

    def positions(self, partitions: list[TopicPartitionId]) -> dict[TopicPartitionId, Position]:
        self.asked.append(sorted(partitions))
        if self.down:
            raise GroupOffsetsUnavailable("the broker is away")
        out = {}
        for tp in partitions:
            unread = self.unread.get(tp, 0)
            end = max(self.ends.get(tp, 0), unread)
            out[tp] = Position(committed=end - unread, low=0, high=end)
        return out


class Harness:
    """A ``Combine`` with a fake rollups topic, changelog, consumer lag and group view."""

    def __init__(self, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, **settings_: Any) -> None:
        settings = Settings(
            data_dir=tmp_path,
            topic_prefix="x.",
            partitions=2,
            lateness_seconds=LATENESS_MS // 1000,
            idle_close_seconds=0.05,
            **settings_,
        )
        self.app, self.ctx = create_app(settings, ensure_topics=False)
        self.stage = Combine(self.app, self.ctx)
        self.state = self.ctx.domain.combine[0]
        self.published: list[wire.PositionedRows] = []
        self.deliveries: list[asyncio.Future[None]] = []
        self.log: list[str] = []  # "send o:base" and "record key" in the order they happened
        self.records: list[tuple[str, dict[str, Any]]] = []  # key, record
        self.lag: dict[TP, int] | None = {}
        self.group = FakeGroup()
        self.stage.group = self.group  # type: ignore[assignment]
        monkeypatch.setattr(self.ctx.topics.rollups, "send", self._send)
        monkeypatch.setattr(self.ctx.tables.combine_windows, "append", self._append)
        monkeypatch.setattr(agents.combine, "consumer_lag", lambda app: self.lag)

    async def _send(self, *, value: bytes, partition: int) -> asyncio.Future[None]:
        assert partition == 0  # every combine partition's finals: one rollups partition
        msg = wire.PositionedRows.decode(value)
        self.published.append(msg)
        self.log.append(f"send {msg.offset}:{msg.base}")
        delivered: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        asyncio.get_running_loop().call_later(0.01, delivered.set_result, None)
        self.deliveries.append(delivered)
        return delivered

    async def _append(
        self, partition: int, key: str, record: dict[str, Any]
    ) -> asyncio.Future[SimpleNamespace]:
        self.log.append(f"record {key}" + (f" @{partition}" if partition else ""))
        self.records.append((key, record))
        delivered: asyncio.Future[SimpleNamespace] = asyncio.get_running_loop().create_future()
        delivered.set_result(SimpleNamespace(offset=len(self.records) - 1))  # changelog offset
        return delivered

    def process(self, *messages: tuple[int, dict[str, Any]], on: int = 0) -> None:
        asyncio.run(self.stage.process(take(*messages, on=on)))

    def close_if_idle(self) -> None:
        asyncio.run(self.stage.close_if_idle())

    def sample(self, name: str, **labels: str) -> float | None:
        return self.ctx.metrics.registry.get_sample_value(name, labels)


def values(msg: wire.PositionedRows) -> dict[tuple[str, str, int, str], float | None]:
    return {
        (r["metric"], r["window"], r["window_start"], r["dimensions"]): r["value"] for r in msg.rows
    }


# -- wiring ---------------------------------------------------------------------------


def test_combine_reads_partials_and_writes_one_rollups_partition(tmp_path: Path) -> None:
    app, ctx = create_app(
        Settings(data_dir=tmp_path, topic_prefix="x.", partitions=6), ensure_topics=False
    )
    agent = app.agents[names.AGENT_COMBINE]
    assert agent.name == names.AGENT_COMBINE == "combine"
    assert set(agent.channel.topics) == {"x.metrics.partials"}
    assert set(ctx.topics.rollups.topics) == {"x.metrics.rollups"}
    assert ctx.topics.rollups.partitions == 1
    table = app.tables[names.TABLE_COMBINE]
    assert table is ctx.tables.combine_windows
    # Spread over the partitions of metrics.partials, the state co-partitioned with them.
    assert ctx.topics.partials.partitions == table.partitions == 4
    # The finals feed the lake and the detectors.
    assert set(app.agents[names.AGENT_SINK_ROLLUPS].channel.topics) == {"x.metrics.rollups"}
    assert set(app.agents[names.AGENT_DETECT].channel.topics) == {"x.metrics.rollups"}


# -- process ----------------------------------------------------------------------------


def test_window_is_published_once_every_partition_passed_end_plus_lateness(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    h = Harness(tmp_path, monkeypatch)
    closes_at = T0 + MIN + LATENESS_MS
    h.process((0, partial(0, 10, closes_at + 5_000, pv_events(60, T0, 2))))
    assert h.published == []  # partition 1 has no watermark yet
    h.process((1, partial(1, 20, closes_at - 1, pv_events(60, T0, 3))))
    assert h.published == []  # partition 1 is 1 ms short
    h.process((2, partial(1, 21, closes_at, pv_events(3600, T0, 5))))

    (msg,) = h.published
    assert (msg.partition, msg.offset, msg.base) == (0, 2, 0)
    assert values(msg) == {
        ("events", "1m", T0, PAGE_VIEW): 5.0,
        ("pv", "1m", T0, HOME): 5.0,
    }
    row = msg.rows[0]
    assert (row["window_end"], row["numerator"], row["denominator"]) == (T0 + MIN, None, None)
    assert [(k[1], k[2]) for k in h.state.open] == [(3600, T0)] * 2  # the hour stays open
    assert h.sample("trackflow_metric_windows_closed_total", window="1m", reason="watermark") == 1


def test_finals_are_logged_with_the_state_change_before_they_are_sent(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    h = Harness(tmp_path, monkeypatch)
    h.process(
        (0, partial(0, 1, T0, pv_events(60, T0, 1))),
        (1, partial(1, 1, T0 + 2 * MIN, pv_events(60, T0, 1))),
    )
    assert h.log == ["record combine:1:0:0"]  # nothing closable: only the merged state
    h.process((2, partial(0, 2, T0 + 2 * MIN)))
    assert h.log == ["record combine:1:0:0", "record combine:2:0:0", "send 2:0"]
    _, record = h.records[-1]
    assert record["applied"] == {"0": 2, "1": 1}
    assert record["offset"] == 2
    assert ["events", 60, T0, PAGE_VIEW] in record["del"]
    assert record["out_at"] == [2, 0]
    assert record["out"] == h.published[0].rows
    assert h.deliveries[0].done(), "publish returned before the finals were delivered"


def test_a_snapshot_is_logged_when_the_changes_outweigh_it_and_the_next_group_names_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    h = Harness(tmp_path, monkeypatch, combine_snapshot_bytes=2_000)
    offset = 0
    while not any(r.get("reset") for _, r in h.records):
        offset += 1
        assert offset < 100, "no snapshot after 100 takes"
        h.process((offset, partial(0, offset, T0 + offset, pv_events(60, T0, 1))))
    (snap_at,) = [n for n, (_, r) in enumerate(h.records) if r.get("reset")]
    assert sum(len(orjson.dumps(r)) for _, r in h.records[:snap_at]) >= 2_000
    assert all(r["snap_at"] == -1 for _, r in h.records[: snap_at + 1] if "applied" in r)
    h.process((offset + 1, partial(0, offset + 1, T0 + offset + 1, pv_events(60, T0, 1))))
    _, after = h.records[-1]
    assert after["snap_at"] == snap_at  # where a takeover starts reading
    assert not after.get("reset")


def test_each_combine_partition_merges_closes_and_logs_on_its_own(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    h = Harness(tmp_path, monkeypatch)
    # Partition 2 has both source partitions' watermarks past the minute; partition 0 one.
    h.process((0, partial(0, 1, T0 + 2 * MIN, pv_events(60, T0, 1))))
    h.process(
        (5, partial(0, 1, T0 + 2 * MIN, [["orders", 60, T0, "{}", ["o1"]]])),
        (6, partial(1, 1, T0 + 2 * MIN)),
        on=2,
    )
    (msg,) = h.published
    assert (msg.partition, msg.offset, msg.base) == (2, 6, 0)  # positioned in partition 2
    assert values(msg) == {("orders", "1m", T0, "{}"): 1.0, ("aov", "1m", T0, "{}"): 0.0}
    assert h.log[-2:] == ["record combine:6:0:0 @2", "send 6:0"]
    assert ("events", 60, T0, PAGE_VIEW) in h.ctx.domain.combine[0].open
    assert h.ctx.domain.combine[2].open == {}
    assert h.ctx.domain.combine[2].applied == {0: 1, 1: 1}


def test_a_take_of_a_revoked_partition_neither_merges_nor_logs(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Found in review: a take in flight for a partition revoked meanwhile made a fresh,
    empty state and logged it as the partition's progress for the new owner to recover."""
    h = Harness(tmp_path, monkeypatch)
    h.process((0, partial(0, 1, T0, pv_events(60, T0, 1))), on=2)
    assert h.log == ["record combine:0:0:0 @2"]
    h.ctx.tables.combine_windows.revoke_partition(2)
    h.process((1, partial(0, 2, T0 + 5 * MIN, pv_events(60, T0, 1))), on=2)
    assert h.log == ["record combine:0:0:0 @2"]
    assert h.published == []
    h.ctx.tables.combine_windows.forget_partition(2)  # assigned again: replayed, then read
    h.process((2, partial(0, 2, T0, pv_events(60, T0, 1))), on=2)
    assert h.log[-1] == "record combine:2:0:0 @2"


def test_a_take_of_messages_already_read_closes_nothing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Found in review: closes are positioned at the last offset read; a take of re-read
    messages only would position new finals where earlier ones may already be stored."""
    h = Harness(tmp_path, monkeypatch)
    h.process((5, partial(0, 1, T0 + 5 * MIN, pv_events(60, T0, 1))))
    assert h.published == []  # partition 1 holds the minute open

    async def reread(ordered: Any, take: Take) -> list[Any]:
        return list(take)  # after a restart: read again from an older committed offset

    monkeypatch.setattr(agents.combine, "admit", reread)
    monkeypatch.setattr(h.state, "close_ready", lambda **kw: pytest.fail("closed"))
    h.process((4, partial(1, 1, T0 + 5 * MIN)), (5, partial(0, 1, T0 + 5 * MIN)))
    assert h.published == []


def test_messages_at_or_below_the_read_offset_are_skipped(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    h = Harness(tmp_path, monkeypatch)
    h.process((5, partial(0, 1, T0, pv_events(3600, T0, 2))))
    # Re-read after a restart: a topic offset already read, whatever it holds, is skipped.
    h.process((5, partial(0, 2, T0, pv_events(3600, T0, 100))), (4, partial(1, 9, T0)))
    assert h.state.offset == 5
    assert h.state.applied == {0: 1}
    # A partial re-sent by aggregate (same source position, new topic offset) is skipped too.
    h.process((6, partial(0, 1, T0, pv_events(3600, T0, 100))))
    assert h.state.offset == 6
    assert h.state.open[("events", 3600, T0, PAGE_VIEW)] == 2


def test_partials_for_a_closed_window_are_counted_late(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    h = Harness(tmp_path, monkeypatch)
    h.process(
        (0, partial(0, 1, T0 + 5 * MIN, pv_events(60, T0, 1))),
        (1, partial(1, 1, T0 + 5 * MIN)),
    )
    assert len(h.published) == 1
    h.process(
        (2, partial(1, 2, T0 + 5 * MIN, pv_events(60, T0, 4) + pv_events(60, T0 + 5 * MIN, 1)))
    )
    assert h.state.late == 2  # the events and pv series of the closed minute
    assert h.sample("trackflow_late_events_total", window="any", stage="combine") == 2
    assert len(h.published) == 1
    assert ("events", 60, T0 + 5 * MIN, PAGE_VIEW) in h.state.open


ALL = orjson.dumps({}).decode()  # uv's dimensions: none


def uv_ids(size: int, start: int, *identifiers: str) -> list[list[Any]]:
    """uv's identifiers of one window, as a partial carries them (resolved at close)."""
    return [["uv", size, start, ALL, sorted(identifiers)]]


def with_links(p: dict[str, Any], through: int) -> dict[str, Any]:
    return {**p, "l": through}


def test_a_window_of_persons_waits_until_this_workers_map_holds_its_login_link(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The race behind uv 2 vs 3 in a loaded test run: a device's browsing and its login in
    one minute, the login's link (identity.links offset 4) not yet applied here. Resolved
    then, the device and the member count as two persons; the lake, with the link, says 1."""
    h = Harness(tmp_path, monkeypatch)
    device, member = "anonymous_id:d1", "user_id:U1"
    h.process(
        (0, with_links(partial(0, 1, T0 + 5 * MIN, uv_ids(60, T0, device, member)), 4)),
        (1, partial(1, 1, T0 + 5 * MIN)),
    )
    assert h.published == []  # the minute is past its lateness, but the link is not here
    assert h.sample("trackflow_identity_wait_offsets") == 5.0
    h.close_if_idle()  # nor does the idle close resolve without it
    assert h.published == []

    h.ctx.domain.graph.add([(member, device, T0)])  # the follower applies the link...
    h.ctx.tables.identity.note(4)  # ...of identity.links offset 4
    h.process((2, partial(1, 2, T0 + 5 * MIN)))
    (msg,) = h.published
    assert values(msg)[("uv", "1m", T0, ALL)] == 1.0
    assert h.sample("trackflow_identity_wait_offsets") == 0.0


def test_a_window_still_filling_is_not_shown_as_waiting(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Open windows always need the newest links; only one due to close is waiting (the
    gauge an alert reads must stay 0 in normal traffic)."""
    h = Harness(tmp_path, monkeypatch)
    h.process(
        (0, with_links(partial(0, 1, T0 + 30_000, uv_ids(60, T0, "anonymous_id:d1")), 9)),
        (1, partial(1, 1, T0 + 30_000)),
    )
    assert h.published == []
    assert h.sample("trackflow_identity_wait_offsets") == 0.0


def test_windows_after_a_waiting_one_wait_too_and_leave_in_order(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    h = Harness(tmp_path, monkeypatch)
    h.ctx.tables.identity.note(2)
    first = uv_ids(60, T0, "anonymous_id:d1") + pv_events(60, T0, 1)
    second = pv_events(60, T0 + MIN, 1)  # no persons: it would close alone
    h.process(
        (0, with_links(partial(0, 1, T0 + 5 * MIN, first), 3)),
        (1, partial(0, 2, T0 + 5 * MIN, second)),
        (2, partial(1, 1, T0 + 5 * MIN)),
    )
    assert h.published == []
    h.ctx.tables.identity.note(3)
    h.process((3, partial(1, 2, T0 + 5 * MIN)))
    (msg,) = h.published
    starts = [r["window_start"] for r in msg.rows if r["window"] == "1m"]
    assert starts == sorted(starts)
    assert set(starts) == {T0, T0 + MIN}


def test_partials_without_a_links_offset_do_not_wait(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Events written to events.stitched by something other than stitch carry no header."""
    h = Harness(tmp_path, monkeypatch)
    h.process(
        (0, partial(0, 1, T0 + 5 * MIN, uv_ids(60, T0, "anonymous_id:d1"))),
        (1, partial(1, 1, T0 + 5 * MIN)),
    )
    (msg,) = h.published
    assert values(msg)[("uv", "1m", T0, ALL)] == 1.0


def test_what_windows_wait_for_survives_a_restart(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    h = Harness(tmp_path, monkeypatch)
    h.process((0, with_links(partial(0, 1, T0 + 5 * MIN, uv_ids(60, T0, "anonymous_id:d1")), 9)))
    replica = recovered(h, tmp_path, monkeypatch)
    assert replica.state.needs == {(60, T0): 9}
    replica.ctx.tables.identity.note(8)
    replica.process((1, partial(1, 1, T0 + 5 * MIN)))
    assert replica.published == []
    replica.ctx.tables.identity.note(9)
    replica.process((2, partial(1, 2, T0 + 5 * MIN)))
    assert len(replica.published) == 1


def recovered(h: Harness, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Harness:
    """A new worker whose state is rebuilt from the records ``h`` logged."""
    replica = Harness(tmp_path, monkeypatch)
    for _, record in h.records:
        replica.state.apply_record(orjson.loads(orjson.dumps(record)))
    return replica


CLOSES_MINUTE = [
    (0, partial(0, 1, T0 + 5 * MIN, pv_events(60, T0, 1))),
    (1, partial(1, 1, T0 + 5 * MIN, pv_events(60, T0, 2))),  # closes the minute
    (2, partial(0, 2, T0 + 5 * MIN, pv_events(60, T0 + 4 * MIN, 1))),
]


def test_a_crash_between_logging_and_sending_resends_the_finals_at_their_position(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Found by tests/integration/test_metrics.py (SIGKILLs): the minute was published at
    one offset, the worker died before logging it, and the replay closed it again at a
    later offset, above the lake writer's checkpoint: the rollups files held it twice."""
    live = Harness(tmp_path / "a", monkeypatch)

    async def dies(*, value: bytes, partition: int) -> None:
        raise SystemExit("SIGKILL")

    monkeypatch.setattr(live.ctx.topics.rollups, "send", dies)
    with pytest.raises(SystemExit):
        live.process(*CLOSES_MINUTE[:2])
    assert live.published == []
    replica = recovered(live, tmp_path / "b", monkeypatch)
    assert replica.state.offset == 1  # the take is done: its input is not read again
    replica.process(CLOSES_MINUTE[2])
    (again, *_) = replica.published
    assert (again.offset, again.base) == (1, 0)
    assert values(again) == {("events", "1m", T0, PAGE_VIEW): 3.0, ("pv", "1m", T0, HOME): 3.0}
    assert ("events", 60, T0, PAGE_VIEW) not in replica.state.open


def test_a_crash_before_logging_sends_nothing_and_the_replay_closes_once(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    live = Harness(tmp_path / "a", monkeypatch)
    live.process(CLOSES_MINUTE[0])
    appended = live.ctx.tables.combine_windows.append

    async def dies(partition: int, key: str, record: dict[str, Any]) -> None:
        raise SystemExit("SIGKILL")

    monkeypatch.setattr(live.ctx.tables.combine_windows, "append", dies)
    with pytest.raises(SystemExit):
        live.process(CLOSES_MINUTE[1])
    assert live.published == []
    monkeypatch.setattr(live.ctx.tables.combine_windows, "append", appended)
    replica = recovered(live, tmp_path / "b", monkeypatch)
    assert replica.state.offset == 0
    replica.process(*CLOSES_MINUTE[1:])
    (msg,) = replica.published
    assert (msg.offset, msg.base) == (2, 0)
    assert values(msg) == {("events", "1m", T0, PAGE_VIEW): 3.0, ("pv", "1m", T0, HOME): 3.0}


def test_a_restart_after_delivery_resends_the_last_outbox_harmlessly(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The last group's outbox is sent again after any restart: same rows, same position,
    which the lake writer skips as at or below its checkpoint."""
    live = Harness(tmp_path / "a", monkeypatch)
    live.process(*CLOSES_MINUTE[:2])
    replica = recovered(live, tmp_path / "b", monkeypatch)
    replica.close_if_idle()
    assert replica.published == [], "sent before the first rebalance completed"
    replica.stage.ready = True
    replica.close_if_idle()  # nothing is open: only the outbox goes out
    (first,) = live.published
    (again,) = replica.published
    assert (again.offset, again.base, again.rows) == (first.offset, first.base, first.rows)
    replica.close_if_idle()
    assert len(replica.published) == 1


# -- close_if_idle ----------------------------------------------------------------------


def test_idle_input_closes_every_open_window_after_the_idle_time(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    h = Harness(tmp_path, monkeypatch)
    h.process(
        (7, partial(0, 1, T0 + 30_000, pv_events(60, T0, 2) + pv_events(3600, T0, 2))),
        (8, partial(1, 1, T0 + 20_000, pv_events(60, T0, 1) + pv_events(3600, T0, 1))),
    )
    assert h.published == []
    long_ago = time.monotonic() - 1.0

    h.stage.last_input = long_ago
    h.close_if_idle()
    assert h.published == [], "closed before the first rebalance completed"

    h.stage.ready = True
    h.stage.last_input = time.monotonic()
    h.close_if_idle()
    assert h.published == [], "closed before idle_close_seconds"

    h.stage.last_input = long_ago
    h.lag = {TP("x.events.stitched", 0): 2}
    h.close_if_idle()
    assert h.published == [], "closed while upstream input was pending"
    assert h.stage.last_input > long_ago  # catching up restarts the idle clock
    h.lag = {TP("x.events.stitched", 0): 0}

    h.stage.last_input = long_ago
    monkeypatch.setattr(h.app, "rebalancing", True)
    h.close_if_idle()
    assert h.published == [], "closed during a rebalance"
    monkeypatch.setattr(h.app, "rebalancing", False)

    h.stage.last_input = long_ago
    h.close_if_idle()
    (msg,) = h.published
    assert (msg.offset, msg.base) == (8, IDLE_INDEX_BASE)
    assert values(msg) == {
        ("events", "1m", T0, PAGE_VIEW): 3.0,
        ("pv", "1m", T0, HOME): 3.0,
        ("events", "1h", T0, PAGE_VIEW): 3.0,
        ("pv", "1h", T0, HOME): 3.0,
    }
    assert h.state.open == {}
    assert h.log[-2:] == [f"record combine:8:{IDLE_INDEX_BASE}:0", "send 8:524288"]
    assert h.records[-1][1]["out_at"] == [8, IDLE_INDEX_BASE]
    assert h.sample("trackflow_metric_windows_closed_total", window="1h", reason="idle") == 1

    h.stage.last_input = long_ago
    h.close_if_idle()
    assert len(h.published) == 1  # nothing left open


def test_input_restarts_the_idle_clock(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    h = Harness(tmp_path, monkeypatch)
    h.stage.ready = True
    h.stage.last_input = time.monotonic() - 1.0
    h.process((0, partial(0, 1, T0, pv_events(60, T0, 1))))
    h.close_if_idle()
    assert h.published == []


def test_idle_close_waits_for_a_message_to_position_its_rows(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    h = Harness(tmp_path, monkeypatch)
    # Open windows but no metrics.partials offset read (state.offset is -1).
    h.state.apply(partial(0, 1, T0, pv_events(60, T0, 1)))
    assert h.state.open
    h.stage.ready = True
    h.stage.last_input = time.monotonic() - 1.0
    h.close_if_idle()
    assert h.published == []
    assert h.records == []


# -- show_values ------------------------------------------------------------------------


def test_gauges_keep_finals_apart_from_provisional_values(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    h = Harness(tmp_path, monkeypatch)
    h.process(
        (0, partial(0, 1, T0 + 3 * MIN, pv_events(60, T0, 4) + pv_events(3600, T0, 4))),
        (
            1,
            partial(
                1,
                1,
                T0 + 3 * MIN,
                [
                    ["events", 60, T0 + 2 * MIN, PAGE_VIEW, 2],
                    ["events", 3600, T0, PAGE_VIEW, 2],
                    ["pay_successes", 60, T0 + 2 * MIN, "{}", 1],
                ],
            ),
        ),
    )
    assert len(h.published) == 1  # the first minute is final, the rest provisional
    h.stage.show_values()

    def final(metric: str, window: str, dims: str) -> float | None:
        return h.sample("trackflow_metric_final", metric=metric, window=window, dimensions=dims)

    def provisional(metric: str, window: str, dims: str) -> float | None:
        return h.sample("trackflow_metric_value", metric=metric, window=window, dimensions=dims)

    # Minute T0 is final (4 events); the open minute T0+2m counts 2 so far: the final is
    # not overwritten by the next window's running count.
    assert final("events", "1m", PAGE_VIEW) == 4
    assert provisional("events", "1m", PAGE_VIEW) == 2
    assert final("pv", "1m", HOME) == 4
    assert provisional("pv", "1m", HOME) is None  # no open window of pv by minute
    assert final("events", "1h", PAGE_VIEW) is None  # the hour is still open
    assert provisional("events", "1h", PAGE_VIEW) == 6
    assert provisional("pay_successes", "1m", "{}") == 1
    assert provisional("payment_success_rate", "1m", "{}") is None  # no requests: no value
    assert h.sample("trackflow_metric_open_windows") == 2  # (1m, T0+2m) and (1h, T0)


def test_gauges_of_a_partition_moved_to_another_worker_are_removed(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    h = Harness(tmp_path, monkeypatch)
    h.process((0, partial(0, 1, T0 + 3 * MIN, pv_events(60, T0, 4) + pv_events(3600, T0, 4))))
    h.process((1, partial(1, 1, T0 + 3 * MIN, [])))
    assert h.published  # minute T0 closed
    h.stage.show_values()
    labels = {"metric": "events", "dimensions": PAGE_VIEW}
    assert h.sample("trackflow_metric_final", window="1m", **labels) == 4
    assert h.sample("trackflow_metric_value", window="1h", **labels) == 4
    h.ctx.tables.combine_windows.revoke_partition(0)  # the new holder shows them now
    h.stage.show_values()
    assert h.sample("trackflow_metric_final", window="1m", **labels) is None
    assert h.sample("trackflow_metric_value", window="1h", **labels) is None
    assert h.sample("trackflow_metric_open_windows") == 0


def test_newly_held_partitions_show_the_lakes_newest_finals_at_once(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A restarted worker (or one taking a partition over) shows each series' newest
    stored final at once, not an hour later for hourly series; a final it closes itself
    since is newer and wins; series of partitions it does not hold are not shown."""
    import datetime as dt

    import pyarrow as pa
    import pyarrow.parquet as pq

    from pipeline.lake.schema import ROLLUP_SCHEMA

    h = Harness(tmp_path, monkeypatch)
    now = int(time.time() * 1000)
    hour = now - now % 3_600_000 - 3_600_000  # the last closed hour
    place = h.ctx.domain.combine_place
    held = place["events"]
    h.ctx.domain.combine[held]  # this worker holds the events partition (and partition 0)
    holds = {c for c, _ in h.ctx.domain.combine.items()}
    other = next(m for m, c in place.items() if c not in holds)

    def row(metric: str, start: int, value: float) -> dict[str, Any]:
        ts = dt.datetime.fromtimestamp(start / 1000, dt.UTC)
        return {
            "metric": metric, "window": "1h", "window_start": ts,
            "window_end": ts + dt.timedelta(hours=1), "dimensions": PAGE_VIEW,
            "value": value, "numerator": None, "denominator": None, "finalised_at": ts,
            "source_partition": 0, "source_offset": 1, "source_index": 0,
        }  # fmt: skip

    folder = tmp_path / "lake" / "rollups" / f"window_date={dt.date.today()}"
    folder.mkdir(parents=True)
    rows = [row("events", hour - 3_600_000, 7), row("events", hour, 9), row(other, hour, 5)]
    pq.write_table(pa.Table.from_pylist(rows, schema=ROLLUP_SCHEMA), folder / "a.parquet")

    asyncio.run(h.stage.seed_finals())
    h.stage.show_values()
    labels = {"metric": "events", "window": "1h", "dimensions": PAGE_VIEW}
    assert h.sample("trackflow_metric_final", **labels) == 9  # the newest stored hour
    assert (
        h.sample("trackflow_metric_final", metric=other, window="1h", dimensions=PAGE_VIEW) is None
    )

    # A window this worker closes later is newer than the stored one.
    h.stage.finals[held][("events", "1h", PAGE_VIEW)] = (hour + 3_600_000, 11.0)
    asyncio.run(h.stage.seed_finals())  # already seeded: nothing read again
    h.stage.show_values()
    assert h.sample("trackflow_metric_final", **labels) == 11


def test_a_failed_read_of_stored_finals_is_tried_again_later(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A read that failed (a file being replaced) must not leave the partition's final
    gauges empty until its next close: it is retried after a pause."""
    import agents.combine as combine_module

    h = Harness(tmp_path, monkeypatch)
    place = h.ctx.domain.combine_place
    held = place["events"]
    h.ctx.domain.combine[held]
    calls: list[int] = []

    def flaky(data_dir: Path, plan: Any) -> list[tuple[str, str, str, int, Any]]:
        calls.append(1)
        if len(calls) == 1:
            raise OSError("file replaced while read")
        return [("events", "1h", PAGE_VIEW, 1, 4.0)]

    monkeypatch.setattr(combine_module, "stored_finals", flaky)
    clock = [1000.0]
    monkeypatch.setattr(combine_module.time, "monotonic", lambda: clock[0])
    asyncio.run(h.stage.seed_finals())
    asyncio.run(h.stage.seed_finals())  # too soon: not read again
    assert len(calls) == 1
    clock[0] += combine_module.SEED_RETRY_SECONDS
    asyncio.run(h.stage.seed_finals())
    assert len(calls) == 2
    assert h.stage.finals[held][("events", "1h", PAGE_VIEW)] == (1, 4.0)
