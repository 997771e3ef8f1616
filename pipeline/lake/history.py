"""First activity, kept after retention deletes the events that showed it.

Lifecycle ("new" = first event ever) and ``person_tags.first_seen`` read the whole lake.
Once ``lake maintain`` drops event partitions past their retention, a person whose only
earlier events were in them would look new again. So before it drops them, maintain
folds their earliest event time per identifier triple (``user_id``, ``anonymous_id``,
``person_id``, as stored) into ``<lake>/first_activity/first_activity.parquet``: one row
per triple, the earliest time wins, so a run killed between the fold and the drop folds
the same rows again and nothing changes; a file that reached a partition after the fold
(a backfill) is folded under the partition's locks just before its drop. It keeps only
what the reports need, not the events. A privacy deletion removes a person's rows like any
table's; the fold and the drops run under the deletion lock (the caller's ``Guard``) and
drop rows of persons on the purge list, so a deleted person is never folded back.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass, field
from pathlib import Path

import duckdb
import pyarrow as pa

from pipeline.contract.sql import path_list, path_literal
from pipeline.lake.durable import atomic_write_table, fsync_dir
from pipeline.lake.schema import TS
from pipeline.names import LAKE_FIRST_ACTIVITY

FILE = "first_activity.parquet"
FIRST_ACTIVITY_SCHEMA = pa.schema(
    [
        pa.field("user_id", pa.string()),
        pa.field("anonymous_id", pa.string()),
        pa.field("person_id", pa.string()),
        pa.field("first_time", TS),
    ]
)
Purge = Callable[[pa.Table], tuple[pa.Table, int]]


class GuardBusy(RuntimeError):
    """The guard's lock is held (a privacy deletion runs): event drops wait for a later run."""


@dataclass(frozen=True)
class Guard:
    """What the fold and the event drops run under, given by the caller (the lake layer
    does not know privacy): the deletion lock, so no deletion runs between a fold's read
    and its rename, and the purge list, so no deleted person is folded back. ``lock``
    may raise ``GuardBusy``."""

    lock: Callable[[], AbstractContextManager[None]] = field(default=nullcontext)
    purge: Purge | None = None


NO_PRIVACY = Guard()  # for lakes without privacy requests: tests, benches


def first_activity_path(lake_dir: Path) -> Path:
    return lake_dir / LAKE_FIRST_ACTIVITY / FILE


def staged_path(lake_dir: Path) -> Path:
    """Where a fold stages the new file; a kill can leave it (with identifiers) behind."""
    target = first_activity_path(lake_dir)
    return target.with_name(f".{target.name}.tmp")  # as atomic_write_table names it


def discard_staged(lake_dir: Path) -> None:
    """Remove a fold's leftover stage; call under the guard's lock (a deletion does)."""
    staged_path(lake_dir).unlink(missing_ok=True)


def remember(lake_dir: Path, files: Iterable[Path], purge: Purge | None) -> int:
    """Fold the earliest event time per identifier triple of the event ``files`` into the
    first-activity file; returns its row count afterwards. Call under the guard's lock."""
    files = sorted(files)
    discard_staged(lake_dir)
    if not files:
        return 0
    target = first_activity_path(lake_dir)
    sources = [
        "SELECT user_id, anonymous_id, person_id, event_time AS first_time "
        f"FROM read_parquet({path_list(files)}, union_by_name = true)"
    ]
    if target.exists():
        sources.append(
            "SELECT user_id, anonymous_id, person_id, first_time "
            f"FROM read_parquet({path_literal(target)})"
        )
    con = duckdb.connect()
    try:
        rows = con.sql(
            "SELECT user_id, anonymous_id, person_id, min(first_time) AS first_time "
            f"FROM ({' UNION ALL BY NAME '.join(sources)}) GROUP BY ALL "
            "ORDER BY first_time, person_id, user_id, anonymous_id"
        ).to_arrow_table()
    except duckdb.Error as exc:  # an unreadable file: the run fails, the drop waits
        raise RuntimeError(f"first activity: {exc}") from None
    finally:
        con.close()
    if rows is None:
        raise RuntimeError("first activity: the fold returned no result")
    table = rows.cast(FIRST_ACTIVITY_SCHEMA)
    if purge is not None:
        table, _ = purge(table)
    _replace(lake_dir, target, table)
    return table.num_rows


def _replace(lake_dir: Path, target: Path, table: pa.Table) -> None:
    if not target.parent.exists():
        target.parent.mkdir(parents=True)
        fsync_dir(lake_dir)
    atomic_write_table(target, table)
