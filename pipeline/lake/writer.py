"""Crash-safe, idempotent Parquet writes to ``<data-dir>/lake/<table>/<hive partitions>/``.

Exactly-once without Kafka transactions (DESIGN section 12):

* every row carries the source position it came from: (topic, partition, offset, index),
  the index being the event's place in its producer message (a batch);
* a flush writes temporary files, renames them into place, then atomically replaces the
  partition's checkpoint ``_checkpoints/<table>/<topic>-p<partition>.json`` with the
  highest position written;
* a file is named ``<topic>-p<partition>-<first>-<last>.parquet`` by the positions it
  holds (``<offset>.<index>``), so a file whose first position is above the checkpoint was
  renamed by a flush that never committed: it is deleted before the partition is written
  again;
* rows at or below the checkpoint are skipped, so input replayed after a crash is not
  stored twice. Positions, not offsets: the events of one big producer batch may be split
  over several internal messages and so over several flushes;
* files, renames and checkpoints are fsynced before a flush counts (``durable.py``), and
  only the current owner of a partition may change it (``fence.py``).
"""

from __future__ import annotations

import os
import re
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from pipeline.contract.positions import INDEX_BITS, pack, unpack
from pipeline.lake.durable import atomic_write_bytes, fsync_dir, fsync_file
from pipeline.lake.fence import Fence, Fenced
from pipeline.lake.journals import prepare as prepare_journals

__all__ = ["Fenced", "TableWriter", "atomic_write_bytes", "file_name", "positions"]

# A flush's rows -> (hive directory relative to the table root, rows of that directory).
Splitter = Callable[[pa.Table], Iterable[tuple[str, pa.Table]]]

_POS = r"(\d{12})\.(\d{7})"
_FILE = re.compile(rf"^(?P<topic>.+)-p(?P<part>\d+)-{_POS}-{_POS}\.parquet$")


def positions(table: pa.Table) -> pa.Array:
    offsets = pc.cast(table["source_offset"], pa.int64())
    indexes = pc.cast(table["source_index"], pa.int64())
    return pc.bit_wise_or(pc.shift_left(offsets, INDEX_BITS), indexes)


def _pos_text(pos: int) -> str:
    offset, index = unpack(pos)
    return f"{offset:012d}.{index:07d}"


def file_name(topic: str, partition: int, first: int, last: int) -> str:
    """Name of a file holding positions ``first`` .. ``last`` (packed ints)."""
    return f"{topic}-p{partition}-{_pos_text(first)}-{_pos_text(last)}.parquet"


# Rows of a flush -> (rows to store, rows dropped): the privacy purge (pipeline/privacy/
# purge.py), run under the partition's lock so it is ordered with a deletion's rewrite.
Purge = Callable[[pa.Table], tuple[pa.Table, int]]


@dataclass
class FlushResult:
    files: int = 0
    bytes: int = 0
    rows: int = 0
    purged: int = 0  # rows of deleted persons dropped before writing


@dataclass
class _Buffer:
    tables: list[pa.Table] = field(default_factory=list)
    rows: int = 0
    tokens: list[Any] = field(default_factory=list)
    first: int | None = None
    last: int = -1
    since: float = 0.0


