"""The simulator's traffic must be replayable and pass the project's own validator.

These tests judge the generator with the pipeline's real plan and validator, so a change of
the tracking plan that the simulator does not follow fails here, not in a demo.
"""

from __future__ import annotations

import re
import time
from collections import Counter
from functools import cache
from typing import Any

import orjson
import pytest

from pipeline.contract.errors import Rejected
from pipeline.contract.pii import PiiHasher
from pipeline.contract.plan import load_plan
from pipeline.contract.timeparse import parse_event_time
from pipeline.ingest.validation import CONSENT_DROPPED, Validator
from pipeline.tools.simulator import SimConfig, SimMessage, generate

START = 1_790_000_000_000  # 2026-09-21, fixed so runs are comparable
MAX_EVENT_BYTES = 32 * 1024
EVENT_ID = re.compile(r"^[A-Za-z0-9_-]{1,64}$")

RICH = SimConfig(
    rate=100,
    duration=300,
    seed=7,
    start_ms=START,
    outage_start=120,
    outage_minutes=1.5,
    outage_success_rate=0.2,
    malformed_share=0.05,
    duplicate_share=0.03,
    consent_withdrawn_share=0.05,
    phone_share=0.3,
)
OUTAGE = (START + 120_000, START + 210_000)


@cache
def validator() -> Validator:
    return Validator(load_plan(), PiiHasher("k"))


@cache
def run(config: SimConfig) -> tuple[SimMessage, ...]:
    return tuple(generate(config))


def decode(msg: SimMessage) -> list[dict[str, Any]]:
    """Events of a well-formed message, checking its wire shape against its kind."""
    obj = orjson.loads(msg.value)
    if msg.kind == "batch":
        assert isinstance(obj, list)
        assert obj
    if isinstance(obj, list):
        assert all(isinstance(e, dict) for e in obj)
        return obj
    assert isinstance(obj, dict)
    return [obj]


def good_events(messages: tuple[SimMessage, ...]) -> list[tuple[SimMessage, dict[str, Any]]]:
    """Events in stream order, without junk and without SDK retries."""
    return [(m, e) for m in messages if m.kind not in ("malformed", "duplicate") for e in decode(m)]


def is_bad(msg: SimMessage) -> bool:
    """Whether the pipeline would dead-letter at least one item of the message."""
    try:
        obj = orjson.loads(msg.value)
    except orjson.JSONDecodeError:
        return True
    if isinstance(obj, dict):
        obj, oversized = [obj], len(msg.value) > MAX_EVENT_BYTES
    elif isinstance(obj, list) and obj:
        oversized = any(len(orjson.dumps(e)) > MAX_EVENT_BYTES for e in obj)
    else:
        return True
    if oversized or not all(isinstance(e, dict) for e in obj):
        return True
    for event in obj:
        try:
            validator().validate(event, msg.event_time_ms)
        except Rejected:
            return True
    return False


def rejection_codes(messages: tuple[SimMessage, ...]) -> Counter[str]:
    codes: Counter[str] = Counter()
    for m in messages:
        if m.kind != "malformed":
            continue
        try:
            obj = orjson.loads(m.value)
        except orjson.JSONDecodeError:
            codes["not_json"] += 1
            continue
        if isinstance(obj, dict) and len(m.value) > MAX_EVENT_BYTES:
            codes["payload_too_large"] += 1
            continue
        for event in obj if isinstance(obj, list) else [obj]:
            try:
                validator().validate(event, m.event_time_ms)
            except Rejected as exc:
                codes[str(exc.code)] += 1
    return codes


# -- determinism and volume ------------------------------------------------------------------


def test_same_config_gives_identical_messages() -> None:
    config = SimConfig(
        rate=80, duration=20, seed=3, start_ms=START, malformed_share=0.1, duplicate_share=0.05
    )
    assert list(generate(config)) == list(generate(config))


def test_different_seeds_give_different_traffic() -> None:
    a = [m.value for m in generate(SimConfig(rate=50, duration=10, seed=1, start_ms=START))]
    b = [m.value for m in generate(SimConfig(rate=50, duration=10, seed=2, start_ms=START))]
    assert a != b
    assert not set(a) & set(b)  # event ids alone make every message differ


@pytest.mark.parametrize(
    ("rate", "duration", "malformed"), [(50, 60, 0.0), (200, 30, 0.0), (20, 300, 0.1)]
)
def test_event_count_is_close_to_rate_times_duration(
    rate: float, duration: float, malformed: float
) -> None:
    config = SimConfig(rate=rate, duration=duration, start_ms=START, malformed_share=malformed)
    events = sum(m.events for m in run(config))
    assert abs(events - rate * duration) <= 0.1 * rate * duration


