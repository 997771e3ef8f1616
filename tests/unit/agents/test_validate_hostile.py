"""Any bytes on events.raw: each hostile message ends as stored events or dead letters, the
good events around it are stored, and nothing raises (issue 12; rules in
docs/tracking-plan.md, "Hostile input")."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import orjson
import pytest

from agents.sink import decode_dlq
from agents.validate import Validate
from pipeline.app import create_app
from pipeline.ingest.ingestor import RawMessage
from pipeline.runtime import wire
from pipeline.settings import Settings

KAFKA_LIMIT = 1_000_000
PART = 2


@pytest.fixture
def stage(tmp_path: Path) -> Validate:
    """A fresh stage per test: dedup memory would otherwise drop a hostile message that an
    earlier test sent too (a retry of bad bytes is a duplicate)."""
    app, ctx = create_app(Settings(data_dir=tmp_path, partitions=4), ensure_topics=False)
    return Validate(app, ctx)


def good(i: int, **props: Any) -> dict[str, Any]:
    return {
        "event_id": f"g{i}-{time.monotonic_ns()}",
        "event_name": "page_view",
        "event_time": int(time.time() * 1000) - 1000,
        "anonymous_id": f"d{i}",
        "platform": "web",
        "properties": {"page": "home", **props},
    }


def run(stage: Validate, hostile: bytes | None) -> tuple[int, list[dict[str, Any]]]:
    """Good batch, the hostile message, good single event: (stored, dead letters)."""
    before = [good(1), good(2)]
    after = good(3)
    messages = [
        RawMessage(10, orjson.dumps(before)),
        RawMessage(11, hostile),
        RawMessage(12, orjson.dumps(after)),
    ]
    out = stage.prepare(PART, messages, int(time.time() * 1000))
    stored_ids = set() if out.table is None else set(out.table["event_id"].to_pylist())
    assert {e["event_id"] for e in [*before, after]} <= stored_ids
    for value in out.valid + out.dlq:
        assert len(value) < KAFKA_LIMIT
    letters = [r for v in out.dlq for r in wire.decode_dead_letters(v)]
    for value in out.dlq:  # the sink can store every dead letter
        decode_dlq(value)
    assert all(r["source_offset"] == 11 for r in letters)
    return len(stored_ids) - 3, letters


def one_event(**over: Any) -> bytes:
    return orjson.dumps({**good(9), **over})


def codes(letters: list[dict[str, Any]]) -> list[str]:
    return [r["error_code"] for r in letters]


BIG = 2**63


@pytest.mark.parametrize("value", [BIG, 2**64 - 1])
def test_integers_beyond_64_bits_in_a_typed_property(stage: Validate, value: int) -> None:
    stored, letters = run(stage, one_event(properties={"page": "home", "duration_ms": value}))
    assert (stored, codes(letters)) == (0, ["invalid_value"])
    assert "duration_ms" in letters[0]["error_detail"]
    assert str(value) not in letters[0]["error_detail"]


@pytest.mark.parametrize(
    "literal", [b"18446744073709551616", b"-9223372036854775809", b"-99999999999999999999999"]
)
def test_integers_beyond_64_bits_that_json_reads_as_floats(stage: Validate, literal: bytes) -> None:
    event = orjson.dumps(good(9)).replace(
        b'"page":"home"', b'"page":"home","duration_ms":' + literal
    )
    stored, letters = run(stage, event)
    assert (stored, codes(letters)) == (0, ["type_mismatch"])


def test_huge_integers_in_unknown_properties_are_kept(stage: Validate) -> None:
    stored, letters = run(stage, one_event(properties={"page": "home", "big": 2**64 - 1}))
    assert (stored, letters) == (1, [])


@pytest.mark.parametrize("amount", [1e308, 1e16, 10**17])
def test_money_that_decimal_18_2_cannot_hold(stage: Validate, amount: Any) -> None:
    event = one_event(
        event_name="pay_success",
        properties={"order_id": "o1", "amount": amount, "pay_method": "alipay"},
    )
    stored, letters = run(stage, event)
    assert (stored, codes(letters)) == (0, ["invalid_value"])
    assert "amount" in letters[0]["error_detail"]


def test_float_1e308_in_an_unknown_property_is_kept(stage: Validate) -> None:
    assert run(stage, one_event(properties={"page": "home", "x": 1e308})) == (1, [])


@pytest.mark.parametrize(
    "raw",
    [
        b'{"a": NaN}',
        b'{"a": Infinity}',
        b'{"a": -Infinity}',
        b'{"a": 1e999}',
        b"[" * 100_000 + b"]" * 100_000,
        b'{"a":' * 100_000 + b"1" + b"}" * 100_000,
        b"\xff\xfe\xfa invalid utf-8 \x80",
        b'{"event_id": "\xff\xfe"}',
        b"",
        b"null",
        b"true",
        b"42",
        b'"text"',
        b"[]",
    ],
)
def test_not_an_event_object(stage: Validate, raw: bytes) -> None:
    stored, letters = run(stage, raw)
    assert (stored, codes(letters)) == (0, ["malformed_payload"])
    assert raw.startswith(letters[0]["payload"])
    assert letters[0]["payload_size"] == len(raw)


def test_kafka_tombstone(stage: Validate) -> None:
    stored, letters = run(stage, None)
    assert (stored, codes(letters)) == (0, ["malformed_payload"])
    assert letters[0]["payload"] == b""


def test_array_of_non_objects_gives_one_letter_each(stage: Validate) -> None:
    stored, letters = run(stage, b'[1, "x", null, [], true]')
    assert (stored, codes(letters)) == (0, ["malformed_payload"] * 5)
    assert [r["source_index"] for r in letters] == [0, 1, 2, 3, 4]


def test_900_kb_string_property_is_dead_lettered_cut(stage: Validate) -> None:
    event = one_event(properties={"page": "home", "referrer": "r" * 900_000})
    stored, letters = run(stage, event)
    assert (stored, codes(letters)) == (0, ["payload_too_large"])
    (letter,) = letters
    assert letter["payload_truncated"] is True
    assert letter["payload_size"] == len(event)
    assert len(letter["payload"]) == stage.ctx.settings.dlq_max_payload_bytes
    assert event.startswith(letter["payload"])


def test_900_kb_of_garbage_is_dead_lettered_cut(stage: Validate) -> None:
    garbage = bytes(range(256)) * 3600
    stored, letters = run(stage, garbage)
    assert (stored, codes(letters)) == (0, ["malformed_payload"])
    assert letters[0]["payload_truncated"] is True
    assert letters[0]["payload_size"] == len(garbage)


def test_small_dead_letters_are_not_marked_cut(stage: Validate) -> None:
    _, letters = run(stage, b"{not json")
    assert letters[0]["payload_truncated"] is False
    assert letters[0]["payload_size"] == len(b"{not json")


def test_duplicate_keys_last_one_wins(stage: Validate) -> None:
    event = orjson.dumps(good(9)).replace(b'"page":"home"', b'"page":"nope","page":"cart"')
    assert run(stage, event) == (1, [])


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("anonymous_id", "dev\x00ice"),
        ("anonymous_id", "\u202edevice"),
        ("user_id", "u\u200b1"),
        ("user_id", "line\nbreak"),
        ("anonymous_id", "\x1b[31mred"),
    ],
)
def test_control_and_bidi_characters_in_identifiers(
    stage: Validate, field: str, value: str
) -> None:
    stored, letters = run(stage, one_event(**{field: value}))
    assert (stored, codes(letters)) == (0, ["invalid_value"])
    assert field in letters[0]["error_detail"]
    assert value not in letters[0]["error_detail"]


def test_control_characters_in_identities(stage: Validate) -> None:
    stored, letters = run(stage, one_event(identities={"openid": "o\u2066x"}))
    assert (stored, codes(letters)) == (0, ["invalid_value"])
    assert "identities.openid" in letters[0]["error_detail"]


def test_a_valid_batch_of_20000_events_in_one_message(stage: Validate) -> None:
    batch = [good(i) for i in range(20_000)]
    messages = [RawMessage(0, orjson.dumps(batch))]
    out = stage.prepare(PART, messages, int(time.time() * 1000))
    assert out.table is not None
    assert out.table.num_rows == 20_000
    assert out.dlq == []
    assert all(len(v) <= wire.MAX_BATCH_BYTES for v in out.valid)
    assert len(out.result.seen) == 20_000


def test_a_message_whose_processing_fails_is_dead_lettered_whole(
    stage: Validate, monkeypatch: pytest.MonkeyPatch
) -> None:
    real = stage.ingestor.process

    def flaky(partition: int, messages: list[RawMessage], now_ms: int, **kw: Any) -> Any:
        if any(m.offset == 11 for m in messages):
            raise RuntimeError("boom")
        return real(partition, messages, now_ms, **kw)

    monkeypatch.setattr(stage.ingestor, "process", flaky)
    hostile = orjson.dumps([good(7), good(8)])
    stored, letters = run(stage, hostile)
    assert (stored, codes(letters)) == (0, ["processing_error"])
    assert letters[0]["payload"] == hostile
    assert "boom" not in letters[0]["error_detail"]


def test_a_row_arrow_cannot_hold_is_dead_lettered_alone(
    stage: Validate, monkeypatch: pytest.MonkeyPatch
) -> None:
    batches = stage.ctx.domain.batches
    real = batches.build

    def fussy(rows: list[dict[str, Any]]) -> Any:
        if any(r["anonymous_id"] == "poison" for r in rows):
            raise OverflowError("int too big to convert")
        return real(rows)

    monkeypatch.setattr(batches, "build", fussy)
    hostile = orjson.dumps([good(7), {**good(8), "anonymous_id": "poison"}, good(9)])
    stored, letters = run(stage, hostile)
    assert (stored, codes(letters)) == (2, ["processing_error"])
    assert letters[0]["source_index"] == 1
    assert orjson.loads(letters[0]["payload"])["anonymous_id"] == "poison"


def test_a_take_redone_in_halves_remembers_every_event_once(
    stage: Validate, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A take whose outputs fail to build is redone in halves; the dedup memory must not
    hold the first attempt's sightings, or the halves log no changelog entries for them
    (lost at a takeover) and a failing half dead-letters events the memory calls stored."""
    batches = stage.ctx.domain.batches
    real, calls = batches.build_each, []

    def first_call_fails(rows: list[dict[str, Any]]) -> Any:
        calls.append(len(rows))
        if len(calls) == 1:
            raise RuntimeError("transient")
        return real(rows)

    monkeypatch.setattr(batches, "build_each", first_call_fails)
    events = [good(i) for i in range(4)]
    messages = [RawMessage(20 + i, orjson.dumps(e)) for i, e in enumerate(events)]
    now = int(time.time() * 1000)
    out = stage.prepare(PART, messages, now)
    assert len(calls) > 1  # it was redone
    assert sorted(out.table["event_id"].to_pylist()) == sorted(e["event_id"] for e in events)
    assert len(out.result.seen) == len(events)  # every sighting reaches the changelog
    retry = stage.prepare(
        PART, [RawMessage(30 + i, orjson.dumps(e)) for i, e in enumerate(events)], now
    )
    assert retry.table is None
    assert retry.result.duplicates == len(events)


