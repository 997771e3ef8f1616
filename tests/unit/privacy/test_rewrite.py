"""Removing rows from a lake file: same name, old or new content, under the fence; and the
writers' purge of rows still on their way."""

from __future__ import annotations

import threading
import time
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from pipeline.contract.plan import load_plan
from pipeline.lake.schema import EventBatches
from pipeline.names import LAKE_EVENTS, TOPIC_RAW
from pipeline.privacy import purge
from pipeline.privacy.matching import MatchSet
from pipeline.privacy.rewrite import fence_for, remove_rows
from pipeline.runtime.context import lake_writers
from tests.unit.privacy.lake import person_events, write_events

MATCH = MatchSet.of(["anonymous_id:gone"], [])


def files(lake: Path) -> list[Path]:
    return sorted((lake / LAKE_EVENTS).rglob("*.parquet"))


def test_rows_are_removed_under_the_same_name(tmp_path: Path) -> None:
    write_events(tmp_path, person_events(0, 3, anonymous_id="gone") + person_events(3, 2))
    [path] = files(tmp_path)
    assert remove_rows(tmp_path, LAKE_EVENTS, path, MATCH.mask) == 3
    assert files(tmp_path) == [path]
    assert pq.read_table(path).column("source_offset").to_pylist() == [3, 4]
    assert remove_rows(tmp_path, LAKE_EVENTS, path, MATCH.mask) == 0  # idempotent
    assert not list(path.parent.glob(".*.tmp"))


def test_a_file_left_empty_is_removed(tmp_path: Path) -> None:
    write_events(tmp_path, person_events(0, 2, anonymous_id="gone"))
    [path] = files(tmp_path)
    assert remove_rows(tmp_path, LAKE_EVENTS, path, MATCH.mask) == 2
    assert files(tmp_path) == []


def test_a_crash_before_the_rename_leaves_the_old_file(tmp_path: Path) -> None:
    write_events(tmp_path, person_events(0, 2, anonymous_id="gone") + person_events(2, 1))
    [path] = files(tmp_path)
    before = path.read_bytes()

    def crash(rows_before: int, rows_after: int) -> None:
        assert (rows_before, rows_after) == (3, 1)
        raise KeyboardInterrupt  # stands for a kill between the journal and the rename

    with pytest.raises(KeyboardInterrupt):
        remove_rows(tmp_path, LAKE_EVENTS, path, MATCH.mask, crash)
    assert path.read_bytes() == before


def test_a_rewrite_holds_the_writers_flush_back(tmp_path: Path) -> None:
    """The fence lock orders a rewrite and the live writer's flushes."""
    writer = lake_writers(tmp_path, load_plan())[LAKE_EVENTS]
    writer.add(TOPIC_RAW, 0, EventBatches(load_plan()).build(person_events(0, 1)))
    flushed = threading.Event()

    def flush() -> None:
        writer.flush(TOPIC_RAW, 0)
        flushed.set()

    with fence_for(tmp_path, LAKE_EVENTS).exclusive((TOPIC_RAW, 0)):
        thread = threading.Thread(target=flush)
        thread.start()
        time.sleep(0.3)
        assert not flushed.is_set()
    thread.join(5)
    assert flushed.is_set()
    assert len(files(tmp_path)) == 1


def test_writers_drop_rows_of_purged_persons_and_still_checkpoint(tmp_path: Path) -> None:
    writer = lake_writers(tmp_path, load_plan())[LAKE_EVENTS]
    purge.add(tmp_path, "r1", {"anonymous_id:gone"}, set())
    rows = person_events(0, 2, anonymous_id="gone") + person_events(2, 2)
    writer.add(TOPIC_RAW, 0, EventBatches(load_plan()).build(rows))
    result, _ = writer.flush(TOPIC_RAW, 0)
    assert (result.rows, result.purged) == (2, 2)
    assert writer.high_water(TOPIC_RAW, 0) >> 20 == 3  # positions of dropped rows count
    purge.remove(tmp_path, {"r1"})  # unsuppressed: stored again
    writer.add(
        TOPIC_RAW, 0, EventBatches(load_plan()).build(person_events(4, 1, anonymous_id="gone"))
    )
    result, _ = writer.flush(TOPIC_RAW, 0)
    assert (result.rows, result.purged) == (1, 0)


def test_a_replay_after_a_deletion_stores_nothing_twice(tmp_path: Path) -> None:
    """The rewritten file keeps its name and the checkpoint is untouched: a restarted
    writer re-reading the same input skips every position, the deleted rows included."""
    rows = person_events(0, 3, anonymous_id="gone") + person_events(3, 3)
    write_events(tmp_path, rows)
    [path] = files(tmp_path)
    remove_rows(tmp_path, LAKE_EVENTS, path, MATCH.mask)
    restarted = lake_writers(tmp_path, load_plan())[LAKE_EVENTS]  # after a crash
    replay = EventBatches(load_plan()).build(rows + person_events(6, 1))
    assert restarted.add(TOPIC_RAW, 0, replay) == 1  # only the new position 6
    restarted.flush(TOPIC_RAW, 0)
    offsets = sorted(
        o for p in files(tmp_path) for o in pq.read_table(p).column("source_offset").to_pylist()
    )
    assert offsets == [3, 4, 5, 6]
