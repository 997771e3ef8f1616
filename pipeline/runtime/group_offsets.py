"""Is input still unread anywhere in the consumer group? Asked of the broker.

The combine stage treats a silent source partition as quiet, and the whole pipeline as
idle, only when nothing upstream is waiting to be read. This worker's own consumer lag
cannot say that: a partition owned by another worker, by nobody during a rebalance, or by
a worker that was SIGKILLed and not yet replaced is silent with a backlog. The group's
committed offsets and the log ends, as the broker reports them, are the group-wide view.

Limit: the embedded Tansu broker reports a log end as the last batch's base offset + 1, so
"committed >= end" can hold while the rest of a last batch of several messages is unread.
The check then errs towards "drained" by at most one batch; a real Kafka reports the end.
"""

from __future__ import annotations

import time
from collections.abc import Iterable
from dataclasses import dataclass

from pipeline.runtime.kafka_security import KafkaCluster, cluster

TIMEOUT_SECONDS = 5.0  # for all the requests of one query together

TopicPartitionId = tuple[str, int]  # topic name, partition


class GroupOffsetsUnavailable(RuntimeError):
    """The broker could not say (unreachable, timed out, an error for some partition)."""


@dataclass(frozen=True)
class Position:
    """A partition's group commit (None: nothing committed) and log start and end."""

    committed: int | None
    low: int
    high: int

    @property
    def unread(self) -> int:
        """Messages after the group's commit (from the log start without one), at least 0."""
        done = self.committed if self.committed is not None else self.low
        return max(0, self.high - max(done, self.low))


class GroupOffsets:
    """The group's committed offsets and the log ends of some partitions, on request.

    Blocking (librdkafka): call it off the event loop (``asyncio.to_thread``). A client is
    made per query and closed after it: queries are rare (a partition about to be treated
    as idle), so nothing stays open between them. With the group id it may read the
    group's commits; it never subscribes, so it never joins the group.
    """

    def __init__(
        self, kafka: KafkaCluster | str, group_id: str, timeout: float = TIMEOUT_SECONDS
    ) -> None:
        self.kafka = cluster(kafka)
        self.group_id = group_id
        self.timeout = timeout

    def positions(self, partitions: Iterable[TopicPartitionId]) -> dict[TopicPartitionId, Position]:
        """Each partition's position; raises ``GroupOffsetsUnavailable`` if any is unknown.

        Commits are read before the log ends, so a message produced in between makes the
        answer "unread", never "drained".
        """
        from confluent_kafka import Consumer, KafkaException, TopicPartition

        wanted = sorted(set(partitions))
        if not wanted:
            return {}
        deadline = time.monotonic() + self.timeout
        consumer = Consumer(
            {
                **self.kafka.confluent(),
                "group.id": self.group_id,
                "enable.auto.commit": False,
                # A broker away is reported by the exception, not by a log line a retry.
                "log_level": 2,
                "log.connection.close": False,
            }
        )
        try:
            tps = [TopicPartition(t, p) for t, p in wanted]
            committed: dict[TopicPartitionId, int | None] = {}
            for tp in consumer.committed(tps, timeout=_left(deadline)):
                if tp.error is not None:
                    raise GroupOffsetsUnavailable(f"{tp.topic}[{tp.partition}]: {tp.error}")
                committed[(tp.topic, tp.partition)] = tp.offset if tp.offset >= 0 else None
            out = {}
            for t, p in wanted:
                low, high = consumer.get_watermark_offsets(
                    TopicPartition(t, p), timeout=_left(deadline), cached=False
                )
                out[(t, p)] = Position(committed.get((t, p)), int(low), int(high))
            return out
        except KafkaException as exc:
            raise GroupOffsetsUnavailable(str(exc)) from None
        finally:
            consumer.close()


def _left(deadline: float) -> float:
    left = deadline - time.monotonic()
    if left <= 0:
        raise GroupOffsetsUnavailable("the broker did not answer in time")
    return left


def all_read(positions: dict[TopicPartitionId, Position]) -> bool:
    """Whether the group has committed every partition up to its reported end."""
    return all(pos.unread == 0 for pos in positions.values())


def pending(positions: dict[TopicPartitionId, Position]) -> list[str]:
    """``topic[partition]: n unread`` of the partitions with input left (for logs)."""
    return [f"{t}[{p}]: {pos.unread} unread" for (t, p), pos in positions.items() if pos.unread]
