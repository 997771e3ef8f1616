"""Crash-safe replacement of lake files: ``replace_files`` swaps old Parquet files of one
(table, source topic-partition) for new content, for compaction and privacy deletion.

A rewrite is a journal plus renames, all under the lake writer's lock of that source
partition (``Fence.exclusive``: it waits for a flush or claim in progress, and the live
writer waits for it; the writer's epoch is left alone, so it is not fenced out):

1. ``stage``: each new table is written to a hidden ``.<name>.rewrite`` next to its final
   name and fsynced (the writer's clean-up of ``.tmp`` files and views ignore it);
2. ``journal``: ``<lake>/_rewrites/<table>/<topic>-p<partition>.<id>.json`` lists old and
   new files with state ``staged``, written atomically and fsynced: the commit point;
3. ``rename``: every staged file is renamed to its final name, directories fsynced;
4. ``renamed``: the journal is rewritten with state ``renamed`` (one atomic replace: the
   moment readers switch from the old files to the new ones);
5. ``unlink``: old files that are not also new names are deleted, then the journal. With
   ``keep_old_seconds`` (compaction) this waits that long, so a query that listed the old
   files just before step 4 can still read them; ``recover`` deletes them later.

A SIGKILL before 2 leaves the old files (the staged leftovers are removed by the next
rewrite of the partition or ``recover``); after 2, the next rewrite of that partition, or
``recover``, rolls the journal forward to the new files. While a journal exists the views
read it with the files (``views._source``; ``hidden_files`` here): in state ``staged`` they
ignore new files already renamed, in state ``renamed`` the old ones, so a query sees the
old rows or the new rows, never both and never neither, when it reads the journal and the
file list at one moment (DuckDB lists files when it plans and reads the journal when it
runs: a query straddling the switch can miss or double the partition's rows, or fail on
a deleted file; docs/lake-lifecycle.md, Limits). A new file with an old file's name is
replaced in one rename.

Exactly-once positions (``writer.py``): every file must be named
``<topic>-p<partition>-<first>-<last>.parquet`` for the same source partition, and a new
file may not end above the partition's checkpoint; otherwise the writer's next claim would
delete it as an uncommitted flush, or a replay would store its rows again.

Test hook: ``TRACKFLOW_TEST_PAUSE_AT=<step>[:<n>]`` makes the process print
``trackflow: paused at <step>`` on stderr and sleep at the n-th (default first) passage
of a step (``stage``, ``journal``, ``rename``, ``renamed``, ``unlink``, ``done``; lake
maintenance adds ``dropped`` and ``compacted``), so a test can SIGKILL it there.
"""

from __future__ import annotations

import contextlib
import os
import re
import sys
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeAlias

import orjson
import pyarrow as pa
import pyarrow.parquet as pq

from pipeline.contract.positions import pack
from pipeline.lake.durable import atomic_write_bytes, fsync_dir, fsync_file
from pipeline.lake.fence import Fence
from pipeline.lake.journals import JOURNALS, NO_JOURNAL  # noqa: F401  (re-exported)
from pipeline.lake.journals import prepare as prepare_journals
from pipeline.lake.writer import _FILE

__all__ = [
    "JOURNALS",
    "Batches",
    "RewriteResult",
    "Stale",
    "hidden_files",
    "live_files",
    "pause_point",
    "recover",
    "recover_source",
    "replace_files",
    "source_of",
    "span_of",
]

_CHECKPOINTS = "_checkpoints"
_STAGED = ".rewrite"
STAGED, RENAMED = "staged", "renamed"


class Stale(RuntimeError):
    """An old file is gone (a concurrent rewrite, retention, or the writer's clean-up):
    nothing was changed; list the files again and retry."""


@dataclass
class Batches:
    """Rows of one new file given piece by piece (compaction of many files), so the rewrite
    never holds them all: every table must have ``schema``."""

    schema: pa.Schema
    tables: Iterable[pa.Table]


