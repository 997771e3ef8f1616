"""``trackflow query``: SQL over the Parquet lake."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from pipeline.cli.app import DataDir, _opt, settings_from


def query(
    sql: Annotated[str, typer.Argument(help="SQL over the views events, dlq, ...")],
    data_dir: DataDir = None,
    format: Annotated[str, _opt("FORMAT", "table | csv | json")] = "table",
    schemas_dir: Annotated[Path | None, _opt("SCHEMAS_DIR", "Tracking plan directory")] = None,
) -> None:
    """Run SQL with DuckDB over the Parquet lake."""
    import duckdb

    from pipeline.cli.output import emit
    from pipeline.contract.plan import load_plan
    from pipeline.lake import views as q

    if format not in ("table", "csv", "json"):
        typer.echo("trackflow query: --format must be table, csv or json", err=True)
        raise typer.Exit(2)
    settings = settings_from(data_dir=data_dir, schemas_dir=schemas_dir)
    con = q.connect(settings.data_dir, load_plan(settings.schemas_dir))
    try:
        columns, rows = q.run(con, sql)
    except duckdb.Error as exc:
        typer.echo(f"trackflow query: {exc}", err=True)
        raise typer.Exit(1) from None
    emit(columns, rows, format)
