"""Hand-built traffic with a known expected outcome for every event.

The expectation is written down next to each case, not computed by trackflow's validator,
so the end-to-end tests can catch the validator being wrong.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

import orjson

PHONE = "13912345678"


@dataclass
class Traffic:
    lines: list[bytes] = field(default_factory=list)  # what `trackflow produce` sends
    valid: set[str] = field(default_factory=set)  # event ids that must be stored once
    rejected: list[tuple[str, str | None]] = field(default_factory=list)  # (code, event_id)
    duplicates: int = 0
    consent_dropped: int = 0


def base(i: int, now_ms: int, name: str = "page_view", **over: Any) -> dict[str, Any]:
    props: dict[str, Any] = {
        "page_view": {"page": "home"},
        "add_to_cart": {"product_id": f"p{i % 50}", "quantity": 1 + i % 3, "price": 19.9},
        "pay_success": {"order_id": f"o{i}", "amount": 59.8, "pay_method": "wechat_pay"},
        "login": {"method": "phone"},
    }[name]
    event: dict[str, Any] = {
        "event_id": f"ev-{i}",
        "event_name": name,
        "event_time": now_ms - 60_000 + i % 10_000,
        "anonymous_id": f"dev-{i % 37}",
        "platform": "miniprogram",
        "properties": props,
    }
    event.update(over)
    return event


def build(n_valid: int = 400, seed_offset: int = 0, now_ms: int | None = None) -> Traffic:
    now = now_ms or int(time.time() * 1000)
    t = Traffic()
    names = ["page_view", "add_to_cart", "pay_success", "page_view"]
    singles: list[dict[str, Any]] = []
    for i in range(seed_offset, seed_offset + n_valid):
        e = base(i, now, names[i % 4])
        if i % 11 == 0:
            e["event_time"] = datetime.fromtimestamp((now - 30_000) / 1000, UTC).isoformat()
        singles.append(e)
        t.valid.add(e["event_id"])
    # Half as single messages, half as per-device batches of up to 20.
    half = len(singles) // 2
    t.lines += [orjson.dumps(e) for e in singles[:half]]
    by_device: dict[str, list[dict[str, Any]]] = {}
    for e in singles[half:]:
        by_device.setdefault(e["anonymous_id"], []).append(e)
    for events in by_device.values():
        for k in range(0, len(events), 20):
            t.lines.append(orjson.dumps(events[k : k + 20]))

    # A login carrying a clear phone: stored, but only hashed.
    login = base(
        seed_offset + 900_001,
        now,
        "login",
        user_id="member-1",
        identities={"phone": PHONE, "openid": "oid-1"},
    )
    t.lines.append(orjson.dumps(login))
    t.valid.add(login["event_id"])

    # SDK retries: the same bytes again, same key.
    for line in t.lines[:5]:
        t.lines.append(line)
        t.duplicates += 1

    # Consent withdrawn: dropped, counted.
    for k in range(3):
        e = base(seed_offset + 800_000 + k, now, consent={"analytics": False, "marketing": False})
        t.lines.append(orjson.dumps(e))
        t.consent_dropped += 1

    # One bad event per error code, some alone, some inside a batch of good events.
    s = seed_offset
    bad: list[tuple[str, Any]] = [
        (
            "malformed_payload",
            b'{"event_id": "trunc-' + str(s).encode() + b'", "event_name": "page_vi',
        ),
        ("malformed_payload", b"[1, 2, 3"),
        ("malformed_payload", b'"just a string"'),
        (
            "payload_too_large",
            base(s + 700_001, now, properties={"page": "home", "blob": "x" * 40_000}),
        ),
        (
            "missing_required_field",
            {k: v for k, v in base(s + 700_002, now).items() if k != "platform"},
        ),
        (
            "missing_required_field",
            base(s + 700_003, now, "add_to_cart", properties={"product_id": "p1", "quantity": 1}),
        ),
        (
            "type_mismatch",
            base(
                s + 700_004,
                now,
                "add_to_cart",
                properties={"product_id": "p1", "quantity": "2", "price": 1.0},
            ),
        ),
        ("unknown_event", base(s + 700_005, now, event_name="page_vue")),
        (
            "invalid_value",
            base(
                s + 700_006,
                now,
                "add_to_cart",
                properties={"product_id": "p1", "quantity": 1, "price": 9.999},
            ),
        ),
        ("invalid_value", base(s + 700_007, now, platform="symbian")),
        ("invalid_timestamp", base(s + 700_008, now, event_time=now - 30 * 86_400_000)),
        ("invalid_timestamp", base(s + 700_009, now, event_time="yesterday")),
        (
            "unknown_property",
            base(
                s + 700_010,
                now,
                "pay_success",
                properties={"order_id": "o1", "amount": 1, "pay_method": "card", "coupon": "x"},
            ),
        ),
        (
            "invalid_value",
            base(
                s + 700_011,
                now,
                "login",
                user_id="m2",
                identities={"phone": "not-a-phone " + PHONE},
            ),
        ),
    ]
    for code, payload in bad:
        if isinstance(payload, bytes):
            t.lines.append(payload)
            t.rejected.append((code, None))
        else:
            t.rejected.append((code, payload["event_id"]))
            if code in ("invalid_value", "type_mismatch"):
                good = base(
                    s + 600_000 + len(t.rejected), now, anonymous_id=payload["anonymous_id"]
                )
                t.valid.add(good["event_id"])
                t.lines.append(orjson.dumps([good, payload]))  # judged alone in a batch
            else:
                t.lines.append(orjson.dumps(payload))
    return t


def avro_events(plan: Any, n: int, now_ms: int, start: int = 0) -> list[tuple[str, bytes]]:
    from pipeline.ingest.codecs import encode_avro

    out = []
    for i in range(start, start + n):
        event = {
            "event_id": f"avro-{i}",
            "event_name": "pay_success",
            "event_time": datetime.fromtimestamp((now_ms - 5_000) / 1000, UTC),
            "anonymous_id": f"dev-{i % 5}",
            "user_id": None,
            "identities": None,
            "platform": "ios",
            "app_version": "1.2.3",
            "channel": None,
            "consent": None,
            "properties": {
                "order_id": f"ao{i}",
                "amount": Decimal("12.30"),
                "pay_method": "alipay",
            },
        }
        out.append((event["event_id"], encode_avro(event, plan)))
    return out
