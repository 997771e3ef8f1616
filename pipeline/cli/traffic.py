"""Sending events: ``trackflow produce`` (JSON lines) and ``trackflow simulate`` (synthetic)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Annotated

import typer

from pipeline.cli.app import Broker, Partitions, TopicPrefix, _opt, settings_from
from pipeline.names import TOPIC_RAW
from pipeline.settings import Settings

if TYPE_CHECKING:
    from pipeline.runtime.kafka_security import KafkaCluster
    from pipeline.tools.simulator import SimConfig


def produce(
    file: Annotated[str, typer.Argument(help="JSON-lines file, or - for stdin")],
    broker: Broker = None,
    topic: Annotated[str, _opt("TOPIC", "Topic to send to")] = TOPIC_RAW,
    topic_prefix: TopicPrefix = None,
    partitions: Partitions = None,
) -> None:
    """Send JSON lines (one event object or one JSON array batch per line)."""
    from pipeline.runtime.kafka_admin import ensure_topic
    from pipeline.tools.produce import RawProducer, open_input, produce_lines, read_lines

    settings = settings_from(broker=broker, topic_prefix=topic_prefix, partitions=partitions)
    kafka = _cluster(settings, "produce")
    name = settings.topic(topic)
    ensure_topic(kafka, name, settings.partitions)
    producer = RawProducer(kafka, name)
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
    via: Annotated[
        str, _opt("SIM_VIA", "kafka: produce to events.raw; http: through the collector")
    ] = "kafka",
    collector: Annotated[
        str, _opt("COLLECTOR_URL", "The collector, for --via http")
    ] = "http://127.0.0.1:8088",
    write_key: Annotated[
        str | None,
        _opt("WRITE_KEY", "A source's write key, for --via http (the variable keeps it out of ps)"),
    ] = None,
) -> None:
    """Send realistic mini-program e-commerce traffic to events.raw, or through the HTTP
    collector as Segment batch calls (--via http: the path a web page takes)."""
    from pipeline.tools.simulator import SimConfig

    if via not in ("kafka", "http"):
        typer.echo(f"trackflow simulate: --via kafka or http, not {via!r}", err=True)
        raise typer.Exit(2)
    if via == "http" and not write_key:
        typer.echo("trackflow simulate: --via http needs TRACKFLOW_WRITE_KEY", err=True)
        raise typer.Exit(2)
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
    if via == "http":
        assert write_key is not None
        _simulate_http(config, collector, write_key, fast)
        return
    from pipeline.runtime.kafka_admin import ensure_topic
    from pipeline.tools.produce import RawProducer
    from pipeline.tools.simulation_run import run_simulation

    settings = settings_from(broker=broker, topic_prefix=topic_prefix, partitions=partitions)
    kafka = _cluster(settings, "simulate")
    name = settings.topic(TOPIC_RAW)
    ensure_topic(kafka, name, settings.partitions)
    producer = RawProducer(kafka, name)
    summary = run_simulation(producer, config, paced=not fast)
    typer.echo(summary.describe(), err=True)
    if producer.stats.failed:
        raise typer.Exit(1)


def _simulate_http(config: SimConfig, url: str, write_key: str, fast: bool) -> None:
    from pipeline.tools.http_sender import HttpSender
    from pipeline.tools.simulation_run import run_simulation

    try:
        sender = HttpSender(url, write_key)
    except ValueError as exc:
        typer.echo(f"trackflow simulate: {exc}", err=True)
        raise typer.Exit(2) from None
    summary = run_simulation(sender, config, paced=not fast)
    sender.close()
    typer.echo(summary.describe(), err=True)
    typer.echo(
        f"{sender.requests} requests to {url}, {sender.refused} refused "
        "(bad messages the collector answers 4xx)",
        err=True,
    )
    if sender.stats.failed:
        for err in sender.errors:
            typer.echo(f"  error: {err}", err=True)
        typer.echo(f"{sender.stats.failed} events not accepted", err=True)
        raise typer.Exit(1)


def _cluster(settings: Settings, command: str) -> KafkaCluster:
    """The cluster of the settings; an unreadable TLS file ends the command with a message."""
    from pipeline.runtime.kafka_security import KafkaCluster, KafkaConfigError

    try:
        return KafkaCluster.from_settings(settings)
    except KafkaConfigError as exc:
        typer.echo(f"trackflow {command}: {exc}", err=True)
        raise typer.Exit(2) from None
