"""The replay ledger: which dead letters ``trackflow dlq replay`` sent back, across crashes.

"Each payload is replayed at most once" (DESIGN 17) needs, after a crash of the command at
any moment, to know whether a dead letter went out. Each chunk of a run:

1. writes a ``sending`` entry per dead letter, with the end offset of the partition it goes
   to (``scan_from``), durably, before anything is sent;
2. sends them and waits for the broker's acknowledgements;
3. writes a ``sent`` entry with each offset.

A crash between 1 and 3 leaves ``sending`` entries: in doubt. The next run settles them by
reading the partition from ``scan_from`` for messages that carry their marker
(``pipeline.contract.replay``): found means ``sent``; the whole range read without finding
it means ``not_sent`` (it may be replayed again); a range the broker no longer holds keeps
it in doubt, and it is never sent again. A dead letter's state is its latest entry.

The ledger is a lake table (``dlq_replays``, one Parquet file per write, named by a
sequence number and renamed into place durably), so ``trackflow query`` shows it and it
lives as long as the dead letters it describes, whatever happens to the broker. Runs take
an exclusive lock, so two replays never interleave their writes.
"""

from __future__ import annotations

import fcntl
import os
import re
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from pipeline.lake.durable import atomic_write_bytes, fsync_dir
from pipeline.lake.schema import DLQ_REPLAY_SCHEMA
from pipeline.names import LAKE_DLQ_REPLAYS

SENDING, SENT, NOT_SENT = "sending", "sent", "not_sent"
LOCK_FILE = "_lock"
_FILE = re.compile(r"^(\d{12})\.parquet$")


class LedgerBusy(RuntimeError):
    """Another replay holds the ledger."""


@dataclass
class Entry:
    replay_of: str  # dead_letter_key
    state: str
    run_id: str
    sent_topic: str | None = None
    sent_partition: int | None = None
    scan_from: int | None = None
    sent_offset: int | None = None
    error_code: str | None = None
    event_name: str | None = None
    event_id: str | None = None
    at: int = 0  # epoch ms
    seq: int = 0  # set when written


class Ledger:
    def __init__(self, lake_dir: Path) -> None:
        self.root = Path(lake_dir) / LAKE_DLQ_REPLAYS
        self._last: int | None = None

    @contextmanager
    def locked(self) -> Iterator[None]:
        """Hold the ledger for a run (the lock dies with the process: no stale locks)."""
        self.root.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.root / LOCK_FILE, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                raise LedgerBusy(
                    f"another dlq replay is running (lock {self.root / LOCK_FILE})"
                ) from None
            for stale in self.root.glob(".*.tmp"):  # a write a crash cut short
                stale.unlink()
            self._last = None
            yield
        finally:
            os.close(fd)

    def _files(self) -> list[tuple[int, Path]]:
        if not self.root.is_dir():
            return []
        found = ((_FILE.match(p.name), p) for p in self.root.iterdir())
        return sorted((int(m.group(1)), p) for m, p in found if m)

    def states(self) -> dict[str, Entry]:
        """The latest entry of every dead letter the ledger knows."""
        latest: dict[str, Entry] = {}
        files = self._files()
        for seq, path in files:
            table = pq.read_table(path, schema=DLQ_REPLAY_SCHEMA)
            table = table.set_column(
                table.schema.get_field_index("at"), "at", table["at"].cast(pa.int64())
            )
            for row in table.to_pylist():
                entry = Entry(**{**row, "seq": seq})
                latest[entry.replay_of] = entry
        self._last = files[-1][0] if files else 0
        return latest

    def write(self, entries: list[Entry]) -> None:
        """Append ``entries`` as one file, durably (all of them or none)."""
        if not entries:
            return
        if self._last is None:
            files = self._files()
            self._last = files[-1][0] if files else 0
        seq = self._last + 1
        rows = [{**asdict(e), "seq": seq} for e in entries]
        table = pa.Table.from_pylist(rows, schema=DLQ_REPLAY_SCHEMA)
        sink = pa.BufferOutputStream()
        pq.write_table(table, sink)
        new_dir = not self.root.exists()
        self.root.mkdir(parents=True, exist_ok=True)
        if new_dir:
            fsync_dir(self.root.parent)
        atomic_write_bytes(self.root / f"{seq:012d}.parquet", sink.getvalue().to_pybytes())
        for e in entries:
            e.seq = seq
        self._last = seq
