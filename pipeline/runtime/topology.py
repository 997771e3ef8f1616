"""The Faust side of a worker: the app, its topics and its tables.

Internal topics are declared with their partition count so that Faust creates them
(DESIGN section 3): a topic auto-created by a producer gets the broker's default count, and
co-partitioned tables then refuse to start. Every topic and changelog is created with the
settings' replication factor (``topic_replication_factor``) and min ISR (topic config);
Faust's assignor topic ``<app id>-__assignor-__leader`` gets the replication factor only
(Faust builds it without a config, and writes it without acks: min ISR cannot apply).
"""

from __future__ import annotations

from typing import Any

import faust

from pipeline import names
from pipeline.runtime.context import Domain, Tables, Topics
from pipeline.runtime.kafka_admin import ensure_topic
from pipeline.runtime.kafka_security import KafkaCluster
from pipeline.settings import Settings
from tables.dedup import DedupTable
from tables.identity import IdentityTable
from tables.rollup_state import AggregateProgress, CombineWindows


def _json() -> faust.Schema:
    return faust.Schema(key_serializer="json", value_serializer="json")


def partition_count(settings: Settings, ensure_topics: bool) -> int:
    """events.raw decides the partition count of everything co-partitioned with it."""
    if not ensure_topics:
        return settings.partitions
    return ensure_topic(
        KafkaCluster.from_settings(settings), settings.topic(names.TOPIC_RAW), settings.partitions
    )


def combine_partition_count(settings: Settings, ensure_topics: bool) -> int:
    """An existing metrics.partials keeps its count (a deployment from before the combine
    was spread has one partition, and its combine changelog too)."""
    if not ensure_topics:
        return settings.combine_partitions
    return ensure_topic(
        KafkaCluster.from_settings(settings),
        settings.topic(names.TOPIC_PARTIALS),
        settings.combine_partitions,
    )


def new_app(settings: Settings, partitions: int) -> faust.App:
    return faust.App(
        settings.app_id,
        **KafkaCluster.from_settings(settings).faust(),  # broker, TLS/SASL, replication
        store="memory://",
        autodiscover=False,
        topic_partitions=partitions,
        topic_allow_declare=True,
        table_standby_replicas=0,
        # The check compares offsets this process already read with the end the broker
        # reports; the embedded broker reports the last batch's base offset + 1, so a
        # worker in its second rebalance crashed (ConsistencyError, identity_map 3 > 2).
        # It guards RocksDB files against deleted topics; tables here live in memory, and
        # the batch-log tables read on past the reported end (tables/batchlog.py).
        recovery_consistency_check=False,
        consumer_auto_offset_reset="earliest",
        stream_wait_empty=False,  # never wait on unacked input at shutdown: it is re-read
        broker_rebalance_timeout=settings.rebalance_timeout,
        broker_session_timeout=settings.session_timeout,
        broker_heartbeat_interval=min(3.0, settings.session_timeout / 3),
        broker_commit_interval=1.0,
        stream_buffer_maxsize=settings.stream_buffer,
        producer_acks=-1,
        producer_linger=0.005,
        web_enabled=True,
        web_port=settings.web_port,
        web_bind=settings.web_host,
        web_host=settings.web_host,
        datadir=str(settings.data_dir / "faust"),
        logging_config=None,
    )


def declare_topics(app: faust.App, settings: Settings, partitions: int) -> Topics:
    config = KafkaCluster.from_settings(settings).topic_config()

    def topic(name: str, count: int = partitions) -> Any:
        return app.topic(
            settings.topic(name),
            key_type=None,
            value_type=None,
            key_serializer="raw",
            value_serializer="raw",
            partitions=count,
            internal=True,
            config=config,
        )

    return Topics(
        raw=topic(names.TOPIC_RAW),
        valid=topic(names.TOPIC_VALID),
        dlq=topic(names.TOPIC_DLQ),
        stitched=topic(names.TOPIC_STITCHED),
        links=topic(names.TOPIC_LINKS, 1),
        changes=topic(names.TOPIC_CHANGES, 1),
        partials=topic(names.TOPIC_PARTIALS, settings.combine_partitions),
        rollups=topic(names.TOPIC_ROLLUPS, 1),
        alerts=topic(names.TOPIC_ALERTS, 1),
    )


def declare_tables(app: faust.App, settings: Settings, domain: Domain, partitions: int) -> Tables:
    kafka = KafkaCluster.from_settings(settings)
    isr = kafka.topic_config()
    tables = Tables(
        dedup=_dedup_table(app, settings, partitions, isr),
        identity=_identity_table(app, kafka, isr),
        aggregate_progress=AggregateProgress(
            app,
            name=names.TABLE_AGGREGATE,
            default=None,
            partitions=partitions,
            schema=_json(),
            extra_topic_configs={"cleanup.policy": "compact", **isr},
            help="Last events.stitched offset turned into partials, and the watermark, "
            "per partition.",
        ),
        combine_windows=CombineWindows(
            app,
            name=names.TABLE_COMBINE,
            default=None,
            partitions=settings.combine_partitions,
            schema=_json(),
            extra_topic_configs={
                "cleanup.policy": "delete",
                "retention.ms": str(7 * 86_400_000),
                **isr,
            },
            help="Open metric windows of the combine stage, as deltas per batch.",
        ),
    )
    for table in (tables.dedup, tables.identity, tables.aggregate_progress, tables.combine_windows):
        app.tables.add(table)
    for batchlog in (tables.dedup, tables.aggregate_progress, tables.combine_windows):
        batchlog.kafka = kafka
    tables.dedup.attach(domain.seen)
    tables.identity.attach(domain.graph)
    tables.aggregate_progress.attach()
    tables.combine_windows.attach(domain.combine)
    return tables


def _dedup_table(
    app: faust.App, settings: Settings, partitions: int, isr: dict[str, str]
) -> DedupTable:
    horizon_ms = settings.dedup_horizon_hours * 3600 * 1000
    return DedupTable(
        app,
        name=names.TABLE_DEDUP,
        default=None,
        beacon=app.tables.beacon,
        partitions=partitions,
        schema=_json(),
        extra_topic_configs={
            "cleanup.policy": "delete",
            "retention.ms": str(2 * horizon_ms + 3_600_000),
            **isr,
        },
        help="Seen event ids per events.raw partition.",
    )


def _identity_table(app: faust.App, kafka: KafkaCluster, isr: dict[str, str]) -> IdentityTable:
    table = IdentityTable(
        app,
        name=names.TABLE_IDENTITY,
        default=None,
        partitions=1,
        is_global=True,
        recovery_buffer_size=1,
        schema=_json(),
        extra_topic_configs={"cleanup.policy": "delete", "retention.ms": "-1", **isr},
        help="Links applied by the identity writer; every worker rebuilds the map from them.",
    )

    @app.task
    async def follow_identity_map() -> None:
        # Faust reads a global table at recovery only (its continuous-standby mode stalls
        # stream partitions after a SIGKILL restart on this broker); this keeps every
        # worker's map current between rebalances.
        await table.follow(kafka)

    return table
