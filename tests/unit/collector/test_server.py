"""The collector's handlers in-process, with a stand-in producer: the order of the
checks, what each answer costs (rate tokens), bugs answered 500, probes, reload."""

from __future__ import annotations

import asyncio
import base64
import logging
from collections.abc import Awaitable, Callable, Sequence
from pathlib import Path
from typing import Any

import orjson
import pytest
from aiohttp.test_utils import TestClient, TestServer

from pipeline.collector import server as server_module
from pipeline.collector.server import Collector, Plan
from pipeline.collector.sources import load_sources
from pipeline.runtime.kafka_security import KafkaCluster
from pipeline.settings import Settings

KEY = "wk-unit-secret"
SOURCES = [
    {"name": "web", "write_key": KEY, "platform": "web", "events_per_second": 2},
    {"name": "off", "write_key": "wk-off", "enabled": False},
]
PLAN = Plan(("web", "ios"), 32 * 1024)


class Acked:
    """A delivery that Kafka acknowledged (or not) at once."""

    def __init__(self, ok: bool) -> None:
        self.ok = ok
        self.failed = 0 if ok else 1
        self.error = None if ok else "_MSG_TIMED_OUT"

    async def wait(self, _seconds: float) -> bool:
        return self.ok


class FakeProducer:
    def __init__(self) -> None:
        self.available = True
        self.fatal: str | None = None
        self.partitions = 4
        self.ack = True
        self.sent: list[tuple[int, bytes, bytes]] = []

    def __len__(self) -> int:
        return 0

    def send(self, messages: Sequence[tuple[int, bytes, bytes]], headers: Any) -> Acked:
        self.sent.extend(messages)
        assert headers == [("trackflow-source", b"web")]
        return Acked(self.ack)

    def delivered(self, delivery: Acked) -> None:
        self.available = delivery.ok


def auth(key: str = KEY) -> dict[str, str]:
    return {"Authorization": "Basic " + base64.b64encode(f"{key}:".encode()).decode()}


def track(i: int) -> dict[str, Any]:
    return {"messageId": f"m{i}", "anonymousId": "a", "event": "signup", "timestamp": 1}


Scenario = Callable[[TestClient, Collector, FakeProducer], Awaitable[None]]


def run(tmp_path: Path, scenario: Scenario) -> None:
    sources = tmp_path / "sources.json"
    sources.write_bytes(orjson.dumps(SOURCES))
    settings = Settings.model_validate({"sources": sources})
    producer = FakeProducer()
    collector = Collector(
        settings,
        KafkaCluster(bootstrap="127.0.0.1:1"),
        load_sources(sources, PLAN.platforms),
        PLAN,
        producer,  # type: ignore[arg-type]
    )

    async def main() -> None:
        async with TestClient(TestServer(collector.app())) as client:
            await scenario(client, collector, producer)

    asyncio.run(main())


def test_503_spends_no_rate_tokens_and_a_failed_ack_is_503(tmp_path: Path) -> None:
    async def scenario(client: TestClient, c: Collector, p: FakeProducer) -> None:
        p.available = False
        for i in range(5):
            r = await client.post("/v1/track", json=track(i), headers=auth())
            assert r.status == 503
        assert (await client.get("/ready")).status == 503
        p.available = True
        # The bucket (2 events/s) is still full: two single events pass, the third waits.
        assert (await client.post("/v1/t", json=track(1), headers=auth())).status == 200
        assert (await client.post("/v1/t", json=track(2), headers=auth())).status == 200
        limited = await client.post("/v1/t", json=track(3), headers=auth())
        assert limited.status == 429
        assert limited.headers["Retry-After"] == "1"
        p.ack = False
        await asyncio.sleep(1.1)
        assert (await client.post("/v1/t", json=track(4), headers=auth())).status == 503
        assert not p.available  # learnt from the failed delivery
        m = c.metrics.render().decode()
        assert 'trackflow_collector_requests_total{code="503",source="web"} 6.0' in m
        assert (
            'trackflow_collector_events_rejected_total{reason="kafka_unavailable",source="web"} 6.0'
            in m
        )
        assert (
            'trackflow_collector_events_rejected_total{reason="rate_limited",source="web"} 1.0' in m
        )

    run(tmp_path, scenario)


