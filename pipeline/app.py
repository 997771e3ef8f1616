"""The Faust app factory: settings in, a fully wired worker app out. Nothing runs at import."""

from __future__ import annotations

import logging
from typing import Any

import faust
from prometheus_client import CONTENT_TYPE_LATEST

from pipeline import names
from pipeline.context import Context, Topics
from pipeline.kafka_admin import ensure_topic
from pipeline.lake import TableWriter
from pipeline.lake_schema import EventBatches, EventsSplitter, split_dlq
from pipeline.metrics import PipelineMetrics
from pipeline.pii import PiiHasher
from pipeline.plan import load_plan
from pipeline.settings import DEFAULT_PII_SECRET, Settings
from pipeline.validation import Validator
from tables.dedup import DedupTable, SeenIds

log = logging.getLogger(__name__)


def create_app(settings: Settings, *, ensure_topics: bool = True) -> tuple[faust.App, Context]:
    plan = load_plan(settings.schemas_dir)
    secret = settings.pii_secret.get_secret_value()
    if secret == DEFAULT_PII_SECRET:
        log.warning("TRACKFLOW_PII_SECRET is the development default; set it in production")
    partitions = settings.partitions
    if ensure_topics:
        # events.raw decides the partition count of everything co-partitioned with it.
        partitions = ensure_topic(
            settings.bootstrap_servers, settings.topic(names.TOPIC_RAW), settings.partitions
        )

    app = faust.App(
        settings.app_id,
        broker=settings.broker,
        store="memory://",
        autodiscover=False,
        topic_partitions=partitions,
        topic_allow_declare=True,
        table_standby_replicas=0,
        consumer_auto_offset_reset="earliest",
        stream_wait_empty=False,  # never wait on unacked input at shutdown: it is re-read
        broker_rebalance_timeout=settings.rebalance_timeout,
        broker_session_timeout=settings.session_timeout,
        broker_heartbeat_interval=min(3.0, settings.session_timeout / 3),
        broker_commit_interval=1.0,
        producer_acks=-1,
        producer_linger=0.005,
        web_enabled=True,
        web_port=settings.web_port,
        web_bind=settings.web_host,
        web_host=settings.web_host,
        datadir=str(settings.data_dir / "faust"),
        logging_config=None,
    )

    def topic(name: str) -> Any:
        return app.topic(
            settings.topic(name),
            key_type=None,
            value_type=None,
            key_serializer="raw",
            value_serializer="raw",
            partitions=partitions,
            internal=True,
        )

    topics = Topics(
        raw=topic(names.TOPIC_RAW), valid=topic(names.TOPIC_VALID), dlq=topic(names.TOPIC_DLQ)
    )
    horizon_ms = settings.dedup_horizon_hours * 3600 * 1000
    seen = SeenIds(horizon_ms)
    dedup = DedupTable(
        app,
        name=names.TABLE_DEDUP,
        default=None,
        beacon=app.tables.beacon,
        partitions=partitions,
        schema=faust.Schema(key_serializer="json", value_serializer="json"),
        extra_topic_configs={
            "cleanup.policy": "delete",
            "retention.ms": str(2 * horizon_ms + 3_600_000),
        },
        help="Seen event ids per events.raw partition.",
    )
    app.tables.add(dedup)
    dedup.attach(seen)
    hasher = PiiHasher(secret)
    ctx = Context(
        settings=settings,
        plan=plan,
        hasher=hasher,
        validator=Validator(plan, hasher),
        metrics=PipelineMetrics(),
        partitions=partitions,
        topics=topics,
        seen=seen,
        dedup=dedup,
        lake_events=TableWriter(settings.lake_dir, names.LAKE_EVENTS, EventsSplitter(plan)),
        lake_dlq=TableWriter(settings.lake_dir, names.LAKE_DLQ, split_dlq),
        batches=EventBatches(plan),
    )

    from agents import sink, validate

    validate.register(app, ctx)
    sink.register(app, ctx)
    _register_observability(app, ctx)
    return app, ctx


def _register_observability(app: faust.App, ctx: Context) -> None:
    metrics = ctx.metrics

    @app.page("/metrics")
    async def prometheus_metrics(web: Any, request: Any) -> Any:
        return web.bytes(metrics.render(), content_type=CONTENT_TYPE_LATEST.split(";")[0])

    @app.timer(interval=2.0)
    async def sample_gauges() -> None:
        metrics.dedup_ids.set(ctx.seen.size())
        consumer = app.consumer
        try:
            assignment = consumer.assignment()
        except Exception:  # not yet assigned
            return
        for tp in assignment:
            highwater = consumer.highwater(tp)
            committed = (
                consumer._committed_offset.get(tp)
                if hasattr(consumer, "_committed_offset")
                else None
            )
            if highwater is None:
                continue
            position = committed if committed is not None else 0
            metrics.consumer_lag.labels(tp.topic, str(tp.partition)).set(
                max(0, highwater - position)
            )