Content: TypeAlias = pa.Table | Batches
NewFiles: TypeAlias = Sequence[tuple[Path, Content]]
ROW_GROUP_ROWS = 256 * 1024  # rows gathered before a row group of a Batches file is written


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
    new: NewFiles | Callable[[], NewFiles],
    *,
    keep_old_seconds: float = 0.0,
) -> RewriteResult:
    """Atomically replace the files ``old`` with ``new`` (final path, rows), crash-safely.

    All paths must be writer-named files of one table directory tree under ``lake_dir`` and
    one source (topic, partition). ``new`` may be empty (the old files are deleted) and may
    reuse an old file's path (rewritten in place, e.g. without one person's rows); files
    without rows are not written. Rows are a ``pa.Table`` or ``Batches``.

    Pass ``new`` as a function (of no arguments) that reads the old files and returns the
    new ones: it is called under the lock, after the old files are checked, so a concurrent
    rewrite (another deletion, a compaction) cannot be undone by rows read before it.

    ``keep_old_seconds`` > 0 leaves the old files on disk that long, hidden from the views
    (queries already reading them finish); 0 deletes them before returning, and first
    deletes those of every earlier rewrite of the partition still kept (privacy: no copy of
    the rows may stay).

    Holds the writer's lock of that source partition for the whole rewrite; rolls forward
    an earlier crashed rewrite of it first. Raises ``Stale`` (nothing changed) when an old
    file no longer exists, ``ValueError`` on bad names or a new file past the partition's
    checkpoint.
    """
    lake_dir = Path(lake_dir)
    given = None if callable(new) else list(new)
    table, key = _target(lake_dir, [*old, *(p for p, _ in given or [])])
    fence = Fence(lake_dir / _CHECKPOINTS / table, table)
    with fence.exclusive(key):
        dirs = {Path(p).parent for p in [*old, *(p for p, _ in given or [])]}
        recover_source(lake_dir, table, key, force=keep_old_seconds <= 0, leftovers=dirs)
        for path in old:
            if not Path(path).exists():
                raise Stale(f"{path}: no longer in the lake; nothing was changed")
        if given is None:
            assert callable(new)
            given = list(new())
            if given and _target(lake_dir, [*old, *(p for p, _ in given)]) != (table, key):
                raise ValueError("new files must be of the old files' table and source")
        checkpoint = _checkpoint(lake_dir, table, key)
        for path, _ in given:
            if span_of(Path(path))[1] > checkpoint:
                raise ValueError(
                    f"{Path(path).name}: ends after the checkpoint of {key[0]} partition "
                    f"{key[1]}; the writer would delete it as an uncommitted flush"
                )
        return _rewrite(lake_dir, table, key, [Path(p) for p in old], given, keep_old_seconds)


def recover(lake_dir: Path, *, force: bool = False, orphans: bool = True) -> int:
    """Roll forward every journal left by a crashed rewrite, delete the old files whose
    keeping time is over (all of them with ``force``) and, with ``orphans`` (one walk of
    the lake), the staged files of rewrites that crashed before their journal; returns how
    many journals ended."""
    lake_dir = Path(lake_dir)
    todo: dict[tuple[str, tuple[str, int]], list[Path]] = {}
    for journal in _journals(lake_dir / JOURNALS, "*"):
        todo.setdefault((journal.parent.name, _journal_key(journal)), [])
    if orphans:
        for staged in lake_dir.glob(f"*/**/.*{_STAGED}"):
            table = staged.relative_to(lake_dir).parts[0]
            if not table.startswith("_"):
                with contextlib.suppress(ValueError):
                    key = source_of(staged.with_name(staged.name[1 : -len(_STAGED)]))
                    todo.setdefault((table, key), []).append(staged)
    done = 0
    for (table, key), leftovers in sorted(todo.items()):
        with Fence(lake_dir / _CHECKPOINTS / table, table).exclusive(key):
            done += recover_source(lake_dir, table, key, force=force, leftovers=False)
            for path in leftovers:  # every journal of the key is past staging now
                path.unlink(missing_ok=True)
    return done


def live_files(lake_dir: Path, table: str, roots: Iterable[Path] | None = None) -> list[Path]:
    """The table's Parquet files the views read (without the ones a rewrite replaces),
    under ``roots`` (directories of the table; default the whole table)."""
    hidden = hidden_files(lake_dir, table)
    dirs = [Path(lake_dir) / table] if roots is None else [d for d in roots if d.exists()]
    return sorted(
        p for d in dirs for p in d.rglob("*.parquet") if p not in hidden and p.name[0] != "."
    )


def hidden_files(lake_dir: Path, table: str) -> set[Path]:
    """Files a view must ignore while rewrites of ``table`` are in progress (see above)."""
    hidden: set[Path] = set()
    for journal in _journals(Path(lake_dir) / JOURNALS, table):
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


_JOURNAL = re.compile(r"^(?P<topic>.+)-p(?P<part>\d+)(\.(?P<id>[0-9a-f]+))?\.json$")


def _journals(root: Path, table: str, key: tuple[str, int] | None = None) -> list[Path]:
    """Journals of ``table`` (a glob), of one source partition if ``key``, oldest first."""
    out = []
    for path in root.glob(f"{table}/*.json"):
        m = _JOURNAL.match(path.name)
        if m and (key is None or (m["topic"], int(m["part"])) == key):
            out.append((m["id"] or "", path))
    return [p for _, p in sorted(out)]


def _new_journal(lake_dir: Path, table: str, key: tuple[str, int]) -> Path:
    directory = prepare_journals(lake_dir, table)
    return directory / f"{key[0]}-p{key[1]}.{time.time_ns():x}.json"


def _journal_key(journal: Path) -> tuple[str, int]:
    m = _JOURNAL.match(journal.name)
    assert m is not None
    return m["topic"], int(m["part"])


