"""The validate stage without Faust: RawMessage lists in, valid records and DLQ records out."""

from __future__ import annotations

import re
from collections import Counter
from typing import Any

import orjson
import pytest

from pipeline.contract.errors import Rejected
from pipeline.contract.pii import PiiHasher
from pipeline.contract.plan import TrackingPlan, load_plan
from pipeline.contract.positions import pack as position
from pipeline.ingest.codecs import unb64
from pipeline.ingest.dedup import SeenIds, fingerprint
from pipeline.ingest.ingestor import Ingestor, IngestResult, RawMessage
from pipeline.ingest.validation import Validator

NOW = 1_795_420_800_000  # 2026-11-23T08:00:00Z
HORIZON = 3_600_000
TOPIC = "events.raw"
PART = 3
HEX64 = re.compile(rb"[0-9a-f]{64}")


@pytest.fixture(scope="module")
def plan() -> TrackingPlan:
    return load_plan()


@pytest.fixture(scope="module")
def hasher() -> PiiHasher:
    return PiiHasher("unit-test-secret")


@pytest.fixture
def validator(plan: TrackingPlan, hasher: PiiHasher) -> Validator:
    return Validator(plan, hasher)


@pytest.fixture
def seen() -> SeenIds:
    return SeenIds(HORIZON)


@pytest.fixture
def ingestor(
    plan: TrackingPlan, validator: Validator, hasher: PiiHasher, seen: SeenIds
) -> Ingestor:
    return Ingestor(plan, validator, hasher, seen, TOPIC)


def ev(i: int, **over: Any) -> dict[str, Any]:
    obj: dict[str, Any] = {
        "event_id": f"e{i}",
        "event_name": "page_view",
        "event_time": NOW - 60_000,
        "anonymous_id": "anon-1",
        "platform": "miniprogram",
        "properties": {"page": "home"},
    }
    obj.update(over)
    return obj


def msg(offset: int, value: Any) -> RawMessage:
    return RawMessage(offset, value if isinstance(value, bytes) else orjson.dumps(value))


def ids(result: IngestResult) -> list[str]:
    return [r["event_id"] for r in result.valid]


def payload(record: dict[str, Any]) -> bytes:
    return unb64(record["payload"])


# -- a mixed batch ---------------------------------------------------------------------------


def test_mixed_batch(ingestor: Ingestor) -> None:
    batch = [
        ev(1),
        ev(2, platform="windows"),
        ev(3, properties={"page": "cart", "ab": "B"}),
        7,
        ev(5, event_name="purchase"),
        ev(6),
        ev(7, consent={"analytics": False, "marketing": False}),
    ]
    truncated = b'{"event_id": "e8", "event_na'
    bad_single = b'{ "event_id" : "e10", "event_name": "page_view" }'
    messages = [
        msg(10, batch),
        msg(11, truncated),
        msg(12, ev(9)),
        msg(13, bad_single),
    ]
    result = ingestor.process(PART, messages, NOW)

    assert ids(result) == ["e1", "e3", "e6", "e9"]
    assert [(r["source_offset"], r["source_index"]) for r in result.valid] == [
        (10, 0),
        (10, 2),
        (10, 5),
        (12, 0),
    ]
    for record in result.valid:
        assert record["source_partition"] == PART
        assert record["received_at"] == NOW
        assert record["event_time"] == NOW - 60_000
        assert record["person_id"] is None
        assert "unknown_properties" not in record
    assert result.valid[1]["properties"] == {"page": "cart", "ab": "B"}
    assert result.unknown_properties == [("page_view", "ab")]

    got = [
        (r["error_code"], r["source_offset"], r["source_index"], r["event_id"], payload(r))
        for r in result.dlq
    ]
    assert got == [
        ("invalid_value", 10, 1, "e2", orjson.dumps(batch[1])),
        ("malformed_payload", 10, 3, None, b"7"),
        ("unknown_event", 10, 4, "e5", orjson.dumps(batch[4])),
        ("malformed_payload", 11, 0, None, truncated),
        ("missing_required_field", 13, 0, "e10", bad_single),
    ]
    for record in result.dlq:
        assert record["source_topic"] == TOPIC
        assert record["source_partition"] == PART
        assert record["received_at"] == NOW
        assert record["error_detail"]
    assert "platform" in result.dlq[0]["error_detail"]
    assert "event_time" in result.dlq[4]["error_detail"]
    assert result.dlq[2]["event_name"] == "purchase"

    assert result.received == 10
    assert result.consent_dropped == 1
    assert result.duplicates == 0
    assert result.rejected == Counter(
        {
            "malformed_payload": 2,
            "invalid_value": 1,
            "unknown_event": 1,
            "missing_required_field": 1,
        }
    )
    # Per event, for the DLQ share of one event; names outside the plan share one label.
    assert result.rejected_by_event == Counter({"page_view": 2, "_unplanned": 3})
    assert result.generation == NOW // HORIZON


