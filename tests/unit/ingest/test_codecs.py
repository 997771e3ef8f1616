"""Producer payload decoding: JSON objects, JSON batches and Avro single-object encoding."""

from __future__ import annotations

from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

import orjson
import pytest

from pipeline.contract.errors import ErrorCode
from pipeline.contract.pii import PiiHasher
from pipeline.contract.plan import TrackingPlan, load_plan
from pipeline.ingest.codecs import (
    AVRO_MAGIC,
    Item,
    b64,
    decode_message,
    element_bytes,
    encode_avro,
    unb64,
)
from pipeline.ingest.validation import Validator

NOW = 1_795_420_800_000  # 2026-11-23T08:00:00Z
LIMIT = 32 * 1024


@pytest.fixture(scope="module")
def plan() -> TrackingPlan:
    return load_plan()


def good(i: int = 1, **extra: Any) -> dict[str, Any]:
    return {
        "event_id": f"e{i}",
        "event_name": "page_view",
        "event_time": NOW - 60_000,
        "anonymous_id": "anon-1",
        "platform": "web",
        "properties": {"page": "home"},
        **extra,
    }


def only_error(items: list[Item]) -> tuple[str, str]:
    assert len(items) == 1
    item = items[0]
    assert item.index == 0
    assert item.error is not None
    return item.error.code, item.error.detail


def test_envelope_limit_is_32_kib(plan: TrackingPlan) -> None:
    assert plan.envelope.max_event_bytes == LIMIT


# -- JSON ----------------------------------------------------------------------------------


def test_single_object(plan: TrackingPlan) -> None:
    items = decode_message(orjson.dumps(good()), plan)
    assert len(items) == 1
    assert items[0].index == 0
    assert items[0].obj == good()
    assert items[0].error is None
    assert items[0].version is None


@pytest.mark.parametrize(
    ("value", "word"),
    [
        pytest.param(b"", "empty", id="empty_bytes"),
        pytest.param(None, "tombstone", id="none"),
        pytest.param(b'{"event_id": "e1", "event_na', "JSON", id="truncated_object"),
        pytest.param(b'[{"event_id": "e1"}, {"event_', "JSON", id="truncated_batch"),
        pytest.param(b"\xff\xfe{}", "JSON", id="non_utf8_prefix"),
        pytest.param(b'{"event_id": "\xff\xfe"}', "JSON", id="non_utf8_in_string"),
        pytest.param(b"   ", "JSON", id="whitespace"),
        pytest.param(b"{'event_id': 'e1'}", "JSON", id="python_repr"),
        pytest.param(b'{"a": NaN}', "JSON", id="nan"),
        pytest.param(b"42", "integer", id="json_integer"),
        pytest.param(b"4.2", "number", id="json_number"),
        pytest.param(b'"page_view"', "string", id="json_string"),
        pytest.param(b"null", "null", id="json_null"),
        pytest.param(b"true", "boolean", id="json_bool"),
        pytest.param(b"[]", "empty", id="empty_array"),
    ],
)
def test_malformed_messages(plan: TrackingPlan, value: bytes | None, word: str) -> None:
    code, detail = only_error(decode_message(value, plan))
    assert code == ErrorCode.MALFORMED_PAYLOAD
    assert word in detail


def test_batch_with_non_object_elements(plan: TrackingPlan) -> None:
    batch = [good(1), 5, good(2), "x", None, [good(3)], good(4)]
    items = decode_message(orjson.dumps(batch), plan)
    assert [i.index for i in items] == list(range(7))
    for pos in (0, 2, 6):
        assert items[pos].error is None
        assert items[pos].obj == batch[pos]
    expected_types = {1: "integer", 3: "string", 4: "null", 5: "array"}
    for pos, typ in expected_types.items():
        item = items[pos]
        assert item.obj is None
        assert item.error is not None
        assert item.error.code == ErrorCode.MALFORMED_PAYLOAD
        assert f"batch element {pos}" in item.error.detail
        assert typ in item.error.detail
        assert item.raw == orjson.dumps(batch[pos])


