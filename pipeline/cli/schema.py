"""``trackflow schema``: tracking-plan tools."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from pipeline.cli.app import _opt

app = typer.Typer(help="Tracking-plan tools.")


@app.command("check")
def schema_check(
    base: Annotated[
        str, _opt("SCHEMA_BASE", "Base: a git revision or a schemas directory")
    ] = "HEAD~1",
    schemas_dir: Annotated[Path, _opt("SCHEMAS_CHECK_DIR", "Schemas directory to check")] = Path(
        "schemas"
    ),
) -> None:
    """Fail when a plan change breaks a metric (naming it and its owner) or Avro readers."""
    from pipeline.tools.schema_check import check_against

    report, what = check_against(schemas_dir, base)
    if report is None:
        typer.echo(f"trackflow schema check: skipped: {what}", err=True)
        return
    if report.ok:
        typer.echo(f"schema check: OK against {what}", err=True)
        return
    for problem in report.problems:
        typer.echo(f"schema check: {problem}", err=True)
    typer.echo(f"schema check: {len(report.problems)} problem(s) against {what}", err=True)
    raise typer.Exit(1)
