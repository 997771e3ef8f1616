"""Pinned read offsets: Faust's fetcher cannot raise a partition's read offset past a hole
a stage is seeking back to."""

from __future__ import annotations

import asyncio
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import faust
from faust.types import TP

from pipeline.app import create_app
from pipeline.runtime import read_offsets
from pipeline.runtime.read_offsets import ReadOffsets
from pipeline.settings import Settings

T = TP("events.stitched", 2)


def test_faust_defaults_hold_without_pins() -> None:
    r = ReadOffsets()
    assert (r[T], r.get(T)) == (None, None)  # defaultdict(lambda: None), as Faust's
    r[T] = 5
    r[T] = 9
    assert r[T] == 9


def test_a_pin_caps_what_the_fetcher_sets_until_released() -> None:
    r = ReadOffsets()
    r[T] = 2999
    r.pin("sink_events", T, 700)
    assert r[T] == 700
    r[T] = 2999  # the rest of the batch in flight
    r.update({T: 3000})  # Faust's perform_seek
    assert r[T] == 700
    r[T] = 650  # a seek further back still goes through
    assert r[T] == 650
    r.release("sink_events", T)
    r[T] = 3001
    assert r[T] == 3001


def test_the_lowest_pin_of_several_stages_holds_and_each_releases_its_own() -> None:
    r = ReadOffsets()
    r.pin("sink_events", T, 700)
    r.pin("aggregate", T, 500)
    r[T] = 900
    assert r[T] == 500
    r.release("aggregate", T)
    r[T] = 900
    assert r[T] == 700
    r.release("sink_events", T)
    r[T] = 900
    assert r[T] == 900


def test_a_revoke_drops_the_partition_and_its_pins() -> None:
    r = ReadOffsets()
    r.pin("sink_events", T, 700)
    assert r.pop(T, None) == 700
    r[T] = 900
    assert (r[T], r.pins) == (900, {})


def test_install_gives_faust_consumers_pinned_read_offsets() -> None:
    read_offsets.install()
    read_offsets.install()  # idempotent
    app = faust.App("read-offsets-test", broker="kafka://127.0.0.1:1", autodiscover=False)
    consumer = app.consumer
    assert isinstance(consumer._read_offset, ReadOffsets)
    read_offsets.pin(consumer, "sink_events", T, 7)
    assert consumer._read_offset[T] == 7


def test_skip_marks_given_up_offsets_done_for_faust_s_commit() -> None:
    added: list[tuple[Any, int, int]] = []

    async def _add_gap(tp: Any, first: int, last: int) -> None:
        added.append((tp, first, last))

    asyncio.run(read_offsets.skip(SimpleNamespace(_add_gap=_add_gap), T, 700, 707))
    assert added == [(T, 700, 707)]
    asyncio.run(read_offsets.skip(SimpleNamespace(), T, 1, 2))  # a consumer without gaps


def test_the_worker_s_consumer_has_pinned_read_offsets(tmp_path: Path) -> None:
    app, _ = create_app(
        Settings(data_dir=tmp_path, topic_prefix="x.", dev=True), ensure_topics=False
    )
    assert isinstance(app.consumer._read_offset, ReadOffsets)
