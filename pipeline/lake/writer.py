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
  over several internal messages and so over several flushes.
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


def atomic_write_bytes(path: Path, data: bytes) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    with open(tmp, "wb") as fh:
        fh.write(data)
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(tmp, path)


@dataclass
class FlushResult:
    files: int = 0
    bytes: int = 0
    rows: int = 0


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
        self._hw: dict[tuple[str, int], int] = {}
        self._buffers: dict[tuple[str, int], _Buffer] = {}

    # -- recovery ----------------------------------------------------------------------

    def _checkpoint_path(self, topic: str, partition: int) -> Path:
        return self.checkpoints / f"{topic}-p{partition}.json"

    def high_water(self, topic: str, partition: int) -> int:
        """Highest source offset stored; on first use, deletes uncommitted files."""
        key = (topic, partition)
        hw = self._hw.get(key)
        if hw is None:
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

    def forget(self, topic: str, partition: int) -> None:
        """Drop cached state (partition revoked); buffered rows must be flushed first."""
        self._hw.pop((topic, partition), None)
        self._buffers.pop((topic, partition), None)

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
        """Write the buffered rows; returns the result and the tokens now safe to ack."""
        buf = self._buffers.get((topic, partition))
        if buf is None:
            return FlushResult(), []
        result = FlushResult()
        if buf.rows:
            assert buf.first is not None
            name = file_name(topic, partition, buf.first, buf.last)
            staged: list[tuple[Path, Path]] = []
            rows = pa.concat_tables(buf.tables, promote_options="permissive")
            for rel_dir, table in self.splitter(rows):
                directory = self.root / rel_dir
                directory.mkdir(parents=True, exist_ok=True)
                final = directory / name
                tmp = directory / f".{name}.tmp"
                pq.write_table(table, tmp, compression="zstd")
                staged.append((tmp, final))
                result.files += 1
                result.rows += table.num_rows
                result.bytes += tmp.stat().st_size
            for tmp, final in staged:
                os.replace(tmp, final)
            self.checkpoints.mkdir(parents=True, exist_ok=True)
            atomic_write_bytes(
                self._checkpoint_path(topic, partition),
                orjson.dumps(
                    dict(zip(("offset", "index"), unpack(buf.last), strict=True), position=buf.last)
                ),
            )
            self._hw[(topic, partition)] = buf.last
        tokens = buf.tokens
        self._buffers[(topic, partition)] = _Buffer(last=buf.last, since=time.monotonic())
        return result, tokens