def test_every_item_is_accounted_for(ingestor: Ingestor) -> None:
    batch = [ev(i) if i % 3 else ev(i, platform="tv") for i in range(30)]
    result = ingestor.process(0, [msg(1, batch)], NOW)
    assert result.received == 30
    assert len(result.valid) + len(result.dlq) == 30
    assert [r["source_index"] for r in result.dlq] == list(range(0, 30, 3))


# -- duplicates ------------------------------------------------------------------------------


def test_duplicate_event_id_at_a_later_offset_is_dropped(ingestor: Ingestor) -> None:
    first = ingestor.process(PART, [msg(1, ev(1))], NOW)
    assert ids(first) == ["e1"]
    again = ingestor.process(PART, [msg(2, ev(1, properties={"page": "cart"}))], NOW + 1000)
    assert again.valid == []
    assert again.dlq == []
    assert again.duplicates == 1
    assert again.received == 1


def test_duplicate_is_remembered_in_the_next_generation(ingestor: Ingestor) -> None:
    ingestor.process(PART, [msg(1, ev(1))], NOW)
    later = ingestor.process(PART, [msg(2, ev(1))], NOW + HORIZON)
    assert later.valid == []
    assert later.duplicates == 1


def test_duplicate_inside_one_batch(ingestor: Ingestor) -> None:
    batch = [ev(1), ev(2), ev(1, properties={"page": "cart"}), ev(2)]
    result = ingestor.process(PART, [msg(5, batch)], NOW)
    assert ids(result) == ["e1", "e2"]
    assert [r["source_index"] for r in result.valid] == [0, 1]
    assert result.valid[0]["properties"] == {"page": "home"}
    assert result.duplicates == 2
    assert result.dlq == []


def test_duplicate_across_messages_of_one_call(ingestor: Ingestor) -> None:
    result = ingestor.process(PART, [msg(1, ev(1)), msg(2, ev(1))], NOW)
    assert ids(result) == ["e1"]
    assert result.valid[0]["source_offset"] == 1
    assert result.duplicates == 1


def test_same_id_on_another_partition_is_not_a_duplicate(ingestor: Ingestor) -> None:
    ingestor.process(0, [msg(1, ev(1))], NOW)
    other = ingestor.process(1, [msg(1, ev(1))], NOW)
    assert ids(other) == ["e1"]
    assert other.duplicates == 0


