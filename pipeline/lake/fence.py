"""One writer per lake partition: a worker that lost a partition cannot touch it again.

Kafka moves a partition to another worker when the owner misses its session timeout
(a long GC pause, a network split, SIGSTOP). The old owner (a zombie) does not know yet
and may still flush what it buffered: renaming files into place, deleting "uncommitted"
ones, rewriting the checkpoint, under the new owner's feet.

Each (table, source topic, partition) has an epoch file next to its checkpoint. A writer
*claims* the partition when it starts writing it after an assignment: under an exclusive
``flock`` it increments the epoch and remembers the new value. Every later change to the
partition (a flush, the clean-up of uncommitted files) happens under the same lock and
only while the epoch on disk is still the writer's own; otherwise it raises ``Fenced``
and changes nothing. The lock makes check-and-write atomic: a claim waits for a flush in
progress, and reads the checkpoint that flush wrote.

The lake directory must be on a file system with working ``flock`` between the workers
(a local disk, or NFSv4).
"""

from __future__ import annotations

import fcntl
import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from pipeline.lake.durable import atomic_write_bytes

Key = tuple[str, int]  # source topic, partition


class Fenced(RuntimeError):
    """This writer's claim on a partition was taken over by another writer."""


class Fence:
    def __init__(self, directory: Path, table: str) -> None:
        self.directory = directory
        self.table = table
        self.held: dict[Key, int] = {}

    def _path(self, key: Key, suffix: str) -> Path:
        return self.directory / f"{key[0]}-p{key[1]}.{suffix}"

    @contextmanager
    def _locked(self, key: Key) -> Iterator[None]:
        self.directory.mkdir(parents=True, exist_ok=True)
        fd = os.open(self._path(key, "lock"), os.O_CREAT | os.O_RDWR, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            yield
        finally:
            os.close(fd)  # closing releases the lock

    def _epoch_on_disk(self, key: Key) -> int:
        path = self._path(key, "epoch")
        return int(path.read_text()) if path.exists() else 0

    @contextmanager
    def claim(self, key: Key) -> Iterator[int]:
        """Take the partition over; the body (reading the checkpoint, cleaning up) runs
        under the lock, after any flush of the previous owner finished."""
        with self._locked(key):
            epoch = self._epoch_on_disk(key) + 1
            atomic_write_bytes(self._path(key, "epoch"), str(epoch).encode())
            self.held[key] = epoch
            yield epoch

    @contextmanager
    def owned(self, key: Key) -> Iterator[None]:
        """Run the body under the lock only if this writer still owns the partition."""
        with self._locked(key):
            mine = self.held.get(key)
            if mine is None or self._epoch_on_disk(key) != mine:
                self.held.pop(key, None)
                raise Fenced(
                    f"{self.table}: partition {key[1]} of {key[0]} was taken over by another "
                    "writer; this one's buffered rows are dropped (the owner re-reads them)"
                )
            yield

    def release(self, key: Key) -> None:
        self.held.pop(key, None)

    @contextmanager
    def exclusive(self, key: Key) -> Iterator[None]:
        """Hold the partition's lock without claiming it: for lake maintenance and privacy
        rewrites, which must not run during a flush or a claim but must not fence the
        live writer out either (its epoch is left alone)."""
        with self._locked(key):
            yield
