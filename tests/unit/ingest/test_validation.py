"""Validator against DESIGN sections 5, 6 and 8: envelope, tracking plan, error codes."""

from __future__ import annotations

import copy
import re
from decimal import Decimal
from typing import Any

import pytest

from pipeline.contract.errors import ErrorCode, Rejected
from pipeline.contract.pii import PiiHasher
from pipeline.contract.plan import FieldSpec, TrackingPlan, load_plan
from pipeline.ingest.codecs import decode_message
from pipeline.ingest.validation import CONSENT_DROPPED, Validator, compile_field

NOW = 1_795_420_800_000  # 2026-11-23T08:00:00Z
MINUTE = 60_000
DAY = 86_400_000
SECRET = "unit-test-secret"
HEX64 = re.compile(r"^[0-9a-f]{64}$")
PHONE = "13812345678"

MINIMAL_PROPS: dict[str, dict[str, Any]] = {
    "page_view": {"page": "home"},
    "element_click": {"page": "home", "element": "buy_button"},
    "exposure": {"page": "search", "element": "banner"},
    "add_to_cart": {"product_id": "p1", "quantity": 1, "price": 19.99},
    "remove_from_cart": {"product_id": "p1", "quantity": 2},
    "checkout": {"order_id": "o1", "amount": 59.97, "item_count": 3},
    "pay_request": {"order_id": "o1", "amount": 59.97, "pay_method": "wechat_pay"},
    "pay_success": {"order_id": "o1", "amount": 59.97, "pay_method": "alipay"},
    "pay_fail": {"order_id": "o1", "amount": 59.97, "pay_method": "card", "reason": "declined"},
    "signup": {"method": "phone"},
    "login": {"method": "wechat"},
}
_DROP = object()  # marker: remove the field
STRICT = ("checkout", "pay_request", "pay_success", "pay_fail")
# The HTTP collector's calls (DESIGN 13): tests/unit/ingest/test_collector_events.py.
COLLECTOR_EVENTS = ("identify", "alias", "group")
NON_STRICT = tuple(n for n in MINIMAL_PROPS if n not in STRICT)


@pytest.fixture(scope="module")
def plan() -> TrackingPlan:
    return load_plan()


@pytest.fixture(scope="module")
def hasher() -> PiiHasher:
    return PiiHasher(SECRET)


@pytest.fixture(scope="module")
def validator(plan: TrackingPlan, hasher: PiiHasher) -> Validator:
    return Validator(plan, hasher)


def event(name: str = "page_view", **overrides: Any) -> dict[str, Any]:
    """A valid event; ``overrides`` replace envelope fields (use ``_drop`` to delete)."""
    obj: dict[str, Any] = {
        "event_id": "evt-0001",
        "event_name": name,
        "event_time": NOW - 5 * MINUTE,
        "anonymous_id": "anon-1",
        "platform": "miniprogram",
        "properties": copy.deepcopy(MINIMAL_PROPS[name]),
    }
    if name == "login":
        obj["user_id"] = "member-1"
    for key, value in overrides.items():
        if value is _DROP:
            obj.pop(key, None)
        else:
            obj[key] = value
    return obj


def with_props(name: str, **props: Any) -> dict[str, Any]:
    obj = event(name)
    for key, value in props.items():
        if value is _DROP:
            obj["properties"].pop(key, None)
        else:
            obj["properties"][key] = value
    return obj


def same(actual: Any, expected: Any) -> bool:
    """Equality, comparing numbers by exact decimal value (money may come back as text)."""
    if isinstance(expected, int | float) and not isinstance(expected, bool):
        return Decimal(str(actual)) == Decimal(str(expected))
    return bool(actual == expected)


def reject(validator: Validator, obj: Any) -> Rejected:
    with pytest.raises(Rejected) as info:
        validator.validate(obj, NOW)
    return info.value


# -- valid events -------------------------------------------------------------------------


@pytest.mark.parametrize("name", list(MINIMAL_PROPS))
def test_every_event_of_the_plan_accepts_its_minimal_properties(
    validator: Validator, name: str
) -> None:
    obj = event(name)
    record = validator.validate(obj, NOW)
    assert isinstance(record, dict)
    assert record["event_id"] == "evt-0001"
    assert record["event_name"] == name
    assert record["event_time"] == NOW - 5 * MINUTE
    assert record["anonymous_id"] == "anon-1"
    assert record["platform"] == "miniprogram"
    assert record["schema_version"] == 1
    assert "unknown_properties" not in record
    for key, value in MINIMAL_PROPS[name].items():
        assert same(record["properties"][key], value)


