"""TableWriter: crash-safe files, checkpoints, and skipping what was already stored."""

from __future__ import annotations

from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import pytest

from pipeline.contract.positions import pack
from pipeline.lake.writer import TableWriter, file_name


def split(table: pa.Table) -> list[tuple[str, pa.Table]]:
    days = sorted(set(table["day"].to_pylist()))
    return [(f"day={d}", table.filter(pc.equal(table["day"], d))) for d in days]


def rows(offsets: range, day: str = "2026-11-23") -> pa.Table:
    return pa.Table.from_pylist(
        [{"source_offset": o, "source_index": 0, "day": day, "v": o * 10} for o in offsets]
    )


def stored(root: Path) -> list[int]:
    out: list[int] = []
    for path in sorted(root.rglob("*.parquet")):
        out += pq.read_table(path).column("source_offset").to_pylist()
    return sorted(out)


def test_flush_writes_named_files_and_checkpoint(tmp_path: Path) -> None:
    w = TableWriter(tmp_path, "t", split)
    assert w.add("events.raw", 3, rows(range(10, 20)), token="a") == 10
    result, tokens = w.flush("events.raw", 3)
    assert tokens == ["a"]
    assert result.rows == 10
    assert result.files == 1
    assert (
        tmp_path / "t" / "day=2026-11-23" / file_name("events.raw", 3, pack(10, 0), pack(19, 0))
    ).exists()
    assert stored(tmp_path / "t") == list(range(10, 20))


def test_rows_at_or_below_the_checkpoint_are_skipped_after_restart(tmp_path: Path) -> None:
    w = TableWriter(tmp_path, "t", split)
    w.add("events.raw", 0, rows(range(0, 5)))
    w.flush("events.raw", 0)
    again = TableWriter(tmp_path, "t", split)  # a restarted worker
    assert again.add("events.raw", 0, rows(range(0, 8))) == 3  # replay overlaps 0..4
    again.flush("events.raw", 0)
    assert stored(tmp_path / "t") == list(range(0, 8))


def test_overlapping_buffered_batches_are_not_doubled(tmp_path: Path) -> None:
    w = TableWriter(tmp_path, "t", split)
    w.add("events.raw", 0, rows(range(0, 5)))
    assert w.add("events.raw", 0, rows(range(3, 7))) == 2
    w.flush("events.raw", 0)
    assert stored(tmp_path / "t") == list(range(0, 7))


def test_files_renamed_without_a_checkpoint_are_removed_on_restart(tmp_path: Path) -> None:
    w = TableWriter(tmp_path, "t", split)
    w.add("events.raw", 1, rows(range(0, 3)))
    w.flush("events.raw", 1)
    # A crash after renaming the files of the next flush but before its checkpoint:
    orphan_dir = tmp_path / "t" / "day=2026-11-24"
    orphan_dir.mkdir(parents=True)
    pq.write_table(
        rows(range(3, 6), "2026-11-24"),
        orphan_dir / file_name("events.raw", 1, pack(3, 0), pack(5, 0)),
    )
    (orphan_dir / f".{file_name('events.raw', 1, pack(6, 0), pack(9, 0))}.tmp").write_bytes(
        b"partial"
    )
    other = orphan_dir / file_name(
        "events.raw", 2, pack(3, 0), pack(5, 0)
    )  # another partition: untouched
    pq.write_table(rows(range(3, 6), "2026-11-24"), other)
    restarted = TableWriter(tmp_path, "t", split)
    assert restarted.high_water("events.raw", 1) == pack(2, 0)
    assert not (orphan_dir / file_name("events.raw", 1, pack(3, 0), pack(5, 0))).exists()
    assert not list(orphan_dir.glob(".*.tmp"))
    assert other.exists()
    restarted.add("events.raw", 1, rows(range(3, 6), "2026-11-24"))
    restarted.flush("events.raw", 1)
    assert stored(tmp_path / "t").count(4) == 2  # once from partition 1, once from partition 2


def test_a_failed_write_leaves_nothing_visible_and_keeps_rows(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    w = TableWriter(tmp_path, "t", split)
    w.add("events.raw", 0, pa.concat_tables([rows(range(0, 3)), rows(range(3, 5), "2026-11-24")]))

    calls = {"n": 0}
    real = pq.write_table

    def failing(table: pa.Table, where: Path, **kw: object) -> None:
        calls["n"] += 1
        if calls["n"] == 2:
            raise OSError("disk full")
        real(table, where, **kw)

    monkeypatch.setattr(pq, "write_table", failing)
    with pytest.raises(OSError, match="disk full"):
        w.flush("events.raw", 0)
    assert stored(tmp_path / "t") == []  # the first file stayed a hidden temp file
    monkeypatch.setattr(pq, "write_table", real)
    w2 = TableWriter(tmp_path, "t", split)
    w2.add("events.raw", 0, pa.concat_tables([rows(range(0, 3)), rows(range(3, 5), "2026-11-24")]))
    w2.flush("events.raw", 0)
    assert stored(tmp_path / "t") == list(range(0, 5))


def test_due_by_age_and_size(tmp_path: Path) -> None:
    w = TableWriter(tmp_path, "t", split)
    w.add("events.raw", 0, rows(range(0, 3)), token=1)
    assert w.due(max_age=3600, max_rows=3) == [("events.raw", 0)]
    assert w.due(max_age=3600, max_rows=4) == []
    assert w.due(max_age=0, max_rows=100) == [("events.raw", 0)]


def test_one_producer_message_split_over_flushes(tmp_path: Path) -> None:
    """A big batch's events can arrive in several internal messages and flushes."""
    w = TableWriter(tmp_path, "t", split)
    first = pa.Table.from_pylist(
        [{"source_offset": 9, "source_index": i, "day": "d", "v": i} for i in range(3)]
    )
    rest = pa.Table.from_pylist(
        [{"source_offset": 9, "source_index": i, "day": "d", "v": i} for i in range(3, 7)]
    )
    w.add("events.raw", 0, first)
    w.flush("events.raw", 0)
    assert w.add("events.raw", 0, rest) == 4
    w.flush("events.raw", 0)
    restarted = TableWriter(tmp_path, "t", split)
    assert restarted.add("events.raw", 0, pa.concat_tables([first, rest])) == 0
    values = sorted(
        v
        for f in (tmp_path / "t").rglob("*.parquet")
        for v in pq.read_table(f).column("v").to_pylist()
    )
    assert values == list(range(7))


def test_rows_delivered_twice_in_one_batch_are_stored_once(tmp_path: Path) -> None:
    """Faust can deliver a message again within one take after a rebalance."""
    w = TableWriter(tmp_path, "t", split)
    twice = pa.concat_tables([rows(range(0, 4)), rows(range(2, 6))])
    assert w.add("events.raw", 0, twice) == 6
    w.flush("events.raw", 0)
    assert stored(tmp_path / "t") == list(range(0, 6))
