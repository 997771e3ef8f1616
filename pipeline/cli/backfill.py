"""``trackflow backfill FILE``: historic events straight into the lake (DESIGN 16)."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated, Any

import typer

from pipeline.cli.app import Broker, DataDir, SchemasDir, TopicPrefix, _opt, settings_from
from pipeline.settings import Settings


def backfill(
    file: Annotated[
        str, typer.Argument(help="JSON-lines file (objects or arrays), or - for stdin")
    ],
    data_dir: DataDir = None,
    schemas_dir: SchemasDir = None,
    identity_rules: Annotated[
        Path | None, _opt("IDENTITY_RULES", "One ID rules file [default: built-in]")
    ] = None,
    chunk_lines: Annotated[
        int, _opt("BACKFILL_CHUNK_LINES", "Lines validated and stored per step", min=1)
    ] = 50_000,
    publish_links: Annotated[
        bool,
        _opt(
            "BACKFILL_PUBLISH_LINKS",
            "Also send the links to identity.links, so running workers' maps learn them",
        ),
    ] = False,
    broker: Broker = None,
    topic_prefix: TopicPrefix = None,
    dev: Annotated[
        bool, _opt("DEV", "Development run: without a PII key, use the data directory's")
    ] = False,
) -> None:
    """Load historic events into the lake: the stream's validation (no 7-day age limit),
    PII hashing, dedup (in the file and against the lake's events) and One ID stitching,
    without a broker. Bad lines are dead-lettered with the stream's error codes into dlq.

    Exactly once: running the same input again stores nothing; a run killed halfway
    resumes where it stopped when run again. Identity links are applied to the lake's
    identities and identity_merges by this command; with --publish-links they are also
    sent to identity.links for running workers (docs/analytics.md, "Backfill").
    Prints a JSON summary: lines, events, stored, duplicates, dead_lettered, ...
    """
    import orjson

    from pipeline.backfill.run import Backfill
    from pipeline.backfill.source import input_file, run_number
    from pipeline.contract.pii import PiiHasher
    from pipeline.contract.plan import load_plan
    from pipeline.identity.rules import load_identity_rules
    from pipeline.lake import views
    from pipeline.settings import MissingPiiKey

    settings = settings_from(
        data_dir=data_dir,
        schemas_dir=schemas_dir,
        identity_rules=identity_rules,
        broker=broker,
        topic_prefix=topic_prefix,
        dev=dev or None,
    )
    try:
        hasher = PiiHasher(settings.pii_key())
    except MissingPiiKey as exc:
        typer.echo(f"trackflow backfill: {exc}", err=True)
        raise typer.Exit(2) from None
    if file != "-" and not Path(file).is_file():
        typer.echo(f"trackflow backfill: {file}: no such file", err=True)
        raise typer.Exit(2)
    plan = load_plan(settings.schemas_dir)
    rules = load_identity_rules(settings.identity_rules)
    settings.lake_dir.mkdir(parents=True, exist_ok=True)
    con = views.connect(settings.data_dir, plan)
    with input_file(file, settings.data_dir) as path:
        job = Backfill(
            settings.lake_dir,
            plan,
            rules,
            hasher,
            con,
            settings.dlq_max_payload_bytes,
            collect_links=publish_links,
        )
        stats = job.run(path, run_number(path), chunk_lines)
    summary: dict[str, int] = stats.as_dict()
    if publish_links:
        summary["link_messages"] = _publish(settings, job.links or [])
    sys.stdout.write(orjson.dumps(summary).decode() + "\n")


def _publish(settings: Settings, links: list[Any]) -> int:
    """The lake is written already: a failure here leaves it right and exits 1."""
    from pipeline.backfill.links import PublishFailed, publish_links
    from pipeline.names import TOPIC_LINKS
    from pipeline.runtime.kafka_security import KafkaCluster, KafkaConfigError

    try:
        cluster = KafkaCluster.from_settings(settings)
        return publish_links(cluster.confluent(), settings.topic(TOPIC_LINKS), links)
    except (KafkaConfigError, PublishFailed) as exc:
        typer.echo(f"trackflow backfill: --publish-links: {exc}", err=True)
        raise typer.Exit(1) from None
