"""The ``trackflow`` command line (DESIGN section 4). Every option has a TRACKFLOW_* twin."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated, Any

import typer

from pipeline.settings import Settings

cli = typer.Typer(
    name="trackflow",
    help="Real-time tracking-event pipeline: validate, stitch, aggregate, detect, store.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)


def _opt(env: str, help: str, **kw: Any) -> Any:
    return typer.Option(envvar=f"TRACKFLOW_{env}", help=help, show_envvar=True, **kw)


Broker = Annotated[str | None, _opt("BROKER", "Kafka URL [default: kafka://127.0.0.1:9092]")]
DataDir = Annotated[Path | None, _opt("DATA_DIR", "Lake and state directory [default: ./data]")]
AppId = Annotated[str | None, _opt("APP_ID", "Consumer group / app id [default: trackflow]")]
TopicPrefix = Annotated[str | None, _opt("TOPIC_PREFIX", "Prefix of every topic name")]
Partitions = Annotated[int | None, _opt("PARTITIONS", "Partitions of events.raw when created")]


def settings_from(**given: Any) -> Settings:
    """Flags override TRACKFLOW_* env vars, which override defaults."""
    return Settings(**{k: v for k, v in given.items() if v is not None})


@cli.command()
def broker(
    host: Annotated[str, _opt("BROKER_HOST", "Interface to listen on")] = "127.0.0.1",
    port: Annotated[int, _opt("BROKER_PORT", "Port to listen on")] = 9092,
) -> None:
    """Run the embedded Kafka-compatible broker (Tansu, in memory) in the foreground."""
    from pipeline.tools.broker import BrokerNotFound, run_foreground

    try:
        code = run_foreground(host, port)
    except BrokerNotFound as exc:
        typer.echo(f"trackflow broker: {exc}", err=True)
        raise typer.Exit(2) from None
    raise typer.Exit(code)


@cli.command()
def worker(
    broker: Broker = None,
    data_dir: DataDir = None,
    web_port: Annotated[int | None, _opt("WEB_PORT", "Port of /metrics [default: 6066]")] = None,
    web_host: Annotated[str | None, _opt("WEB_HOST", "Bind address of /metrics")] = None,
    app_id: AppId = None,
    topic_prefix: TopicPrefix = None,
    partitions: Partitions = None,
    schemas_dir: Annotated[Path | None, _opt("SCHEMAS_DIR", "Tracking plan directory")] = None,
    log_level: Annotated[str | None, _opt("LOG_LEVEL", "Log level [default: info]")] = None,
    stages: Annotated[
        str | None, _opt("STAGES", "full (default) or ingest (validate + sink only)")
    ] = None,
) -> None:
    """Run all agents in one Faust worker; several workers share the work."""
    settings = settings_from(
        broker=broker,
        data_dir=data_dir,
        web_port=web_port,
        web_host=web_host,
        app_id=app_id,
        topic_prefix=topic_prefix,
        partitions=partitions,
        schemas_dir=schemas_dir,
        log_level=log_level,
        stages=stages,
    )
    from pipeline.worker import run_worker

    run_worker(settings)


@cli.command()
def produce(
    file: Annotated[str, typer.Argument(help="JSON-lines file, or - for stdin")],
    broker: Broker = None,
    topic: Annotated[str, _opt("TOPIC", "Topic to send to")] = "events.raw",
    topic_prefix: TopicPrefix = None,
    partitions: Partitions = None,
) -> None:
    """Send JSON lines (one event object or one JSON array batch per line)."""
    from pipeline.runtime.kafka_admin import ensure_topic
    from pipeline.tools.produce import RawProducer, open_input, produce_lines, read_lines

    settings = settings_from(broker=broker, topic_prefix=topic_prefix, partitions=partitions)
    name = settings.topic(topic)
    ensure_topic(settings.bootstrap_servers, name, settings.partitions)
    producer = RawProducer(settings.bootstrap_servers, name)
    try:
        with open_input(file) as stream:
            stats = produce_lines(producer, read_lines(stream))
    except OSError as exc:
        typer.echo(f"trackflow produce: {exc}", err=True)
        raise typer.Exit(2) from None
    typer.echo(f"sent {stats.messages} messages ({stats.bytes} bytes) to {name}", err=True)
    if stats.failed:
        for err in producer.errors:
            typer.echo(f"  error: {err}", err=True)
        typer.echo(f"{stats.failed} messages failed", err=True)
        raise typer.Exit(1)


@cli.command()
def simulate(
    rate: Annotated[float, _opt("SIM_RATE", "Events per second")] = 50.0,
    duration: Annotated[float, _opt("SIM_DURATION", "Seconds of traffic")] = 60.0,
    seed: Annotated[int, _opt("SIM_SEED", "Random seed")] = 1,
    broker: Broker = None,
    topic_prefix: TopicPrefix = None,
    partitions: Partitions = None,
    outage_start: Annotated[
        float | None, _opt("SIM_OUTAGE_START", "Seconds in when a payment outage begins")
    ] = None,
    outage_minutes: Annotated[float, _opt("SIM_OUTAGE_MINUTES", "Outage length")] = 0.0,
    outage_success_rate: Annotated[
        float, _opt("SIM_OUTAGE_SUCCESS_RATE", "Pay success rate in the outage")
    ] = 0.3,
    malformed_share: Annotated[float, _opt("SIM_MALFORMED_SHARE", "Share of bad messages")] = 0.0,
    duplicate_share: Annotated[float, _opt("SIM_DUPLICATE_SHARE", "Share of SDK retries")] = 0.0,
    fast: Annotated[
        bool, _opt("SIM_FAST", "Send as fast as possible (event time still paced)")
    ] = False,
    start_ms: Annotated[int | None, _opt("SIM_START_MS", "Event-time start, epoch ms")] = None,
) -> None:
    """Produce realistic mini-program e-commerce traffic to events.raw."""
    from pipeline.runtime.kafka_admin import ensure_topic
    from pipeline.tools.produce import RawProducer
    from pipeline.tools.simulation_run import run_simulation
    from pipeline.tools.simulator import SimConfig

    settings = settings_from(broker=broker, topic_prefix=topic_prefix, partitions=partitions)
    name = settings.topic("events.raw")
    ensure_topic(settings.bootstrap_servers, name, settings.partitions)
    config = SimConfig(
        rate=rate,
        duration=duration,
        seed=seed,
        start_ms=start_ms,
        outage_start=outage_start,
        outage_minutes=outage_minutes,
        outage_success_rate=outage_success_rate,
        malformed_share=malformed_share,
        duplicate_share=duplicate_share,
    )
    producer = RawProducer(settings.bootstrap_servers, name)
    summary = run_simulation(producer, config, paced=not fast)
    typer.echo(summary.describe(), err=True)
    if producer.stats.failed:
        raise typer.Exit(1)


@cli.command()
def query(
    sql: Annotated[str, typer.Argument(help="SQL over the views events, dlq, ...")],
    data_dir: DataDir = None,
    format: Annotated[str, _opt("FORMAT", "table | csv | json")] = "table",
    schemas_dir: Annotated[Path | None, _opt("SCHEMAS_DIR", "Tracking plan directory")] = None,
) -> None:
    """Run SQL with DuckDB over the Parquet lake."""
    import duckdb

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
    if format == "json":
        sys.stdout.write(q.to_json(columns, rows) + "\n")
    elif format == "csv":
        sys.stdout.write(q.to_csv(columns, rows))
    else:
        from pipeline.cli.output import print_table

        print_table(columns, rows)


metrics_cli = typer.Typer(help="Business metrics defined under schemas/metrics.")
cli.add_typer(metrics_cli, name="metrics")
schema_cli = typer.Typer(help="Tracking-plan tools.")
cli.add_typer(schema_cli, name="schema")
SchemasDir = Annotated[Path | None, _opt("SCHEMAS_DIR", "Schemas directory [default: built-in]")]


@metrics_cli.command("list")
def metrics_list(
    schemas_dir: SchemasDir = None,
    format: Annotated[str, _opt("FORMAT", "table | json")] = "table",
) -> None:
    """Every metric with its type, owner, windows and the events and fields it reads."""
    from pipeline.contract.plan import load_plan
    from pipeline.lake import views as q
    from pipeline.metrics.definitions import lineage, load_metrics

    settings = settings_from(schemas_dir=schemas_dir)
    plan = load_plan(settings.schemas_dir)
    defs = load_metrics(plan, settings.schemas_dir)
    rows = []
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
    if format == "json":
        sys.stdout.write(q.to_json_object(rows) + "\n")
        return
    from pipeline.cli.output import print_table

    cols = ["metric", "type", "owner", "windows", "dimensions", "events", "fields"]
    print_table(cols, [tuple(r[c] for c in cols) for r in rows])


@schema_cli.command("check")
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


anomaly_cli = typer.Typer(help="Anomaly detectors, offline.", no_args_is_help=True)
cli.add_typer(anomaly_cli, name="anomaly")


@anomaly_cli.command("score")
def anomaly_score(
    input: Annotated[Path, typer.Option("--input", help="CSV with timestamp,value[,volume]")],
    output: Annotated[Path, typer.Option("--output", help="CSV to write (- for stdout)")],
    rule: Annotated[str | None, typer.Option("--rule", help="An alert rule's detector")] = None,
    detector: Annotated[
        str | None, typer.Option("--detector", help="threshold | relative_drop | adaptive")
    ] = None,
    param: Annotated[
        list[str] | None, typer.Option("--param", help="Detector parameter NAME=VALUE")
    ] = None,
    sustain: Annotated[int, typer.Option(help="Anomalous points in a row to fire")] = 1,
    recover: Annotated[int, typer.Option(help="Normal points in a row to resolve")] = 3,
    schemas_dir: SchemasDir = None,
) -> None:
    """Score a recorded series with the detect stage's own code: timestamp,value,score,alert."""
    import orjson

    from pipeline.alerting.rules import RuleError, load_rules
    from pipeline.alerting.scoring import ad_hoc_rule, score_csv

    if (rule is None) == (detector is None):
        typer.echo("trackflow anomaly score: give exactly one of --rule and --detector", err=True)
        raise typer.Exit(2)
    try:
        if rule is not None:
            rules = load_rules(schemas_dir)
            if rule not in rules:
                raise RuleError(f"unknown rule {rule!r}; known: {', '.join(sorted(rules))}")
            chosen = rules[rule]
        else:
            params = {}
            for item in param or []:
                key, sep, raw = item.partition("=")
                if not sep:
                    raise RuleError(f"--param {item!r} is not NAME=VALUE")
                try:
                    params[key] = orjson.loads(raw)
                except orjson.JSONDecodeError:
                    params[key] = raw
            chosen = ad_hoc_rule(str(detector), params, sustain, recover)
            chosen.new_detector()
        with open(input, newline="") as src:
            if str(output) == "-":
                n = score_csv(chosen, src, sys.stdout)
            else:
                with open(output, "w", newline="") as dst:
                    n = score_csv(chosen, src, dst)
    except (RuleError, ValueError, TypeError, OSError) as exc:
        typer.echo(f"trackflow anomaly score: {exc}", err=True)
        raise typer.Exit(2) from None
    typer.echo(f"scored {n} rows", err=True)