PHONE = "13812345678"
EMAIL = "alice.wong@example.com"


@pytest.mark.parametrize(
    "over",
    [
        {"event_id": PHONE + "!"},
        {"event_name": EMAIL},
        {"event_name": PHONE},
        {"event_time": f"{PHONE}T00:00:00Z"},
        {"anonymous_id": f"tel:{PHONE}/" + "x" * 130},
        {"user_id": EMAIL + "\u202e"},
        {"platform": PHONE},
        {"identities": {PHONE: "x"}},
        {"identities": {"phone": "call " + PHONE + " now"}},
        {"identities": {"email": EMAIL + " @"}},
        {"properties": {"page": EMAIL}},
        {"properties": {"page": "home", "duration_ms": PHONE}},
        {
            "event_name": "element_click",
            "properties": {"page": "home", "element": "b", "position": -int(PHONE)},
        },
        {
            "event_name": "pay_success",
            "properties": {"order_id": "o", "amount": 1, "pay_method": "x", EMAIL: PHONE},
        },
    ],
)
def test_details_and_columns_never_echo_identifiers(stage: Validate, over: dict[str, Any]) -> None:
    stored, letters = run(stage, one_event(**over))
    assert stored == 0
    (letter,) = letters
    for column in ("error_detail", "event_id", "event_name"):
        text = str(letter[column])
        assert PHONE not in text, column
        assert EMAIL not in text, column
    assert PHONE.encode() not in letter["payload"]  # masked by the PII hasher
    assert EMAIL.encode() not in letter["payload"]


def test_every_empty_message_and_tombstone_is_dead_lettered(stage: Validate) -> None:
    """No bytes, so nothing to tell a retry by: none of them is dropped as a duplicate."""
    messages = [RawMessage(o, v) for o, v in enumerate([b"", None, b"", None])]
    out = stage.prepare(PART, messages, int(time.time() * 1000))
    letters = [r for v in out.dlq for r in wire.decode_dead_letters(v)]
    assert [r["error_detail"] for r in letters] == [
        "empty message",
        "null message (a tombstone)",
        "empty message",
        "null message (a tombstone)",
    ]
    assert out.result.duplicates == 0
