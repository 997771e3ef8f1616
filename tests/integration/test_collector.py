"""The HTTP collector against the shared broker and a real worker: raw HTTP requests, as
SDKs and browsers send them, and what the lake then holds (DESIGN section 13).

One worker and one collector for the module; each test tags its ids, so the tests do not
see each other's events.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import orjson
import pytest

from pipeline.collector.mapping import EVENT_ID_RULE, event_id
from pipeline.tools.broker import EmbeddedBroker, free_port
from tests.collector import CollectorProcess, Reply, Stack, now_iso, running_stack
from tests.support import Deployment, wait_for

WEB_KEY = f"wk-web-{uuid.uuid4().hex}"
MINI_KEY = f"wk-mini-{uuid.uuid4().hex}"
LIMITED_KEY = f"wk-limited-{uuid.uuid4().hex}"
RETIRED_KEY = f"wk-retired-{uuid.uuid4().hex}"
SOURCES: list[dict[str, Any]] = [
    {"name": "web", "write_key": WEB_KEY, "platform": "web"},
    {"name": "mini", "write_key": MINI_KEY, "platform": "miniprogram"},
    {"name": "limited", "write_key": LIMITED_KEY, "platform": "h5", "events_per_second": 1},
    {"name": "retired", "write_key": RETIRED_KEY, "platform": "web", "enabled": False},
]
KEYS = (WEB_KEY, MINI_KEY, LIMITED_KEY, RETIRED_KEY)
PHONE = "13912345678"
EMAIL = "ada.lovelace@example.com"


@pytest.fixture(scope="module")
def stack(broker: EmbeddedBroker, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    with running_stack(broker, tmp_path_factory.mktemp("collector"), SOURCES) as stack:
        yield stack


def track(tag: str, n: int, **over: Any) -> dict[str, Any]:
    call = {
        "type": "track",
        "messageId": f"{tag}-{n}",
        "anonymousId": f"{tag}-anon",
        "event": "signup",
        "properties": {"method": "phone"},
        "timestamp": now_iso(),
        "context": {"library": {"name": "raw-http"}},
    }
    call.update(over)
    return call


def ok(reply: Reply) -> None:
    assert reply.status == 200, (reply.status, reply.body)
    assert reply.json() == {"success": True}


def test_every_endpoint_short_forms_included(stack: Stack) -> None:
    tag = "ep"
    anon, user = f"{tag}-anon", f"{tag}-user"
    expected: dict[str, str] = {}
    calls: dict[str, tuple[dict[str, Any], str]] = {
        "track": ({"event": "signup", "properties": {"method": "phone"}}, "signup"),
        "page": ({"name": "home", "properties": {"url": "https://shop.example/"}}, "page_view"),
        "screen": ({"name": "cart"}, "page_view"),
        "identify": ({"userId": user, "traits": {"name": "Ada"}}, "identify"),
        "alias": ({"previousId": anon, "userId": user}, "alias"),
        "group": ({"userId": user, "groupId": "g-1", "traits": {"plan": "pro"}}, "group"),
    }
    n = 0
    for long_name, (fields, event_name) in calls.items():
        for path in (long_name, long_name[0]):
            n += 1
            call = {"messageId": f"{tag}-{n:02d}", "anonymousId": anon, "timestamp": now_iso()}
            ok(stack.collector.post(f"/v1/{path}", {**call, **fields}, key=WEB_KEY))
            expected[call["messageId"]] = event_name
    for path in ("batch", "b", "import", "import/"):  # Segment's Java SDK: /v1/import/
        batch = [track(tag, n + i) for i in (1, 2)]
        n += 2
        ok(stack.collector.post(f"/v1/{path}", {"batch": batch}, key=WEB_KEY))
        expected.update({c["messageId"]: "signup" for c in batch})

    stack.settle(tag, len(expected))
    rows = stack.stored(tag)
    assert {r["event_id"]: r["event_name"] for r in rows} == expected
    assert {(r["source"], r["platform"]) for r in rows} == {("web", "web")}
    page = next(r for r in rows if r["event_id"] == f"{tag}-03")
    assert orjson.loads(page["properties"]) == {"url": "https://shop.example/", "page": "home"}
    group = next(r for r in rows if r["event_name"] == "group")
    assert orjson.loads(group["properties"]) == {"plan": "pro", "group_id": "g-1"}


def test_a_retried_request_stores_nothing_twice(stack: Stack) -> None:
    tag = "retry"
    batch = [track(tag, i, anonymousId=f"{tag}-anon-{i % 3}") for i in range(6)]
    single = track(tag, 99)
    # The classic Node SDKs' 74-character id: stored under its digest, once too.
    classic_id = f"node-{uuid.uuid4().hex}-{uuid.uuid4()}"
    classic = track(tag, 0, messageId=classic_id, anonymousId=f"{tag}-classic")
    for _ in range(3):  # an SDK that never saw the first answers
        ok(stack.collector.post("/v1/batch", {"batch": batch}, key=WEB_KEY, gzip=True))
        ok(stack.collector.post("/v1/track", single, key=WEB_KEY))
        ok(stack.collector.post("/v1/t", {**classic, "writeKey": WEB_KEY}))
    digest = event_id(classic_id, EVENT_ID_RULE)

    def classic_rows() -> list[dict[str, Any]]:
        return stack.rows("SELECT * FROM events WHERE anonymous_id = ?", f"{tag}-classic")

    stack.dep.wait_settled(lambda: len(stack.stored(tag)) == 7 and len(classic_rows()) == 1)
    assert sorted(r["event_id"] for r in stack.stored(tag)) == sorted(
        [c["messageId"] for c in batch] + [single["messageId"]]
    )
    assert [r["event_id"] for r in classic_rows()] == [digest]


def test_an_event_sent_over_http_and_to_kafka_is_stored_once(stack: Stack) -> None:
    """The collector places each event on the partition ``trackflow produce`` gives its
    key (librdkafka's partitioner): both copies meet the same dedup memory."""
    tag = "cross"
    calls = [track(tag, i, anonymousId=f"{tag}-anon-{i}") for i in range(12)]
    ok(stack.collector.post("/v1/batch", {"batch": calls}, key=WEB_KEY))
    envelopes = [
        {
            "event_id": c["messageId"],
            "event_name": "signup",
            "event_time": c["timestamp"],
            "anonymous_id": c["anonymousId"],
            "platform": "server",
            "properties": {"method": "phone"},
        }
        for c in calls
    ]
    stack.dep.produce(orjson.dumps(e) for e in envelopes)
    stack.settle(tag, 12)
    assert {(r["event_id"], r["source"]) for r in stack.stored(tag)} == {
        (c["messageId"], "web") for c in calls
    }


def test_gzip_text_plain_key_in_the_body_and_cors(stack: Stack) -> None:
    tag = "web"
    origin = "https://shop.example"
    c = stack.collector
    ok(c.post("/v1/batch", {"batch": [track(tag, 1)]}, key=WEB_KEY, gzip=True))
    # A browser: text/plain (no preflight), the key in the body, cross-origin.
    plain = {"Content-Type": "text/plain", "Origin": origin}
    reply = c.post("/v1/t", {**track(tag, 2), "writeKey": MINI_KEY}, headers=plain)
    ok(reply)
    assert reply.headers["Access-Control-Allow-Origin"] == origin
    batch = {"batch": [track(tag, 3)], "writeKey": MINI_KEY, "sentAt": now_iso()}
    ok(c.post("/v1/b", batch, headers=plain, gzip=True))
    refused = c.post("/v1/t", {**track(tag, 4), "writeKey": "wrong"}, headers=plain)
    assert refused.status == 401
    assert refused.headers["Access-Control-Allow-Origin"] == origin
    pre = c.request(
        "OPTIONS",
        "/v1/batch",
        headers={
            "Origin": origin,
            "Access-Control-Request-Method": "POST",
            "Access-Control-Request-Headers": "content-type,authorization",
        },
    )
    assert pre.status in (200, 204)
    assert pre.headers["Access-Control-Allow-Origin"] == origin
    assert "POST" in pre.headers["Access-Control-Allow-Methods"]
    assert "authorization" in pre.headers["Access-Control-Allow-Headers"].lower()

    stack.settle(tag, 3)
    got = {r["event_id"]: (r["source"], r["platform"]) for r in stack.stored(tag)}
    assert got == {
        f"{tag}-1": ("web", "web"),
        f"{tag}-2": ("mini", "miniprogram"),
        f"{tag}-3": ("mini", "miniprogram"),
    }


def test_answer_codes(stack: Stack) -> None:
    tag = "codes"
    c = stack.collector
    body = {"batch": [track(tag, 1)]}
    not_json = c.post("/v1/batch", b"{not json", key=WEB_KEY)
    assert not_json.status == 400
    assert not_json.json()["success"] is False
    bad: list[Any] = [{"batch": []}, {"batch": "x"}, {"sentAt": now_iso()}, [track(tag, 2)], b"7"]
    for doc in bad:
        assert c.post("/v1/batch", doc, key=WEB_KEY).status == 400, doc
    assert c.post("/v1/batch", body, key="wk-unknown").status == 401
    assert c.post("/v1/batch", body).status == 401  # no key at all
    assert c.post("/v1/batch", {**body, "writeKey": "wk-unknown"}).status == 401
    assert c.post("/v1/batch", body, key=RETIRED_KEY).status == 404
    assert c.post("/v1/batch", {**body, "writeKey": RETIRED_KEY}).status == 404
    assert c.post("/v1/nothing", body, key=WEB_KEY).status == 404
    # Just under 500 KiB: 100 events of 4.5 KiB pass whole.
    near = [
        track(tag, 100 + i, properties={"method": "phone", "note": "y" * 4500}) for i in range(100)
    ]
    ok(c.post("/v1/batch", {"batch": near}, key=WEB_KEY))
    big = {"batch": [track(tag, 3, properties={"blob": "x" * 600 * 1024})]}
    many = {"batch": [track(tag, 1000 + i, properties={"note": "z" * 6000}) for i in range(100)]}
    assert c.post("/v1/batch", many, key=WEB_KEY).status == 413  # 600 KiB of small events
    assert c.post("/v1/batch", big, key=WEB_KEY).status == 413
    assert c.post("/v1/batch", big, key=WEB_KEY, gzip=True).status == 413  # once inflated

    # 1 event/s: the first passes, the next is refused with Retry-After, which an SDK
    # honours; its retry then passes.
    ok(c.post("/v1/track", track(tag, 4), key=LIMITED_KEY))
    limited = c.post("/v1/track", track(tag, 5), key=LIMITED_KEY)
    assert limited.status == 429
    assert int(limited.headers["Retry-After"]) >= 1
    time.sleep(int(limited.headers["Retry-After"]))
    ok(c.post("/v1/track", track(tag, 5), key=LIMITED_KEY))

    stack.settle(tag, 102)
    got = {(r["event_id"], r["source"], r["platform"]) for r in stack.stored(tag)}
    assert got == {(f"{tag}-4", "limited", "h5"), (f"{tag}-5", "limited", "h5")} | {
        (f"{tag}-{100 + i}", "web", "web") for i in range(100)
    }


def test_an_event_over_32_kib_in_a_good_batch_is_dead_lettered_alone(stack: Stack) -> None:
    tag = "big"
    big = track(tag, 2, properties={"method": "phone", "blob": "x" * 40_000})
    batch = [track(tag, 1), big, track(tag, 3)]
    ok(stack.collector.post("/v1/batch", {"batch": batch, "writeKey": WEB_KEY}))
    stack.settle(tag, 2, dead=1)
    assert [r["event_id"] for r in stack.stored(tag)] == [f"{tag}-1", f"{tag}-3"]
    (dead,) = stack.dead(tag)
    assert dead["error_code"] == "payload_too_large"
    assert dead["source"] == "web"
    assert WEB_KEY not in dead["text"]


def test_bad_events_are_dead_lettered_alone_with_their_source(stack: Stack) -> None:
    tag = "bad"
    no_id = track(tag, 0, anonymousId=f"{tag}-noid")
    del no_id["messageId"]
    batch = [
        track(tag, 1),
        no_id,
        track(tag, 2, properties="cheap"),
        track(tag, 3, event=42),
        track(tag, 4, event="purchase"),
        track(tag, 5, properties={"method": "fax"}),
        track(tag, 6, timestamp="yesterday"),
        f"{tag}-not-an-object",
        track(tag, 7, context={"traits": {"email": "not-an-email"}}),
        track(tag, 8),
        track(tag, 9, messageId=42, anonymousId=f"{tag}-number-id"),
        track(tag, 10, messageId="", anonymousId=f"{tag}-empty-id"),
        track(tag, 11, anonymousId=5),
        track(tag, 12, anonymousId=None),  # neither anonymousId nor userId
        track(tag, 13, event=None),
        {k: v for k, v in track(tag, 14).items() if k != "type"},  # a batch item's type
        track(tag, 15, type="purchase"),
        track(tag, 16, timestamp=now_iso(-8 * 86_400_000)),  # over 7 days old
        track(tag, 17, userId={"id": 7}),
        track(tag, 18, context={"consent": {"categoryPreferences": "yes"}}),
        # Consent: analytics refused is dropped (neither stored nor dead-lettered);
        # marketing refused alone is stored.
        track(tag, 19, context={"consent": {"categoryPreferences": {"analytics": False}}}),
        track(tag, 20, context={"consent": {"categoryPreferences": {"marketing": False}}}),
    ]
    dropped = stack.dep.workers[0].metric("trackflow_consent_dropped_total")
    ok(stack.collector.post("/v1/batch", {"batch": batch}, key=MINI_KEY))
    stack.settle(tag, 3, dead=18)
    stored = [r["event_id"] for r in stack.stored(tag)]
    assert stored == [f"{tag}-1", f"{tag}-20", f"{tag}-8"]
    assert stack.dep.workers[0].metric("trackflow_consent_dropped_total") == dropped + 1
    dead = stack.dead(tag)
    markers = {
        f"{tag}-number-id": "type_mismatch",
        f"{tag}-empty-id": "invalid_value",
        f'"{tag}-11"': "type_mismatch",
        f'"{tag}-12"': "missing_required_field",
        f'"{tag}-13"': "missing_required_field",
        f'"{tag}-14"': "missing_required_field",
        f'"{tag}-15"': "unknown_event",
        f'"{tag}-16"': "invalid_timestamp",
        f'"{tag}-17"': "type_mismatch",
        f'"{tag}-18"': "type_mismatch",
        f"{tag}-noid": "missing_required_field",
        f'"{tag}-2"': "type_mismatch",
        f'"{tag}-3"': "type_mismatch",
        f'"{tag}-4"': "unknown_event",
        f'"{tag}-5"': "invalid_value",
        f'"{tag}-6"': "invalid_timestamp",
        "not-an-object": "malformed_payload",
        f'"{tag}-7"': "invalid_value",
    }
    got = {m: d["error_code"] for d in dead for m in markers if m in d["text"]}
    assert got == markers
    assert {d["source"] for d in dead} == {"mini"}
    no_id = next(d for d in dead if f"{tag}-noid" in d["text"])
    assert "event_id" in no_id["error_detail"]
    assert not any("not-an-email" in d["text"] for d in dead)  # masked like any dead letter


def test_the_lake_holds_exactly_what_was_sent_with_no_identifier_in_clear(stack: Stack) -> None:
    """A visitor browses anonymously, signs up (identify with phone and e-mail), buys;
    another device of theirs is aliased: one person, every event stored once."""
    tag = "e2e"
    anon, user, other = f"{tag}-device-1", f"{tag}-member", f"{tag}-device-2"
    t = now_iso
    calls: list[dict[str, Any]] = [
        {"type": "page", "name": "home", "anonymousId": anon},
        {
            "type": "page",
            "name": "product_detail",
            "properties": {"product_id": "p1"},
            "anonymousId": anon,
        },
        {
            "type": "identify",
            "anonymousId": anon,
            "userId": user,
            "traits": {"phone": PHONE, "email": EMAIL, "name": "Ada"},
        },
        {
            "type": "track",
            "event": "add_to_cart",
            "anonymousId": anon,
            "userId": user,
            "properties": {"product_id": "p1", "quantity": 1, "price": 59.9},
        },
        {
            "type": "track",
            "event": "login",
            "userId": user,
            "properties": {"method": "phone"},
            "context": {"traits": {"phone": PHONE}},
        },
        {"type": "alias", "previousId": other, "userId": user},
        {"type": "screen", "name": "cart", "anonymousId": other},
    ]
    sent = []
    for i, call in enumerate(calls):
        call.update(messageId=f"{tag}-{i}", timestamp=t(-60_000 + i * 1000))
        sent.append(call["messageId"])
    body = {"batch": calls, "context": {"app": {"version": "2.0.1"}}, "sentAt": t()}
    ok(stack.collector.post("/v1/batch", body, key=WEB_KEY, gzip=True))

    stack.settle(tag, len(calls))
    rows = stack.stored(tag)
    assert [r["event_id"] for r in rows] == sent
    assert {(r["source"], r["platform"], r["app_version"]) for r in rows} == {
        ("web", "web", "2.0.1")
    }
    identify = next(r for r in rows if r["event_name"] == "identify")
    identities = orjson.loads(identify["identities"])
    assert set(identities) == {"phone", "email"}
    assert all(len(v) == 64 for v in identities.values())  # HMAC-SHA256
    assert orjson.loads(identify["properties"]) == {"name": "Ada"}

    # One ID: both devices and the member are one person.
    wait_for(
        lambda: (
            len(
                {
                    r["person_id"]
                    for r in stack.rows(
                        "SELECT person_id FROM events_resolved WHERE starts_with(event_id, ?)", tag
                    )
                }
            )
            == 1
        ),
        timeout=60,
        what="one person for the tag",
    )

    # No identifier in clear anywhere: not in the files, not in any view.
    stack.assert_nowhere(PHONE, EMAIL, "139 1234 5678", *KEYS)


def test_metrics(stack: Stack) -> None:
    c = stack.collector
    ok(c.post("/v1/track", track("metrics", 1), key=WEB_KEY))
    assert c.post("/v1/track", track("metrics", 2), key="nope").status == 401
    m = c.metrics()
    assert m['trackflow_collector_requests_total{code="200",source="web"}'] >= 1
    assert m['trackflow_collector_requests_total{code="401",source="_unknown"}'] >= 1
    assert m['trackflow_collector_events_accepted_total{source="web"}'] >= 1
    assert m['trackflow_collector_request_duration_seconds_count{source="web"}'] >= 1
    assert m["trackflow_collector_kafka_up"] == 1
    assert "trackflow_collector_producer_queue_messages" in m
    health = c.get("/health").json()
    assert health == {"status": "ok", "kafka": "up"}
    assert c.get("/ready").json() == {"ready": True}


def test_503_while_kafka_is_down_and_a_graceful_stop(tmp_path: Path) -> None:
    """A collector whose broker goes away answers 503 (never 200 for events Kafka did not
    take); one started while Kafka is down serves, with 503, and stops cleanly."""
    fast = {"TRACKFLOW_COLLECT_DELIVERY_TIMEOUT": "2", "TRACKFLOW_COLLECT_SHUTDOWN_SECONDS": "3"}
    with EmbeddedBroker(log=tmp_path / "broker.log") as own:
        dep = Deployment(own.url, tmp_path, "t-collector-down")
        collector = CollectorProcess(dep, SOURCES, env=fast).start()
        try:
            ok(collector.post("/v1/track", track("down", 1), key=WEB_KEY))
            own.stop()
            wait_for(
                lambda: collector.post("/v1/track", track("down", 2), key=WEB_KEY).status == 503,
                timeout=60,
                what="503 once the broker is gone",
            )
            assert collector.get("/ready").status == 503
            assert collector.get("/health").json() == {"status": "ok", "kafka": "down"}
            m = collector.metrics()
            assert m["trackflow_collector_kafka_up"] == 0
            assert m['trackflow_collector_requests_total{code="503",source="web"}'] >= 1
            rejected = 'trackflow_collector_events_rejected_total{reason="kafka_unavailable",'
            assert m[rejected + 'source="web"}'] >= 1
        finally:
            assert collector.stop() == 0
    nowhere = Deployment(f"kafka://127.0.0.1:{free_port()}", tmp_path, "t-collector-none")
    late = CollectorProcess(nowhere, SOURCES, env=fast).start()
    try:
        reply = late.post("/v1/batch", {"batch": [track("none", 1)]}, key=WEB_KEY)
        assert reply.status == 503
        assert late.post("/v1/batch", b"{}", key="nope").status == 401  # auth still first
    finally:
        assert late.stop() == 0
    assert "Traceback" not in late.log_text()
