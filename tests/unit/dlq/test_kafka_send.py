"""KafkaBroker.send against a producer that never gets an answer (no broker needed)."""

from __future__ import annotations

from typing import Any, ClassVar

import pytest

from pipeline.contract.replay import ReplayMarker
from pipeline.dlq import kafka
from pipeline.dlq.kafka import KafkaBroker, Outgoing


class Cluster:
    def confluent(self) -> dict[str, Any]:
        return {"bootstrap.servers": "127.0.0.1:1"}


class SilentProducer:
    """Queues every message; nothing is ever acknowledged."""

    made: ClassVar[list[SilentProducer]] = []

    def __init__(self, config: dict[str, Any]) -> None:
        self.queued = 0
        self.purged: tuple[bool, bool] | None = None
        SilentProducer.made.append(self)

    def produce(self, *args: Any, **kw: Any) -> None:
        self.queued += 1

    def poll(self, timeout: float) -> int:
        return 0

    def flush(self, timeout: float) -> int:
        return self.queued

    def purge(self, in_queue: bool = True, in_flight: bool = True, blocking: bool = True) -> None:
        self.purged = (in_queue, in_flight)
        self.queued = 0


def test_sends_left_unanswered_are_purged_so_none_is_delivered_after_the_log_is_read(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(kafka, "Producer", SilentProducer)
    broker = KafkaBroker(Cluster(), timeout=0.1)
    try:
        out = Outgoing(
            "events.raw:0:1:0", 0, b"{}", None, ReplayMarker("events.raw:0:1:0", 1, True)
        )
        results = broker.send("events.raw", [out])
    finally:
        broker.close()
    assert results == {"events.raw:0:1:0": "not acknowledged in time"}
    assert SilentProducer.made[-1].purged == (True, True)
