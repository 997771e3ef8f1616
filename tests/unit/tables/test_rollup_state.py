"""Where the combine table's recovery starts: the newest snapshot of each partition newly
assigned, given to Faust as the offset before it (Faust applies only records past it)."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest
from faust.types import TP

import tables.rollup_state
from pipeline.app import create_app
from pipeline.settings import Settings
from tables.rollup_state import CombineWindows


@pytest.fixture
def table(tmp_path: Path) -> CombineWindows:
    _app, ctx = create_app(
        Settings(data_dir=tmp_path, topic_prefix="x.", dev=True), ensure_topics=False
    )
    return ctx.tables.combine_windows


def test_newly_assigned_partitions_start_at_their_newest_snapshot(
    table: CombineWindows, monkeypatch: pytest.MonkeyPatch
) -> None:
    topic = table.changelog_topic.get_topic_name()
    asked: list[list[int]] = []

    async def newest(kafka: Any, name: str, partitions: list[int]) -> dict[int, int]:
        assert name == topic
        asked.append(partitions)
        return {p: 40 + p for p in partitions if p != 3}  # partition 3: no snapshot yet

    monkeypatch.setattr(tables.rollup_state, "newest_snapshots", newest)
    kept, new, other = TP(topic, 0), {TP(topic, 1), TP(topic, 3)}, TP("x.events.raw", 2)
    asyncio.run(table.on_rebalance({kept, *new, other}, set(), {*new, other}, 0))
    assert asked == [[1, 3]]  # only this table's changelog partitions newly assigned
    # Faust seeks to the offset it is given but applies only the records after it: the
    # snapshot's first record (41) must not be skipped, or its group is dropped as torn.
    assert table.persisted_offset(TP(topic, 1)) == 40
    assert table.persisted_offset(TP(topic, 3)) is None  # read from the beginning
    assert table.persisted_offset(kept) is None  # Faust goes on from where it had read
    assert table.applied_offsets[1] == 40  # the catch-up reads on from the snapshot

    # The next rebalance forgets those starts: a kept partition is not read again from them.
    asyncio.run(table.on_rebalance({kept, *new}, set(), set(), 1))
    assert table.persisted_offset(TP(topic, 1)) is None


def test_a_broker_that_cannot_say_means_reading_from_the_beginning(
    table: CombineWindows, monkeypatch: pytest.MonkeyPatch
) -> None:
    topic = table.changelog_topic.get_topic_name()

    async def down(kafka: Any, name: str, partitions: list[int]) -> dict[int, int]:
        raise ConnectionError("no broker")

    monkeypatch.setattr(tables.rollup_state, "newest_snapshots", down)
    asyncio.run(table.on_rebalance({TP(topic, 1)}, set(), {TP(topic, 1)}, 0))
    assert table.persisted_offset(TP(topic, 1)) is None
