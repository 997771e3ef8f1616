"""``trackflow segments build``: the ``person_tags`` lake table (DESIGN 16)."""

from __future__ import annotations

from typing import Annotated

import typer

from pipeline.cli.analytics import Period, SchemasDir, Timezone, refusals
from pipeline.cli.app import DataDir, _opt, settings_from

app = typer.Typer(help="Person segments and tags over the lake.", no_args_is_help=True)


@app.command("build")
def build(
    as_of: Annotated[
        str | None, _opt("AS_OF", "Local date the tags describe YYYY-MM-DD [default: today]")
    ] = None,
    period: Period = "week",
    days: Annotated[int, _opt("RFM_DAYS", "RFM window: local days up to --as-of")] = 365,
    timezone: Timezone = None,
    data_dir: DataDir = None,
    schemas_dir: SchemasDir = None,
) -> None:
    """Write person_tags: per person, lifecycle stage, RFM segment, first and last seen,
    orders, GMV and repurchase (two or more orders), from events up to the end of --as-of.

    lifecycle_stage is new, returning or resurrecting when active in the period holding
    --as-of, dormant when active only in the period before, inactive otherwise;
    rfm_segment (with r, f, m) is report rfm's for the same --as-of and --days, empty
    without a pay_success in that window; orders and GMV count every pay_success up to
    --as-of. Each build replaces the table whole (docs/analytics.md).
    """
    from pipeline.analytics.calendar import Calendar, parse_date
    from pipeline.analytics.segments import load_segment_rules, segments_file
    from pipeline.analytics.tags import build_tags
    from pipeline.contract.plan import default_schemas_dir, load_plan
    from pipeline.lake import views

    with refusals("segments build", prefix="trackflow"):
        settings = settings_from(data_dir=data_dir, schemas_dir=schemas_dir, timezone=timezone)
        cal = Calendar(settings.timezone, period)  # type: ignore[arg-type]
        day = parse_date(as_of, "--as-of") if as_of else cal.today()
        rules = load_segment_rules(segments_file(settings.schemas_dir or default_schemas_dir()))
        con = views.connect(settings.data_dir, load_plan(settings.schemas_dir))
        n = build_tags(con, settings.lake_dir, cal, rules, day, days)
    typer.echo(f"person_tags: {n} persons as of {day.isoformat()} ({settings.timezone})", err=True)
