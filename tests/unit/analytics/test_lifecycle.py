"""Lifecycle against a hand-computed example (Asia/Shanghai, UTC+8)."""

from __future__ import annotations

from datetime import date
from pathlib import Path

import pytest

from pipeline.analytics.calendar import BadInput, Calendar
from pipeline.analytics.lifecycle import lifecycle
from pipeline.lake import views
from tests.unit.analytics.lake import drop_past_retention, ev, write_events, write_identities


@pytest.fixture
def lake(tmp_path: Path) -> Path:
    write_events(
        tmp_path,
        [
            ev("page_view", "2026-03-01T10:00:00+08:00", anon="a"),
            ev("page_view", "2026-03-02T10:00:00+08:00", anon="a"),
            ev("page_view", "2026-03-03T10:00:00+08:00", anon="a"),
            # B: two devices, one member: one person, first seen on the 2nd.
            ev("page_view", "2026-03-02T10:00:00+08:00", anon="b1"),
            ev("login", "2026-03-04T10:00:00+08:00", anon="b2", user="ub"),
            ev("page_view", "2026-03-04T10:05:00+08:00", anon="b2"),
            # C: first event 23:30 local on the 3rd; 00:30 local on the 5th (UTC: the 4th).
            ev("page_view", "2026-03-03T23:30:00+08:00", anon="c"),
            ev("page_view", "2026-03-05T00:30:00+08:00", anon="c"),
            # D: seen long before the range, back on the 3rd.
            ev("page_view", "2026-02-20T10:00:00+08:00", anon="d"),
            ev("page_view", "2026-03-03T10:00:00+08:00", anon="d"),
            # E: only after --to (00:10 local on the 8th is the 7th in UTC).
            ev("page_view", "2026-03-08T00:10:00+08:00", anon="e"),
        ],
    )
    write_identities(
        tmp_path,
        [
            ("user_id", "ub", "p_ub"),
            ("anonymous_id", "b1", "p_ub"),
            ("anonymous_id", "b2", "p_ub"),
        ],
    )
    return tmp_path


def _rows(lake: Path, lo: date, hi: date, period: str = "day") -> list[tuple]:
    got = lifecycle(views.connect(lake), Calendar("Asia/Shanghai", period), lo, hi)  # type: ignore[arg-type]
    return [
        (r["period"].isoformat(), r["new"], r["returning"], r["resurrecting"], r["dormant"])
        for r in got
    ]


def test_days(lake: Path) -> None:
    assert _rows(lake, date(2026, 3, 2), date(2026, 3, 7)) == [
        ("2026-03-02", 1, 1, 0, 0),  # B new, A returning
        ("2026-03-03", 1, 1, 1, 1),  # C new, A returning, D resurrecting; B dormant
        ("2026-03-04", 0, 0, 1, 3),  # B (other device, logged in) back; A, C, D dormant
        ("2026-03-05", 0, 0, 1, 1),  # C back; B dormant
        ("2026-03-06", 0, 0, 0, 1),  # C dormant
        ("2026-03-07", 0, 0, 0, 0),  # nobody: a row of zeros
    ]


def test_weeks(lake: Path) -> None:
    # D's first day (Fri 20 Feb) is in the week of 16 Feb; A's (Sun 1 Mar) in that of 23 Feb;
    # E's Sunday 00:10 local is in the week of 2 Mar, inside --to this time.
    assert _rows(lake, date(2026, 3, 2), date(2026, 3, 15), "week") == [
        ("2026-03-02", 3, 1, 1, 0),  # B, C, E new; A returning; D resurrecting
        ("2026-03-09", 0, 0, 0, 5),  # all five dormant
    ]


def test_from_after_to_is_refused(lake: Path) -> None:
    with pytest.raises(BadInput, match="--from 2026-03-05 is after --to 2026-03-04"):
        _rows(lake, date(2026, 3, 5), date(2026, 3, 4))


def test_a_person_seen_only_in_partitions_past_retention_is_not_new(tmp_path: Path) -> None:
    """``lake maintain`` drops the 1 March partition (90 days kept); the first activity it
    keeps of it still makes x an old customer three months later (resurrecting), y a new
    one. The dropped days themselves show only what the lake holds: nothing."""

    write_events(
        tmp_path,
        [
            ev("page_view", "2026-03-01T10:00:00+08:00", anon="x"),
            ev("page_view", "2026-06-01T10:00:00+08:00", anon="x"),
            ev("page_view", "2026-06-01T10:00:00+08:00", anon="y"),
        ],
    )
    day = date(2026, 6, 1)
    assert _rows(tmp_path, day, day) == [("2026-06-01", 1, 0, 1, 0)]
    drop_past_retention(tmp_path, date(2026, 6, 2))  # 90 days of events
    assert not (tmp_path / "lake" / "events" / "event_date=2026-03-01").exists()
    assert _rows(tmp_path, day, day) == [("2026-06-01", 1, 0, 1, 0)]  # x resurrecting, y new
    assert _rows(tmp_path, day, day, "week") == [("2026-06-01", 1, 0, 1, 0)]
    gone = [("2026-03-01", 0, 0, 0, 0), ("2026-03-02", 0, 0, 0, 0)]
    assert _rows(tmp_path, date(2026, 3, 1), date(2026, 3, 2)) == gone
