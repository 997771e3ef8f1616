"""Long-running processes: ``trackflow broker``, ``trackflow worker`` and ``trackflow demo``."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Annotated

import typer

from pipeline.cli.app import (
    AppId,
    Broker,
    DataDir,
    LogFormat,
    Partitions,
    TopicPrefix,
    _opt,
    settings_from,
)


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
    log_format: LogFormat = None,
    stages: Annotated[
        str | None, _opt("STAGES", "full (default) or ingest (validate + sink only)")
    ] = None,
    dev: Annotated[
        bool | None,
        _opt("DEV", "Development run: without TRACKFLOW_PII_SECRET, generate a key per data dir"),
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
        log_format=log_format,
        stages=stages,
        dev=dev,
    )
    from pipeline.lake.maintain import load_rules
    from pipeline.lake.retention import RetentionError
    from pipeline.runtime.kafka_security import KafkaCluster, KafkaConfigError
    from pipeline.settings import MissingPiiKey
    from pipeline.worker import run_worker

    try:  # refuse before joining the group, with a message, not a trace
        settings.pii_key()
        KafkaCluster.from_settings(settings)  # loads the TLS files
        if settings.lake_maintain_seconds > 0:
            load_rules(settings.retention, settings.schemas_dir)  # the daily run would fail
    except (MissingPiiKey, KafkaConfigError, RetentionError) as exc:
        if settings.log_format == "json":
            from pipeline.runtime import logs

            logs.setup("json")
            logging.getLogger("trackflow.worker").critical("refusing to start: %s", exc)
        else:
            typer.echo(f"trackflow worker: {exc}", err=True)
        raise typer.Exit(2) from None
    run_worker(settings)


def demo(
    duration: Annotated[float, _opt("DEMO_DURATION", "Seconds of simulated traffic")] = 30.0,
    rate: Annotated[float, _opt("DEMO_RATE", "Events per second")] = 200.0,
    data_dir: DataDir = None,
    port: Annotated[
        int | None, _opt("DEMO_BROKER_PORT", "Broker port [default: free port]")
    ] = None,
    web_port: Annotated[int | None, _opt("WEB_PORT", "Worker /metrics port")] = None,
    via: Annotated[
        str, _opt("DEMO_VIA", "kafka, or http: a collector too, traffic as Segment calls")
    ] = "kafka",
) -> None:
    """Embedded broker + worker + simulator in one command; prints a summary."""
    from pipeline.tools.demo import run_demo

    if via not in ("kafka", "http"):
        typer.echo(f"trackflow demo: --via kafka or http, not {via!r}", err=True)
        raise typer.Exit(2)
    settings = settings_from(data_dir=data_dir, web_port=web_port)
    raise typer.Exit(run_demo(settings, duration=duration, rate=rate, port=port, via=via))
