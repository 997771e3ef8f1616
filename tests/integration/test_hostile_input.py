"""Hostile messages between good events, on one partition, through a real worker.

Every good event is stored once, every hostile message is stored or dead-lettered, and the
worker keeps going (the wave-1 failure: one OverflowError stopped the partition for good).
"""

from __future__ import annotations

import time
from typing import Any

import orjson
from confluent_kafka import Producer

from tests.support import Deployment, wait_for

KEY = b"device-hostile"


def good(i: int) -> dict[str, Any]:
    return {
        "event_id": f"good-{i}",
        "event_name": "page_view",
        "event_time": int(time.time() * 1000) - 5000,
        "anonymous_id": "device-hostile",
        "platform": "web",
        "properties": {"page": "home"},
    }


def hostile() -> list[tuple[bytes | None, int]]:
    """(message value, dead letters it gives)."""
    base = good(0)

    def event(**over: Any) -> bytes:
        return orjson.dumps({**base, **over})

    bad_int = orjson.dumps({**base, "event_id": "h-int"}).replace(
        b'"page":"home"', b'"page":"home","duration_ms":9223372036854775808'
    )
    return [
        (bad_int, 1),
        (
            bad_int.replace(b"h-int", b"h-neg").replace(
                b":9223372036854775808", b":-9223372036854775809"
            ),
            1,
        ),
        (
            event(
                event_id="h-money",
                event_name="pay_success",
                properties={"order_id": "o", "amount": 1e308, "pay_method": "alipay"},
            ),
            1,
        ),
        (b'{"a": NaN}', 1),
        (b'{"a": Infinity}', 1),
        (b"[" * 100_000 + b"]" * 100_000, 1),
        (event(event_id="h-big", properties={"page": "home", "referrer": "r" * 900_000}), 1),
        (bytes(range(256)) * 3500, 1),
        (b"\xff\xfe\x80 not utf-8", 1),
        (b"", 1),
        (b"null", 1),
        (b"[1, 2, 3]", 3),
        (event(event_id="h-bidi", anonymous_id="\u202edevice"), 1),
        (None, 1),  # a tombstone
    ]


def test_hostile_messages_between_good_events(deployment: Deployment) -> None:
    worker = deployment.start_worker()
    bootstrap = deployment.env["TRACKFLOW_BROKER"].split("://")[1]
    topic = deployment.env["TRACKFLOW_TOPIC_PREFIX"] + "events.raw"
    producer = Producer({"bootstrap.servers": bootstrap, "message.max.bytes": 8_000_000})
    bad = hostile()
    n = 0
    for value, _ in bad:
        producer.produce(topic, value=orjson.dumps([good(n), good(n + 1)]), key=KEY)
        producer.produce(topic, value=value, key=KEY)
        n += 2
    big = [good(i) for i in range(n, n + 20_000)]  # one valid 20,000-event message
    producer.produce(topic, value=orjson.dumps(big), key=KEY)
    n += 20_000
    producer.produce(topic, value=orjson.dumps(good(n)), key=KEY)
    n += 1
    assert producer.flush(30) == 0
    letters = sum(k for _, k in bad)
    deployment.wait_settled(
        lambda: deployment.count("events") == n and deployment.count("dlq") == letters,
        timeout=240,
        quiet=3,
    )
    ids = [r["event_id"] for r in deployment.query("SELECT event_id FROM events")]
    assert sorted(ids) == sorted(f"good-{i}" for i in range(n))
    cut = deployment.query("SELECT payload_size FROM dlq WHERE payload_truncated")
    assert len(cut) == 2  # the 900 KB property and the 900 KB of garbage
    assert worker.metrics()  # still answering
    wait_for(lambda: worker.proc.poll() is None, timeout=1, what="worker alive")
    assert "Traceback" not in worker.log_text()
