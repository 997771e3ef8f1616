"""``trackflow lake maintain``: retention deletes, then compaction; one run at a time.

A run, under an exclusive lock of the lake (``_maintain/lock``; a second run at the same
time is refused, ``MaintainBusy``):

1. finishes what a crashed run left: rewrite journals rolled forward, renamed-away
   partitions deleted;
2. drops every partition past retention (``retention.py``), after folding the first
   activity of the event partitions among them into ``first_activity`` (``history.py``);
3. compacts every table's small files (``compaction.py``).

Every step is crash-safe on its own and a re-run completes the work, so a run killed at
any moment leaves an exact lake. The outcome goes to ``_maintain/state.json`` (last
attempt, last success, last error), which the workers read to run it once a day across
the whole deployment rather than once a day per worker.
"""

from __future__ import annotations

import fcntl
import logging
import os
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any

import orjson
import pyarrow.parquet as pq

from pipeline.lake import compaction, history, retention
from pipeline.lake.durable import atomic_write_bytes
from pipeline.lake.inventory import lake_tables
from pipeline.lake.rewrite import Stale, live_files, pause_point, recover
from pipeline.names import LAKE_EVENTS, LAKE_FIRST_ACTIVITY

log = logging.getLogger(__name__)

STATE_DIR = "_maintain"
REPORT_COLUMNS = [
    "table",
    "partitions_expired",
    "files_deleted",
    "rows_deleted",
    "files_compacted",
    "files_written",
    "rows_compacted",
]


class MaintainBusy(RuntimeError):
    """Another ``lake maintain`` (a worker's or a command's) is running on this lake."""


@dataclass
class TableReport:
    table: str
    partitions_expired: int = 0
    files_deleted: int = 0
    rows_deleted: int = 0
    files_compacted: int = 0  # small files merged away
    files_written: int = 0  # merged files written
    rows_compacted: int = 0

    def record(self) -> dict[str, object]:
        return {c: getattr(self, c) for c in REPORT_COLUMNS}


@dataclass
class MaintainReport:
    tables: dict[str, TableReport] = field(default_factory=dict)
    journals_recovered: int = 0
    events_deferred: int = 0  # expired event partitions kept: a privacy deletion held the lock
    stale_groups: int = 0  # changed by a concurrent rewrite: left for the next run
    seconds: float = 0.0

    def table(self, name: str) -> TableReport:
        return self.tables.setdefault(name, TableReport(name))

    def changed(self) -> bool:
        return any(t.partitions_expired or t.files_compacted for t in self.tables.values()) or bool(
            self.journals_recovered
        )


def maintain(
    lake_dir: Path,
    rules: retention.Retention,
    *,
    target_rows: int,
    today: date | None = None,
    tables: list[str] | None = None,
    dry_run: bool = False,
    guard: history.Guard,
) -> MaintainReport:
    """One maintenance run over ``tables`` (default: all); ``dry_run`` only reports.
    Raises ``MaintainBusy`` when another run holds the lake."""
    with exclusive(lake_dir):
        return run_locked(
            lake_dir,
            rules,
            target_rows=target_rows,
            today=today,
            tables=tables,
            dry_run=dry_run,
            guard=guard,
        )


def run_locked(
    lake_dir: Path,
    rules: retention.Retention,
    *,
    target_rows: int,
    today: date | None = None,
    tables: list[str] | None = None,
    dry_run: bool = False,
    guard: history.Guard,
) -> MaintainReport:
    """``maintain`` for a caller that holds ``exclusive(lake_dir)`` already. ``guard`` is
    what dropping events runs under (the privacy deletion lock and purge list; required,
    so no caller folds a deleted person back by leaving it out)."""
    started = time.monotonic()
    lake_dir = Path(lake_dir)
    today = today or datetime.now(UTC).date()
    report = MaintainReport()
    if not dry_run:
        retention.empty_trash(lake_dir)
        report.journals_recovered = recover(lake_dir)
    expired = [
        gone
        for gone in retention.expired(lake_dir, rules, today)
        if tables is None or gone.table in tables
    ]
    dropped = {gone.directory for gone in expired}  # not compacted, dropped or deferred
    if dry_run:
        for gone in expired:
            _count(report, gone)
    else:
        _drop_expired(lake_dir, expired, guard, report)
    # first_activity is one file maintain itself rewrites: nothing to compact or report.
    for table in sorted(set(tables or _present(lake_dir)) - {LAKE_FIRST_ACTIVITY}):
        entry = report.table(table)
        for group in compaction.plan(lake_dir, table, target_rows):
            if dropped.intersection(group.target.parents):
                continue  # past retention (a dry run did not drop it)
            if not dry_run:
                try:
                    compaction.compact(lake_dir, group)
                except Stale as exc:
                    log.info("lake maintain: %s; left for the next run", exc)
                    report.stale_groups += 1
                    continue
                pause_point("compacted")
            entry.files_compacted += len(group.files)
            entry.files_written += 1
            entry.rows_compacted += group.rows
    report.seconds = time.monotonic() - started
    return report


def _drop_expired(
    lake_dir: Path, expired: list[retention.Expired], guard: history.Guard, report: MaintainReport
) -> None:
    events = [gone for gone in expired if gone.table == LAKE_EVENTS]
    for gone in expired:
        if gone.table != LAKE_EVENTS:
            _drop(lake_dir, gone, report)
    if not events:
        return
    try:
        with guard.lock():
            _drop_events(lake_dir, events, guard.purge, report)
    except history.GuardBusy as exc:  # a long privacy deletion: the next run drops them
        report.events_deferred = len(events)
        log.warning(
            "lake maintain: %s; %d event partitions left for the next run", exc, len(events)
        )


