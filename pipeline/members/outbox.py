"""One ID links of imports waiting to be sent: ``<data-dir>/members/outbox/<run>.links``.

An import writes its links here (one identity.links message a line) durably before it
installs its lake files, sends them after, and deletes the file once Kafka took every
message. Links that could not be sent (broker down, no worker has created the topic yet)
stay, and the next import sends them first. Sending a link twice changes nothing: the
identity map is a function of the set of links.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Iterator
from pathlib import Path


class Outbox:
    def __init__(self, directory: Path) -> None:
        self.directory = directory

    def write(self, run_id: str, messages: Iterable[bytes]) -> tuple[Path | None, int]:
        """The file of the run's messages (None when there are none) and their count."""
        self.directory.mkdir(parents=True, exist_ok=True)
        final = self.directory / f"{run_id}.links"
        tmp = self.directory / f".{run_id}.links.tmp"
        count = 0
        with open(tmp, "wb") as fh:
            for message in messages:
                fh.write(message + b"\n")
                count += 1
            fh.flush()
            os.fsync(fh.fileno())
        if not count:
            tmp.unlink()
            return None, 0
        os.replace(tmp, final)
        return final, count

    def pending(self) -> list[Path]:
        if not self.directory.is_dir():
            return []
        return sorted(self.directory.glob("*.links"), key=lambda p: p.stat().st_mtime)

    @staticmethod
    def messages(path: Path) -> Iterator[bytes]:
        with open(path, "rb") as fh:
            for line in fh:
                if line.strip():
                    yield line.rstrip(b"\n")

    @staticmethod
    def done(path: Path) -> None:
        path.unlink(missing_ok=True)
