"""``trackflow dlq``: dead-letter statistics and replay (DESIGN section 17, docs/dlq-replay.md)."""

from __future__ import annotations

import sys
from typing import Annotated, Any

import typer

from pipeline.cli.app import Broker, DataDir, SchemasDir, TopicPrefix, _opt, settings_from

app = typer.Typer(help="Dead letters: statistics and replay after a fix.", no_args_is_help=True)

From = Annotated[
    str | None,
    typer.Option(
        "--from",
        envvar="TRACKFLOW_DLQ_FROM",
        show_envvar=True,
        help="received_at from, ISO 8601 (inclusive; UTC without an offset)",
    ),
]
To = Annotated[
    str | None,
    typer.Option(
        "--to",
        envvar="TRACKFLOW_DLQ_TO",
        show_envvar=True,
        help="received_at to, ISO 8601 (exclusive; UTC without an offset)",
    ),
]


def _fail(command: str, message: str, code: int = 2) -> typer.Exit:
    typer.echo(f"trackflow dlq {command}: {message}", err=True)
    return typer.Exit(code)


@app.command("stats")
def stats(
    from_: From = None,
    to: To = None,
    data_dir: DataDir = None,
    schemas_dir: SchemasDir = None,
    format: Annotated[str, _opt("FORMAT", "table | csv | json")] = "table",
) -> None:
    """Dead letters by error code, event and source, with how many were replayed."""
    from pipeline.cli.output import emit
    from pipeline.contract.plan import load_plan
    from pipeline.dlq.selection import STATS_COLUMNS, BadFilter, make_filters
    from pipeline.dlq.selection import stats as dlq_stats
    from pipeline.lake import views

    if format not in ("table", "csv", "json"):
        raise _fail("stats", "--format must be table, csv or json")
    try:
        filters = make_filters(since=from_, until=to)
    except BadFilter as exc:
        raise _fail("stats", str(exc)) from None
    settings = settings_from(data_dir=data_dir, schemas_dir=schemas_dir)
    con = views.connect(settings.data_dir, load_plan(settings.schemas_dir))
    emit(STATS_COLUMNS, dlq_stats(con, filters), format)


@app.command("replay")
def replay(
    code: Annotated[str | None, _opt("DLQ_CODE", "Only dead letters with this error code")] = None,
    event: Annotated[str | None, _opt("DLQ_EVENT", "Only dead letters of this event name")] = None,
    from_: From = None,
    to: To = None,
    dry_run: Annotated[
        bool, _opt("DLQ_DRY_RUN", "Count what would be replayed; send and write nothing")
    ] = False,
    broker: Broker = None,
    data_dir: DataDir = None,
    topic_prefix: TopicPrefix = None,
    schemas_dir: SchemasDir = None,
    format: Annotated[str, _opt("FORMAT", "table | json")] = "table",
) -> None:
    """Send matching dead letters back through validation, each at most once.

    Run it after the plan (or the bug) was fixed: what passes now is stored with its
    original event_id, what fails again becomes a new dead letter with replay_of. Exit 1
    when a send failed or is left in doubt."""
    from pipeline.contract.plan import load_plan
    from pipeline.dlq.kafka import BrokerUnavailable, KafkaBroker
    from pipeline.dlq.ledger import Ledger, LedgerBusy
    from pipeline.dlq.replay import Replay
    from pipeline.dlq.selection import BadFilter, make_filters
    from pipeline.dlq.suppression import load_suppressions
    from pipeline.lake import views
    from pipeline.names import TOPIC_RAW
    from pipeline.runtime.kafka_security import KafkaCluster, KafkaConfigError

    if format not in ("table", "json"):
        raise _fail("replay", "--format must be table or json")
    try:
        filters = make_filters(code, event, from_, to)
    except BadFilter as exc:
        raise _fail("replay", str(exc)) from None
    settings = settings_from(
        broker=broker, data_dir=data_dir, topic_prefix=topic_prefix, schemas_dir=schemas_dir
    )
    con = views.connect(settings.data_dir, load_plan(settings.schemas_dir))
    kafka = None
    try:
        if not dry_run:
            kafka = KafkaBroker(KafkaCluster.from_settings(settings))  # TLS/SASL settings
        job = Replay(
            con,
            Ledger(settings.lake_dir),
            kafka,
            settings.topic(TOPIC_RAW),
            load_suppressions(con, _privacy_requests(settings, dry_run)),
        )
        report = job.run(filters, dry_run)
    except KafkaConfigError as exc:
        raise _fail("replay", str(exc)) from None
    except (BrokerUnavailable, LedgerBusy) as exc:
        raise _fail("replay", str(exc), 1) from None
    finally:
        if kafka is not None:
            kafka.close()
    _print(report.as_dict(), format)
    if report.failed or job.unsettled:
        raise typer.Exit(1)


def _privacy_requests(settings: Any, dry_run: bool) -> list[Any]:
    """Every privacy request (suppressed persons are never replayed); none when the topic
    does not exist. A broker that cannot be read ends a replay (exit 1); a dry run goes
    on with a warning (it sends nothing, but may count suppressed persons' letters)."""
    from pipeline.names import TOPIC_LINKS, TOPIC_PRIVACY
    from pipeline.privacy.kafka import BrokerUnavailable, RequestLog
    from pipeline.runtime.kafka_security import KafkaCluster

    topic = settings.topic(TOPIC_PRIVACY)
    log = RequestLog(KafkaCluster.from_settings(settings), topic, settings.topic(TOPIC_LINKS))
    try:
        return log.read_all() if log.has_topic(topic) else []
    except BrokerUnavailable as exc:
        if not dry_run:
            raise _fail("replay", f"cannot read the privacy requests: {exc}", 1) from None
        typer.echo(f"trackflow dlq replay: privacy requests not read ({exc})", err=True)
        return []


def _print(report: dict[str, object], format: str) -> None:
    from pipeline.lake.views import to_json_object
    from pipeline.tools.console import print_table

    if format == "json":
        sys.stdout.write(to_json_object(report) + "\n")
        return
    title = "dlq replay (dry run: nothing sent)" if report["dry_run"] else "dlq replay"
    rows = [(k, v) for k, v in report.items() if k != "dry_run"]
    print_table(["outcome", "dead letters"], rows, title=title)
