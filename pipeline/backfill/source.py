"""The backfill's input: its run number (a digest of the bytes) and its lines in chunks.

The run number is the source partition of the pseudo topic ``backfill``: the same input
always gets the same number, so the lake writer's checkpoint for it makes a repeated or
resumed run skip what it stored. A line's position is (line number, index in its JSON
array), stable across runs; blank lines are skipped but still counted.
"""

from __future__ import annotations

import hashlib
import shutil
import sys
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import BinaryIO

RUN_BITS = 31  # source_partition is an int32 column
READ_CHUNK = 1 << 20


def run_number(path: Path) -> int:
    """A digest of the file's bytes, as a non-negative int32."""
    digest = hashlib.blake2b(digest_size=8)
    with path.open("rb") as f:
        while block := f.read(READ_CHUNK):
            digest.update(block)
    return int.from_bytes(digest.digest(), "big") & ((1 << RUN_BITS) - 1)


@contextmanager
def input_file(name: str, spool_dir: Path | None = None) -> Iterator[Path]:
    """The input as a file: ``-`` (stdin) is spooled to a temporary file first, since the
    run number needs every byte before the first line is stored."""
    if name != "-":
        yield Path(name)
        return
    with tempfile.NamedTemporaryFile(prefix="backfill-", dir=spool_dir) as tmp:
        stdin: BinaryIO = sys.stdin.buffer
        shutil.copyfileobj(stdin, tmp, READ_CHUNK)
        tmp.flush()
        yield Path(tmp.name)


def chunks(path: Path, lines_per_chunk: int) -> Iterator[list[tuple[int, bytes]]]:
    """(line number, line) lists of at most ``lines_per_chunk`` non-blank lines."""
    chunk: list[tuple[int, bytes]] = []
    with path.open("rb") as f:
        for number, raw in enumerate(f):
            line = raw.rstrip(b"\r\n")
            if not line.strip():
                continue
            chunk.append((number, line))
            if len(chunk) >= lines_per_chunk:
                yield chunk
                chunk = []
    if chunk:
        yield chunk