@pytest.mark.parametrize(("extra", "too_large"), [(0, False), (1, True), (5000, True)])
def test_single_object_size_limit(plan: TrackingPlan, extra: int, too_large: bool) -> None:
    base = orjson.dumps(good(channel=""))
    obj = good(channel="c" * (LIMIT - len(base) + extra))
    payload = orjson.dumps(obj)
    assert len(payload) == LIMIT + extra
    items = decode_message(payload, plan)
    assert len(items) == 1
    if too_large:
        code, detail = only_error(items)
        assert code == ErrorCode.PAYLOAD_TOO_LARGE
        assert str(len(payload)) in detail
        assert str(LIMIT) in detail
    else:
        assert items[0].error is None
        assert items[0].obj == obj


def test_batch_with_one_element_over_32_kib(plan: TrackingPlan) -> None:
    big = good(2, channel="c" * (LIMIT + 10))
    batch = [good(1), big, good(3)]
    items = decode_message(orjson.dumps(batch), plan)
    assert [i.index for i in items] == [0, 1, 2]
    assert items[0].error is None
    assert items[0].obj == good(1)
    assert items[2].error is None
    assert items[2].obj == good(3)
    assert items[1].error is not None
    assert items[1].error.code == ErrorCode.PAYLOAD_TOO_LARGE
    assert items[1].raw == orjson.dumps(big)


def test_batch_over_32_kib_of_small_elements_is_fine(plan: TrackingPlan) -> None:
    batch = [good(i, channel="c" * 10_000) for i in range(5)]
    payload = orjson.dumps(batch)
    assert len(payload) > LIMIT
    items = decode_message(payload, plan)
    assert [i.error for i in items] == [None] * 5
    assert [i.obj for i in items] == batch


def test_deeply_nested_element_in_a_large_batch_does_not_raise(plan: TrackingPlan) -> None:
    # orjson reads 1024 levels but writes only 254: re-encoding the element for the size
    # check raises out of decode_message, whose contract is "never raises".
    nested = b"[" * 300 + b"]" * 300
    element = orjson.dumps(good(1, properties={"page": "home", "x": 0})).replace(
        b'"x":0', b'"x":' + nested
    )
    payload = b"[" + element + b"," + orjson.dumps(good(2, channel="c" * LIMIT)) + b"]"
    items = decode_message(payload, plan)
    assert len(items) == 2
    assert items[1].error is not None
    assert items[1].error.code == ErrorCode.PAYLOAD_TOO_LARGE


def test_element_bytes(plan: TrackingPlan) -> None:
    single = orjson.dumps(good(1))
    [item] = decode_message(single, plan)
    assert element_bytes(item, single) == single
    spaced = b"[ " + orjson.dumps(good(1)) + b" , " + orjson.dumps(good(2)) + b" ]"
    items = decode_message(spaced, plan)
    assert element_bytes(items[1], spaced) == orjson.dumps(good(2))
    broken = b'{"event_id": "e1"'
    [bad] = decode_message(broken, plan)
    assert element_bytes(bad, broken) == broken


# -- Avro ----------------------------------------------------------------------------------


def avro_event(name: str = "checkout", **props: Any) -> dict[str, Any]:
    defaults: dict[str, dict[str, Any]] = {
        "checkout": {
            "order_id": "o-1",
            "amount": Decimal("59.97"),
            "item_count": 3,
            "coupon_id": None,
        },
        "page_view": {"page": "product_detail", "product_id": "p1", "referrer": None},
        "login": {"method": "phone"},
    }
    return {
        "event_id": "avro-1",
        "event_name": name,
        "event_time": datetime(2026, 11, 23, 7, 59, 30, 123000, tzinfo=UTC),
        "anonymous_id": "anon-1",
        "user_id": "member-1",
        "identities": {"openid": "oX"},
        "platform": "miniprogram",
        "app_version": "1.0.0",
        "channel": None,
        "consent": {"analytics": True, "marketing": False},
        "properties": {**defaults[name], **props},
    }


