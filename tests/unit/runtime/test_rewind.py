"""After a rebalance every input partition restarts where the group stands on the broker."""

from __future__ import annotations

import asyncio
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
from faust.types import TP

from pipeline.app import create_app
from pipeline.runtime.rewind import rewind
from pipeline.settings import Settings

RAW0, RAW1, LOG = TP("x.events.raw", 0), TP("x.events.raw", 1), TP("x-dedup-changelog", 0)


class Offsets:
    """The broker's answer: committed offsets, else the log start; ``None``: cannot say."""

    def __init__(self, starts: dict[Any, int | None]) -> None:
        self.starts = starts
        self.asked: list[Any] = []

    async def start(self, tp: Any) -> int | None:
        self.asked.append(tp)
        if tp not in self.starts:
            raise ConnectionError("coordinator not available")
        return self.starts[tp]


def fake_app(assignment: set[Any]) -> Any:
    seeks: list[tuple[Any, int]] = []

    async def seek(tp: Any, offset: int) -> None:
        seeks.append((tp, offset))

    return SimpleNamespace(
        consumer=SimpleNamespace(assignment=lambda: assignment, seek=seek)
    ), seeks


def test_input_partitions_are_sought_to_their_start_and_changelogs_left_alone() -> None:
    """The stall: records fetched while the group formed were dropped by Faust and, with
    nothing committed, aiokafka's seek_to_committed left the position after them."""
    app, seeks = fake_app({RAW0, RAW1, LOG})
    offsets = Offsets({RAW0: 0, RAW1: 17})
    moved = asyncio.run(rewind(app, offsets))
    assert sorted(seeks) == [(RAW0, 0), (RAW1, 17)]
    assert moved == {RAW0: 0, RAW1: 17}
    assert LOG not in offsets.asked


def test_a_partition_the_broker_cannot_place_is_left_to_faust() -> None:
    app, seeks = fake_app({RAW0, RAW1})
    assert asyncio.run(rewind(app, Offsets({RAW1: None}))) == {}
    assert seeks == []


def test_the_worker_rewinds_when_a_rebalance_completes(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    app, ctx = create_app(
        Settings(data_dir=tmp_path, topic_prefix="x.", dev=True), ensure_topics=False
    )
    seeks: list[tuple[Any, int]] = []

    async def seek(tp: Any, offset: int) -> None:
        seeks.append((tp, offset))

    monkeypatch.setattr(app.consumer, "assignment", lambda: {RAW1, LOG})
    monkeypatch.setattr(app.consumer, "seek", seek)
    monkeypatch.setattr(ctx.start_offsets, "start", Offsets({RAW1: 5}).start)
    asyncio.run(app.on_rebalance_complete.send())
    assert seeks == [(RAW1, 5)]
