"""Where a partition's input starts after an assignment, asked of the broker.

``OrderedInput`` must know the first offset to expect, or a hole right at the committed
offset passes unseen. Faust's own view of committed offsets (``_committed_offset``) is not
reliable for this: it is cleared on every revoke, refilled only when recovery seeks, and
keeps a committed 0 as None, so messages buffered across a rebalance met an empty entry
and a start at the log beginning was assumed (a false hole, seen in a SIGKILL run). The
group's committed offset on the broker is the truth; without one, the log start is.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any, Protocol

from pipeline.runtime.kafka_security import KafkaCluster, cluster

log = logging.getLogger(__name__)


class StartOffsets(Protocol):
    async def start(self, tp: Any) -> int | None: ...


class BrokerStartOffsets:
    """One group-less client per worker, asking the coordinator for the group's offsets."""

    def __init__(self, kafka: KafkaCluster | str, group_id: str) -> None:
        self.kafka = cluster(kafka)
        self.group_id = group_id
        self._client: Any = None
        self._lock = asyncio.Lock()

    async def _consumer(self) -> Any:
        async with self._lock:
            if self._client is None:
                from aiokafka import AIOKafkaConsumer

                # group_id lets it read the group's commits; it never subscribes, so it
                # never joins the group.
                client = AIOKafkaConsumer(
                    **self.kafka.aiokafka(),
                    group_id=self.group_id,
                    enable_auto_commit=False,
                )
                try:
                    await client.start()
                except BaseException:  # failed or cancelled: not left open (tables.consumers)
                    await client.stop()
                    raise
                self._client = client
            return self._client

    async def start(self, tp: Any) -> int | None:
        from aiokafka import TopicPartition

        consumer = await self._consumer()
        atp = TopicPartition(tp.topic, tp.partition)
        committed = await consumer.committed(atp)
        if committed is not None and committed >= 0:
            return int(committed)
        beginning = await consumer.beginning_offsets([atp])
        start = beginning.get(atp)
        return None if start is None else int(start)

    async def stop(self) -> None:
        if self._client is not None:
            await self._client.stop()
            self._client = None


def close_on_shutdown(app: Any, offsets: StartOffsets) -> None:
    @app.on_before_shutdown.connect
    async def close_start_offsets(sender: Any, **kwargs: Any) -> None:
        if isinstance(offsets, BrokerStartOffsets):
            await offsets.stop()
