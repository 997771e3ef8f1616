"""Crash-safe replacement of lake files: ``replace_files`` swaps old Parquet files of one
(table, source topic-partition) for new content, for compaction and privacy deletion.

A rewrite is a journal plus renames, all under the lake writer's lock of that source
partition (``Fence.exclusive``: it waits for a flush or claim in progress, and the live
writer waits for it; the writer's epoch is left alone, so it is not fenced out):

1. ``stage``: each new table is written to a hidden ``.<name>.rewrite`` next to its final
   name and fsynced (the writer's clean-up of ``.tmp`` files and views ignore it);
2. ``journal``: ``<lake>/_rewrites/<table>/<topic>-p<partition>.json`` lists old, new and
   staged files with state ``staged``, written atomically and fsynced: the commit point;
3. ``rename``: every staged file is renamed to its final name, directories fsynced;
4. the journal is rewritten with state ``renamed``;
5. ``unlink``: old files that are not also new names are deleted, directories fsynced;
6. the journal is deleted.

A SIGKILL before 2 leaves the old files (the staged leftovers are removed by the next
rewrite or ``recover``); after 2, the next rewrite of that partition, or ``recover``, rolls
the journal forward to the new files. While a journal exists the views read it
(``hidden_files``): in state ``staged`` they ignore new files already renamed, in state
``renamed`` they ignore the old ones, so a query sees the old rows or the new rows, never
both and never neither. A new file with an old file's name is replaced in one rename.

Exactly-once positions (``writer.py``): every file must be named
``<topic>-p<partition>-<first>-<last>.parquet`` for the same source partition, and a new
file may not end above the partition's checkpoint; otherwise the writer's next claim would
delete it as an uncommitted flush, or a replay would store its rows again.

Test hook: ``TRACKFLOW_TEST_PAUSE_AT=<step>[:<n>]`` makes the process print
``trackflow: paused at <step>`` on stderr and sleep at the n-th (default first) passage
of a step (``stage``, ``journal``, ``rename``, ``renamed``, ``unlink``, ``done``), so a
test can SIGKILL it there.
"""

from __future__ import annotations

import os
import sys
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

import orjson
import pyarrow as pa
import pyarrow.parquet as pq

from pipeline.contract.positions import pack
from pipeline.lake.durable import atomic_write_bytes, fsync_dir, fsync_file
from pipeline.lake.fence import Fence
from pipeline.lake.writer import _FILE

__all__ = [
    "JOURNALS",
    "RewriteResult",
    "Stale",
    "hidden_files",
    "recover",
    "replace_files",
    "source_of",
    "span_of",
]

JOURNALS = "_rewrites"
_CHECKPOINTS = "_checkpoints"
_STAGED = ".rewrite"
STAGED, RENAMED = "staged", "renamed"


class Stale(RuntimeError):
    """An old file is gone (a concurrent rewrite, retention, or the writer's clean-up):
    nothing was changed; list the files again and retry."""


@dataclass
class RewriteResult:
    files_removed: int = 0
    files_written: int = 0
    rows_written: int = 0
    bytes_written: int = 0


def source_of(path: Path) -> tuple[str, int]:
    """(source topic, partition) of a writer-named file; ``ValueError`` for other names."""
    m = _FILE.match(path.name)
    if m is None:
        raise ValueError(f"{path.name}: not a lake writer file (<topic>-p<n>-<from>-<to>.parquet)")
    return m["topic"], int(m["part"])


def span_of(path: Path) -> tuple[int, int]:
    """(first, last) packed source positions a writer-named file holds."""
    m = _FILE.match(path.name)
    if m is None:
        raise ValueError(f"{path.name}: not a lake writer file")
    return pack(int(m.group(3)), int(m.group(4))), pack(int(m.group(5)), int(m.group(6)))


def replace_files(
    lake_dir: Path,
    old: Sequence[Path],
    new: Sequence[tuple[Path, pa.Table]],
) -> RewriteResult:
    """Atomically replace the files ``old`` with ``new`` (final path, rows), crash-safely.

    All paths must be writer-named files of one table directory tree under ``lake_dir`` and
    one source (topic, partition). ``new`` may be empty (the old files are deleted) and may
    reuse an old file's path (rewritten in place, e.g. without one person's rows); tables
    without rows are not written. Holds the writer's lock of that source partition for the
    whole rewrite; rolls forward an earlier crashed rewrite of it first. Raises ``Stale``
    (nothing changed) when an old file no longer exists, ``ValueError`` on bad names or
    a new file past the partition's checkpoint.
    """
    lake_dir = Path(lake_dir)
    table, key = _target(lake_dir, [*old, *(p for p, _ in new)])
    new = [(Path(p), t) for p, t in new if t.num_rows]
    fence = Fence(lake_dir / _CHECKPOINTS / table, table)
    with fence.exclusive(key):
        _recover_key(lake_dir, table, key)
        for path in old:
            if not Path(path).exists():
                raise Stale(f"{path}: no longer in the lake; nothing was changed")
        checkpoint = _checkpoint(lake_dir, table, key)
        for path, _ in new:
            if span_of(path)[1] > checkpoint:
                raise ValueError(
                    f"{path.name}: ends after the checkpoint of {key[0]} partition {key[1]}; "
                    "the writer would delete it as an uncommitted flush"
                )
        return _rewrite(lake_dir, table, key, [Path(p) for p in old], new)


def recover(lake_dir: Path) -> int:
    """Roll forward every journal left by a crashed rewrite; returns how many."""
    lake_dir = Path(lake_dir)
    done = 0
    for journal in sorted((lake_dir / JOURNALS).glob("*/*.json")):
        table = journal.parent.name
        key = _journal_key(journal)
        with Fence(lake_dir / _CHECKPOINTS / table, table).exclusive(key):
            done += _recover_key(lake_dir, table, key)
    return done