report = typer.Typer(help="Reports over the lake.", no_args_is_help=True)
cli.add_typer(report, name="report")


@report.command("metric")
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
    if format == "json":
        sys.stdout.write(q.to_json_object(rows) + "\n")
    elif format == "csv":
        sys.stdout.write(q.to_csv(cols, [tuple(r[c] for c in cols) for r in rows]))
    else:
        from pipeline.cli.output import print_table

        print_table(cols, [tuple(r[c] for c in cols) for r in rows])


@report.command("funnel")
def report_funnel(
    from_: Annotated[str, typer.Option("--from", help="Start, ISO 8601 (inclusive)")],
    to: Annotated[str, typer.Option("--to", help="End, ISO 8601 (exclusive)")],
    name: Annotated[str, _opt("FUNNEL", "Funnel metric")] = "purchase_funnel",
    data_dir: DataDir = None,
    format: Annotated[str, _opt("FORMAT", "table | csv | json")] = "table",
) -> None:
    """Entries reaching each funnel step per hour, from the lake (events_resolved)."""
    report_metric(name, from_, to, data_dir=data_dir, window=None, format=format)


@report.command("trail")
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
    from pipeline.identity.rules import load_rules
    from pipeline.identity.trail import PersonNotFound, build_trail
    from pipeline.lake import views as q

    if format not in ("table", "json"):
        typer.echo("trackflow report trail: --format must be table or json", err=True)
        raise typer.Exit(2)
    settings = settings_from(data_dir=data_dir)
    rules = load_rules(settings.identity_rules)
    if type is not None and type not in rules.types:
        typer.echo(
            f"trackflow report trail: --type must be one of {', '.join(rules.types)}", err=True
        )
        raise typer.Exit(2)
    con = q.connect(settings.data_dir)
    hasher = PiiHasher(settings.pii_secret.get_secret_value())
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


@cli.command()
def demo(
    duration: Annotated[float, _opt("DEMO_DURATION", "Seconds of simulated traffic")] = 30.0,
    rate: Annotated[float, _opt("DEMO_RATE", "Events per second")] = 200.0,
    data_dir: DataDir = None,
    port: Annotated[
        int | None, _opt("DEMO_BROKER_PORT", "Broker port [default: free port]")
    ] = None,
    web_port: Annotated[int | None, _opt("WEB_PORT", "Worker /metrics port")] = None,
) -> None:
    """Embedded broker + worker + simulator in one command; prints a summary."""
    from pipeline.tools.demo import run_demo

    settings = settings_from(data_dir=data_dir, web_port=web_port)
    raise typer.Exit(run_demo(settings, duration=duration, rate=rate, port=port))


def main() -> None:
    cli()


if __name__ == "__main__":
    main()