def test_plan_contains_exactly_the_events_of_design_section_6(plan: TrackingPlan) -> None:
    assert set(plan.latest) == set(MINIMAL_PROPS) | set(COLLECTOR_EVENTS)
    assert {n for n, s in plan.latest.items() if s.strict} == set(STRICT)


def test_full_envelope_is_normalised(validator: Validator) -> None:
    obj = event(
        "login",
        event_time="2026-11-23T15:59:00.250+08:00",
        app_version="3.2.1",
        channel="wechat_share",
        identities={"openid": "oX1", "unionid": "uY2"},
        consent={"analytics": True, "marketing": False},
    )
    record = validator.validate(obj, NOW)
    assert isinstance(record, dict)
    assert record["event_time"] == NOW - MINUTE + 250
    assert record["user_id"] == "member-1"
    assert record["app_version"] == "3.2.1"
    assert record["channel"] == "wechat_share"
    assert record["identities"] == {"openid": "oX1", "unionid": "uY2"}
    assert record["consent_marketing"] is False
    assert record["properties"] == {"method": "wechat"}


def test_optional_envelope_fields_absent_are_none(validator: Validator) -> None:
    record = validator.validate(event(), NOW)
    assert isinstance(record, dict)
    for key in ("user_id", "app_version", "channel", "identities", "consent_marketing"):
        assert record[key] is None


def test_user_id_alone_is_enough(validator: Validator) -> None:
    record = validator.validate(event(anonymous_id=_DROP, user_id="m-9"), NOW)
    assert isinstance(record, dict)
    assert record["anonymous_id"] is None
    assert record["user_id"] == "m-9"


def test_anonymous_id_of_128_chars_is_accepted(validator: Validator) -> None:
    record = validator.validate(event(anonymous_id="a" * 128), NOW)
    assert isinstance(record, dict)
    assert record["anonymous_id"] == "a" * 128


@pytest.mark.parametrize("event_id", ["a", "A" * 64, "abc_DEF-123", "0-_"])
def test_event_id_pattern_accepts(validator: Validator, event_id: str) -> None:
    record = validator.validate(event(event_id=event_id), NOW)
    assert isinstance(record, dict)
    assert record["event_id"] == event_id


@pytest.mark.parametrize("platform", ["ios", "android", "web", "h5", "miniprogram", "server"])
def test_every_platform_of_the_contract_is_accepted(validator: Validator, platform: str) -> None:
    record = validator.validate(event(platform=platform), NOW)
    assert isinstance(record, dict)
    assert record["platform"] == platform


@pytest.mark.parametrize(
    ("name", "prop", "values"),
    [
        (
            "page_view",
            "page",
            [
                "home",
                "category",
                "search",
                "product_detail",
                "cart",
                "checkout",
                "pay_result",
                "member_center",
                "activity",
                "other",
            ],
        ),
        ("pay_request", "pay_method", ["wechat_pay", "alipay", "card", "balance", "other"]),
        ("signup", "method", ["phone", "wechat", "email", "password", "other"]),
    ],
)
def test_enum_values_of_the_contract_are_accepted(
    validator: Validator, name: str, prop: str, values: list[str]
) -> None:
    for value in values:
        record = validator.validate(with_props(name, **{prop: value}), NOW)
        assert isinstance(record, dict)
        assert record["properties"][prop] == value


def test_optional_properties_are_type_checked_and_kept(validator: Validator) -> None:
    obj = with_props("page_view", product_id="p9", referrer="search", duration_ms=0)
    record = validator.validate(obj, NOW)
    assert isinstance(record, dict)
    assert record["properties"] == {
        "page": "home",
        "product_id": "p9",
        "referrer": "search",
        "duration_ms": 0,
    }
    assert "unknown_properties" not in record


def test_null_optional_property_is_dropped(validator: Validator) -> None:
    record = validator.validate(with_props("page_view", product_id=None), NOW)
    assert isinstance(record, dict)
    assert record["properties"] == {"page": "home"}


def test_absent_properties_name_the_first_required_property(validator: Validator) -> None:
    err = reject(validator, event("signup", properties=_DROP))
    assert err.code == ErrorCode.MISSING_REQUIRED_FIELD
    assert "properties.method" in err.detail


def test_validate_does_not_mutate_its_input(validator: Validator) -> None:
    obj = event(identities={"phone": PHONE}, properties={"page": "home", "phone": PHONE})
    before = copy.deepcopy(obj)
    validator.validate(obj, NOW)
    assert obj == before


# -- every error code, with the offending field in the detail ----------------------------