@pytest.mark.parametrize("name", ["checkout", "page_view", "login"])
def test_avro_round_trip(plan: TrackingPlan, name: str) -> None:
    event = avro_event(name)
    payload = encode_avro(event, plan)
    assert payload[:2] == AVRO_MAGIC
    items = decode_message(payload, plan)
    assert len(items) == 1
    item = items[0]
    assert item.error is None
    assert item.version == 1
    expected = dict(event)
    expected["properties"] = {k: v for k, v in event["properties"].items() if v is not None}
    assert item.obj == expected
    assert item.obj["event_time"] == datetime(2026, 11, 23, 7, 59, 30, 123000, tzinfo=UTC)


def test_avro_event_validates_with_exact_time_and_money(plan: TrackingPlan) -> None:
    payload = encode_avro(avro_event("checkout", amount=Decimal("19.99")), plan)
    [item] = decode_message(payload, plan)
    validator = Validator(plan, PiiHasher("s"))
    record = validator.validate(item.obj, NOW, item.version)
    assert isinstance(record, dict)
    assert record["event_time"] == NOW - 30_000 + 123
    assert Decimal(str(record["properties"]["amount"])) == Decimal("19.99")
    assert record["properties"]["item_count"] == 3
    assert record["consent_marketing"] is False
    assert record["schema_version"] == 1


def test_avro_unknown_fingerprint(plan: TrackingPlan) -> None:
    payload = encode_avro(avro_event(), plan)
    forged = payload[:2] + bytes(8) + payload[10:]
    code, detail = only_error(decode_message(forged, plan))
    assert code == ErrorCode.MALFORMED_PAYLOAD
    assert "fingerprint" in detail
    assert f"{0:016x}" in detail


@pytest.mark.parametrize("cut", [1, 3, 10, 20])
def test_avro_truncated_body(plan: TrackingPlan, cut: int) -> None:
    payload = encode_avro(avro_event(), plan)
    code, _ = only_error(decode_message(payload[:-cut], plan))
    assert code == ErrorCode.MALFORMED_PAYLOAD


@pytest.mark.parametrize("cut", [2, 5, 9])
def test_avro_truncated_header(plan: TrackingPlan, cut: int) -> None:
    payload = encode_avro(avro_event(), plan)
    code, _ = only_error(decode_message(payload[:cut], plan))
    assert code == ErrorCode.MALFORMED_PAYLOAD


@pytest.mark.parametrize("tail", [b"\x00", b"junk"])
def test_avro_trailing_bytes(plan: TrackingPlan, tail: bytes) -> None:
    payload = encode_avro(avro_event(), plan)
    code, detail = only_error(decode_message(payload + tail, plan))
    assert code == ErrorCode.MALFORMED_PAYLOAD
    assert "trailing" in detail


def test_avro_over_32_kib(plan: TrackingPlan) -> None:
    event = avro_event("page_view")
    event["channel"] = "c" * (LIMIT + 1)
    code, _ = only_error(decode_message(encode_avro(event, plan), plan))
    assert code == ErrorCode.PAYLOAD_TOO_LARGE


def test_avro_fingerprints_differ_per_event(plan: TrackingPlan) -> None:
    a = encode_avro(avro_event("checkout"), plan)
    b = encode_avro(avro_event("login"), plan)
    assert a[2:10] != b[2:10]
    assert len(plan.avro_by_fingerprint) == len(plan.versions)


# -- helpers ---------------------------------------------------------------------------------


def test_b64_round_trip() -> None:
    data = bytes(range(256))
    assert unb64(b64(data)) == data
    assert b64(b"\x00\xff") == "AP8="