class TableWriter:
    """Buffers rows per source partition and flushes them as Parquet files."""

    def __init__(self, lake_dir: Path, table: str, splitter: Splitter) -> None:
        self.root = lake_dir / table
        self.table = table
        self.checkpoints = lake_dir / "_checkpoints" / table
        self.splitter = splitter
        self.fence = Fence(self.checkpoints, table)
        self.purge: Purge | None = None
        self._hw: dict[tuple[str, int], int] = {}
        self._buffers: dict[tuple[str, int], _Buffer] = {}
        self._journals_ready = False

    # -- recovery ----------------------------------------------------------------------

    def _checkpoint_path(self, topic: str, partition: int) -> Path:
        return self.checkpoints / f"{topic}-p{partition}.json"

    def high_water(self, topic: str, partition: int) -> int:
        """Highest source position stored; the first use claims the partition."""
        hw = self._hw.get((topic, partition))
        return self.claim(topic, partition) if hw is None else hw

    def claim(self, topic: str, partition: int) -> int:
        """Become the partition's writer (after an assignment): read its checkpoint and
        delete files a crashed flush renamed but never committed. May wait for a flush of
        the previous owner to finish."""
        key = (topic, partition)
        if not self._journals_ready:  # before the table's first file: see lake/journals.py
            prepare_journals(self.root.parent, self.table)
            self._journals_ready = True
        with self.fence.claim(key):
            path = self._checkpoint_path(topic, partition)
            hw = orjson.loads(path.read_bytes())["position"] if path.exists() else -1
            self._remove_uncommitted(topic, partition, hw)
        self._hw[key] = hw
        return hw

    def _remove_uncommitted(self, topic: str, partition: int, hw: int) -> None:
        if not self.root.exists():
            return
        prefix = f"{topic}-p{partition}-"
        for path in self.root.rglob(f"*{prefix}*"):
            name = path.name
            if name.startswith(".") and name.endswith(".tmp"):
                path.unlink(missing_ok=True)
                continue
            m = _FILE.match(name)
            if m and m["topic"] == topic and int(m["part"]) == partition:
                first = pack(int(m.group(3)), int(m.group(4)))
                if first > hw:
                    path.unlink(missing_ok=True)

    def claimed(self, topic: str, partition: int) -> bool:
        return (topic, partition) in self._hw

    def forget(self, topic: str, partition: int) -> None:
        """Drop cached state (partition revoked); buffered rows must be flushed first."""
        self._hw.pop((topic, partition), None)
        self._buffers.pop((topic, partition), None)
        self.fence.release((topic, partition))

    # -- buffering ---------------------------------------------------------------------

    def add(self, topic: str, partition: int, table: pa.Table, token: Any = None) -> int:
        """Buffer the rows above everything already stored or buffered; returns how many."""
        key = (topic, partition)
        buf = self._buffers.get(key)
        if buf is None:
            buf = self._buffers[key] = _Buffer(since=time.monotonic())
        floor = max(self.high_water(topic, partition), buf.last)
        if table.num_rows:
            pos = positions(table)
            n = len(pos)
            ordered = n < 2 or not pc.any(pc.less_equal(pos.slice(1), pos.slice(0, n - 1))).as_py()
            if pos[0].as_py() <= floor or not ordered:
                # Replayed or re-delivered input: keep each position once, in order.
                keep, high = [], floor
                for value in pos.to_pylist():
                    keep.append(value > high)
                    high = max(high, value)
                table, pos = table.filter(pa.array(keep)), pos.filter(pa.array(keep))
        if table.num_rows:
            if buf.first is None:
                buf.first = pc.min(pos).as_py()
                buf.since = time.monotonic()
            buf.tables.append(table)
            buf.rows += table.num_rows
            buf.last = max(buf.last, pc.max(pos).as_py())
        if token is not None:
            buf.tokens.append(token)
        return int(table.num_rows)

    def due(self, max_age: float, max_rows: int) -> list[tuple[str, int]]:
        now = time.monotonic()
        return [
            key
            for key, buf in self._buffers.items()
            if buf.tokens and (buf.rows >= max_rows or now - buf.since >= max_age)
        ]

    def partitions(self) -> list[tuple[str, int]]:
        return list(self._buffers)

    def flush(self, topic: str, partition: int) -> tuple[FlushResult, list[Any]]:
        """Write the buffered rows; returns the result and the tokens now safe to ack.

        Raises ``Fenced`` (and drops this partition's buffer) when another writer took the
        partition over: nothing is written and nothing may be acked.
        """
        key = (topic, partition)
        buf = self._buffers.get(key)
        if buf is None:
            return FlushResult(), []
        result = FlushResult()
        if buf.rows:
            try:
                with self.fence.owned(key):
                    result = self._write(topic, partition, buf)
            except Fenced:
                self.forget(topic, partition)
                raise
            self._hw[key] = buf.last
        tokens = buf.tokens
        self._buffers[key] = _Buffer(last=buf.last, since=time.monotonic())
        return result, tokens

    def _write(self, topic: str, partition: int, buf: _Buffer) -> FlushResult:
        assert buf.first is not None
        result = FlushResult()
        name = file_name(topic, partition, buf.first, buf.last)
        staged: list[tuple[Path, Path]] = []
        rows = pa.concat_tables(buf.tables, promote_options="permissive")
        if self.purge is not None:
            rows, result.purged = self.purge(rows)
        for rel_dir, table in self.splitter(rows):
            directory = self.root / rel_dir
            directory.mkdir(parents=True, exist_ok=True)
            final = directory / name
            tmp = directory / f".{name}.tmp"
            pq.write_table(table, tmp, compression="zstd")
            fsync_file(tmp)
            staged.append((tmp, final))
            result.files += 1
            result.rows += table.num_rows
            result.bytes += tmp.stat().st_size
        for tmp, final in staged:
            os.replace(tmp, final)
        for directory in {final.parent for _, final in staged}:
            fsync_dir(directory)
        self.checkpoints.mkdir(parents=True, exist_ok=True)
        offset, index = unpack(buf.last)
        checkpoint = {"offset": offset, "index": index, "position": buf.last}
        atomic_write_bytes(self._checkpoint_path(topic, partition), orjson.dumps(checkpoint))
        return result