REJECTIONS: list[tuple[str, dict[str, Any] | Any, ErrorCode, str]] = [
    # malformed_payload (an event that is not an object)
    ("list_event", [event()], ErrorCode.MALFORMED_PAYLOAD, "object"),
    ("string_event", "page_view", ErrorCode.MALFORMED_PAYLOAD, "object"),
    ("null_event", None, ErrorCode.MALFORMED_PAYLOAD, "object"),
    ("int_event", 42, ErrorCode.MALFORMED_PAYLOAD, "object"),
    # missing_required_field: absent and null alike
    ("event_id_absent", event(event_id=_DROP), ErrorCode.MISSING_REQUIRED_FIELD, "event_id"),
    ("event_id_null", event(event_id=None), ErrorCode.MISSING_REQUIRED_FIELD, "event_id"),
    ("name_absent", event(event_name=_DROP), ErrorCode.MISSING_REQUIRED_FIELD, "event_name"),
    ("name_null", event(event_name=None), ErrorCode.MISSING_REQUIRED_FIELD, "event_name"),
    ("time_absent", event(event_time=_DROP), ErrorCode.MISSING_REQUIRED_FIELD, "event_time"),
    ("time_null", event(event_time=None), ErrorCode.MISSING_REQUIRED_FIELD, "event_time"),
    ("platform_absent", event(platform=_DROP), ErrorCode.MISSING_REQUIRED_FIELD, "platform"),
    ("platform_null", event(platform=None), ErrorCode.MISSING_REQUIRED_FIELD, "platform"),
    (
        "no_ids",
        event(anonymous_id=_DROP),
        ErrorCode.MISSING_REQUIRED_FIELD,
        "anonymous_id",
    ),
    (
        "both_ids_null",
        event(anonymous_id=None, user_id=None),
        ErrorCode.MISSING_REQUIRED_FIELD,
        "user_id",
    ),
    (
        "login_without_user_id",
        event("login", user_id=_DROP),
        ErrorCode.MISSING_REQUIRED_FIELD,
        "user_id",
    ),
    (
        "login_user_id_null",
        event("login", user_id=None),
        ErrorCode.MISSING_REQUIRED_FIELD,
        "user_id",
    ),
    (
        "properties_absent",
        event(properties=_DROP),
        ErrorCode.MISSING_REQUIRED_FIELD,
        "properties.page",
    ),
    (
        "properties_null",
        event(properties=None),
        ErrorCode.MISSING_REQUIRED_FIELD,
        "properties.page",
    ),
    ("properties_empty", event(properties={}), ErrorCode.MISSING_REQUIRED_FIELD, "properties.page"),
    (
        "page_null",
        with_props("page_view", page=None),
        ErrorCode.MISSING_REQUIRED_FIELD,
        "properties.page",
    ),
    (
        "element_absent",
        with_props("element_click", element=_DROP),
        ErrorCode.MISSING_REQUIRED_FIELD,
        "properties.element",
    ),
    (
        "price_absent",
        with_props("add_to_cart", price=_DROP),
        ErrorCode.MISSING_REQUIRED_FIELD,
        "properties.price",
    ),
    (
        "reason_absent",
        with_props("pay_fail", reason=_DROP),
        ErrorCode.MISSING_REQUIRED_FIELD,
        "properties.reason",
    ),
    (
        "pay_method_null",
        with_props("pay_success", pay_method=None),
        ErrorCode.MISSING_REQUIRED_FIELD,
        "properties.pay_method",
    ),
    # type_mismatch
    ("event_id_int", event(event_id=12345), ErrorCode.TYPE_MISMATCH, "event_id"),
    ("event_name_int", event(event_name=7), ErrorCode.TYPE_MISMATCH, "event_name"),
    ("event_time_bool", event(event_time=True), ErrorCode.TYPE_MISMATCH, "event_time"),
    ("event_time_float", event(event_time=NOW * 1.0), ErrorCode.TYPE_MISMATCH, "event_time"),
    ("anonymous_id_int", event(anonymous_id=42), ErrorCode.TYPE_MISMATCH, "anonymous_id"),
    ("user_id_bool", event(user_id=False), ErrorCode.TYPE_MISMATCH, "user_id"),
    ("platform_int", event(platform=1), ErrorCode.TYPE_MISMATCH, "platform"),
    ("app_version_int", event(app_version=3), ErrorCode.TYPE_MISMATCH, "app_version"),
    ("channel_list", event(channel=["a"]), ErrorCode.TYPE_MISMATCH, "channel"),
    ("identities_list", event(identities=["x"]), ErrorCode.TYPE_MISMATCH, "identities"),
    ("identities_str", event(identities="oX1"), ErrorCode.TYPE_MISMATCH, "identities"),
    (
        "identity_value_int",
        event(identities={"openid": 123}),
        ErrorCode.TYPE_MISMATCH,
        "identities.openid",
    ),
    (
        "identity_phone_int",
        event(identities={"phone": 13812345678}),
        ErrorCode.TYPE_MISMATCH,
        "identities.phone",
    ),
    (
        "identity_value_object",
        event(identities={"unionid": {"v": "x"}}),
        ErrorCode.TYPE_MISMATCH,
        "identities.unionid",
    ),
    ("consent_string", event(consent="yes"), ErrorCode.TYPE_MISMATCH, "consent"),
    ("consent_list", event(consent=[True, True]), ErrorCode.TYPE_MISMATCH, "consent"),
    ("consent_bool", event(consent=True), ErrorCode.TYPE_MISMATCH, "consent"),
    (
        "consent_analytics_string",
        event(consent={"analytics": "false"}),
        ErrorCode.TYPE_MISMATCH,
        "consent.analytics",
    ),
    (
        "consent_marketing_int",
        event(consent={"analytics": True, "marketing": 1}),
        ErrorCode.TYPE_MISMATCH,
        "consent.marketing",
    ),
    ("properties_string", event(properties="home"), ErrorCode.TYPE_MISMATCH, "properties"),
    (
        "properties_list",
        event(properties=[{"page": "home"}]),
        ErrorCode.TYPE_MISMATCH,
        "properties",
    ),
    ("properties_int", event(properties=1), ErrorCode.TYPE_MISMATCH, "properties"),
    ("page_int", with_props("page_view", page=1), ErrorCode.TYPE_MISMATCH, "properties.page"),
    (
        "duration_bool",
        with_props("page_view", duration_ms=True),
        ErrorCode.TYPE_MISMATCH,
        "properties.duration_ms",
    ),
    (
        "duration_float_3_0",
        with_props("page_view", duration_ms=3.0),
        ErrorCode.TYPE_MISMATCH,
        "properties.duration_ms",
    ),
    (
        "duration_string",
        with_props("page_view", duration_ms="10"),
        ErrorCode.TYPE_MISMATCH,
        "properties.duration_ms",
    ),
    (
        "quantity_bool",
        with_props("add_to_cart", quantity=True),
        ErrorCode.TYPE_MISMATCH,
        "properties.quantity",
    ),
    (
        "quantity_float_3_0",
        with_props("add_to_cart", quantity=3.0),
        ErrorCode.TYPE_MISMATCH,
        "properties.quantity",
    ),
    (
        "item_count_bool",
        with_props("checkout", item_count=False),
        ErrorCode.TYPE_MISMATCH,
        "properties.item_count",
    ),
    (
        "position_float",
        with_props("exposure", position=2.5),
        ErrorCode.TYPE_MISMATCH,
        "properties.position",
    ),
    (
        "element_int",
        with_props("element_click", element=5),
        ErrorCode.TYPE_MISMATCH,
        "properties.element",
    ),
    (
        "order_id_int",
        with_props("pay_success", order_id=123456),
        ErrorCode.TYPE_MISMATCH,
        "properties.order_id",
    ),
    (
        "product_id_list",
        with_props("remove_from_cart", product_id=["p1"]),
        ErrorCode.TYPE_MISMATCH,
        "properties.product_id",
    ),
    # unknown_event
    ("unknown_event", event(event_name="purchase"), ErrorCode.UNKNOWN_EVENT, "event_name"),
    ("unknown_event_case", event(event_name="Page_View"), ErrorCode.UNKNOWN_EVENT, "event_name"),
    ("unknown_event_empty", event(event_name=""), ErrorCode.UNKNOWN_EVENT, "event_name"),
    # invalid_value
    ("event_id_65_chars", event(event_id="a" * 65), ErrorCode.INVALID_VALUE, "event_id"),
    ("event_id_space", event(event_id="evt 0001"), ErrorCode.INVALID_VALUE, "event_id"),
    ("event_id_spaces_only", event(event_id="   "), ErrorCode.INVALID_VALUE, "event_id"),
    ("event_id_empty", event(event_id=""), ErrorCode.INVALID_VALUE, "event_id"),
    ("event_id_dot", event(event_id="evt.1"), ErrorCode.INVALID_VALUE, "event_id"),
    ("event_id_non_ascii", event(event_id="事件1"), ErrorCode.INVALID_VALUE, "event_id"),
    ("anonymous_id_129", event(anonymous_id="a" * 129), ErrorCode.INVALID_VALUE, "anonymous_id"),
    ("anonymous_id_empty", event(anonymous_id=""), ErrorCode.INVALID_VALUE, "anonymous_id"),
    ("user_id_129", event(user_id="u" * 129), ErrorCode.INVALID_VALUE, "user_id"),
    ("platform_windows", event(platform="windows"), ErrorCode.INVALID_VALUE, "platform"),
    ("platform_case", event(platform="iOS"), ErrorCode.INVALID_VALUE, "platform"),
    ("platform_empty", event(platform=""), ErrorCode.INVALID_VALUE, "platform"),
    (
        "identity_unknown_key",
        event(identities={"idfa": "abc"}),
        ErrorCode.INVALID_VALUE,
        "identities.idfa",
    ),
    (
        "identity_user_id_key",
        event(identities={"openid": "o1", "user_id": "m1"}),
        ErrorCode.INVALID_VALUE,
        "identities.user_id",
    ),
    (
        "identity_openid_too_long",
        event(identities={"openid": "o" * 129}),
        ErrorCode.INVALID_VALUE,
        "identities.openid",
    ),
    (
        "identity_openid_empty",
        event(identities={"openid": ""}),
        ErrorCode.INVALID_VALUE,
        "identities.openid",
    ),
    (
        "identity_phone_letters",
        event(identities={"phone": "call-me"}),
        ErrorCode.INVALID_VALUE,
        "identities.phone",
    ),
    (
        "identity_phone_short",
        event(identities={"phone": "12345"}),
        ErrorCode.INVALID_VALUE,
        "identities.phone",
    ),
    (
        "identity_email_invalid",
        event(identities={"email": "not-an-email"}),
        ErrorCode.INVALID_VALUE,
        "identities.email",
    ),
    (
        "page_not_in_enum",
        with_props("page_view", page="landing"),
        ErrorCode.INVALID_VALUE,
        "properties.page",
    ),
    (
        "page_case",
        with_props("page_view", page="Home"),
        ErrorCode.INVALID_VALUE,
        "properties.page",
    ),
    (
        "pay_method_paypal",
        with_props("pay_request", pay_method="paypal"),
        ErrorCode.INVALID_VALUE,
        "properties.pay_method",
    ),
    (
        "method_sms",
        with_props("signup", method="sms"),
        ErrorCode.INVALID_VALUE,
        "properties.method",
    ),
    (
        "duration_negative",
        with_props("page_view", duration_ms=-1),
        ErrorCode.INVALID_VALUE,
        "properties.duration_ms",
    ),
    (
        "position_negative",
        with_props("element_click", position=-1),
        ErrorCode.INVALID_VALUE,
        "properties.position",
    ),
    (
        "quantity_zero",
        with_props("add_to_cart", quantity=0),
        ErrorCode.INVALID_VALUE,
        "properties.quantity",
    ),
    (
        "remove_quantity_zero",
        with_props("remove_from_cart", quantity=0),
        ErrorCode.INVALID_VALUE,
        "properties.quantity",
    ),
    (
        "item_count_zero",
        with_props("checkout", item_count=0),
        ErrorCode.INVALID_VALUE,
        "properties.item_count",
    ),
    (
        "order_id_too_long",
        with_props("checkout", order_id="o" * 65),
        ErrorCode.INVALID_VALUE,
        "properties.order_id",
    ),
    # invalid_timestamp
    ("time_garbage", event(event_time="yesterday"), ErrorCode.INVALID_TIMESTAMP, "event_time"),
    (
        "time_naive",
        event(event_time="2026-11-23T07:55:00"),
        ErrorCode.INVALID_TIMESTAMP,
        "event_time",
    ),
    ("time_date_only", event(event_time="2026-11-23"), ErrorCode.INVALID_TIMESTAMP, "event_time"),
    (
        "time_too_old",
        event(event_time=NOW - 7 * DAY - 1000),
        ErrorCode.INVALID_TIMESTAMP,
        "event_time",
    ),
    (
        "time_in_future",
        event(event_time=NOW + 11 * MINUTE),
        ErrorCode.INVALID_TIMESTAMP,
        "event_time",
    ),
    (
        "time_string_in_future",
        event(event_time="2026-11-23T08:11:00Z"),
        ErrorCode.INVALID_TIMESTAMP,
        "event_time",
    ),
    # unknown_property (strict events)
    (
        "checkout_extra",
        with_props("checkout", campaign="x"),
        ErrorCode.UNKNOWN_PROPERTY,
        "properties.campaign",
    ),
]


