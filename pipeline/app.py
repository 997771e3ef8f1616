"""The Faust app factory: settings in, a fully wired worker app out. Nothing runs at import.

Domain objects are built first (pure, no Kafka), then the Faust topology (app, topics,
tables), then each stage's agents register themselves. Which agents run is a table, not
a branch: ``STAGES``.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

import faust

from agents import aggregate, combine, detect, identity, sink, stitch, validate
from pipeline.names import TOPIC_PRIVACY
from pipeline.runtime import (
    commit_offsets,
    maintenance,
    partition_age,
    privacy_tasks,
    read_offsets,
    rewind,
)
from pipeline.runtime.context import Context, Domain
from pipeline.runtime.kafka_security import KafkaCluster
from pipeline.runtime.observability import register_observability
from pipeline.runtime.privacy import PrivacyFollower
from pipeline.runtime.start_offsets import BrokerStartOffsets, close_on_shutdown
from pipeline.runtime.telemetry import PipelineMetrics
from pipeline.runtime.topology import (
    combine_partition_count,
    declare_tables,
    declare_topics,
    new_app,
    partition_count,
)
from pipeline.settings import Settings

log = logging.getLogger(__name__)

Register = Callable[[faust.App, Context], Any]

# full: the whole chain. ingest: validate and sink only (no person_id, no rollups).
STAGES: dict[str, tuple[Register, ...]] = {
    "full": (
        privacy_tasks.register,
        validate.register,
        stitch.register,
        identity.register,
        aggregate.register,
        combine.register,
        detect.register,
        sink.register,
    ),
    "ingest": (privacy_tasks.register, validate.register, sink.register),
}


def create_app(settings: Settings, *, ensure_topics: bool = True) -> tuple[faust.App, Context]:
    read_offsets.install()  # before the app's consumer exists
    partitions = partition_count(settings, ensure_topics)
    combine = combine_partition_count(settings, ensure_topics)
    settings = settings.model_copy(update={"combine_partitions": combine})
    domain = Domain.build(settings, partitions)
    app = new_app(settings, partitions)
    kafka, metrics = KafkaCluster.from_settings(settings), PipelineMetrics()
    ctx = Context(
        settings=settings,
        partitions=partitions,
        domain=domain,
        topics=declare_topics(app, settings, partitions),
        tables=declare_tables(app, settings, domain, partitions),
        metrics=metrics,
        start_offsets=BrokerStartOffsets(kafka, settings.app_id),
        privacy=PrivacyFollower(
            kafka, settings.topic(TOPIC_PRIVACY), domain.privacy, metrics, ensure_topics
        ),
    )
    close_on_shutdown(app, ctx.start_offsets)
    rewind.install(app, ctx.start_offsets)
    commit_offsets.install()
    partition_age.install()
    for register in STAGES[settings.stages]:
        register(app, ctx)
    register_observability(app, ctx)
    maintenance.register(app, ctx)  # daily retention and compaction of the lake
    return app, ctx
