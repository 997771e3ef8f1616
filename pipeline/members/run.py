"""One import run from start to end, given its parts: read, judge, stage, decide, install.

The order is what makes a run safe to interrupt:

1. everything that can be wrong with the mapping, the dictionary or the source is found
   before the first row is read (the caller opens them);
2. rows are judged and staged in a scratch directory (bounded memory);
3. DuckDB decides what changes (``apply.decide``); a dry run stops here;
4. the links go to the outbox, then the lake files are installed: updates, rejects and,
   last, the ``member_imports`` row that commits the run and its new watermark.

A crash before 4 leaves nothing in the lake; a crash inside 4 leaves updates that a rerun
finds already held (the rerun changes nothing) and rejects the views hide until the run's
``member_imports`` row exists.
"""

from __future__ import annotations

import shutil
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import duckdb
import pyarrow as pa
import pyarrow.parquet as pq

from pipeline.contract.sql import path_literal
from pipeline.members import apply
from pipeline.members.importer import Judge, Staging
from pipeline.members.mapping import Mapping
from pipeline.members.outbox import Outbox
from pipeline.members.privacy import Withhold
from pipeline.members.sources import Source
from pipeline.members.times import iso

Installer = Callable[[list[tuple[Path, Path]]], None]
Sender = Callable[[], bool]  # sends the outbox; True when nothing is left in it
EncodeLinks = Callable[[list[tuple[str, str, int]]], list[bytes]]


@dataclass
class Report:
    run_id: str
    source: str
    dry_run: bool
    started: str
    finished: str = ""
    rows_read: int = 0
    rows_accepted: int = 0
    rows_rejected: int = 0
    rows_unchanged: int = 0
    rows_skipped: int = 0
    watermark: str | None = None
    previous_watermark: str | None = None
    fields_changed: int = 0
    members_new: int = 0
    changes_by_field: dict[str, int] = field(default_factory=dict)
    sample_changes: list[dict[str, Any]] = field(default_factory=list)
    rejects_by_rule: dict[str, int] = field(default_factory=dict)
    links: int = 0
    links_pending: bool = False
    rows_withheld: int = 0  # rows of deleted or suppressed persons, not stored (privacy)

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)

    def take(self, outcome: apply.Outcome) -> None:
        """What ``apply.decide`` found."""
        self.rows_unchanged = outcome.rows_unchanged
        self.fields_changed = outcome.fields_changed
        self.members_new = outcome.members_new
        self.changes_by_field = outcome.by_field
        self.sample_changes = outcome.sample


@dataclass
class Paths:
    lake: Path
    scratch: Path
    outbox: Outbox


def new_run_id(started_ms: int) -> str:
    stamp = datetime.fromtimestamp(started_ms / 1000, UTC).strftime("%Y%m%dT%H%M%S")
    return f"{stamp}-{uuid.uuid4().hex[:8]}"


def previous_watermark(con: duckdb.DuckDBPyConnection, source: str) -> int | None:
    row = con.execute(
        "SELECT epoch_ms(max(watermark)) FROM member_imports WHERE source = $s", {"s": source}
    ).fetchone()
    return int(row[0]) if row and row[0] is not None else None


def read_rows(source: Source, judge: Judge, staging: Staging, report: Report) -> None:
    for number, record in source.records():
        item = judge.judge(number, record)
        if item is None:
            report.rows_skipped += 1
            continue
        staging.add(item)
    staging.close()
    report.rows_accepted = staging.accepted
    report.rows_rejected = staging.rejected
    report.rows_read = report.rows_accepted + report.rows_rejected


def _day(ms: int) -> str:
    return datetime.fromtimestamp(ms / 1000, UTC).strftime("%Y-%m-%d")


def _imports_row(
    report: Report, mapping: Mapping, extra: dict[str, Any], schema: pa.Schema
) -> pa.Table:
    def ts(text: str | None) -> datetime | None:
        return datetime.fromisoformat(text.replace("Z", "+00:00")) if text else None

    row = {
        "run_id": report.run_id,
        "source": report.source,
        "started": ts(report.started),
        "finished": ts(report.finished),
        "rows_read": report.rows_read,
        "rows_accepted": report.rows_accepted,
        "rows_rejected": report.rows_rejected,
        "rows_unchanged": report.rows_unchanged,
        "rows_skipped": report.rows_skipped,
        "watermark": ts(report.watermark),
        "fields_changed": report.fields_changed,
        "members_new": report.members_new,
        "links": report.links,
        "links_pending": report.links_pending,
        "mapping": str(mapping.path) if mapping.path else None,
        **extra,
    }
    return pa.Table.from_pylist([row], schema=schema)