@pytest.mark.parametrize(
    ("obj", "code", "field"),
    [pytest.param(obj, code, field, id=case_id) for case_id, obj, code, field in REJECTIONS],
)
def test_rejection_code_and_detail(
    validator: Validator, obj: Any, code: ErrorCode, field: str
) -> None:
    err = reject(validator, obj)
    assert err.code == code, err.detail
    assert field in err.detail


def test_every_design_error_code_is_exercised() -> None:
    # payload_too_large is judged by the codec (a size, not a field): see the test below.
    codes = {code for _, _, code, _ in REJECTIONS} | {ErrorCode.PAYLOAD_TOO_LARGE}
    design_codes = {
        "malformed_payload",
        "payload_too_large",
        "missing_required_field",
        "type_mismatch",
        "unknown_event",
        "invalid_value",
        "invalid_timestamp",
        "unknown_property",
    }
    assert {c.value for c in codes} == design_codes


def test_payload_too_large_for_an_event_over_32_kib(plan: TrackingPlan) -> None:
    import orjson

    obj = event(channel="c" * (33 * 1024))
    items = decode_message(orjson.dumps(obj), plan)
    assert len(items) == 1
    assert items[0].error is not None
    assert items[0].error.code == ErrorCode.PAYLOAD_TOO_LARGE
    assert "32768" in items[0].error.detail