def hidden_files(lake_dir: Path, table: str) -> set[Path]:
    """Files a view must ignore while a rewrite of ``table`` is in progress (see above)."""
    hidden: set[Path] = set()
    for journal in (Path(lake_dir) / JOURNALS / table).glob("*.json"):
        try:
            entry = orjson.loads(journal.read_bytes())
        except (OSError, orjson.JSONDecodeError):
            continue  # removed meanwhile; an atomic write is never half-read
        old = {lake_dir / p for p in entry["old"]}
        new = {lake_dir / p for p in entry["new"]}
        hidden |= (old - new) if entry["state"] == RENAMED else (new - old)
    return hidden


# -- internals ---------------------------------------------------------------------------


def _target(lake_dir: Path, paths: Iterable[Path]) -> tuple[str, tuple[str, int]]:
    tables, keys = set(), set()
    for path in paths:
        rel = Path(path).resolve().relative_to(lake_dir.resolve())
        if len(rel.parts) < 2 or rel.parts[0].startswith("_"):
            raise ValueError(f"{path}: not a file of a lake table under {lake_dir}")
        tables.add(rel.parts[0])
        keys.add(source_of(Path(path)))
    if len(tables) != 1 or len(keys) != 1:
        raise ValueError(
            "a rewrite replaces files of one table and one source partition; "
            f"got tables {sorted(tables)} and sources {sorted(keys)}"
        )
    return tables.pop(), keys.pop()


def _journal_path(lake_dir: Path, table: str, key: tuple[str, int]) -> Path:
    return lake_dir / JOURNALS / table / f"{key[0]}-p{key[1]}.json"


def _journal_key(journal: Path) -> tuple[str, int]:
    topic, _, part = journal.stem.rpartition("-p")
    return topic, int(part)


def _checkpoint(lake_dir: Path, table: str, key: tuple[str, int]) -> int:
    path = lake_dir / _CHECKPOINTS / table / f"{key[0]}-p{key[1]}.json"
    return int(orjson.loads(path.read_bytes())["position"]) if path.exists() else -1


def _staged(path: Path) -> Path:
    return path.with_name(f".{path.name}{_STAGED}")


def _rel(lake_dir: Path, path: Path) -> str:
    return path.resolve().relative_to(lake_dir.resolve()).as_posix()


def _rewrite(
    lake_dir: Path,
    table: str,
    key: tuple[str, int],
    old: list[Path],
    new: list[tuple[Path, pa.Table]],
) -> RewriteResult:
    result = RewriteResult()
    for path, rows in new:
        path.parent.mkdir(parents=True, exist_ok=True)
        staged = _staged(path)
        pq.write_table(rows, staged, compression="zstd")
        fsync_file(staged)
        result.files_written += 1
        result.rows_written += rows.num_rows
        result.bytes_written += staged.stat().st_size
        _pause("stage")
    for directory in {p.parent for p, _ in new}:
        fsync_dir(directory)
    entry = {
        "table": table,
        "topic": key[0],
        "partition": key[1],
        "state": STAGED,
        "old": [_rel(lake_dir, p) for p in old],
        "new": [_rel(lake_dir, p) for p, _ in new],
    }
    journal = _journal_path(lake_dir, table, key)
    journal.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_bytes(journal, orjson.dumps(entry))
    _pause("journal")
    result.files_removed = _roll_forward(lake_dir, journal, entry)
    return result


def _roll_forward(lake_dir: Path, journal: Path, entry: dict[str, object]) -> int:
    """Finish a journaled rewrite from whatever step it reached; idempotent."""
    old = [lake_dir / str(p) for p in entry["old"]]  # type: ignore[attr-defined]
    new = [lake_dir / str(p) for p in entry["new"]]  # type: ignore[attr-defined]
    if entry["state"] == STAGED:
        for path in new:
            staged = _staged(path)
            if staged.exists():
                os.replace(staged, path)
                _pause("rename")
            elif not path.exists():
                raise RuntimeError(f"{journal}: {path} is neither staged nor in place")
        for directory in {p.parent for p in new}:
            fsync_dir(directory)
        entry = {**entry, "state": RENAMED}
        atomic_write_bytes(journal, orjson.dumps(entry))
        _pause("renamed")
    removed = 0
    keep = set(new)
    for path in old:
        if path not in keep and path.exists():
            path.unlink()
            removed += 1
            _pause("unlink")
    for directory in {p.parent for p in old}:
        if directory.exists():
            fsync_dir(directory)
    _pause("done")
    journal.unlink()
    fsync_dir(journal.parent)
    return removed


def _recover_key(lake_dir: Path, table: str, key: tuple[str, int]) -> int:
    """Under the lock: finish a journaled rewrite, or drop the leftovers of one that
    crashed before its journal."""
    journal = _journal_path(lake_dir, table, key)
    if journal.exists():
        _roll_forward(lake_dir, journal, orjson.loads(journal.read_bytes()))
        return 1
    root = lake_dir / table
    if root.exists():
        for leftover in root.rglob(f".{key[0]}-p{key[1]}-*{_STAGED}"):
            leftover.unlink(missing_ok=True)
    return 0


def _pause(step: str) -> None:
    """The test hook of the module docstring; does nothing unless the variable is set."""
    wanted = os.environ.get("TRACKFLOW_TEST_PAUSE_AT")
    if not wanted:
        return
    name, _, nth = wanted.partition(":")
    if name != step:
        return
    _passes[step] = _passes.get(step, 0) + 1
    if _passes[step] == int(nth or 1):
        sys.stderr.write(f"trackflow: paused at {step}\n")
        sys.stderr.flush()
        while True:
            time.sleep(3600)


_passes: dict[str, int] = {}
