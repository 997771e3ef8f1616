"""Topic creation ahead of producers, so that events.raw never gets the broker's default count.

A topic auto-created by a producer gets the broker's default partition count, and the
co-partitioned tables then refuse to start (DESIGN section 3). Topics are created with the
cluster's replication factor and min ISR (``TRACKFLOW_REPLICATION_FACTOR``,
``TRACKFLOW_MIN_INSYNC_REPLICAS``); an existing topic is never changed, only reported when
it is replicated less than asked.
"""

from __future__ import annotations

import logging

from confluent_kafka import KafkaException
from confluent_kafka.admin import AdminClient, NewTopic

from pipeline.runtime.kafka_security import KafkaCluster, cluster

log = logging.getLogger(__name__)


def ensure_topic(
    kafka: KafkaCluster | str,
    name: str,
    partitions: int,
    timeout: float = 15.0,
    config: dict[str, str] | None = None,
) -> int:
    """Create ``name`` if missing; return its actual partition count.

    ``kafka`` is the cluster, or a bootstrap string for a plaintext one (replication 1);
    ``config`` adds topic settings (e.g. ``cleanup.policy``) to the cluster's.
    """
    target = cluster(kafka)
    admin = AdminClient(target.confluent())
    existing = admin.list_topics(timeout=timeout).topics.get(name)
    if existing is not None and existing.error is None and existing.partitions:
        _check_replication(target, name, existing)
        return len(existing.partitions)
    futures = admin.create_topics(
        [
            NewTopic(
                name,
                num_partitions=partitions,
                replication_factor=target.replication_factor,
                config={**target.topic_config(), **(config or {})},
            )
        ],
        operation_timeout=timeout,
    )
    try:
        futures[name].result(timeout)
    except KafkaException as exc:
        if "TOPIC_ALREADY_EXISTS" not in str(exc):
            raise
    meta = admin.list_topics(topic=name, timeout=timeout).topics[name]
    count = len(meta.partitions)
    if count != partitions:
        log.warning("topic %s has %d partitions, not %d", name, count, partitions)
    return count


def _check_replication(target: KafkaCluster, name: str, meta: object) -> None:
    partitions = getattr(meta, "partitions", {}) or {}
    replicas = min((len(p.replicas) for p in partitions.values()), default=0)
    if 0 < replicas < target.replication_factor:
        log.warning(
            "topic %s exists with %d replicas, fewer than TRACKFLOW_REPLICATION_FACTOR=%d "
            "(trackflow never changes an existing topic: reassign its partitions)",
            name,
            replicas,
            target.replication_factor,
        )
