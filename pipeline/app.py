"""The Faust app factory: settings in, a fully wired worker app out. Nothing runs at import."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import faust
from prometheus_client import CONTENT_TYPE_LATEST

from pipeline import names
from pipeline.alerting.rules import load_rules as load_alert_rules
from pipeline.contract.pii import PiiHasher
from pipeline.contract.plan import TrackingPlan, load_plan
from pipeline.identity.graph import IdentityGraph
from pipeline.identity.rules import load_rules
from pipeline.identity.stitching import Stitcher
from pipeline.ingest.dedup import SeenIds
from pipeline.ingest.validation import Validator
from pipeline.lake.schema import EventBatches, EventsSplitter, split_by_day, split_dlq
from pipeline.lake.writer import TableWriter
from pipeline.metrics.definitions import load_metrics
from pipeline.metrics.rollup import CombineState
from pipeline.runtime.context import Context, Topics
from pipeline.runtime.kafka_admin import ensure_topic
from pipeline.runtime.streams import consumer_lag
from pipeline.runtime.telemetry import PipelineMetrics
from pipeline.settings import DEFAULT_PII_SECRET, Settings
from tables.dedup import DedupTable
from tables.identity import IdentityTable
from tables.windows import AggregateProgress, CombineWindows

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

    def topic(name: str, count: int = partitions) -> Any:
        return app.topic(
            settings.topic(name),
            key_type=None,
            value_type=None,
            key_serializer="raw",
            value_serializer="raw",
            partitions=count,
            internal=True,
        )

    topics = Topics(
        raw=topic(names.TOPIC_RAW),
        valid=topic(names.TOPIC_VALID),
        dlq=topic(names.TOPIC_DLQ),
        stitched=topic(names.TOPIC_STITCHED),
        links=topic(names.TOPIC_LINKS, 1),
        changes=topic(names.TOPIC_CHANGES, 1),
        partials=topic(names.TOPIC_PARTIALS, 1),
        rollups=topic(names.TOPIC_ROLLUPS, 1),
        alerts=topic(names.TOPIC_ALERTS, 1),
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
    rules = load_rules(settings.identity_rules)
    graph = IdentityGraph(rules)
    identity = IdentityTable(
        app,
        name=names.TABLE_IDENTITY,
        default=None,
        partitions=1,
        is_global=True,
        recovery_buffer_size=1,
        schema=faust.Schema(key_serializer="json", value_serializer="json"),
        extra_topic_configs={"cleanup.policy": "delete", "retention.ms": "-1"},
        help="Links applied by the identity writer; every worker rebuilds the map from them.",
    )
    app.tables.add(identity)
    identity.attach(graph)

    @app.task
    async def follow_identity_map() -> None:
        # Faust reads a global table at recovery only (its continuous-standby mode stalls
        # stream partitions after a SIGKILL restart on this broker); this keeps every
        # worker's map current between rebalances.
        await identity.follow(settings.bootstrap_servers)

    metric_defs = load_metrics(plan, settings.schemas_dir)
    progress = AggregateProgress(
        app,
        name=names.TABLE_AGGREGATE,
        default=None,
        partitions=partitions,
        schema=faust.Schema(key_serializer="json", value_serializer="json"),
        extra_topic_configs={"cleanup.policy": "compact"},
        help="Last events.stitched offset turned into partials, and the watermark, per partition.",
    )
    app.tables.add(progress)
    progress.attach()
    combine_state = CombineState(metric_defs, partitions, settings.lateness_seconds)
    # Funnels follow persons: an identifier's person is read from the map when an hour closes.
    combine_state.resolve = lambda n: graph.lookup(n) or rules.person_id(n)
    combine_windows = CombineWindows(
        app,
        name=names.TABLE_COMBINE,
        default=None,
        partitions=1,
        schema=faust.Schema(key_serializer="json", value_serializer="json"),
        extra_topic_configs={"cleanup.policy": "delete", "retention.ms": str(7 * 86_400_000)},
        help="Open metric windows of the combine stage, as deltas per batch.",
    )
    app.tables.add(combine_windows)
    combine_windows.attach(combine_state)
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
        lake=lake_writers(settings.lake_dir, plan),
        batches=EventBatches(plan),
        rules=rules,
        graph=graph,
        identity=identity,
        stitcher=Stitcher(rules, graph, settings.identity_refresh_seconds * 1000),
        metric_defs=metric_defs,
        aggregate_progress=progress,
        combine=combine_state,
        combine_windows=combine_windows,
        alert_rules=load_alert_rules(settings.schemas_dir, set(metric_defs)),
    )

    from agents import aggregate, combine, detect, sink, stitch, validate
    from agents import identity as identity_agent

    validate.register(app, ctx)
    if settings.stages == "full":
        stitch.register(app, ctx)
        identity_agent.register(app, ctx)
        aggregate.register(app, ctx)
        combine.register(app, ctx)
        detect.register(app, ctx)
    sink.register(app, ctx)
    _register_observability(app, ctx)
    return app, ctx


def lake_writers(lake_dir: Path, plan: TrackingPlan) -> dict[str, TableWriter]:
    return {
        names.LAKE_EVENTS: TableWriter(lake_dir, names.LAKE_EVENTS, EventsSplitter(plan)),
        names.LAKE_DLQ: TableWriter(lake_dir, names.LAKE_DLQ, split_dlq),
        names.LAKE_IDENTITIES: TableWriter(
            lake_dir, names.LAKE_IDENTITIES, split_by_day("updated_at", "updated_date")
        ),
        names.LAKE_MERGES: TableWriter(
            lake_dir, names.LAKE_MERGES, split_by_day("decided_at", "decided_date")
        ),
        names.LAKE_ROLLUPS: TableWriter(
            lake_dir, names.LAKE_ROLLUPS, split_by_day("window_start", "window_date")
        ),
        names.LAKE_ALERTS: TableWriter(
            lake_dir, names.LAKE_ALERTS, split_by_day("window_end", "alert_date")
        ),
    }


def _register_observability(app: faust.App, ctx: Context) -> None:
    metrics = ctx.metrics

    @app.page("/metrics")
    async def prometheus_metrics(web: Any, request: Any) -> Any:
        return web.bytes(metrics.render(), content_type=CONTENT_TYPE_LATEST.split(";")[0])

    @app.timer(interval=2.0)
    async def sample_gauges() -> None:
        metrics.dedup_ids.set(ctx.seen.size())
        metrics.persons.set(ctx.graph.person_count())
        metrics.identifiers.set(len(ctx.graph.person))
        for tp, lag in (consumer_lag(app) or {}).items():
            metrics.consumer_lag.labels(tp.topic, str(tp.partition)).set(lag)
