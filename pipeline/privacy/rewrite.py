"""Remove rows from one lake file, crash-safely and under the partition's fence.

The file keeps its name: a lake file is named by the source positions it holds and the
writer's checkpoint says which names are committed, so a file with fewer rows under the
same name keeps every exactly-once rule true (a replay still skips those positions). The
new content is written to a hidden temporary file, synced, and renamed over the old one
(a file left with no rows is unlinked); the directory is synced. A kill at any moment
leaves the old file or the new one, never a half; a leftover temporary file is ignored
by readers and removed by the writer's next claim or by the next rewrite.

Files a ``TableWriter`` named (``<topic>-p<N>-<first>-<last>.parquet``) are rewritten
holding that partition's fence lock, so a live writer never flushes the partition
meanwhile. Kept behind this one function so the lake's own rewrite primitive can replace
it.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from pipeline.lake.durable import fsync_dir, fsync_file
from pipeline.lake.fence import Fence
from pipeline.lake.writer import parse_file_name

Mask = Callable[[pa.Table], pa.Array]  # rows -> True for the rows to remove
# Called with (rows before, rows after) once the change is decided and before it is
# made durable: the deletion's journal (crash between the two: the next run sees it).
Intent = Callable[[int, int], None]


def fence_for(lake_dir: Path, table: str) -> Fence:
    return Fence(lake_dir / "_checkpoints" / table, table)


def remove_rows(
    lake_dir: Path, table: str, path: Path, mask: Mask, intent: Intent | None = None
) -> int:
    """Remove the rows ``mask`` selects from ``path``; returns how many were removed."""
    parsed = parse_file_name(path.name)
    if parsed is None:
        return _rewrite(path, mask, intent)
    with fence_for(lake_dir, table).exclusive((parsed[0], parsed[1])):
        return _rewrite(path, mask, intent)


def _rewrite(path: Path, mask: Mask, intent: Intent | None) -> int:
    try:
        source = pq.ParquetFile(path)
        rows = source.read()
    except FileNotFoundError:
        return 0  # gone meanwhile (compacted, or emptied by an earlier run)
    drop = mask(rows)
    removed = int(pc.sum(drop).as_py() or 0)
    if not removed:
        return 0
    kept = rows.filter(pc.invert(drop))
    if intent is not None:
        intent(rows.num_rows, kept.num_rows)
    directory = path.parent
    if kept.num_rows == 0:
        path.unlink(missing_ok=True)
    else:
        tmp = directory / f".{path.name}.tmp"
        compression = _compression(source)
        pq.write_table(kept, tmp, compression=compression)
        fsync_file(tmp)
        os.replace(tmp, path)
    fsync_dir(directory)
    return removed


def _compression(source: pq.ParquetFile) -> str:
    meta = source.metadata
    if meta.num_row_groups and meta.num_columns:
        return str(meta.row_group(0).column(0).compression).lower()
    return "zstd"
