"""Retention as data (``schemas/retention.json``): which day partitions are past their time.

A lake table keeps its rows in day partitions (``event_date=2026-01-31``, ``received_date=...``:
the first ``<name>_date=YYYY-MM-DD`` directory under the table). The partition of day D is
past retention once every row of it is older than the days to keep, i.e. when
``D < today - days`` (UTC); the partition of ``today - days`` itself is kept. Events are
also partitioned by event name, so an event name may keep its partitions longer (orders,
payments) or shorter than the events table: the decision is per ``event_name=`` directory.

Deleting a partition is one rename of its directory out of the table (under the writer
locks of every source partition with files in it), so a view sees all of it or none of it;
the renamed directory is then removed, and a leftover of a crash is removed next time.
"""

from __future__ import annotations

import re
import shutil
import uuid
from collections.abc import Callable, Iterator
from contextlib import ExitStack, suppress
from dataclasses import dataclass, field
from datetime import date, timedelta
from pathlib import Path
from typing import Any

import orjson

from pipeline.lake.durable import fsync_dir
from pipeline.lake.fence import Fence
from pipeline.lake.rewrite import pause_point, recover_source, source_of
from pipeline.names import LAKE_EVENTS

RETENTION_FILE = "retention.json"
TRASH = "_trash"
_DAY_DIR = re.compile(r"^[a-z_]+_date=(\d{4}-\d{2}-\d{2})$")
_STAGED = re.compile(r"^\.(?P<name>.+\.parquet)\.(rewrite|tmp)$")


class RetentionError(ValueError):
    """retention.json is unreadable or names something that does not exist (one line)."""


@dataclass(frozen=True)
class Retention:
    tables: dict[str, int | None]
    event_names: dict[str, int | None] = field(default_factory=dict)

    def days(self, table: str, event_name: str | None = None) -> int | None:
        if table == LAKE_EVENTS and event_name in self.event_names:
            return self.event_names[event_name]
        return self.tables.get(table)


def load_retention(path: Path, tables: set[str], event_names: set[str]) -> Retention:
    """Read and check a retention file against the known lake tables and tracked events."""
    try:
        doc = orjson.loads(path.read_bytes())
    except OSError as exc:
        raise RetentionError(f"{path}: cannot read: {exc.strerror}") from None
    except orjson.JSONDecodeError as exc:
        raise RetentionError(f"{path}: not JSON: {exc}") from None
    if not isinstance(doc, dict) or not isinstance(doc.get("tables"), dict):
        raise RetentionError(f"{path}: needs an object with a 'tables' object")
    out_tables = _entries(path, "tables", doc["tables"], tables, "lake table")
    out_events = _entries(path, "event_names", doc.get("event_names", {}), event_names, "event")
    return Retention(out_tables, out_events)


def _entries(
    path: Path, section: str, given: Any, known: set[str], what: str
) -> dict[str, int | None]:
    if not isinstance(given, dict):
        raise RetentionError(f"{path}: '{section}' must be an object")
    out: dict[str, int | None] = {}
    for name, entry in given.items():
        where = f"{path}: {section}.{name}"
        if name not in known:
            raise RetentionError(f"{where}: unknown {what} (known: {', '.join(sorted(known))})")
        if not isinstance(entry, dict) or set(entry) != {"days", "description"}:
            raise RetentionError(f"{where}: needs exactly 'days' and 'description'")
        days = entry["days"]
        if days is not None and (type(days) is not int or days < 1):
            raise RetentionError(f"{where}.days: a whole number of days >= 1, or null")
        if not isinstance(entry["description"], str) or not entry["description"].strip():
            raise RetentionError(f"{where}.description: say why, in a non-empty string")
        out[name] = days
    return out


@dataclass(frozen=True)
class Expired:
    """A directory past retention: a day partition or, for events, one event name of it."""

    table: str
    directory: Path
    day: date
    days: int


def expired(lake_dir: Path, retention: Retention, today: date) -> list[Expired]:
    """Every partition directory of the lake past retention on ``today`` (UTC)."""
    out: list[Expired] = []
    for table_dir in _table_dirs(lake_dir):
        table = table_dir.name
        for day_dir, day in _day_dirs(table_dir):
            if table == LAKE_EVENTS:
                for sub in sorted(p for p in day_dir.iterdir() if p.is_dir()):
                    name = sub.name.partition("=")[2]
                    days = retention.days(table, name)
                    if days is not None and day < today - timedelta(days=days):
                        out.append(Expired(table, sub, day, days))
                continue
            days = retention.days(table)
            if days is not None and day < today - timedelta(days=days):
                out.append(Expired(table, day_dir, day, days))
    return out


def _table_dirs(lake_dir: Path) -> list[Path]:
    if not lake_dir.exists():
        return []
    return sorted(p for p in lake_dir.iterdir() if p.is_dir() and not p.name.startswith(("_", ".")))


def _day_dirs(table_dir: Path) -> Iterator[tuple[Path, date]]:
    for sub in sorted(table_dir.iterdir()):
        m = _DAY_DIR.match(sub.name)
        if m and sub.is_dir():
            try:
                yield sub, date.fromisoformat(m[1])
            except ValueError:
                continue


def drop(lake_dir: Path, gone: Expired, before: Callable[[Path], None] | None = None) -> None:
    """Remove an expired directory: one rename out of the table, under the writer locks of
    every source partition with files in it (a flush or a rewrite there finishes first);
    ``before(directory)`` runs under those locks, just before the rename."""
    keys = sorted(_sources(gone.directory))
    fence = Fence(lake_dir / "_checkpoints" / gone.table, gone.table)
    trash = lake_dir / TRASH
    trash.mkdir(parents=True, exist_ok=True)
    with ExitStack() as locks:
        for key in keys:  # always in this order: two droppers never deadlock
            locks.enter_context(fence.exclusive(key))
            recover_source(lake_dir, gone.table, key, leftovers=False)
        if not gone.directory.exists():
            return
        if before is not None:
            before(gone.directory)
        target = trash / f"{gone.table}-{uuid.uuid4().hex}"
        gone.directory.rename(target)
        fsync_dir(gone.directory.parent)
    pause_point("dropped")
    shutil.rmtree(target, ignore_errors=True)
    parent = gone.directory.parent
    if parent.name != gone.table:
        with suppress(OSError):  # not empty: other event names are kept
            parent.rmdir()  # an events day whose every event name is gone


def empty_trash(lake_dir: Path) -> None:
    """Remove what a crashed ``drop`` renamed away but did not delete yet."""
    trash = lake_dir / TRASH
    if trash.exists():
        for leftover in trash.iterdir():
            shutil.rmtree(leftover, ignore_errors=True)


def _sources(directory: Path) -> set[tuple[str, int]]:
    keys: set[tuple[str, int]] = set()
    for path in directory.rglob("*"):
        m = _STAGED.match(path.name)
        try:
            keys.add(source_of(Path(m["name"] if m else path.name)))
        except ValueError:
            continue  # not a writer's file: no writer lock to take
    return keys