def test_order_of_the_checks(tmp_path: Path) -> None:
    async def scenario(client: TestClient, c: Collector, p: FakeProducer) -> None:
        # A Basic key is judged before the body is read: a bad body with a bad key is 401.
        assert (await client.post("/v1/batch", data=b"{", headers=auth("nope"))).status == 401
        assert (await client.post("/v1/batch", data=b"{", headers=auth("wk-off"))).status == 404
        # Without Basic auth the body must be read first: not JSON is 400.
        assert (await client.post("/v1/batch", data=b"{")).status == 400
        body = {"batch": [track(1)], "writeKey": "wk-off"}
        assert (await client.post("/v1/batch", json=body)).status == 404
        assert (await client.post("/v1/x", json=track(1), headers=auth())).status == 404
        assert (await client.get("/v1/track")).status == 405
        assert p.sent == []

    run(tmp_path, scenario)


def test_a_collector_bug_is_answered_500_without_the_key_in_the_log(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    def broken(*_args: Any) -> Any:
        raise RuntimeError("boom")

    monkeypatch.setattr(server_module, "build", broken)

    async def scenario(client: TestClient, c: Collector, p: FakeProducer) -> None:
        r = await client.post("/v1/track", json={**track(1), "writeKey": KEY})
        assert r.status == 500
        assert (await r.json()) == {"success": False, "error": "internal error"}

    with caplog.at_level(logging.ERROR):
        run(tmp_path, scenario)
    assert "boom" in caplog.text
    assert KEY not in caplog.text


def test_probes_and_sources_reload(tmp_path: Path) -> None:
    async def scenario(client: TestClient, c: Collector, p: FakeProducer) -> None:
        assert (await (await client.get("/health")).json()) == {"status": "ok", "kafka": "up"}
        assert (await client.get("/ready")).status == 200
        c.stopping = True
        assert (await (await client.get("/ready")).json())["reason"] == "stopping"
        p.fatal = "idempotence broken"
        assert (await client.get("/health")).status == 503
        p.fatal = None
        # SIGHUP: a new key works at once; a broken file keeps the sources as they were.
        c.settings.sources.write_bytes(orjson.dumps([{"name": "web", "write_key": "wk-new"}]))
        c.reload_sources()
        assert (await client.post("/v1/t", json=track(1), headers=auth())).status == 401
        assert (await client.post("/v1/t", json=track(2), headers=auth("wk-new"))).status == 200
        c.settings.sources.write_text("[{")
        c.reload_sources()
        assert (await client.post("/v1/t", json=track(3), headers=auth("wk-new"))).status == 200

    run(tmp_path, scenario)


def test_import_and_trailing_slashes_are_batch_paths(tmp_path: Path) -> None:
    """Segment's Java SDK posts to /v1/import/, its Ruby SDK to /v1/import."""

    async def scenario(client: TestClient, c: Collector, producer: FakeProducer) -> None:
        source = c.sources.lookup(KEY)
        assert source is not None
        source.bucket = None  # no rate limit here
        for i, path in enumerate(("/v1/import", "/v1/import/", "/v1/batch/", "/v1/b/")):
            reply = await client.post(
                path, data=orjson.dumps({"batch": [track(i)]}), headers=auth()
            )
            assert reply.status == 200, (path, await reply.text())
        reply = await client.post("/v1/t/", data=orjson.dumps(track(9)), headers=auth())
        assert reply.status == 200
        pre = await client.options("/v1/import/", headers={"Origin": "https://shop.example"})
        assert pre.status == 204
        assert (await client.post("/v1/imports", data=b"{}", headers=auth())).status == 404
        events = [e for _, _, v in producer.sent for e in orjson.loads(b"[" + v + b"]")]
        assert sorted(e["event_id"] for e in events) == ["m0", "m1", "m2", "m3", "m9"]

    run(tmp_path, scenario)
