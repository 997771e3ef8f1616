"""Event-time parsing and range checks (DESIGN section 5, event_time)."""

from __future__ import annotations

from typing import Any

import pytest

from pipeline.contract.errors import ErrorCode, Rejected
from pipeline.contract.plan import load_plan
from pipeline.contract.timeparse import check_time_range, format_ms, parse_event_time

# 2026-11-23T00:00:00Z, from calendar.timegm((2026, 11, 23, 0, 0, 0)) * 1000
MIDNIGHT_UTC = 1_795_392_000_000
T0800Z = MIDNIGHT_UTC + 8 * 3_600_000  # 2026-11-23T08:00:00Z
NOW = T0800Z
SECOND = 1000
MINUTE = 60 * SECOND
DAY = 86_400 * SECOND
MAX_PAST_S = 7 * 86_400
MAX_FUTURE_S = 10 * 60


def test_plan_range_matches_the_contract() -> None:
    env = load_plan().envelope
    assert env.max_past_seconds == MAX_PAST_S
    assert env.max_future_seconds == MAX_FUTURE_S


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("2026-11-23T08:00:00Z", T0800Z),
        ("2026-11-23T08:00:00+00:00", T0800Z),
        ("2026-11-23T08:00:00-00:00", T0800Z),
        ("2026-11-23T16:00:00+08:00", T0800Z),
        ("2026-11-23T03:00:00-05:00", T0800Z),
        ("2026-11-23T13:30:00+05:30", T0800Z),
        ("2026-11-24T00:00:00+16:00", T0800Z),
        ("2026-11-23t08:00:00z", T0800Z),
        ("2026-11-23t16:00:00+08:00", T0800Z),
        ("2026-11-23 08:00:00Z", T0800Z),
        ("2026-11-23 16:00:00+08:00", T0800Z),
        ("2026-11-23T00:00:00Z", MIDNIGHT_UTC),
        ("1970-01-01T00:00:00Z", 0),
        ("1970-01-01T08:00:00.001+08:00", 1),
    ],
)
def test_rfc3339_with_offset(text: str, expected: int) -> None:
    assert parse_event_time(text) == expected


@pytest.mark.parametrize(
    ("fraction", "ms"),
    [
        ("1", 100),
        ("12", 120),
        ("123", 123),
        ("1234", 123),
        ("12345", 123),
        ("123456", 123),
        ("1234567", 123),
        ("12345678", 123),
        ("123456789", 123),
        ("001", 1),
        ("005", 5),
        ("0", 0),
        ("000999", 0),
        ("999", 999),
        ("999999999", 999),  # sub-millisecond digits are truncated, never rounded up
        ("007", 7),
        ("29", 290),
        ("57", 570),
    ],
)
def test_fractional_seconds_1_to_9_digits(fraction: str, ms: int) -> None:
    assert parse_event_time(f"2026-11-23T08:00:00.{fraction}Z") == T0800Z + ms
    assert parse_event_time(f"2026-11-23T16:00:00.{fraction}+08:00") == T0800Z + ms


def test_exact_millisecond_conversion() -> None:
    assert parse_event_time("2026-11-23T08:00:00.123+08:00") == 1_795_392_000_123
    assert parse_event_time("2026-11-23T23:59:59.999-01:00") == 1_795_481_999_999
    # values where float seconds * 1000 is not exact
    assert parse_event_time("2026-11-23T08:00:00.291Z") == T0800Z + 291
    assert parse_event_time("2026-11-23T08:00:00.579Z") == T0800Z + 579
    assert parse_event_time("2262-04-11T23:47:16.854Z") == 9_223_372_036_854


def test_result_is_an_int() -> None:
    value = parse_event_time("2026-11-23T08:00:00.5Z")
    assert type(value) is int
    assert value == T0800Z + 500


@pytest.mark.parametrize("ms", [0, 1, T0800Z, T0800Z + 123, 9_999_999_999_999])
def test_epoch_milliseconds_int_accepted(ms: int) -> None:
    assert parse_event_time(ms) == ms