def _checkpoint(lake_dir: Path, table: str, key: tuple[str, int]) -> int:
    path = lake_dir / _CHECKPOINTS / table / f"{key[0]}-p{key[1]}.json"
    return int(orjson.loads(path.read_bytes())["position"]) if path.exists() else -1


def _staged(path: Path) -> Path:
    return path.with_name(f".{path.name}{_STAGED}")


def _rel(lake_dir: Path, path: Path) -> str:
    return path.resolve().relative_to(lake_dir.resolve()).as_posix()


def _write(path: Path, rows: Content) -> int:
    """Write ``rows`` to ``path``; returns the row count (0: nothing is left on disk)."""
    if isinstance(rows, pa.Table):
        if rows.num_rows:
            pq.write_table(rows, path, compression="zstd")
        return int(rows.num_rows)
    written = 0
    with pq.ParquetWriter(path, rows.schema, compression="zstd") as out:
        pending: list[pa.Table] = []
        held = 0
        for table in rows.tables:
            pending.append(table)
            held += table.num_rows
            if held >= ROW_GROUP_ROWS:
                out.write_table(pa.concat_tables(pending), row_group_size=held)
                written, pending, held = written + held, [], 0
        if held:
            out.write_table(pa.concat_tables(pending), row_group_size=held)
            written += held
    if not written:
        path.unlink()
    return written


def _rewrite(
    lake_dir: Path,
    table: str,
    key: tuple[str, int],
    old: list[Path],
    given: NewFiles,
    keep_old_seconds: float,
) -> RewriteResult:
    result = RewriteResult()
    new: list[Path] = []
    for path, rows in given:
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        staged = _staged(path)
        count = _write(staged, rows)
        if not count:
            continue
        fsync_file(staged)
        new.append(path)
        result.files_written += 1
        result.rows_written += count
        result.bytes_written += staged.stat().st_size
        pause_point("stage")
    for directory in {p.parent for p in new}:
        fsync_dir(directory)
    entry = {
        "table": table,
        "topic": key[0],
        "partition": key[1],
        "state": STAGED,
        "keep_old_seconds": keep_old_seconds,
        "old": [_rel(lake_dir, p) for p in old],
        "new": [_rel(lake_dir, p) for p in new],
    }
    journal = _new_journal(lake_dir, table, key)
    atomic_write_bytes(journal, orjson.dumps(entry))
    pause_point("journal")
    result.files_removed = _roll_forward(lake_dir, journal, entry, force=False)
    return result


def _roll_forward(lake_dir: Path, journal: Path, entry: dict[str, Any], force: bool) -> int:
    """Take a journaled rewrite as far as it may go now; idempotent. Returns the number of
    old files deleted (0 while they are kept)."""
    old = [lake_dir / str(p) for p in entry["old"]]
    new = [lake_dir / str(p) for p in entry["new"]]
    if entry["state"] == STAGED:
        for path in new:
            staged = _staged(path)
            if staged.exists():
                os.replace(staged, path)
                pause_point("rename")
            elif not path.exists():
                raise RuntimeError(f"{journal}: {path} is neither staged nor in place")
        for directory in {p.parent for p in new}:
            fsync_dir(directory)
        keep = float(entry.get("keep_old_seconds") or 0)
        entry = {**entry, "state": RENAMED, "delete_after": time.time() + keep}
        atomic_write_bytes(journal, orjson.dumps(entry))
        pause_point("renamed")
    if not force and time.time() < float(entry.get("delete_after") or 0):
        return 0  # kept for queries that listed them before the switch
    removed = 0
    keep_names = set(new)
    for path in old:
        if path not in keep_names and path.exists():
            path.unlink()
            removed += 1
            pause_point("unlink")
    for directory in {p.parent for p in old}:
        if directory.exists():
            fsync_dir(directory)
    pause_point("done")
    journal.unlink()
    fsync_dir(journal.parent)
    return removed


def recover_source(
    lake_dir: Path,
    table: str,
    key: tuple[str, int],
    *,
    force: bool = True,
    leftovers: bool | Iterable[Path] = True,
) -> int:
    """Under the source partition's lock: take every journaled rewrite of it forward
    (``force``: delete kept old files now too), and drop the staged leftovers of rewrites
    of it that crashed before their journal, in the whole table (``True``) or in the given
    directories. Returns how many journals ended."""
    done = 0
    for journal in _journals(lake_dir / JOURNALS, table, key):
        entry = orjson.loads(journal.read_bytes())
        _roll_forward(lake_dir, journal, entry, force=force)
        done += not journal.exists()
    pattern = f".{key[0]}-p{key[1]}-*{_STAGED}"
    root = lake_dir / table
    found: Iterable[Path] = ()
    if leftovers is True and root.exists():
        found = root.rglob(pattern)
    elif leftovers is not True and leftovers is not False:
        found = (p for d in set(leftovers) if d.exists() for p in d.glob(pattern))
    for leftover in list(found):
        leftover.unlink(missing_ok=True)  # every journal of the key is past staging
    return done


def pause_point(step: str) -> None:
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
