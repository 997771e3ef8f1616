"""Update times of member rows (the incremental column)."""

from __future__ import annotations

from zoneinfo import ZoneInfo

import pytest

from pipeline.members.times import BadTime, iso, parse_time

SH = ZoneInfo("Asia/Shanghai")
NOON_UTC = 1714564800000  # 2024-05-01T12:00:00Z


@pytest.mark.parametrize(
    "raw",
    [
        "2024-05-01 20:00:00",
        "2024/05/01 20:00",
        "2024-05-01T20:00:00.000",
        "2024-05-01T12:00:00Z",
        "2024-05-01T20:00:00+08:00",
        "2024-05-01T04:00:00-0800",
        "1714564800",
        "1714564800000",
        1714564800,
    ],
)
def test_spellings_of_one_instant(raw: object) -> None:
    assert parse_time(raw, SH) == NOON_UTC


def test_date_only_is_local_midnight_and_extra_formats() -> None:
    assert iso(parse_time("2024-05-02", SH)) == "2024-05-01T16:00:00Z"
    assert parse_time("01.05.2024 20:00", SH, ("%d.%m.%Y %H:%M",)) == NOON_UTC


@pytest.mark.parametrize("raw", ["yesterday", "2024-13-01", "", None, True])
def test_not_times(raw: object) -> None:
    with pytest.raises(BadTime):
        parse_time(raw, SH)