def test_event_id_with_trailing_newline_is_invalid(validator: Validator) -> None:
    # DESIGN 5: 1-64 chars of [A-Za-z0-9_-]; "$" in the pattern also matches before "\n".
    err = reject(validator, event(event_id="evt-0001\n"))
    assert err.code == ErrorCode.INVALID_VALUE
    assert "event_id" in err.detail


# -- money ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        pytest.param(19.99, Decimal("19.99"), id="19.99"),
        pytest.param(0, Decimal("0"), id="zero_int"),
        pytest.param(0.0, Decimal("0"), id="zero_float"),
        pytest.param(20, Decimal("20"), id="int"),
        pytest.param(0.1, Decimal("0.1"), id="0.1"),
        pytest.param(0.01, Decimal("0.01"), id="0.01"),
        pytest.param(1234567.89, Decimal("1234567.89"), id="1234567.89"),
        pytest.param(Decimal("1.500"), Decimal("1.5"), id="decimal_1.500"),
        pytest.param(Decimal("19.99"), Decimal("19.99"), id="decimal_19.99"),
        pytest.param(
            Decimal("9999999999999999.99"), Decimal("9999999999999999.99"), id="max_decimal_18_2"
        ),
    ],
)
def test_money_accepted(validator: Validator, value: Any, expected: Decimal) -> None:
    record = validator.validate(with_props("add_to_cart", price=value), NOW)
    assert isinstance(record, dict)
    assert Decimal(str(record["properties"]["price"])) == expected


