"""Deletion by person (DESIGN 15): every row of the person out of the lake, and out of
every worker's identity map. Rollups keep their values (they are not touched).

A deletion runs in the CLI that recorded the request, or in a worker that finds it not
done (the CLI was killed); one at a time (``deletion.lock``). For each request:

1. ``running`` is recorded (topic and audit);
2. the person is put on the purge list (``purge.py``): rows of theirs still on the way are
   dropped by the writers from now on;
3. a tombstone goes to ``identity.links``: the identity writer drops the person from the
   map and its changelog tells every worker to do the same;
4. every table is scanned for files with rows of theirs (DuckDB over the identifier
   columns) and each such file rewritten without them (``rewrite.remove_rows``: old or
   new file, never half, under the partition's fence);
5. the map is read again for identifiers linked meanwhile; 2-5 repeat until none is new;
6. ``done`` with the rows removed is recorded.

Every step is idempotent, so a run killed at any point is simply run again. Rows removed
are counted in a journal written before each file changes (rows before and after), so a
resumed run reports the total of all runs.
"""

from __future__ import annotations

import fcntl
import os
import time
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

import duckdb
import orjson

from pipeline.contract.sql import path_literal
from pipeline.identity.rules import IdentityRules
from pipeline.lake import history
from pipeline.lake.rewrite import recover
from pipeline.names import (
    LAKE_DLQ,
    LAKE_EVENTS,
    LAKE_FIRST_ACTIVITY,
    LAKE_IDENTITIES,
    LAKE_MEMBER_REJECTS,
    LAKE_MERGES,
    LAKE_PERSON_TAGS,
    LAKE_PRIVACY_DIR,
    LAKE_PROFILE_CHANGES,
)
from pipeline.privacy import purge
from pipeline.privacy.audit import write_audit
from pipeline.privacy.matching import MatchSet
from pipeline.privacy.requests import DONE, RUNNING, Request
from pipeline.privacy.resolve import Person, expand
from pipeline.privacy.rewrite import remove_rows

# DESIGN 15's list (``profile_changes`` holds every profile update: the ``profiles`` and
# ``profile_changes`` views read it), ``person_tags`` (one row per person) and
# ``first_activity`` (kept past retention). Each is matched by its columns (matching.py).
TABLES = (
    LAKE_EVENTS,
    LAKE_DLQ,
    LAKE_IDENTITIES,
    LAKE_MERGES,
    LAKE_PROFILE_CHANGES,
    LAKE_MEMBER_REJECTS,
    LAKE_PERSON_TAGS,
    LAKE_FIRST_ACTIVITY,
)
LOCK = "deletion.lock"
GUARD_WAIT_SECONDS = 300.0
MAX_ROUNDS = 5


def lake_guard(lake_dir: Path, wait_seconds: float = GUARD_WAIT_SECONDS) -> history.Guard:
    """What ``lake maintain`` drops events under: this lock (no deletion between the
    first-activity fold's read and its rename, or between it and the drops) and the purge
    list (no deleted person folded back). A deletion running longer than ``wait_seconds``
    defers the event drops to the next run rather than stall the maintenance."""

    @contextmanager
    def lock() -> Iterator[None]:
        deadline = time.monotonic() + wait_seconds
        with ExitStack() as stack:
            while True:
                try:
                    stack.enter_context(exclusive(lake_dir, wait=False))
                    break
                except Busy as exc:
                    if time.monotonic() >= deadline:
                        raise history.GuardBusy(str(exc)) from None
                    time.sleep(0.5)
            yield

    return history.Guard(lock, purge.Purger(lake_dir))


class Busy(RuntimeError):
    """Another process is running deletions."""


class Log(Protocol):
    links_topic: str

    def append(self, request: Request) -> int: ...

    def forget(self, request_id: str, nodes: list[str], undo: bool = False) -> int: ...

    def has_topic(self, topic: str) -> bool: ...


def privacy_dir(lake_dir: Path) -> Path:
    return lake_dir / LAKE_PRIVACY_DIR


@contextmanager
def exclusive(lake_dir: Path, wait: bool = True) -> Iterator[None]:
    """One deletion (or purge-list change) at a time across processes."""
    directory = privacy_dir(lake_dir)
    directory.mkdir(parents=True, exist_ok=True)
    fd = os.open(directory / LOCK, os.O_CREAT | os.O_RDWR, 0o644)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | (0 if wait else fcntl.LOCK_NB))
        except BlockingIOError:
            raise Busy("another process is running privacy deletions") from None
        yield
    finally:
        os.close(fd)


