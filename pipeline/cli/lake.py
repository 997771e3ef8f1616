"""``trackflow lake``: the lake's lifecycle, maintenance and stats (docs/lake-lifecycle.md)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from pipeline.cli.app import DataDir, SchemasDir, _opt, settings_from

app = typer.Typer(
    help="The Parquet lake: retention, compaction and what it holds.", no_args_is_help=True
)

Format = Annotated[str, _opt("FORMAT", "table | csv | json")]
Tables = Annotated[
    list[str] | None,
    _opt("LAKE_TABLE", "Only this table (repeat for several) [default: every table]"),
]


def _fail(command: str, message: str, code: int = 2) -> typer.Exit:
    typer.echo(f"trackflow lake {command}: {message}", err=True)
    return typer.Exit(code)


def _check_tables(command: str, tables: list[str] | None) -> None:
    from pipeline.lake.inventory import lake_tables

    unknown = sorted(set(tables or []) - lake_tables())
    if unknown:
        known = ", ".join(sorted(lake_tables()))
        raise _fail(command, f"unknown table {', '.join(unknown)} (known: {known})")


@app.command("maintain")
def maintain(
    data_dir: DataDir = None,
    schemas_dir: SchemasDir = None,
    retention: Annotated[
        Path | None,
        _opt("RETENTION", "Retention file [default: <schemas>/retention.json, else built-in]"),
    ] = None,
    target_rows: Annotated[
        int | None,
        _opt("LAKE_COMPACT_TARGET_ROWS", "Rows per compacted file [default: 1000000]"),
    ] = None,
    table: Tables = None,
    dry_run: Annotated[
        bool, _opt("LAKE_DRY_RUN", "Only report what would be deleted and merged")
    ] = False,
    format: Format = "table",
) -> None:
    """Delete what is past retention and merge small files; crash-safe, idempotent.

    Retention (schemas/retention.json) keeps days per table and per event name: the day
    partition D is deleted once D is before today minus the days (UTC), so the partition
    of exactly today minus the days is kept. Compaction merges the small files of each
    partition directory and source partition into files of about --target-rows rows,
    named by the source positions they hold, so the sinks' exactly-once replay still
    stores nothing twice. A kill at any moment leaves old or new files; the next run
    finishes the work. A query running across a rewrite's switch can fail ("Cannot open
    file": run it again) and, in a window of milliseconds, miss or double one partition's
    rows (docs/lake-lifecycle.md, Limits). A worker runs this every
    TRACKFLOW_LAKE_MAINTAIN_SECONDS (a day); a second run at the same time is refused.
    """
    from pipeline.cli.output import emit
    from pipeline.lake.maintain import REPORT_COLUMNS, MaintainBusy, load_rules, write_state
    from pipeline.lake.maintain import maintain as run
    from pipeline.lake.retention import RetentionError
    from pipeline.privacy.deletion import lake_guard

    if format not in ("table", "csv", "json"):
        raise _fail("maintain", "--format must be table, csv or json")
    _check_tables("maintain", table)
    settings = settings_from(
        data_dir=data_dir,
        schemas_dir=schemas_dir,
        retention=retention,
        lake_compact_target_rows=target_rows,
    )
    try:
        rules = load_rules(settings.retention, settings.schemas_dir)
    except RetentionError as exc:
        raise _fail("maintain", str(exc)) from None
    try:
        report = run(
            settings.lake_dir,
            rules,
            target_rows=settings.lake_compact_target_rows,
            tables=table,
            dry_run=dry_run,
            guard=lake_guard(settings.lake_dir),
        )
    except MaintainBusy as exc:
        raise _fail("maintain", str(exc), code=1) from None
    except (OSError, RuntimeError, ValueError) as exc:  # a disk error, a broken file
        if not dry_run:
            write_state(settings.lake_dir, ok=False, error=f"{type(exc).__name__}: {exc}")
        raise _fail(
            "maintain", f"failed, the next run resumes: {type(exc).__name__}: {exc}", 1
        ) from None
    if not dry_run:
        write_state(settings.lake_dir, ok=True)
    rows = [t.record() for t in sorted(report.tables.values(), key=lambda t: t.table)]
    emit(REPORT_COLUMNS, rows, format)


@app.command("stats")
def stats(
    data_dir: DataDir = None,
    table: Tables = None,
    format: Format = "table",
) -> None:
    """Files, bytes, rows, partitions, most files in one partition, oldest and newest day
    partition, per table (from the directory tree and Parquet footers)."""
    from pipeline.cli.output import emit
    from pipeline.lake.inventory import COLUMNS, lake_stats

    if format not in ("table", "csv", "json"):
        raise _fail("stats", "--format must be table, csv or json")
    _check_tables("stats", table)
    settings = settings_from(data_dir=data_dir)
    emit(COLUMNS, [s.record() for s in lake_stats(settings.lake_dir, table)], format)