@pytest.mark.parametrize(
    ("value", "code"),
    [
        pytest.param(19.999, ErrorCode.INVALID_VALUE, id="three_decimals"),
        pytest.param(0.001, ErrorCode.INVALID_VALUE, id="0.001"),
        pytest.param(0.1 + 0.2, ErrorCode.INVALID_VALUE, id="float_noise"),
        pytest.param(Decimal("1.505"), ErrorCode.INVALID_VALUE, id="decimal_1.505"),
        pytest.param(-0.01, ErrorCode.INVALID_VALUE, id="negative_cent"),
        pytest.param(-5, ErrorCode.INVALID_VALUE, id="negative_int"),
        pytest.param(Decimal("-1.00"), ErrorCode.INVALID_VALUE, id="negative_decimal"),
        pytest.param(10**16, ErrorCode.INVALID_VALUE, id="1e16_int"),
        pytest.param(1e16, ErrorCode.INVALID_VALUE, id="1e16_float"),
        pytest.param(1e300, ErrorCode.INVALID_VALUE, id="1e300"),
        pytest.param(10**30, ErrorCode.INVALID_VALUE, id="10**30"),
        pytest.param(Decimal("10000000000000000.00"), ErrorCode.INVALID_VALUE, id="over_18_2"),
        pytest.param(Decimal("NaN"), ErrorCode.INVALID_VALUE, id="nan"),
        pytest.param(Decimal("Infinity"), ErrorCode.INVALID_VALUE, id="infinity"),
        pytest.param("19.99", ErrorCode.TYPE_MISMATCH, id="string"),
        pytest.param(True, ErrorCode.TYPE_MISMATCH, id="bool"),
        pytest.param([19.99], ErrorCode.TYPE_MISMATCH, id="list"),
        pytest.param({"amount": 19.99}, ErrorCode.TYPE_MISMATCH, id="object"),
    ],
)
def test_money_rejected(validator: Validator, value: Any, code: ErrorCode) -> None:
    err = reject(validator, with_props("add_to_cart", price=value))
    assert err.code == code
    assert "properties.price" in err.detail


