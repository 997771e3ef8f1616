"""The ``trackflow`` command line (DESIGN section 4). Every option has a TRACKFLOW_* twin.

One module per command group; this module puts them on the root app in the order
``trackflow --help`` lists them. Commands import their heavy dependencies when they run.
"""

from __future__ import annotations

from pipeline.cli import (
    anomaly,
    backfill,
    collect,
    dlq,
    lake,
    members,
    metrics,
    privacy,
    query,
    report,
    schema,
    segments,
    services,
    traffic,
)
from pipeline.cli.app import cli

__all__ = ["cli", "main"]

for _command in (
    services.broker,
    services.worker,
    collect.collect,
    traffic.produce,
    backfill.backfill,
    traffic.simulate,
    query.query,
    services.demo,
):
    cli.command()(_command)
cli.add_typer(metrics.app, name="metrics")
cli.add_typer(schema.app, name="schema")
cli.add_typer(anomaly.app, name="anomaly")
cli.add_typer(report.app, name="report")
cli.add_typer(segments.app, name="segments")
cli.add_typer(dlq.app, name="dlq")
cli.add_typer(members.app, name="members")
cli.add_typer(lake.app, name="lake")
cli.add_typer(privacy.app, name="privacy")


def main() -> None:
    cli()
