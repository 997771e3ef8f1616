"""``--publish-links``: the backfill's links also to ``identity.links``, for running workers.

Backfill writes its One ID decisions to the lake itself; workers that are running keep
their own in-memory map, fed only by ``identity.links``. Sending the same links there
makes the single identity writer apply them too (applying a known link changes nothing),
so a later live event of a backfilled device resolves to the backfilled person instead of
being recorded under its own person again. The topic must exist (a worker created it);
every message is acknowledged before the command ends, or it fails.
"""

from __future__ import annotations

from typing import Any

from confluent_kafka import KafkaException, Producer

from pipeline.identity.graph import Link
from pipeline.runtime import wire

TIMEOUT_SECONDS = 30.0
QUIET = {"log.connection.close": False, "log_level": 2}


class PublishFailed(RuntimeError):
    """The links could not all be delivered; the message says why."""


def publish_links(
    conf: dict[str, Any], topic: str, links: list[Link], timeout: float = TIMEOUT_SECONDS
) -> int:
    """Send ``links`` to partition 0 of ``topic``; returns the messages sent."""
    if not links:
        return 0
    producer = Producer({**conf, **QUIET, "enable.idempotence": True})
    try:
        meta = producer.list_topics(topic, timeout=timeout)
    except KafkaException as exc:
        raise PublishFailed(f"broker unavailable: {exc}") from None
    found = meta.topics.get(topic)
    if found is None or found.error is not None or not found.partitions:
        raise PublishFailed(f"topic {topic} does not exist: start a worker first")
    errors: list[str] = []

    def delivered(err: Any, _msg: Any) -> None:
        if err is not None:
            errors.append(str(err))

    messages = wire.encode_links(links)
    for value in messages:
        producer.produce(topic, value=value, partition=0, on_delivery=delivered)
        producer.poll(0)
    left = producer.flush(timeout)
    if left or errors:
        raise PublishFailed(f"{left} link messages undelivered, errors: {errors[:3]}")
    return len(messages)