def _drop_events(
    lake_dir: Path,
    events: list[retention.Expired],
    purge: history.Purge | None,
    report: MaintainReport,
) -> None:
    """Fold the first activity of every expired event partition, then drop each; a file
    that arrived after the fold is folded under the partition's locks before its drop."""
    folded = set(live_files(lake_dir, LAKE_EVENTS, [gone.directory for gone in events]))
    kept = history.remember(lake_dir, folded, purge)
    log.info("lake maintain: first activity of %d partitions kept (%d rows)", len(events), kept)

    def late(directory: Path) -> None:
        new = set(live_files(lake_dir, LAKE_EVENTS, [directory])) - folded
        if new:
            history.remember(lake_dir, new, purge)
            folded.update(new)

    for gone in events:
        _drop(lake_dir, gone, report, before=late)


def _drop(
    lake_dir: Path,
    gone: retention.Expired,
    report: MaintainReport,
    before: Callable[[Path], None] | None = None,
) -> None:
    _count(report, gone)
    retention.drop(lake_dir, gone, before)
    log.info("lake maintain: %s %s past %d days, dropped", gone.table, gone.day, gone.days)


def _count(report: MaintainReport, gone: retention.Expired) -> None:
    entry = report.table(gone.table)
    files = [p for p in gone.directory.rglob("*.parquet") if not p.name.startswith(".")]
    entry.partitions_expired += 1
    entry.files_deleted += len(files)
    entry.rows_deleted += _rows(files)


def _present(lake_dir: Path) -> set[str]:
    if not lake_dir.exists():
        return set()
    return {p.name for p in lake_dir.iterdir() if p.is_dir() and not p.name.startswith(("_", "."))}


def _rows(files: list[Path]) -> int:
    total = 0
    for f in files:
        try:
            total += pq.read_metadata(f).num_rows
        except OSError:
            continue  # unreadable: still deleted with its directory
    return total


@contextmanager
def exclusive(lake_dir: Path) -> Iterator[None]:
    """The lake's maintenance lock, not waited for: ``MaintainBusy`` if held."""
    directory = Path(lake_dir) / STATE_DIR
    directory.mkdir(parents=True, exist_ok=True)
    fd = os.open(directory / "lock", os.O_CREAT | os.O_RDWR, 0o644)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise MaintainBusy(
                f"another trackflow lake maintain is running on {lake_dir}; try again later"
            ) from None
        yield
    finally:
        os.close(fd)


# -- the schedule the workers share -------------------------------------------------------


def read_state(lake_dir: Path) -> dict[str, Any]:
    path = Path(lake_dir) / STATE_DIR / "state.json"
    try:
        state = orjson.loads(path.read_bytes())
    except (OSError, orjson.JSONDecodeError):
        return {}
    return state if isinstance(state, dict) else {}


def write_state(lake_dir: Path, *, ok: bool, error: str | None = None) -> dict[str, Any]:
    """Record a run's outcome (epoch seconds); keeps the last success of a failed run."""
    now = time.time()
    state = read_state(lake_dir)
    state.update(last_attempt=now, last_error=error)
    if ok:
        state["last_success"] = now
    directory = Path(lake_dir) / STATE_DIR
    directory.mkdir(parents=True, exist_ok=True)
    atomic_write_bytes(directory / "state.json", orjson.dumps(state))
    return state


def start_clock(lake_dir: Path, now: float) -> None:
    """Record the first check of a deployment that never ran maintenance: its first run is
    one interval later, not at the first worker's start (a new deployment's lake is small,
    and its first minutes are when people look at it)."""
    directory = Path(lake_dir) / STATE_DIR
    directory.mkdir(parents=True, exist_ok=True)
    atomic_write_bytes(directory / "state.json", orjson.dumps({"first_check": now}))


RETRY_SECONDS = 600.0  # a failed run is retried after this long (or the interval if shorter)


def due(state: dict[str, Any], interval: float, now: float) -> bool:
    """A run is due once ``interval`` passed since the last attempt, or sooner after a
    failure. A deployment that never ran is not due: ``first_check`` starts its clock."""
    last = state.get("last_attempt", state.get("first_check"))
    if not isinstance(last, int | float):
        return False
    wait = min(interval, RETRY_SECONDS) if state.get("last_error") else interval
    return now - last >= wait


def load_rules(retention_file: Path | None, schemas_dir: Path | None) -> retention.Retention:
    """The retention file of the settings: ``retention_file``, else ``<schemas>/retention.json``,
    else the built-in one. Raises ``RetentionError`` (one line) when it is wrong."""
    from pipeline.contract.plan import default_schemas_dir, load_plan

    builtin = default_schemas_dir() / retention.RETENTION_FILE
    path = retention_file
    if path is None:
        own = (schemas_dir / retention.RETENTION_FILE) if schemas_dir else builtin
        path = own if own.exists() else builtin
    events = set(load_plan(schemas_dir).latest)
    if path == builtin and schemas_dir is not None:
        events |= set(load_plan(None).latest)  # the built-in file names built-in events
    # first_activity is kept whole: it is what remains of the events retention deletes.
    return retention.load_retention(path, lake_tables() - {LAKE_FIRST_ACTIVITY}, events)
