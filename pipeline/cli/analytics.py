"""``trackflow report retention|lifecycle|rfm`` (DESIGN 16): user analytics over the lake.

Registered on the ``report`` group by ``pipeline.cli.report``. Bad input (an unknown event,
``--from`` after ``--to``, a time zone that does not exist, ...) ends with one line on
stderr and exit code 2, before anything is read or written.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Annotated, Any

import typer

from pipeline.cli.app import DataDir, _opt, settings_from

FORMATS = ("table", "csv", "json", "html")

Format = Annotated[str, _opt("FORMAT", "table | csv | json | html (one self-contained page)")]
Timezone = Annotated[
    str | None,
    _opt("TIMEZONE", "IANA time zone of days and weeks [default: Asia/Shanghai]"),
]
Period = Annotated[str, _opt("PERIOD", "day | week (weeks start on Monday, labelled by it)")]
SchemasDir = Annotated[Path | None, _opt("SCHEMAS_DIR", "Tracking plan directory")]
Export = Annotated[
    bool,
    _opt(
        "REPORT_EXPORT",
        "Also store the complete cells in the rollups table (Grafana shows them)",
    ),
]
From = Annotated[
    str,
    typer.Option(
        "--from",
        envvar="TRACKFLOW_REPORT_FROM",
        show_envvar=True,
        help="First local date YYYY-MM-DD (inclusive)",
    ),
]
To = Annotated[
    str,
    typer.Option(
        "--to",
        envvar="TRACKFLOW_REPORT_TO",
        show_envvar=True,
        help="Last local date YYYY-MM-DD (inclusive)",
    ),
]


@contextmanager
def refusals(command: str, prefix: str = "trackflow report") -> Iterator[None]:
    """Bad input becomes one line on stderr and exit code 2."""
    from pipeline.analytics.calendar import BadInput
    from pipeline.analytics.segments import SegmentRulesError

    try:
        yield
    except (BadInput, SegmentRulesError) as exc:
        typer.echo(f"{prefix} {command}: {exc}", err=True)
        raise typer.Exit(2) from None


def _check_format(command: str, fmt: str) -> None:
    if fmt not in FORMATS:
        typer.echo(f"trackflow report {command}: --format must be {', '.join(FORMATS)}", err=True)
        raise typer.Exit(2)


def _show(kind: str, columns: list[str], rows: list[dict[str, Any]], fmt: str, meta: Any) -> None:
    if fmt == "html":
        import sys

        from pipeline.analytics.html import page

        sys.stdout.write(page(kind, rows, meta))
        return
    from pipeline.cli.output import emit

    emit(columns, rows, fmt)


def _export(con: Any, lake_dir: Path, rollups: list[dict[str, Any]]) -> None:
    from pipeline.analytics.export import write_rollups

    n = write_rollups(con, lake_dir, rollups)
    typer.echo(f"exported {n} new rollups ({len(rollups)} complete cells)", err=True)


def _run(command: str, fmt: str, body: Callable[[], None]) -> None:
    _check_format(command, fmt)
    with refusals(command):
        body()


def retention(
    cohort_event: Annotated[
        str, _opt("COHORT_EVENT", "Event that puts a person in a cohort (first one in range)")
    ],
    return_event: Annotated[str, _opt("RETURN_EVENT", "Event that counts as coming back")],
    from_: From,
    to: To,
    period: Period = "day",
    mode: Annotated[
        str, _opt("RETENTION_MODE", "n-day: in period cohort+k; unbounded: in cohort+k or later")
    ] = "n-day",
    periods: Annotated[
        int | None, _opt("PERIODS", "N: rows k = 0..N-1 per cohort [default: periods in range]")
    ] = None,
    timezone: Timezone = None,
    data_dir: DataDir = None,
    schemas_dir: SchemasDir = None,
    format: Format = "table",
    export: Export = False,
) -> None:
    """Cohort retention: rows {cohort, size, k, retained, complete} (docs/analytics.md).

    A person belongs to the cohort of the period of their first cohort-event in the range
    (local dates --from..--to, inclusive). retained(k): cohort persons with a return-event
    in period cohort+k (n-day) or in any period >= cohort+k (unbounded); period 0 counts a
    return-event before the cohort event too. The range chooses the cohort events only:
    a return after --to still counts in its period. complete is false while period
    cohort+k has not ended yet (its retained can still grow).
    Every cohort period of the range has its N rows, zeros when empty. --export also
    stores the complete cells in rollups (metric retention) for Grafana.
    """

    def body() -> None:
        from pipeline.analytics.calendar import Calendar, parse_date
        from pipeline.analytics.retention import COLUMNS, RetentionQuery
        from pipeline.analytics.retention import retention as compute
        from pipeline.contract.plan import load_plan
        from pipeline.lake import views

        settings = settings_from(data_dir=data_dir, schemas_dir=schemas_dir, timezone=timezone)
        cal = Calendar(settings.timezone, period)  # type: ignore[arg-type]
        q = RetentionQuery(
            cohort_event,
            return_event,
            parse_date(from_, "--from"),
            parse_date(to, "--to"),
            cal,
            mode,  # type: ignore[arg-type]
            periods,
        )
        plan = load_plan(settings.schemas_dir)
        q.check(plan.latest)
        con = views.connect(settings.data_dir, plan)
        rows = compute(con, q, cal.today())
        if export:
            from pipeline.analytics.export import retention_rollups

            _export(con, settings.lake_dir, retention_rollups(rows, q))
        _show("retention", COLUMNS, rows, format, q)

    _run("retention", format, body)


def lifecycle(
    from_: From,
    to: To,
    period: Period = "day",
    timezone: Timezone = None,
    data_dir: DataDir = None,
    schemas_dir: SchemasDir = None,
    format: Format = "table",
    export: Export = False,
) -> None:
    """Per period: new, returning, resurrecting and dormant persons (docs/analytics.md).

    new: first event ever in the period; returning: active in the previous period too;
    resurrecting: active, not in the previous period, not new; dormant: active in the
    previous period, not in this one (counted once, in the first period missed). History
    before --from counts; events after --to are not read. Empty periods are rows of zeros.
    --export also stores the ended periods in rollups (metric lifecycle) for Grafana.
    """

    def body() -> None:
        from pipeline.analytics.calendar import Calendar, parse_date
        from pipeline.analytics.lifecycle import COLUMNS
        from pipeline.analytics.lifecycle import lifecycle as compute
        from pipeline.contract.plan import load_plan
        from pipeline.lake import views

        settings = settings_from(data_dir=data_dir, schemas_dir=schemas_dir, timezone=timezone)
        cal = Calendar(settings.timezone, period)  # type: ignore[arg-type]
        lo, hi = parse_date(from_, "--from"), parse_date(to, "--to")
        con = views.connect(settings.data_dir, load_plan(settings.schemas_dir))
        rows = compute(con, cal, lo, hi)
        if export:
            from pipeline.analytics.export import lifecycle_rollups

            _export(con, settings.lake_dir, lifecycle_rollups(rows, cal, hi, cal.today()))
        _show("lifecycle", COLUMNS, rows, format, cal)

    _run("lifecycle", format, body)


def rfm(
    as_of: Annotated[str, _opt("AS_OF", "Last local date of the window YYYY-MM-DD")],
    days: Annotated[int, _opt("RFM_DAYS", "Window: this many local days up to --as-of")] = 365,
    timezone: Timezone = None,
    data_dir: DataDir = None,
    schemas_dir: SchemasDir = None,
    format: Format = "table",
) -> None:
    """Recency, frequency, monetary per paying person, scored 1-5, with a segment.

    Window: the --days local days ending with --as-of, both included. Per person with a
    pay_success in it: recency_days (--as-of minus the day of the last pay_success),
    frequency (distinct order_id), monetary (sum of amount); score = 1 + floor(5 * (rank -
    1) / n), rank 1 the worst value, ties sharing the lowest rank; segment by the rules
    of schemas/segments/rfm.json (first match wins).
    """

    def body() -> None:
        from pipeline.analytics.calendar import Calendar, parse_date
        from pipeline.analytics.rfm import COLUMNS
        from pipeline.analytics.rfm import rfm as compute
        from pipeline.analytics.segments import load_segment_rules, segments_file
        from pipeline.contract.plan import default_schemas_dir, load_plan
        from pipeline.lake import views

        settings = settings_from(data_dir=data_dir, schemas_dir=schemas_dir, timezone=timezone)
        cal = Calendar(settings.timezone)
        day = parse_date(as_of, "--as-of")
        rules = load_segment_rules(segments_file(settings.schemas_dir or default_schemas_dir()))
        con = views.connect(settings.data_dir, load_plan(settings.schemas_dir))
        rows = compute(con, cal, rules, day, days)
        _show("rfm", COLUMNS, rows, format, rules)

    _run("rfm", format, body)
