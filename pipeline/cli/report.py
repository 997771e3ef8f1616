"""``trackflow report``: metric, funnel and identity-trail reports over the lake."""

from __future__ import annotations

import sys
from typing import Annotated

import typer

from pipeline.cli import analytics
from pipeline.cli.app import DataDir, _opt, settings_from
from pipeline.settings import MissingPiiKey

app = typer.Typer(help="Reports over the lake.", no_args_is_help=True)


@app.command("metric")
def report_metric(
    name: Annotated[str, typer.Argument(help="Metric name (trackflow metrics list)")],
    from_: Annotated[str, typer.Option("--from", help="Start, ISO 8601 (inclusive)")],
    to: Annotated[str, typer.Option("--to", help="End, ISO 8601 (exclusive)")],
    data_dir: DataDir = None,
    window: Annotated[str | None, _opt("REPORT_WINDOW", "Only this window (1m, 1h)")] = None,
    format: Annotated[str, _opt("FORMAT", "table | csv | json")] = "table",
) -> None:
    """A metric recomputed from the lake (events_resolved) with its definition's formula."""
    from datetime import datetime

    from pipeline.cli.output import emit
    from pipeline.contract.plan import load_plan
    from pipeline.lake import views as q
    from pipeline.metrics.definitions import load_metrics
    from pipeline.metrics.report import batch_values

    settings = settings_from(data_dir=data_dir)
    plan = load_plan(settings.schemas_dir)
    defs = load_metrics(plan, settings.schemas_dir)
    if name not in defs:
        typer.echo(f"trackflow report metric: unknown metric {name!r}", err=True)
        raise typer.Exit(2)
    try:
        lo, hi = datetime.fromisoformat(from_), datetime.fromisoformat(to)
    except ValueError as exc:
        typer.echo(f"trackflow report metric: {exc}", err=True)
        raise typer.Exit(2) from None
    con = q.connect(settings.data_dir, plan)
    rows = batch_values(con, defs, name, lo, hi)
    if window:
        rows = [r for r in rows if r["window"] == window]
    cols = ["metric", "window", "window_start", "window_end", "dimensions", "value"]
    cols += ["numerator", "denominator"]
    emit(cols, rows, format)


@app.command("funnel")
def report_funnel(
    from_: Annotated[str, typer.Option("--from", help="Start, ISO 8601 (inclusive)")],
    to: Annotated[str, typer.Option("--to", help="End, ISO 8601 (exclusive)")],
    name: Annotated[str, _opt("FUNNEL", "Funnel metric")] = "purchase_funnel",
    data_dir: DataDir = None,
    format: Annotated[str, _opt("FORMAT", "table | csv | json")] = "table",
) -> None:
    """Entries reaching each funnel step per hour, from the lake (events_resolved)."""
    report_metric(name, from_, to, data_dir=data_dir, window=None, format=format)


@app.command("trail")
def report_trail(
    identifier: Annotated[str, typer.Argument(help="user_id, anonymous_id, openid, phone, ...")],
    type: Annotated[
        str | None, _opt("TRAIL_TYPE", "Identifier type [default: try each, by priority]")
    ] = None,
    data_dir: DataDir = None,
    format: Annotated[str, _opt("FORMAT", "table | json")] = "table",
    limit: Annotated[int, _opt("TRAIL_LIMIT", "Most events to list")] = 1000,
) -> None:
    """A person's identifiers, merges and time-ordered events across all of them."""
    from pipeline.contract.pii import PiiHasher
    from pipeline.identity.rules import load_identity_rules
    from pipeline.identity.trail import PersonNotFound, build_trail
    from pipeline.lake import views as q

    if format not in ("table", "json"):
        typer.echo("trackflow report trail: --format must be table or json", err=True)
        raise typer.Exit(2)
    settings = settings_from(data_dir=data_dir)
    rules = load_identity_rules(settings.identity_rules)
    if type is not None and type not in rules.types:
        typer.echo(
            f"trackflow report trail: --type must be one of {', '.join(rules.types)}", err=True
        )
        raise typer.Exit(2)
    con = q.connect(settings.data_dir)
    try:
        hasher: PiiHasher | None = PiiHasher(settings.pii_key())
    except MissingPiiKey as exc:
        hasher = None  # hashes in the lake can still be looked up as they are
        typer.echo(
            f"trackflow report trail: {exc}; a phone or e-mail in clear is not hashed", err=True
        )
    try:
        trail = build_trail(con, rules, hasher, identifier, type, limit)
    except PersonNotFound as exc:
        typer.echo(f"trackflow report trail: {exc}", err=True)
        raise typer.Exit(1) from None
    if format == "json":
        from dataclasses import asdict

        sys.stdout.write(q.to_json_object(asdict(trail)) + "\n")
        return
    from pipeline.cli.output import print_trail

    print_trail(trail)


# User analytics (DESIGN 16); the commands live in pipeline/cli/analytics.py.
app.command("retention")(analytics.retention)
app.command("lifecycle")(analytics.lifecycle)
app.command("rfm")(analytics.rfm)
