"""The privacy barrier: ``sync`` returns only once the requests up to the end the broker
reports are applied, asking the end on its own client."""

from __future__ import annotations

import asyncio
import contextlib
from typing import Any

from pipeline.privacy.requests import SUPPRESS, Request
from pipeline.privacy.state import PrivacyState
from pipeline.runtime.kafka_security import KafkaCluster
from pipeline.runtime.privacy import PrivacyFollower
from pipeline.runtime.telemetry import PipelineMetrics


class Ends:
    def __init__(self, end: int) -> None:
        self.end = end
        self.asked = 0

    async def end_offsets(self, tps: list[Any]) -> dict[Any, int]:
        self.asked += 1
        return {tp: self.end for tp in tps}


def follower(end: int, barrier: bool = True) -> tuple[PrivacyFollower, Ends]:
    f = PrivacyFollower(
        KafkaCluster(bootstrap="localhost:1"), "t", PrivacyState(), PipelineMetrics(), barrier
    )
    ends = Ends(end)
    f._ends, f._tp = ends, "tp"
    f._started.set()
    return f, ends


def test_sync_waits_until_the_follower_has_read_to_the_end() -> None:
    async def scenario() -> list[str]:
        f, ends = follower(end=3)
        log: list[str] = []

        async def follow() -> None:
            for offset in range(3):
                await asyncio.sleep(0.02)
                f._apply([_record(offset)])
                log.append(f"applied {offset}")
                tick, f._tick = f._tick, asyncio.Event()
                tick.set()

        task = asyncio.create_task(follow())
        await f.sync()
        log.append("synced")
        await task
        assert ends.asked == 1
        assert f.state.suppressed("u2", None, None)  # the last request is in force
        return log

    assert asyncio.run(scenario()) == ["applied 0", "applied 1", "applied 2", "synced"]


def test_sync_returns_at_once_when_caught_up_or_without_a_broker() -> None:
    async def scenario() -> None:
        f, ends = follower(end=0)
        await asyncio.wait_for(f.sync(), 1)
        assert ends.asked == 1
        g, ends = follower(end=5, barrier=False)  # an app built without a broker
        await asyncio.wait_for(g.sync(), 1)
        assert ends.asked == 0

    asyncio.run(scenario())


def _record(offset: int) -> Any:
    from types import SimpleNamespace

    req = Request(f"r{offset}", SUPPRESS, (f"user_id:u{offset}",))
    return SimpleNamespace(value=req.encode(), offset=offset)


def test_the_follower_starts_over_after_a_failure(monkeypatch: Any) -> None:
    import pipeline.runtime.privacy as module

    monkeypatch.setattr(module, "RETRY_SECONDS", 0.01)
    f, _ = follower(end=0)
    calls: list[int] = []

    async def follow(poll_ms: int) -> None:
        calls.append(poll_ms)
        if len(calls) < 3:
            raise ConnectionError("broker unreachable")
        raise asyncio.CancelledError  # the worker stops

    monkeypatch.setattr(f, "_follow", follow)

    async def scenario() -> None:
        with contextlib.suppress(asyncio.CancelledError):
            await f.run()

    asyncio.run(scenario())
    assert len(calls) == 3


def test_request_counts_fall_back_to_zero_when_a_request_is_done() -> None:
    from dataclasses import replace

    f, _ = follower(end=0)
    pending = Request("r1", "delete", ("user_id:u1",), status="pending", requested_at=1)
    f.state.apply([pending])
    f._publish()
    gauge = f.metrics.privacy_requests
    assert gauge.labels("delete", "pending")._value.get() == 1
    assert f.metrics.privacy_oldest_pending._value.get() > 0
    f.state.apply([replace(pending, status="done")])
    f._publish()
    assert gauge.labels("delete", "pending")._value.get() == 0
    assert gauge.labels("delete", "done")._value.get() == 1
    assert f.metrics.privacy_oldest_pending._value.get() == 0