class LinkMessages:
    """The run's One ID links as identity.links messages; counts the links it gave."""

    def __init__(
        self, con: duckdb.DuckDBPyConnection, identity_fields: dict[str, str], encode: EncodeLinks
    ) -> None:
        self.con, self.identity_fields, self.encode = con, identity_fields, encode
        self.links = 0

    def __iter__(self) -> Iterator[bytes]:
        for chunk in apply.links(self.con, self.identity_fields):
            self.links += len(chunk)
            yield from self.encode(chunk)


def stage_links(
    con: duckdb.DuckDBPyConnection, identity_fields: dict[str, str], encode: EncodeLinks
) -> LinkMessages:
    return LinkMessages(con, identity_fields, encode)


def commit(
    con: duckdb.DuckDBPyConnection,
    report: Report,
    mapping: Mapping,
    paths: Paths,
    started_ms: int,
    extra: dict[str, Any],
    install: Installer,
    links: LinkMessages,
    send: Sender,
    schemas: tuple[pa.Schema, pa.Schema],
    quality: list[dict[str, Any]],
    privacy: Withhold | None = None,
) -> None:
    """Write the run to the lake in the order of the module doc, sending its links after
    the profile files are in place and before the run's ``member_imports`` row.

    ``privacy``: the updates and rejects are filtered through the purge list and installed
    under the deletions' lock (``pipeline.members.privacy``)."""
    from pipeline.names import (
        LAKE_MEMBER_IMPORTS,
        LAKE_MEMBER_QUALITY,
        LAKE_MEMBER_REJECTS,
        LAKE_PROFILE_CHANGES,
    )

    run, day = report.run_id, _day(started_ms)
    updates_tmp = paths.scratch / "out-updates.parquet"
    staged_updates = paths.scratch / "updates.parquet"
    apply.write_updates(con, staged_updates, updates_tmp, started_ms, report.source, run)
    rejects_tmp = paths.scratch / "out-rejects.parquet"
    con.execute(
        f"""COPY (SELECT $source AS source, "row", field, error_code, detail, rule, original,
                  user_id, person_id, $run AS run_id, NULL::VARCHAR AS event_id,
                  epoch_ms({started_ms})::TIMESTAMPTZ AS "at",
                  $processor AS processor_name, $version AS processor_version,
                  NULL::INTEGER AS source_partition, NULL::BIGINT AS source_offset,
                  NULL::INTEGER AS source_index
              FROM read_parquet({path_literal(paths.scratch / "rejects.parquet")}))
           TO {path_literal(rejects_tmp)} (FORMAT parquet, COMPRESSION zstd)""",
        {
            "source": report.source,
            "run": run,
            "processor": "trackflow members import",
            "version": extra.get("processor_version", ""),
        },
    )
    outbox_file, _ = paths.outbox.write(run, iter(links))
    report.links = links.links
    staged = [
        (
            updates_tmp,
            paths.lake / LAKE_PROFILE_CHANGES / f"recorded_date={day}" / f"import-{run}.parquet",
        )
    ]
    if report.rows_rejected:
        staged.append(
            (
                rejects_tmp,
                paths.lake / LAKE_MEMBER_REJECTS / f"rejected_date={day}" / f"import-{run}.parquet",
            )
        )
    if privacy is None:
        install(staged)
    else:
        with privacy.installing(con, [tmp for tmp, _ in staged]):
            install(staged)
    del outbox_file  # sent with any older pending files
    report.links_pending = not send()
    report.finished = iso(int(time.time() * 1000))
    imports_schema, quality_schema = schemas
    quality_tmp = paths.scratch / "out-quality.parquet"
    pq.write_table(pa.Table.from_pylist(quality, schema=quality_schema), quality_tmp)
    imports_tmp = paths.scratch / "out-import.parquet"
    pq.write_table(_imports_row(report, mapping, extra, imports_schema), imports_tmp)
    install([(quality_tmp, paths.lake / LAKE_MEMBER_QUALITY / f"{run}.parquet")])
    install([(imports_tmp, paths.lake / LAKE_MEMBER_IMPORTS / f"{run}.parquet")])


def cleanup(scratch: Path) -> None:
    shutil.rmtree(scratch, ignore_errors=True)
