"""Compaction: what may be merged (one directory, one source partition, committed), target
rows, idempotence, replay after compaction, plan evolution between files."""

from __future__ import annotations

from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from pipeline.lake import compaction
from pipeline.lake.history import NO_PRIVACY
from pipeline.lake.maintain import maintain
from pipeline.lake.retention import Retention
from pipeline.lake.rewrite import live_files, span_of
from pipeline.lake.writer import TableWriter
from pipeline.names import LAKE_EVENTS, TOPIC_RAW
from tests.records import event_row
from tests.unit.lake.lakes import Lake, days_ago, ms
from tests.unit.lake.test_writer import rows, split

KEEP = Retention({})


def test_small_files_merge_per_directory_and_source_partition(tmp_path: Path) -> None:
    lake = Lake(tmp_path)
    day = days_ago(1)
    lake.events(12, day=day, partition=0, per_flush=2)  # 6 files
    lake.events(6, day=day, partition=1, per_flush=2)  # 3 files, other source partition
    lake.events(4, day=day, name="login", partition=0, per_flush=1)  # other directory
    before = lake.event_ids()
    report = maintain(lake.lake, KEEP, guard=NO_PRIVACY, target_rows=1000)
    assert lake.event_ids() == before
    files = lake.files()
    assert len(files) == 3
    names = sorted(f.name for f in files)
    assert names == [
        "events.raw-p0-000000000000.0000000-000000000011.0000000.parquet",
        "events.raw-p0-000000000012.0000000-000000000015.0000000.parquet",
        "events.raw-p1-000000000000.0000000-000000000005.0000000.parquet",
    ]
    t = report.tables[LAKE_EVENTS]
    assert (t.files_compacted, t.files_written, t.rows_compacted) == (13, 3, 22)
    # Rows stay in position order inside the merged file.
    merged = pq.read_table(next(f for f in files if f.name == names[0]))
    assert merged["source_offset"].to_pylist() == sorted(merged["source_offset"].to_pylist())


def test_groups_respect_the_target_and_a_second_run_changes_nothing(tmp_path: Path) -> None:
    lake = Lake(tmp_path)
    lake.events(30, day=days_ago(2), per_flush=3)  # 10 files of 3 rows
    lake.events(10, day=days_ago(2), per_flush=10)  # one file of 10 rows: not small
    lake.events(6, day=days_ago(2), per_flush=2)  # 3 more small files after it
    maintain(lake.lake, KEEP, guard=NO_PRIVACY, target_rows=10)
    got = [(span_of(f), pq.read_metadata(f).num_rows) for f in lake.files()]
    assert [n for _, n in got] == [9, 9, 9, 3, 10, 6]
    before = {f.name: f.stat().st_mtime_ns for f in lake.files()}
    again = maintain(lake.lake, KEEP, guard=NO_PRIVACY, target_rows=10)
    assert {f.name: f.stat().st_mtime_ns for f in lake.files()} == before
    assert not again.changed()
    assert len(lake.event_ids()) == 46


def test_files_above_the_checkpoint_are_never_merged(tmp_path: Path) -> None:
    w = TableWriter(tmp_path, "t", split)
    for batch in (range(0, 2), range(2, 4), range(4, 6)):
        w.add(TOPIC_RAW, 0, rows(batch))
        w.flush(TOPIC_RAW, 0)
    # A flush renamed its file but crashed before its checkpoint: the next claim deletes it.
    checkpoint = tmp_path / "_checkpoints" / "t" / f"{TOPIC_RAW}-p0.json"
    saved = checkpoint.read_bytes()
    w.add(TOPIC_RAW, 0, rows(range(6, 8)))
    w.flush(TOPIC_RAW, 0)
    checkpoint.write_bytes(saved)
    groups = compaction.plan(tmp_path, "t", 100)
    assert [[span_of(f.path)[1] >> 20 for f in g.files] for g in groups] == [[1, 3, 5]]
    compaction.compact(tmp_path, groups[0])
    again = TableWriter(tmp_path, "t", split)
    again.claim(TOPIC_RAW, 0)  # deletes the uncommitted file, keeps the merged one
    names = sorted(p.name for p in live_files(tmp_path, "t"))
    assert names == [f"{TOPIC_RAW}-p0-000000000000.0000000-000000000005.0000000.parquet"]


def test_a_replay_after_compaction_stores_nothing_twice(tmp_path: Path) -> None:
    lake = Lake(tmp_path)
    lake.events(20, day=days_ago(1), per_flush=4)
    maintain(lake.lake, KEEP, guard=NO_PRIVACY, target_rows=1000)
    assert len(lake.files()) == 1
    # A worker restarted from an older committed offset re-reads offsets 8.. and more.
    writer = Lake(tmp_path).writers[LAKE_EVENTS]
    t = ms(days_ago(1))
    replay = [event_row(partition=0, offset=o, t=t, properties={"page": "x"}) for o in range(8, 26)]
    writer.add(TOPIC_RAW, 0, lake.batches.build(replay))
    writer.flush(TOPIC_RAW, 0)
    ids = lake.event_ids()
    assert len(ids) == len(set(ids)) == 26


def test_files_of_two_plan_versions_merge_into_one_schema(tmp_path: Path) -> None:
    w = TableWriter(tmp_path, "t", split)
    w.add(TOPIC_RAW, 0, rows(range(0, 2)))
    w.flush(TOPIC_RAW, 0)
    newer = rows(range(2, 4)).append_column("coupon", pa.array(["c1", None]))
    w.add(TOPIC_RAW, 0, newer)
    w.flush(TOPIC_RAW, 0)
    [group] = compaction.plan(tmp_path, "t", 100)
    compaction.compact(tmp_path, group)
    [merged] = live_files(tmp_path, "t")
    table = pq.read_table(merged)
    assert table["coupon"].to_pylist() == [None, None, "c1", None]
    assert table["v"].to_pylist() == [0, 10, 20, 30]
