"""Topic creation ahead of producers, so that events.raw never gets the broker's default count.

A topic auto-created by a producer gets the broker's default partition count, and the
co-partitioned tables then refuse to start (DESIGN section 3).
"""

from __future__ import annotations

import logging

from confluent_kafka import KafkaException
from confluent_kafka.admin import AdminClient, NewTopic

log = logging.getLogger(__name__)


def ensure_topic(
    bootstrap: str, name: str, partitions: int, replication: int = 1, timeout: float = 15.0
) -> int:
    """Create ``name`` if missing; return its actual partition count."""
    admin = AdminClient({"bootstrap.servers": bootstrap})
    existing = admin.list_topics(timeout=timeout).topics.get(name)
    if existing is not None and existing.error is None and existing.partitions:
        return len(existing.partitions)
    futures = admin.create_topics(
        [NewTopic(name, num_partitions=partitions, replication_factor=replication)],
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
