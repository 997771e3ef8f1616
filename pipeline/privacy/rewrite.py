"""Remove rows from one lake file, crash-safely and under the partition's fence.

A file the lake writer named (``<topic>-p<N>-<first>-<last>.parquet``) is rewritten with
the lake's own primitive, ``pipeline.lake.rewrite.replace_files``, which reads and filters
it under the partition's lock after any earlier rewrite: under its name (the
positions it names stay valid, so a replay still skips them), holding the partition's
fence lock (the live writer's flushes wait, its epoch is untouched), staged, journaled and
renamed, so a kill leaves the old file or the new one and the views never show both. A
file left without rows is removed the same way.

Other files (a table rebuilt whole, like ``person_tags``) are replaced by a synced
temporary file renamed over them (or unlinked when empty): old or new, never half.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from pipeline.lake.durable import atomic_write_table, fsync_dir
from pipeline.lake.fence import Fence
from pipeline.lake.rewrite import Stale, replace_files, source_of

Mask = Callable[[pa.Table], pa.Array]  # rows -> True for the rows to remove
# Called with (rows before, rows after) once the change is decided and before it is
# made durable: the deletion's journal (crash between the two: the next run sees it).
Intent = Callable[[int, int], None]


def fence_for(lake_dir: Path, table: str) -> Fence:
    return Fence(lake_dir / "_checkpoints" / table, table)


class _Unchanged(Exception):
    """Raised from inside the rewrite when the file holds no matching row: nothing staged."""


def remove_rows(
    lake_dir: Path, table: str, path: Path, mask: Mask, intent: Intent | None = None
) -> int:
    """Remove the rows ``mask`` selects from ``path``; returns how many were removed."""
    try:
        source_of(path)
    except ValueError:
        return _replace_plain(path, mask, intent)
    removed = 0

    def new() -> list[tuple[Path, pa.Table]]:
        # Called by replace_files under the partition's lock, after any earlier rewrite:
        # the rows read here are the current ones (a compaction cannot bring them back).
        nonlocal removed
        decided = _decide(path, mask)
        if decided is None:
            raise _Unchanged
        rows, kept, removed = decided
        if intent is not None:
            intent(rows, kept.num_rows)
        return [(path, kept)] if kept.num_rows else []

    try:
        replace_files(lake_dir, [path], new)
    except (_Unchanged, Stale):
        return 0  # nothing of theirs, or gone meanwhile (the next round looks again)
    return removed


def _decide(path: Path, mask: Mask) -> tuple[int, pa.Table, int] | None:
    try:
        rows = pq.ParquetFile(path).read()
    except FileNotFoundError:
        return None  # gone meanwhile (compacted, retention, an earlier run)
    drop = mask(rows)
    removed = int(pc.sum(drop).as_py() or 0)
    if not removed:
        return None
    return rows.num_rows, rows.filter(pc.invert(drop)), removed


def _replace_plain(path: Path, mask: Mask, intent: Intent | None) -> int:
    decided = _decide(path, mask)
    if decided is None:
        return 0
    rows, kept, removed = decided
    if intent is not None:
        intent(rows, kept.num_rows)
    if kept.num_rows == 0:
        path.unlink(missing_ok=True)
        fsync_dir(path.parent)
    else:
        atomic_write_table(path, kept)
    return removed