def test_messages_are_ordered_and_span_the_run() -> None:
    times = [m.event_time_ms for m in run(RICH)]
    assert times == sorted(times)
    assert times[0] >= START
    assert times[-1] - times[0] > 0.95 * RICH.duration * 1000
    assert times[-1] < START + RICH.duration * 1000 + 30_000


def test_start_defaults_to_now() -> None:
    before = int(time.time() * 1000)
    first = next(generate(SimConfig(rate=10, duration=5)))
    assert before <= first.event_time_ms <= int(time.time() * 1000) + 5_000


def test_degenerate_configs() -> None:
    assert list(generate(SimConfig(rate=0, start_ms=START))) == []
    with pytest.raises(ValueError, match="at least one"):
        generate(SimConfig(members=0, anonymous_visitors=0))


# -- every good event follows the contract ---------------------------------------------------


def test_every_good_event_validates() -> None:
    v = validator()
    seen_ids: set[str] = set()
    for msg in run(RICH):
        if msg.kind == "malformed":
            continue
        events = decode(msg)
        assert msg.events == len(events)
        for event in events:
            assert msg.key == event["anonymous_id"].encode()  # one device per message
            record = v.validate(event, msg.event_time_ms)
            withdrawn = event.get("consent", {}).get("analytics") is False
            if msg.kind != "duplicate":
                assert withdrawn == (msg.kind == "consent_withdrawn")
            if withdrawn:
                assert record is CONSENT_DROPPED
                continue
            assert isinstance(record, dict)
            lag = record["event_time"] - msg.event_time_ms
            if msg.kind == "duplicate":
                assert -60_000 < lag <= 0  # a retry is sent after its event happened
            else:
                assert 0 <= lag < 60_000
            assert EVENT_ID.match(event["event_id"])
            if msg.kind != "duplicate":
                assert event["event_id"] not in seen_ids
                seen_ids.add(event["event_id"])


def test_clean_defaults_have_no_bad_traffic() -> None:
    config = SimConfig(rate=100, duration=30, seed=5, start_ms=START)
    messages = run(config)
    assert {m.kind for m in messages} == {"event", "batch"}
    assert not any(is_bad(m) for m in messages)


def test_envelope_variety() -> None:
    events = [e for _, e in good_events(run(RICH))]
    times = [e["event_time"] for e in events]
    iso = [t for t in times if isinstance(t, str)]
    assert all(t.endswith("+08:00") for t in iso)
    assert 0.7 < len(iso) / len(times) < 0.98  # some SDKs send epoch ms
    platforms = Counter(e["platform"] for e in events)
    assert platforms.most_common(1)[0][0] == "miniprogram"
    assert {"ios", "android", "web", "h5"} <= set(platforms)
    assert any("channel" in e for e in events)
    assert any("app_version" in e for e in events)
    mini = [e for e in events if e["platform"] == "miniprogram"]
    assert any("openid" in e.get("identities", {}) for e in mini)
    products = [e["properties"]["product_id"] for e in events if "product_id" in e["properties"]]
    assert all(re.fullmatch(r"p\d{4}", p) for p in products)
    drift = [e for e in events if "ab_bucket" in e["properties"]]
    assert drift
    strict = {"checkout", "pay_request", "pay_success", "pay_fail"}
    assert not any(e["event_name"] in strict for e in drift)


def test_sessions_start_at_home() -> None:
    first: dict[str, dict[str, Any]] = {}
    for _, event in good_events(run(RICH)):
        first.setdefault(event["anonymous_id"], event)
    assert all(
        e["event_name"] == "page_view" and e["properties"]["page"] == "home" for e in first.values()
    )


def test_batches_are_about_the_requested_share() -> None:
    messages = run(SimConfig(rate=100, duration=60, start_ms=START, batch_share=0.3))
    batches = sum(m.kind == "batch" for m in messages)
    assert 0.25 < batches / len(messages) < 0.35
    none = run(SimConfig(rate=100, duration=30, start_ms=START, batch_share=0.0))
    assert all(isinstance(orjson.loads(m.value), dict) for m in none)


# -- identity ----------------------------------------------------------------------------


def test_logins_carry_user_id_and_devices_stay_logged_in() -> None:
    logged_in: dict[str, str] = {}
    logins = 0
    for _, event in good_events(run(RICH)):
        device = event["anonymous_id"]
        if event["event_name"] in ("login", "signup"):
            logins += event["event_name"] == "login"
            assert re.fullmatch(r"u\d{5}", event["user_id"])
            logged_in[device] = event["user_id"]
        elif device in logged_in:
            assert event.get("user_id") == logged_in[device]
        else:
            assert "user_id" not in event  # anonymous browsing before the first login
    assert logins > 50


