"""Sending the One ID links of member imports (``<data-dir>/members/outbox/``) to
identity.links, the single identity writer's topic (docs/members.md).

The import sends its links itself after it installed its lake files; links it could not
send (the broker down, no worker had created the topic yet) wait in the outbox. Every
worker also drains the outbox of its data directory every 30 s, so those links reach the
writer without waiting for the source's next import. Sending twice changes nothing: the
identity map is a function of the set of links.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

from pipeline.members.outbox import Outbox
from pipeline.settings import Settings

INTERVAL_SECONDS = 30.0
log = logging.getLogger(__name__)


def send_outbox(settings: Settings, outbox: Any) -> bool:
    """Send every pending outbox file to identity.links; True when none is left.

    The topic must exist already (the worker creates it with one partition): a producer
    would otherwise auto-create it with the broker's default partition count."""
    from confluent_kafka import KafkaException, Producer

    from pipeline.names import TOPIC_LINKS
    from pipeline.runtime.kafka_security import KafkaCluster, KafkaConfigError

    pending = outbox.pending()
    if not pending:
        return True
    timeout = settings.members_link_timeout
    try:
        cluster = KafkaCluster.from_settings(settings)
    except KafkaConfigError:
        return False
    producer = Producer(
        {
            **cluster.confluent(),
            "acks": "all",
            "linger.ms": 20,
            "compression.type": "none",
            "message.max.bytes": 1_010_000,
            "message.timeout.ms": int(timeout * 1000),
            "log.connection.close": False,
            "log_level": 2,
        }
    )
    topic = settings.topic(TOPIC_LINKS)
    try:
        meta = producer.list_topics(timeout=timeout)
    except KafkaException:
        return False
    found = meta.topics.get(topic)
    if found is None or found.error is not None or not found.partitions:
        return False
    for path in pending:
        failures: list[str] = []

        def delivered(err: Any, msg: Any, failures: list[str] = failures) -> None:
            if err is not None:
                failures.append(str(err))

        for value in outbox.messages(path):
            while True:
                try:
                    producer.produce(topic, value, partition=0, on_delivery=delivered)
                    break
                except BufferError:
                    producer.poll(0.05)
        left = producer.flush(timeout + 5)
        if left or failures:
            return False
        outbox.done(path)
    return True


async def drain(settings: Settings) -> None:
    """The worker's share: send what imports left in the outbox (off the event loop)."""
    outbox = Outbox(settings.data_dir / "members" / "outbox")
    if not outbox.pending():
        return
    try:
        if await asyncio.to_thread(send_outbox, settings, outbox):
            log.info("member import links from the outbox sent to identity.links")
    except Exception:  # a bad file must not stop the worker's timers
        log.exception("member import links: cannot send the outbox")