@pytest.mark.parametrize("name", STRICT)
def test_money_on_strict_events(validator: Validator, name: str) -> None:
    err = reject(validator, with_props(name, amount=19.999))
    assert err.code == ErrorCode.INVALID_VALUE
    assert "properties.amount" in err.detail
    record = validator.validate(with_props(name, amount=19.99), NOW)
    assert isinstance(record, dict)
    assert Decimal(str(record["properties"]["amount"])) == Decimal("19.99")


# -- strict and non-strict events ---------------------------------------------------------


@pytest.mark.parametrize("name", STRICT)
def test_strict_events_reject_unknown_properties(validator: Validator, name: str) -> None:
    err = reject(validator, with_props(name, utm_source="ad"))
    assert err.code == ErrorCode.UNKNOWN_PROPERTY
    assert "properties.utm_source" in err.detail


@pytest.mark.parametrize("name", STRICT)
def test_strict_events_reject_unknown_property_even_when_null(
    validator: Validator, name: str
) -> None:
    # Unknown is about the name; a null value does not make the property known.
    err = reject(validator, with_props(name, utm_source=None))
    assert err.code == ErrorCode.UNKNOWN_PROPERTY
    assert "utm_source" in err.detail


@pytest.mark.parametrize("name", NON_STRICT)
def test_non_strict_events_keep_unknown_properties(validator: Validator, name: str) -> None:
    record = validator.validate(with_props(name, ab_bucket="B", score=3), NOW)
    assert isinstance(record, dict)
    assert record["properties"]["ab_bucket"] == "B"
    assert record["properties"]["score"] == 3
    assert record["unknown_properties"] == ["ab_bucket", "score"]
    for key, value in MINIMAL_PROPS[name].items():
        assert same(record["properties"][key], value)


def test_strict_event_with_only_optional_known_property_is_fine(validator: Validator) -> None:
    record = validator.validate(with_props("checkout", coupon_id="c-1"), NOW)
    assert isinstance(record, dict)
    assert record["properties"]["coupon_id"] == "c-1"
    assert "unknown_properties" not in record


# -- identities and PII ----------------------------------------------------------------------


def test_phone_and_email_identities_are_hashed(validator: Validator, hasher: PiiHasher) -> None:
    obj = event(identities={"phone": PHONE, "email": " Alice.W@Example.COM ", "openid": "oX"})
    record = validator.validate(obj, NOW)
    assert isinstance(record, dict)
    ids = record["identities"]
    assert HEX64.match(ids["phone"])
    assert HEX64.match(ids["email"])
    assert ids["phone"] == hasher.hash_phone(PHONE)
    assert ids["email"] == hasher.hash_email("alice.w@example.com")
    assert ids["openid"] == "oX"
    text = str(record)
    assert PHONE not in text
    assert "12345678" not in text
    assert "alice" not in text.lower()
    assert "example.com" not in text.lower()


@pytest.mark.parametrize("spelling", ["13812345678", "+86 138-1234-5678", "008613812345678"])
def test_phone_spellings_hash_identically(
    validator: Validator, hasher: PiiHasher, spelling: str
) -> None:
    record = validator.validate(event(identities={"phone": spelling}), NOW)
    assert isinstance(record, dict)
    assert record["identities"]["phone"] == hasher.digest("phone", "+8613812345678")
    assert "1234" not in str(record).replace(record["identities"]["phone"], "")


def test_different_phones_hash_differently(validator: Validator) -> None:
    a = validator.validate(event(identities={"phone": "13812345678"}), NOW)
    b = validator.validate(event(identities={"phone": "13812345679"}), NOW)
    assert isinstance(a, dict)
    assert isinstance(b, dict)
    assert a["identities"]["phone"] != b["identities"]["phone"]


def test_null_identity_value_is_skipped(validator: Validator) -> None:
    record = validator.validate(event(identities={"openid": None, "unionid": "u1"}), NOW)
    assert isinstance(record, dict)
    assert record["identities"] == {"unionid": "u1"}
    record = validator.validate(event(identities={}), NOW)
    assert isinstance(record, dict)
    assert record["identities"] is None


@pytest.mark.parametrize("key", ["phone", "Phone", "mobile", "tel", "telephone"])
def test_unknown_phone_property_on_non_strict_event_is_hashed(
    validator: Validator, hasher: PiiHasher, key: str
) -> None:
    record = validator.validate(with_props("page_view", **{key: "+86 138 1234 5678"}), NOW)
    assert isinstance(record, dict)
    assert record["properties"][key] == hasher.hash_phone(PHONE)
    assert record["unknown_properties"] == [key]
    assert "1234" not in str(record).replace(record["properties"][key], "")


