"""Compaction: many small files of one partition directory merged into files of a target size.

The sink flushes every few seconds, so a busy lake gets thousands of small files an hour
(71,211 in the one-hour soak, about 9 KB each), and every query opens all of them.

What may be merged is fixed by the writer's exactly-once rules (``writer.py``): files of
one directory *and* one source (topic, partition), consecutive in position order, each
entirely at or below that partition's checkpoint (a file above it is an uncommitted flush
that the writer's next claim deletes). The merged file is named by the first position of
its first file and the last of its last, so it is at or below the checkpoint too: the
writer keeps it, and a replay skips every row in it. The swap itself is
``rewrite.replace_files`` (crash-safe, under the writer's lock).

The target size is in rows, not bytes, so that compaction is idempotent: rows add up
exactly, while a merged file compresses better than its parts, so a byte target would let
a second run merge yesterday's results again. A file of fewer than half the target rows is
small; a group is a run of consecutive small files whose rows fit the target. A group's
result therefore never has a small neighbour it could have joined: the second run finds
nothing to do.

The small files are deleted as soon as the merged file is in place (not kept for readers,
``replace_files(keep_old_seconds=...)``): the lake is also read by other tools, straight
from the Parquet files, and they would count rows twice while both exist. A query that
listed a small file just before may fail on it ("Cannot open file"); rerunning it works.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import orjson
import pyarrow as pa
import pyarrow.parquet as pq

from pipeline.lake.rewrite import (
    Batches,
    RewriteResult,
    hidden_files,
    replace_files,
    source_of,
    span_of,
)
from pipeline.lake.writer import file_name


@dataclass(frozen=True)
class LakeFile:
    path: Path
    first: int
    last: int
    rows: int


@dataclass(frozen=True)
class Group:
    """Files to merge into one: same table, directory and source partition."""

    table: str
    topic: str
    partition: int
    files: tuple[LakeFile, ...]

    @property
    def target(self) -> Path:
        first, last = self.files[0], self.files[-1]
        name = file_name(self.topic, self.partition, first.first, last.last)
        return first.path.with_name(name)

    @property
    def rows(self) -> int:
        return sum(f.rows for f in self.files)


def plan(lake_dir: Path, table: str, target_rows: int) -> list[Group]:
    """The groups of ``table`` worth merging (two files or more), in a stable order."""
    checkpoints: dict[tuple[str, int], int] = {}
    groups: list[Group] = []
    hidden = hidden_files(lake_dir, table)  # replaced by a rewrite: not the table's any more
    by_source = _by_directory_and_source(lake_dir / table, hidden)
    for (_, key), paths in sorted(by_source.items()):
        if key not in checkpoints:
            checkpoints[key] = _checkpoint(lake_dir, table, key)
        committed = [p for p in paths if span_of(p)[1] <= checkpoints[key]]
        files = sorted((_describe(p) for p in committed), key=lambda f: f.first)
        for run in _groups(files, target_rows):
            groups.append(Group(table, key[0], key[1], tuple(run)))
    return groups


def _groups(files: list[LakeFile], target_rows: int) -> Iterator[list[LakeFile]]:
    small = target_rows // 2
    run: list[LakeFile] = []
    rows = 0
    for f in files:
        if f.rows >= small or rows + f.rows > target_rows:
            if len(run) > 1:
                yield run
            run, rows = [], 0
        if f.rows < small:
            run.append(f)
            rows += f.rows
    if len(run) > 1:
        yield run


def compact(lake_dir: Path, group: Group) -> RewriteResult:
    """Merge one group into its target file; ``rewrite.Stale`` if a file went meanwhile."""
    paths = [f.path for f in group.files]

    def merged() -> list[tuple[Path, Batches]]:
        # Called under the writer's lock: the rows are read after any rewrite before us.
        schemas = [pq.read_schema(p) for p in paths]
        schema = pa.unify_schemas(schemas, promote_options="permissive").remove_metadata()
        tables = (_aligned(pq.ParquetFile(p).read(), schema) for p in paths)
        return [(group.target, Batches(schema, tables))]

    return replace_files(lake_dir, paths, merged)


def _aligned(table: pa.Table, schema: pa.Schema) -> pa.Table:
    """``table`` with ``schema``'s columns in its order: missing ones null, types widened
    (the tracking plan may have added a property between two files)."""
    columns = [
        table[f.name].cast(f.type) if f.name in table.column_names else pa.nulls(len(table), f.type)
        for f in schema
    ]
    return pa.Table.from_arrays(columns, schema=schema)


def _by_directory_and_source(
    root: Path, hidden: set[Path]
) -> dict[tuple[str, tuple[str, int]], list[Path]]:
    out: dict[tuple[str, tuple[str, int]], list[Path]] = defaultdict(list)
    if not root.exists():
        return out
    for path in root.rglob("*.parquet"):
        if path in hidden or path.name.startswith("."):
            continue
        try:
            key = source_of(path)
        except ValueError:
            continue  # not a writer's file (e.g. the dlq replay ledger): left alone
        out[(str(path.parent), key)].append(path)
    return out


def _describe(path: Path) -> LakeFile:
    first, last = span_of(path)
    return LakeFile(path, first, last, pq.read_metadata(path).num_rows)


def _checkpoint(lake_dir: Path, table: str, key: tuple[str, int]) -> int:
    path = lake_dir / "_checkpoints" / table / f"{key[0]}-p{key[1]}.json"
    return int(orjson.loads(path.read_bytes())["position"]) if path.exists() else -1