@pytest.mark.parametrize(
    "text",
    [
        "2026-11-23T08:00:00",  # naive
        "2026-11-23 08:00:00",  # naive, space
        "2026-11-23T08:00:00.123",  # naive with fraction
        "2026-11-23",  # date only
        "2026-11-23Z",
        "08:00:00Z",  # time only
        "yesterday",
        "",
        "   ",
        "now",
        "1795420800000",  # epoch ms as a string
        "2026-11-23T08:00Z",  # no seconds
        "2026-11-23T08:00:00.Z",  # empty fraction
        "2026-11-23T08:00:00.1234567890Z",  # 10 fraction digits
        "2026-11-23T08:00:00+0800",  # offset without colon
        "2026-11-23T08:00:00+08",
        "2026-11-23T08:00:00 +08:00",
        "2026-11-23T08:00:00UTC",
        "2026/11/23T08:00:00Z",
        "23-11-2026T08:00:00Z",
        "2026-13-01T00:00:00Z",  # month 13
        "2026-02-30T00:00:00Z",  # no such day
        "2026-11-23T25:00:00Z",
        "2026-11-23T08:61:00Z",
        "2026-11-23T08:00:00+24:00",
        " 2026-11-23T08:00:00Z",
        "2026-11-23T08:00:00Z ",
        "2026-11-23T08:00:00Zjunk",
        "２０２６-11-23T08:00:00Z",  # full-width digits
        "Mon, 23 Nov 2026 08:00:00 GMT",
    ],
)
def test_invalid_timestamp_strings(text: str) -> None:
    with pytest.raises(Rejected) as info:
        parse_event_time(text)
    assert info.value.code == ErrorCode.INVALID_TIMESTAMP
    assert "event_time" in info.value.detail


def test_trailing_newline_is_not_rfc3339() -> None:
    # The regex ends with "$", which also matches just before a final "\n".
    with pytest.raises(Rejected) as info:
        parse_event_time("2026-11-23T08:00:00Z\n")
    assert info.value.code == ErrorCode.INVALID_TIMESTAMP


def test_detail_uses_the_given_field_name() -> None:
    with pytest.raises(Rejected) as info:
        parse_event_time("garbage", field="properties.when")
    assert "properties.when" in info.value.detail


def test_huge_garbage_is_truncated_in_the_detail() -> None:
    with pytest.raises(Rejected) as info:
        parse_event_time("x" * 10_000)
    assert len(info.value.detail) < 300


@pytest.mark.parametrize(
    "value",
    [True, False, 1.5, float(T0800Z), [T0800Z], {"ms": T0800Z}, None, b"2026-11-23T08:00:00Z"],
    ids=["true", "false", "float", "float_ms", "list", "object", "null", "bytes"],
)
def test_wrong_types_are_type_mismatch(value: Any) -> None:
    with pytest.raises(Rejected) as info:
        parse_event_time(value)
    assert info.value.code == ErrorCode.TYPE_MISMATCH
    assert "event_time" in info.value.detail


# -- accepted range ------------------------------------------------------------------------


@pytest.mark.parametrize(
    "ms",
    [
        NOW,
        NOW - 6 * DAY,
        NOW - 7 * DAY,  # exactly the limit
        NOW - 7 * DAY + 1,
        NOW + 9 * MINUTE,
        NOW + 10 * MINUTE,  # exactly the limit
        NOW - 1,
        NOW + 1,
    ],
)
def test_range_accepted(ms: int) -> None:
    check_time_range(ms, NOW, MAX_PAST_S, MAX_FUTURE_S)  # does not raise


@pytest.mark.parametrize(
    ("ms", "word"),
    [
        (NOW - 7 * DAY - SECOND, "past"),
        (NOW - 7 * DAY - 1, "past"),
        (NOW - 30 * DAY, "past"),
        (0, "past"),
        (-1, "past"),
        (NOW + 11 * MINUTE, "future"),
        (NOW + 10 * MINUTE + 1, "future"),
        (NOW + 365 * DAY, "future"),
        (2**62, "future"),
    ],
)
def test_range_rejected(ms: int, word: str) -> None:
    with pytest.raises(Rejected) as info:
        check_time_range(ms, NOW, MAX_PAST_S, MAX_FUTURE_S)
    assert info.value.code == ErrorCode.INVALID_TIMESTAMP
    assert "event_time" in info.value.detail
    assert word in info.value.detail


def test_range_applies_to_parsed_strings() -> None:
    ok = parse_event_time("2026-11-16T08:00:00Z")  # exactly 7 days before NOW
    check_time_range(ok, NOW, MAX_PAST_S, MAX_FUTURE_S)
    too_old = parse_event_time("2026-11-16T15:59:59+08:00")  # 7 days + 1 s
    with pytest.raises(Rejected) as info:
        check_time_range(too_old, NOW, MAX_PAST_S, MAX_FUTURE_S)
    assert info.value.code == ErrorCode.INVALID_TIMESTAMP


@pytest.mark.parametrize(
    ("ms", "text"),
    [
        (T0800Z, "2026-11-23T08:00:00.000+00:00"),
        (T0800Z + 123, "2026-11-23T08:00:00.123+00:00"),
        (0, "1970-01-01T00:00:00.000+00:00"),
    ],
)
def test_format_ms(ms: int, text: str) -> None:
    assert format_ms(ms) == text


def test_format_ms_out_of_range_does_not_raise() -> None:
    assert "out of range" in format_ms(2**62)
