"""``trackflow metrics``: the business metrics defined under schemas/metrics."""

from __future__ import annotations

from typing import Annotated, Any

import typer

from pipeline.cli.app import SchemasDir, _opt, settings_from

app = typer.Typer(help="Business metrics defined under schemas/metrics.")


@app.command("list")
def metrics_list(
    schemas_dir: SchemasDir = None,
    format: Annotated[str, _opt("FORMAT", "table | json")] = "table",
) -> None:
    """Every metric with its type, owner, windows and the events and fields it reads."""
    from pipeline.cli.output import emit
    from pipeline.contract.plan import load_plan
    from pipeline.metrics.definitions import lineage, load_metrics

    settings = settings_from(schemas_dir=schemas_dir)
    plan = load_plan(settings.schemas_dir)
    defs = load_metrics(plan, settings.schemas_dir)
    rows: list[dict[str, Any]] = []
    for name, d in sorted(defs.items()):
        events, fields = lineage(defs, name)
        rows.append(
            {
                "metric": name,
                "type": d.type,
                "owner": d.owner,
                "windows": ",".join(d.windows),
                "dimensions": ",".join(d.dimensions),
                "events": ",".join(events),
                "fields": ",".join(f"{e}.{f}" for e, f in fields),
                "description": d.description,
            }
        )
    # The table leaves out the description, which json carries; this command has no csv,
    # and every --format but json has always printed the table.
    cols = ["metric", "type", "owner", "windows", "dimensions", "events", "fields"]
    emit(cols, rows, "json" if format == "json" else "table")