def test_unknown_phone_property_given_as_number_is_hashed(
    validator: Validator, hasher: PiiHasher
) -> None:
    record = validator.validate(with_props("page_view", phone=13812345678), NOW)
    assert isinstance(record, dict)
    assert record["properties"]["phone"] == hasher.hash_phone(PHONE)
    assert PHONE not in str(record)


def test_unknown_email_property_is_hashed(validator: Validator, hasher: PiiHasher) -> None:
    record = validator.validate(with_props("signup", email="Bob@Shop.CN"), NOW)
    assert isinstance(record, dict)
    assert record["properties"]["email"] == hasher.hash_email("bob@shop.cn")
    assert "bob" not in str(record).lower()


def test_phone_nested_in_unknown_property_is_not_stored_in_clear(validator: Validator) -> None:
    # DESIGN 5: phone numbers are never stored in clear. A phone key one level down in an
    # unknown (kept) property reaches the lake as-is.
    obj = with_props("page_view", contact={"phone": PHONE, "name": "x"})
    record = validator.validate(obj, NOW)
    assert isinstance(record, dict)
    assert PHONE not in str(record)


# -- consent -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "obj",
    [
        pytest.param(event(consent={"analytics": False, "marketing": True}), id="valid_event"),
        pytest.param(event(consent={"analytics": False}), id="analytics_only"),
        pytest.param(
            event(consent={"analytics": False}, event_id=_DROP, platform="windows"),
            id="bad_envelope",
        ),
        pytest.param(
            event(consent={"analytics": False}, event_name="not_in_plan"), id="unknown_event"
        ),
        pytest.param(event(consent={"analytics": False}, event_time="garbage"), id="bad_time"),
        pytest.param(
            event(consent={"analytics": False}, properties="x", identities={"idfa": 1}),
            id="bad_properties_and_identities",
        ),
        pytest.param(
            {"consent": {"analytics": False, "marketing": False}}, id="nothing_but_consent"
        ),
    ],
)
def test_consent_withdrawn_drops_the_event(validator: Validator, obj: dict[str, Any]) -> None:
    assert validator.validate(obj, NOW) is CONSENT_DROPPED


@pytest.mark.parametrize(
    ("consent", "marketing"),
    [
        ({"analytics": True, "marketing": True}, True),
        ({"analytics": True, "marketing": False}, False),
        ({"analytics": True}, None),
        ({}, None),
    ],
)
def test_consent_given_keeps_the_event(
    validator: Validator, consent: dict[str, Any], marketing: bool | None
) -> None:
    record = validator.validate(event(consent=consent), NOW)
    assert isinstance(record, dict)
    assert record["consent_marketing"] is marketing


# -- time on the validator path ----------------------------------------------------------


@pytest.mark.parametrize(
    ("event_time", "expected"),
    [
        (NOW - 6 * DAY, NOW - 6 * DAY),
        (NOW - 7 * DAY, NOW - 7 * DAY),
        (NOW + 9 * MINUTE, NOW + 9 * MINUTE),
        (NOW + 10 * MINUTE, NOW + 10 * MINUTE),
        ("2026-11-23T16:00:00+08:00", NOW),
        ("2026-11-23T08:09:59.999Z", NOW + 10 * MINUTE - 1),
    ],
)
def test_event_time_in_range_is_accepted(
    validator: Validator, event_time: Any, expected: int
) -> None:
    record = validator.validate(event(event_time=event_time), NOW)
    assert isinstance(record, dict)
    assert record["event_time"] == expected


# -- compile_field directly: bounds the plan does not use, kinds without a checker ---------


@pytest.mark.parametrize(
    ("kind", "inside", "below", "above"),
    [
        ("long", 5, -1, 11),
        ("double", 5.5, -0.5, 10.5),
        ("money", 5.25, -1, 11),
    ],
)
def test_compiled_numeric_checkers_enforce_both_bounds(
    kind: str, inside: Any, below: Any, above: Any
) -> None:
    spec = FieldSpec(
        name="n", kind=kind, required=True, doc="d", minimum=0, maximum=10, scale=2, precision=10
    )
    check = compile_field(spec, "properties.n")
    assert check(inside) == inside
    for value, bound in ((below, ">= 0"), (above, "<= 10")):
        with pytest.raises(Rejected) as info:
            check(value)
        assert info.value.code == ErrorCode.INVALID_VALUE
        assert f"properties.n must be {bound}" in info.value.detail


@pytest.mark.parametrize("kind", ["map", "record"])
def test_compile_field_refuses_a_kind_without_checker(kind: str) -> None:
    spec = FieldSpec(name="m", kind=kind, required=True, doc="d")
    with pytest.raises(ValueError, match=f"properties.m: no checker for kind {kind}"):
        compile_field(spec, "properties.m")