def strip_received(records: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [{k: v for k, v in r.items() if k not in ("received_at", "failed_at")} for r in records]


@pytest.mark.parametrize("later", [0, 1000, HORIZON], ids=["same_time", "1s_later", "next_gen"])
def test_replay_of_the_same_messages_yields_the_same_output(ingestor: Ingestor, later: int) -> None:
    messages = [
        msg(1, [ev(1), ev(2), ev(1), ev(3, platform="tv")]),
        msg(2, ev(4)),
        msg(3, b'{"event_id": "e5"'),
    ]
    first = ingestor.process(PART, messages, NOW)
    assert ids(first) == ["e1", "e2", "e4"]
    assert first.duplicates == 1
    assert [r["error_code"] for r in first.dlq] == ["invalid_value", "malformed_payload"]

    replay = ingestor.process(PART, messages, NOW + later)  # re-read after a crash
    assert strip_received(replay.valid) == strip_received(first.valid)
    assert strip_received(replay.dlq) == strip_received(first.dlq)
    assert replay.duplicates == 1  # only the in-batch copy, as the first time
    assert replay.consent_dropped == first.consent_dropped


def test_replay_of_a_single_message_is_not_a_duplicate(ingestor: Ingestor) -> None:
    first = ingestor.process(PART, [msg(7, ev(1))], NOW)
    replay = ingestor.process(PART, [msg(7, ev(1))], NOW)
    assert replay.valid == first.valid
    assert replay.duplicates == 0


def test_rejected_event_resent_identically_is_a_duplicate(ingestor: Ingestor) -> None:
    bad = ev(1, platform="windows")
    first = ingestor.process(PART, [msg(1, bad)], NOW)
    assert [r["error_code"] for r in first.dlq] == ["invalid_value"]
    again = ingestor.process(PART, [msg(2, bad)], NOW + 1000)
    assert again.dlq == []
    assert again.valid == []
    assert again.duplicates == 1


def test_rejected_id_resent_valid_is_accepted(ingestor: Ingestor) -> None:
    first = ingestor.process(PART, [msg(1, ev(1, platform="windows"))], NOW)
    assert len(first.dlq) == 1
    fixed = ingestor.process(PART, [msg(2, ev(1))], NOW + 1000)
    assert ids(fixed) == ["e1"]
    assert fixed.valid[0]["source_offset"] == 2
    assert fixed.duplicates == 0
    assert fixed.dlq == []
    # and from now on the accepted copy is the one that counts
    third = ingestor.process(PART, [msg(3, ev(1))], NOW + 2000)
    assert third.valid == []
    assert third.duplicates == 1


def test_rejected_then_valid_inside_one_batch(ingestor: Ingestor) -> None:
    result = ingestor.process(PART, [msg(1, [ev(1, platform="tv"), ev(1)])], NOW)
    assert [r["source_index"] for r in result.dlq] == [0]
    assert ids(result) == ["e1"]
    assert result.valid[0]["source_index"] == 1


def test_seen_changelog_entries(ingestor: Ingestor) -> None:
    result = ingestor.process(PART, [msg(4, [ev(1), ev(2, platform="tv")])], NOW)
    # Logged as fingerprints: the changelog never holds the ids themselves.
    assert result.seen == [
        [fingerprint("e1"), position(4, 0) << 1],
        [fingerprint("e2"), (position(4, 1) << 1) | 1],
    ]


# -- PII never reaches the DLQ in clear ------------------------------------------------------

PII_PAYLOADS = [
    pytest.param(b'{"event_id":"e1","identities":{"phone":"13812345678"', id="truncated_json"),
    pytest.param(b'{"event_id":"e1","phone":13812345678,', id="truncated_number"),
    pytest.param(b'{"event_id":"e1","note":"+86 138-1234-5678"', id="truncated_e164"),
    pytest.param(b'{"event_id":"e1","note":"138 1234 5678"', id="truncated_spaced"),
    pytest.param(b'\xff{"phone":"13812345678"}', id="non_utf8"),
    pytest.param(
        b'[{"event_id":"e1","identities":{"phone":"13812345678"}}, {"x": 1', id="truncated_batch"
    ),
    pytest.param(orjson.dumps(["13812345678"]), id="batch_string_element"),
    pytest.param(orjson.dumps([13812345678]), id="batch_number_element"),
    pytest.param(
        orjson.dumps(ev(1, identities={"phone": 13812345678})), id="identity_phone_number"
    ),
    pytest.param(
        orjson.dumps(ev(1, platform="tv", identities={"phone": "13812345678"})),
        id="rejected_event_with_phone_identity",
    ),
    pytest.param(
        orjson.dumps(ev(1, identities={"phone": "138-1234-5678x"})), id="invalid_phone_identity"
    ),
    pytest.param(
        orjson.dumps(ev(1, event_name="nope", properties={"mobile": "13812345678"})),
        id="unknown_event_mobile_property",
    ),
    pytest.param(
        orjson.dumps(ev(1, channel="c " * 20_000, identities={"phone": "13812345678"})),
        id="too_large_single",
    ),
    pytest.param(
        orjson.dumps([ev(1, channel="c " * 20_000, identities={"phone": "13812345678"})]),
        id="too_large_batch_element",
    ),
    pytest.param(
        orjson.dumps(
            ev(
                1,
                event_name="checkout",
                properties={"order_id": "o1", "amount": 9.9, "item_count": 1, "Phone": 13812345678},
            )
        ),
        id="strict_event_capitalised_phone_number",
    ),
    pytest.param('{"event_id":"e1","note":"联系电话13812345678"'.encode(), id="after_chinese"),
]


@pytest.mark.parametrize("value", PII_PAYLOADS)
def test_dlq_payload_never_holds_a_clear_phone(ingestor: Ingestor, value: bytes) -> None:
    result = ingestor.process(PART, [RawMessage(1, value)], NOW)
    assert result.valid == []
    assert len(result.dlq) == 1
    stored = HEX64.sub(b"", payload(result.dlq[0]))
    assert b"13812345678" not in stored
    assert b"5678" not in stored
    assert b"5678" not in result.dlq[0]["error_detail"].encode()


def test_dlq_payload_without_pii_is_the_original_bytes(ingestor: Ingestor) -> None:
    value = b'{ "event_id" : "e1",\n  "event_name": "purchase", "order_id": "202611230800001234" }'
    result = ingestor.process(PART, [RawMessage(1, value)], NOW)
    assert payload(result.dlq[0]) == value


# -- bad input never raises ----------------------------------------------------------------


def test_exception_in_validation_becomes_a_processing_error(
    ingestor: Ingestor, validator: Validator, monkeypatch: pytest.MonkeyPatch
) -> None:
    original = validator.validate

    def flaky(obj: Any, now_ms: int, version: int | None = None) -> Any:
        if isinstance(obj, dict) and obj.get("event_id") == "e2":
            raise RuntimeError("boom in validator")
        return original(obj, now_ms, version)

    monkeypatch.setattr(validator, "validate", flaky)
    batch = [ev(1), ev(2), ev(3)]
    result = ingestor.process(PART, [msg(1, batch)], NOW)
    assert ids(result) == ["e1", "e3"]
    assert len(result.dlq) == 1
    record = result.dlq[0]
    assert record["error_code"] == "processing_error"
    assert "RuntimeError" in record["error_detail"]
    assert "boom in validator" in record["error_detail"]
    assert record["source_index"] == 1
    assert record["event_id"] == "e2"
    assert payload(record) == orjson.dumps(batch[1])
    assert result.rejected == Counter({"processing_error": 1})


@pytest.mark.parametrize("exc", [RuntimeError("x"), KeyError("k"), RecursionError(), ValueError()])
def test_any_exception_in_validation_is_contained(
    ingestor: Ingestor, validator: Validator, monkeypatch: pytest.MonkeyPatch, exc: Exception
) -> None:
    def broken(obj: Any, now_ms: int, version: int | None = None) -> Any:
        raise exc

    monkeypatch.setattr(validator, "validate", broken)
    result = ingestor.process(PART, [msg(1, [ev(1), ev(2)]), msg(2, ev(3))], NOW)
    assert result.valid == []
    assert [r["error_code"] for r in result.dlq] == ["processing_error"] * 3
    assert [(r["source_offset"], r["source_index"]) for r in result.dlq] == [
        (1, 0),
        (1, 1),
        (2, 0),
    ]


def test_rejected_from_validator_is_not_a_processing_error(
    ingestor: Ingestor, validator: Validator, monkeypatch: pytest.MonkeyPatch
) -> None:
    from pipeline.contract.errors import ErrorCode

    def rejecting(obj: Any, now_ms: int, version: int | None = None) -> Any:
        raise Rejected(ErrorCode.INVALID_VALUE, "properties.x is bad")

    monkeypatch.setattr(validator, "validate", rejecting)
    result = ingestor.process(PART, [msg(1, ev(1))], NOW)
    assert [r["error_code"] for r in result.dlq] == ["invalid_value"]


def nested(depth: int) -> bytes:
    return b"[" * depth + b"]" * depth


@pytest.mark.parametrize(
    "value",
    [
        pytest.param(
            orjson.dumps(ev(1, platform="tv", properties={"page": "home", "x": 0})).replace(
                b'"x":0', b'"x":' + nested(1000)
            ),
            id="single_object_1000_deep",
        ),
        pytest.param(
            b"["
            + orjson.dumps(ev(1, platform="tv", properties={"page": "home", "x": 0})).replace(
                b'"x":0', b'"x":' + nested(300)
            )
            + b"]",
            id="batch_element_300_deep",
        ),
    ],
)
def test_deeply_nested_bad_event_does_not_raise(ingestor: Ingestor, value: bytes) -> None:
    # orjson decodes up to 1024 levels; DLQ masking and re-encoding must cope with them.
    result = ingestor.process(PART, [RawMessage(1, value)], NOW)
    assert result.valid == []
    assert len(result.dlq) == 1


def test_dead_letters_come_in_log_order_whatever_failed_first(
    ingestor: Ingestor, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The lake's sink keeps one dead letter per position, in order: a processing error at
    a later offset must not come before an earlier message's rejection, or that one is
    dropped (and its retries then count as duplicates: lost)."""
    real = ingestor.validator.validate

    def crash_on_e2(obj: Any, now_ms: int, version: int | None = None) -> Any:
        if isinstance(obj, dict) and obj.get("event_id") == "e2":
            raise RuntimeError("a bug")
        return real(obj, now_ms, version)

    monkeypatch.setattr(ingestor.validator, "validate", crash_on_e2)
    result = ingestor.process(
        PART, [msg(10, ev(1, event_name="no_such_event")), msg(11, ev(2))], NOW
    )
    assert [(r["source_offset"], r["error_code"]) for r in result.dlq] == [
        (10, "unknown_event"),
        (11, "processing_error"),
    ]