class Journal:
    """Per request, (file, rows before, rows after) of every change, synced before the
    change is made: the total removed survives any crash and any number of resumes."""

    def __init__(self, lake_dir: Path, request_id: str) -> None:
        self.path = privacy_dir(lake_dir) / "journal" / f"{request_id}.jsonl"

    def record(self, table: str, file: str, before: int, after: int) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        line = orjson.dumps({"table": table, "file": file, "before": before, "after": after})
        with open(self.path, "ab") as fh:
            fh.write(line + b"\n")
            fh.flush()
            os.fsync(fh.fileno())

    def removed(self) -> dict[str, int]:
        """Rows removed per table: per file, first ``before`` minus last ``after``."""
        if not self.path.exists():
            return {}
        spans: dict[tuple[str, str], list[int]] = {}
        for line in self.path.read_bytes().splitlines():
            try:
                e = orjson.loads(line)
            except orjson.JSONDecodeError:
                continue  # a line cut by a crash: its change was not made
            key = (e["table"], e["file"])
            span = spans.setdefault(key, [e["before"], e["after"]])
            span[1] = e["after"]
        out: dict[str, int] = {}
        for (table, _), (before, after) in spans.items():
            out[table] = out.get(table, 0) + before - after
        return out

    def close(self) -> None:
        self.path.unlink(missing_ok=True)


def _glob(root: Path) -> str:
    return path_literal(root / "**" / "*.parquet")


def candidate_files(con: duckdb.DuckDBPyConnection, root: Path, match: MatchSet) -> list[Path]:
    """Files of the table at ``root`` that may hold matching rows."""
    if not root.exists() or next(root.rglob("*.parquet"), None) is None:
        return []
    source = f"read_parquet({_glob(root)}, union_by_name = true, hive_partitioning = false"
    cols = {d[0] for d in con.execute(f"SELECT * FROM {source}) LIMIT 0").description}
    predicate = match.sql(cols)
    if predicate is None:
        return sorted(root.rglob("*.parquet"))
    sql, params = predicate
    rows = con.execute(
        f"SELECT DISTINCT filename FROM {source}, filename = true) WHERE {sql}", params
    ).fetchall()
    return sorted(Path(r[0]) for r in rows)


@dataclass
class Deleter:
    lake_dir: Path
    connect: Callable[[], duckdb.DuckDBPyConnection]
    rules: IdentityRules
    log: Log | None
    key: str  # the PII key: audit identifiers are hashed with it
    tables: tuple[str, ...] = TABLES
    now: Callable[[], int] = field(default=lambda: int(time.time() * 1000))

    def record(self, request: Request) -> Request:
        if self.log is not None:
            self.log.append(request)
        write_audit(self.lake_dir, request, self.key)
        return request

    def run(self, request: Request) -> Request:
        """Carry one delete request to ``done``; call under ``exclusive``."""
        request = self.record(request.with_status(RUNNING, self.now()))
        recover(self.lake_dir)  # roll forward file rewrites a kill interrupted
        history.discard_staged(self.lake_dir)  # a killed fold's stage holds identifiers
        person = Person(set(request.identifiers), set(request.person_ids))
        journal = Journal(self.lake_dir, request.request_id)
        forgotten: set[str] = set()
        for _ in range(MAX_ROUNDS):
            purge.add(self.lake_dir, request.request_id, person.nodes, person.pids)
            if self.log is not None and person.nodes - forgotten:
                if self.log.has_topic(self.log.links_topic):
                    self.log.forget(request.request_id, sorted(person.nodes))
                forgotten |= person.nodes
            match = MatchSet.of(person.nodes, person.pids)
            changed = sum(self._delete_rows(table, match, journal) for table in self.tables)
            before = (len(person.nodes), len(person.pids))
            con = self.connect()
            try:
                person = expand(con, self.rules, person)
            finally:
                con.close()
            if not changed and (len(person.nodes), len(person.pids)) == before:
                break
        removed = journal.removed()
        done = request.with_status(
            DONE,
            self.now(),
            identifiers=tuple(sorted(person.nodes)),
            person_ids=tuple(sorted(person.pids)),
            rows_removed=sum(removed.values()),
            removed_by_table=removed,
        )
        self.record(done)
        journal.close()
        return done

    def _delete_rows(self, table: str, match: MatchSet, journal: Journal) -> int:
        root = self.lake_dir / table
        con = self.connect()
        try:
            files = candidate_files(con, root, match)
        finally:
            con.close()
        removed = 0
        for path in files:
            rel = path.relative_to(self.lake_dir).as_posix()

            def intent(before: int, after: int, rel: str = rel) -> None:
                journal.record(table, rel, before, after)

            removed += remove_rows(self.lake_dir, table, path, match.mask, intent)
        return removed
