"""One writer per lake partition, and flushes that are on disk before they count."""

from __future__ import annotations

import os
import threading
from pathlib import Path
from typing import Any

import pyarrow as pa
import pytest

from pipeline.lake import durable
from pipeline.lake.writer import Fenced, TableWriter
from tests.unit.lake.test_writer import rows, split, stored

T = "events.raw"


def test_a_zombie_cannot_flush_after_another_writer_took_over(tmp_path: Path) -> None:
    zombie = TableWriter(tmp_path, "t", split)
    zombie.add(T, 1, rows(range(0, 5)), token="z1")
    zombie.flush(T, 1)
    zombie.add(T, 1, rows(range(5, 10)), token="z2")  # buffered, then the worker pauses
    owner = TableWriter(tmp_path, "t", split)  # the partition moved here
    owner.add(T, 1, rows(range(5, 12)), token="o1")
    with pytest.raises(Fenced):
        zombie.flush(T, 1)
    assert not zombie.claimed(T, 1)  # its buffer and claim are dropped
    owner.flush(T, 1)
    assert stored(tmp_path / "t") == list(range(0, 12))


def test_a_zombie_cannot_delete_the_new_owners_files(tmp_path: Path) -> None:
    zombie = TableWriter(tmp_path, "t", split)
    zombie.add(T, 0, rows(range(0, 3)))
    owner = TableWriter(tmp_path, "t", split)
    owner.add(T, 0, rows(range(0, 6)))
    owner.flush(T, 0)
    with pytest.raises(Fenced):
        zombie.flush(T, 0)
    assert stored(tmp_path / "t") == list(range(0, 6))


def test_a_claim_waits_for_the_previous_owners_flush_and_reads_its_checkpoint(
    tmp_path: Path,
) -> None:
    entered, release = threading.Event(), threading.Event()

    def slow_split(table: pa.Table) -> Any:
        entered.set()
        assert release.wait(10)
        return split(table)

    old = TableWriter(tmp_path, "t", slow_split)
    old.add(T, 2, rows(range(0, 4)))
    flushing = threading.Thread(target=old.flush, args=(T, 2))
    flushing.start()
    assert entered.wait(10)
    new = TableWriter(tmp_path, "t", split)
    claimed: list[int] = []
    claiming = threading.Thread(target=lambda: claimed.append(new.claim(T, 2)))
    claiming.start()
    claiming.join(0.3)
    assert claiming.is_alive(), "the claim must wait for the flush in progress"
    release.set()
    flushing.join(10)
    claiming.join(10)
    assert claimed, "the claim did not finish"
    assert claimed[0] >= 0  # it saw the old owner's checkpoint, so replays are skipped
    assert new.add(T, 2, rows(range(0, 6))) == 2
    new.flush(T, 2)
    assert stored(tmp_path / "t") == list(range(0, 6))


def test_a_writer_that_got_the_partition_back_claims_it_again(tmp_path: Path) -> None:
    a, b = TableWriter(tmp_path, "t", split), TableWriter(tmp_path, "t", split)
    a.add(T, 0, rows(range(0, 2)))
    a.flush(T, 0)
    a.forget(T, 0)  # revoked
    b.add(T, 0, rows(range(0, 4)))
    b.flush(T, 0)
    b.forget(T, 0)  # revoked, back to a
    assert a.add(T, 0, rows(range(0, 6))) == 2
    a.flush(T, 0)
    assert stored(tmp_path / "t") == list(range(0, 6))


def test_partitions_and_tables_are_fenced_separately(tmp_path: Path) -> None:
    a = TableWriter(tmp_path, "t", split)
    a.add(T, 0, rows(range(0, 2)))
    a.add(T, 1, rows(range(0, 2)))
    TableWriter(tmp_path, "t", split).claim(T, 1)  # only partition 1 moves
    TableWriter(tmp_path, "u", split).claim(T, 0)  # another table: no effect on "t"
    a.flush(T, 0)
    with pytest.raises(Fenced):
        a.flush(T, 1)


def test_a_flush_syncs_files_renames_and_the_checkpoint(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    synced: list[str] = []
    real = os.fsync

    def spy(fd: int) -> None:
        synced.append(os.readlink(f"/proc/self/fd/{fd}"))
        real(fd)

    monkeypatch.setattr(durable.os, "fsync", spy)
    w = TableWriter(tmp_path, "t", split)
    w.add(T, 3, rows(range(0, 4), day="2026-11-23"))
    w.add(T, 3, rows(range(4, 6), day="2026-11-24"))
    synced.clear()  # the claim's own writes
    w.flush(T, 3)
    names = [Path(p) for p in synced]
    assert sum(p.name.endswith(".parquet.tmp") for p in names) == 2  # each file's bytes
    assert tmp_path / "t" / "day=2026-11-23" in names  # each renamed-into directory
    assert tmp_path / "t" / "day=2026-11-24" in names
    assert any(p.name.endswith(".json.tmp") for p in names)  # the checkpoint's bytes
    assert tmp_path / "_checkpoints" / "t" in names  # and its rename
