"""``trackflow collect``: the HTTP collector (DESIGN section 13)."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Annotated

import typer

from pipeline.cli.app import Broker, LogFormat, Partitions, TopicPrefix, _opt, settings_from


def collect(
    host: Annotated[
        str | None, _opt("COLLECT_HOST", "Interface to listen on [default: 127.0.0.1]")
    ] = None,
    port: Annotated[int | None, _opt("COLLECT_PORT", "Port to listen on [default: 8088]")] = None,
    broker: Broker = None,
    sources: Annotated[
        Path | None, _opt("SOURCES", "Sources file (write keys) [default: ./sources.json]")
    ] = None,
    topic_prefix: TopicPrefix = None,
    partitions: Partitions = None,
    log_level: Annotated[str | None, _opt("LOG_LEVEL", "Log level [default: info]")] = None,
    log_format: LogFormat = None,
) -> None:
    """Run the HTTP collector: the Segment Tracking API in front of events.raw."""
    settings = settings_from(
        collect_host=host,
        collect_port=port,
        broker=broker,
        sources=sources,
        topic_prefix=topic_prefix,
        partitions=partitions,
        log_level=log_level,
        log_format=log_format,
    )
    from pipeline.collector.server import plan_limits, run_collector
    from pipeline.collector.sources import SourcesError, load_sources
    from pipeline.contract.plan import PlanError
    from pipeline.runtime import logs
    from pipeline.runtime.kafka_security import KafkaCluster, KafkaConfigError

    logs.setup(settings.log_format, settings.log_level)
    try:  # refuse to start with a message, never a traceback (nor a write key)
        plan = plan_limits(settings.schemas_dir)
        known = load_sources(settings.sources, plan.platforms)
        kafka = KafkaCluster.from_settings(settings)
    except (SourcesError, KafkaConfigError, PlanError) as exc:
        if settings.log_format == "json":
            logging.getLogger("trackflow.collector").critical("refusing to start: %s", exc)
        else:
            typer.echo(f"trackflow collect: {exc}", err=True)
        raise typer.Exit(2) from None
    raise typer.Exit(run_collector(settings, kafka, known, plan))
