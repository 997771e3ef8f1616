"""``trackflow members``: import member data into profiles, and report its quality
(DESIGN section 14, docs/members.md)."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated, Any

import typer

from pipeline.cli.app import Broker, DataDir, Dev, SchemasDir, TopicPrefix, _opt, settings_from

app = typer.Typer(
    help="Member data: import CRM members into profiles, report data quality.",
    no_args_is_help=True,
)


def _fail(command: str, message: str, code: int = 2) -> typer.Exit:
    typer.echo(f"trackflow members {command}: {message}", err=True)
    return typer.Exit(code)


@app.command("import")
def import_(
    source: Annotated[
        str,
        typer.Argument(
            help="CSV or JSON-lines file, - for stdin, or a database URL "
            "(sqlite:///path, postgresql://user@host/db) with --query"
        ),
    ],
    mapping: Annotated[
        Path, _opt("MEMBERS_MAPPING", "Mapping file (JSON): source, key, incremental, fields")
    ],
    query: Annotated[
        str | None, _opt("MEMBERS_QUERY", "SQL whose rows are the members (database sources)")
    ] = None,
    dry_run: Annotated[
        bool, _opt("MEMBERS_DRY_RUN", "Report what would change; write and send nothing")
    ] = False,
    input_format: Annotated[
        str,
        _opt(
            "MEMBERS_FORMAT", "auto (by extension, else sniffed), csv or jsonl", show_default=True
        ),
    ] = "auto",
    encoding: Annotated[
        str, _opt("MEMBERS_ENCODING", "Text encoding of the file (e.g. gbk)", show_default=True)
    ] = "utf-8-sig",
    broker: Broker = None,
    data_dir: DataDir = None,
    topic_prefix: TopicPrefix = None,
    schemas_dir: SchemasDir = None,
    dev: Dev = None,
    format: Annotated[str, _opt("FORMAT", "json | table")] = "json",
) -> None:
    """Import members into profiles (DESIGN 14, docs/members.md).

    Rows are checked against the profile dictionary; a bad row is rejected whole
    (member_rejects), good rows apply by their own time. Prints what changed as JSON.

    --dry-run reports what would change and writes nothing.

    A wrong mapping, dictionary or source: one line, exit 2, nothing written.

    With an incremental column only rows newer than the source's watermark are read.

    One ID links go to the identity writer; links the broker cannot take wait in the
    outbox for the next import or a worker."""
    from pipeline.cli import member_import

    if format not in ("json", "table"):
        raise _fail("import", "--format must be json or table")
    settings = settings_from(
        broker=broker,
        data_dir=data_dir,
        topic_prefix=topic_prefix,
        schemas_dir=schemas_dir,
        dev=dev,
    )
    try:
        report = member_import.run(
            settings, source, mapping, query, dry_run, input_format, encoding
        )
    except member_import.ImportFailed as exc:
        raise _fail("import", str(exc), exc.code) from None
    _print_report(report, format)
    if report.get("links_pending") and not dry_run:
        typer.echo(
            "trackflow members import: One ID links not sent yet (broker unavailable or no "
            "worker has created identity.links); kept in the outbox for the next import",
            err=True,
        )


def _print_report(report: dict[str, Any], output: str) -> None:
    from pipeline.lake import views

    if output == "json":
        sys.stdout.write(views.to_json_object(report) + "\n")
        return
    from pipeline.cli.output import emit

    rows = [(k, v) for k, v in report.items() if not isinstance(v, list | dict)]
    rows += [(f"changed.{k}", v) for k, v in report.get("changes_by_field", {}).items()]
    rows += [(f"rejected.{k}", v) for k, v in report.get("rejects_by_rule", {}).items()]
    emit(["item", "value"], rows, "table")


@app.command("report")
def report(
    source: Annotated[str | None, _opt("MEMBERS_SOURCE", "Only this source")] = None,
    data_dir: DataDir = None,
    schemas_dir: SchemasDir = None,
    format: Annotated[str, _opt("FORMAT", "table | json")] = "table",
) -> None:
    """Data quality per source: null rate of every field, values of enum fields, drift
    against the previous import, rule violations of the latest import."""
    from pipeline.cli import member_import

    if format not in ("json", "table"):
        raise _fail("report", "--format must be table or json")
    settings = settings_from(data_dir=data_dir, schemas_dir=schemas_dir)
    result = member_import.quality(settings, source)
    if not result["sources"]:
        raise _fail(
            "report", "no member import found" + (f" of source {source}" if source else ""), 1
        )
    if format == "json":
        from pipeline.lake import views

        sys.stdout.write(views.to_json_object(result) + "\n")
        return
    member_import.print_quality(result)