def test_phones_appear_in_about_the_requested_share_of_logins() -> None:
    auth = [e for _, e in good_events(run(RICH)) if e["event_name"] in ("login", "signup")]
    with_phone = [e for e in auth if "phone" in e.get("identities", {})]
    assert 0.2 < len(with_phone) / len(auth) < 0.4
    hasher = PiiHasher("k")
    for event in with_phone:
        assert hasher.normalise_phone(event["identities"]["phone"]).startswith("+861")


# -- commerce ----------------------------------------------------------------------------


def test_orders_flow_checkout_then_pay_request_then_result() -> None:
    checkouts: dict[str, dict[str, Any]] = {}
    requested: dict[str, str] = {}  # order_id -> pay_method of the latest request
    results = Counter[str]()
    for _, event in good_events(run(RICH)):
        name, props = event["event_name"], event["properties"]
        if name == "checkout":
            assert props["order_id"] not in checkouts, "order_id reused"
            checkouts[props["order_id"]] = props
        elif name == "pay_request":
            order = checkouts[props["order_id"]]  # KeyError: pay before its checkout
            assert props["amount"] == order["amount"]
            requested[props["order_id"]] = props["pay_method"]
        elif name in ("pay_success", "pay_fail"):
            assert requested[props["order_id"]] == props["pay_method"]
            assert props["amount"] == checkouts[props["order_id"]]["amount"]
            results[name] += 1
    assert len(checkouts) > 100
    assert results["pay_success"] > 50
    assert results["pay_fail"] > 10
    methods = set(requested.values())
    assert "wechat_pay" in methods
    assert len(methods) >= 3


def test_cart_events_have_sane_values() -> None:
    for _, event in good_events(run(RICH)):
        props = event["properties"]
        if event["event_name"] == "add_to_cart":
            assert props["quantity"] >= 1
            assert props["price"] > 0
            assert round(props["price"], 2) == props["price"]
        elif event["event_name"] == "checkout":
            assert props["item_count"] >= 1
            assert props["amount"] > 0


def test_outage_lowers_pay_success_ratio_inside_the_window() -> None:
    counts = Counter[tuple[bool, str]]()
    for _, event in good_events(run(RICH)):
        name = event["event_name"]
        if name in ("pay_request", "pay_success"):
            t = parse_event_time(event["event_time"])
            counts[(OUTAGE[0] <= t < OUTAGE[1], name)] += 1
    inside = counts[(True, "pay_success")] / counts[(True, "pay_request")]
    outside = counts[(False, "pay_success")] / counts[(False, "pay_request")]
    assert counts[(True, "pay_request")] > 30
    assert inside < 0.45
    assert outside > 0.8


def test_no_outage_means_normal_success() -> None:
    config = SimConfig(rate=100, duration=300, seed=9, start_ms=START)
    names = Counter(e["event_name"] for _, e in good_events(run(config)))
    assert names["pay_success"] / names["pay_request"] > 0.85


# -- bad traffic -------------------------------------------------------------------------


def test_malformed_messages_come_in_the_requested_share_and_are_all_bad() -> None:
    messages = run(RICH)
    malformed = [m for m in messages if m.kind == "malformed"]
    assert abs(len(malformed) / len(messages) - RICH.malformed_share) < 0.015
    assert all(is_bad(m) for m in malformed)
    codes = rejection_codes(messages)
    expected = {
        "not_json", "payload_too_large", "malformed_payload", "missing_required_field",
        "type_mismatch", "unknown_event", "invalid_value", "invalid_timestamp",
        "unknown_property",
    }  # fmt: skip
    assert expected <= set(codes)


def test_junk_never_smuggles_in_a_valid_order_event() -> None:
    for m in run(RICH):
        if m.kind != "malformed" or not m.value.startswith(b"["):
            continue
        for event in orjson.loads(m.value):
            if isinstance(event, dict):
                assert event["event_name"] in ("page_view", "element_click", "add_to_cart")


def test_duplicates_resend_earlier_messages_byte_for_byte() -> None:
    messages = run(RICH)
    sent: dict[bytes, bytes | None] = {}
    duplicates = 0
    for m in messages:
        if m.kind == "duplicate":
            duplicates += 1
            assert sent[m.value] == m.key
            assert isinstance(orjson.loads(m.value), dict)
        else:
            sent[m.value] = m.key
    events = sum(m.events for m in messages)
    assert abs(duplicates / events - RICH.duplicate_share) < 0.01


def test_consent_withdrawn_share_of_events() -> None:
    messages = run(RICH)
    withdrawn = sum(m.events for m in messages if m.kind == "consent_withdrawn")
    events = sum(m.events for m in messages if m.kind not in ("malformed", "duplicate"))
    assert 0.025 < withdrawn / events < 0.09
    for m in messages:
        if m.kind == "consent_withdrawn":
            assert all(e["consent"] == {"analytics": False, "marketing": False} for e in decode(m))
