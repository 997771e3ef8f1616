"""Retention against hand-computed examples (Asia/Shanghai, UTC+8)."""

from __future__ import annotations

from datetime import date, datetime, timedelta
from pathlib import Path
from zoneinfo import ZoneInfo

import duckdb
import pytest

from pipeline.analytics.calendar import BadInput, Calendar
from pipeline.analytics.retention import RetentionQuery, retention
from pipeline.contract.plan import load_plan
from pipeline.lake import views
from tests.unit.analytics.lake import ev, write_events, write_identities

TZ = "Asia/Shanghai"
LATER = date(2026, 3, 30)


@pytest.fixture
def lake(tmp_path: Path) -> Path:
    write_events(
        tmp_path,
        [
            # A: a page_view before the signup on the cohort day still counts for k = 0.
            ev("page_view", "2026-03-02T09:00:00+08:00", anon="a"),
            ev("signup", "2026-03-02T10:00:00+08:00", anon="a", method="phone"),
            ev("page_view", "2026-03-03T23:30:00+08:00", anon="a"),
            # 00:30 local on the 4th is still the 3rd in UTC: it is k = 2, not k = 1.
            ev("page_view", "2026-03-04T00:30:00+08:00", anon="a"),
            # B: two devices and a member id, one person.
            ev("page_view", "2026-03-02T08:00:00+08:00", anon="b1"),
            ev("signup", "2026-03-02T12:00:00+08:00", anon="b1", method="phone"),
            ev("signup", "2026-03-03T12:00:00+08:00", anon="b2", method="phone"),
            ev("login", "2026-03-03T12:01:00+08:00", anon="b2", user="ub"),
            ev("page_view", "2026-03-04T09:00:00+08:00", anon="b2"),
            # C: returns earlier the same day, before the signup at 23:30.
            ev("page_view", "2026-03-03T22:00:00+08:00", anon="c"),
            ev("signup", "2026-03-03T23:30:00+08:00", anon="c", method="phone"),
            # D: signed up before the range: in no cohort.
            ev("signup", "2026-03-01T10:00:00+08:00", anon="d", method="phone"),
            ev("page_view", "2026-03-02T10:00:00+08:00", anon="d"),
            # F: signed up before the range and again in it: the cohort of the 3rd.
            ev("signup", "2026-03-01T10:00:00+08:00", anon="f", method="phone"),
            ev("signup", "2026-03-03T10:00:00+08:00", anon="f", method="phone"),
            ev("page_view", "2026-03-04T10:00:00+08:00", anon="f"),
            # E: 00:10 local on the 5th (the 4th in UTC) is after --to.
            ev("signup", "2026-03-05T00:10:00+08:00", anon="e", method="phone"),
            ev("page_view", "2026-03-05T00:20:00+08:00", anon="e"),
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


def _run(lake: Path, mode: str = "n-day", today: date = LATER, **kw: object) -> list[tuple]:
    q = RetentionQuery(
        "signup",
        "page_view",
        kw.pop("lo", date(2026, 3, 2)),  # type: ignore[arg-type]
        kw.pop("hi", date(2026, 3, 4)),  # type: ignore[arg-type]
        Calendar(TZ, kw.pop("period", "day")),  # type: ignore[arg-type]
        mode,  # type: ignore[arg-type]
        kw.pop("periods", 3),  # type: ignore[arg-type]
    )
    q.check(load_plan().latest)
    rows = retention(views.connect(lake), q, today)
    return [
        (r["cohort"].isoformat(), r["size"], r["k"], r["retained"], r["complete"]) for r in rows
    ]


def test_n_day_counts_each_period_and_period_zero_before_the_cohort_event(lake: Path) -> None:
    assert _run(lake) == [
        ("2026-03-02", 2, 0, 2, True),
        ("2026-03-02", 2, 1, 1, True),
        ("2026-03-02", 2, 2, 2, True),
        ("2026-03-03", 2, 0, 1, True),
        ("2026-03-03", 2, 1, 1, True),
        ("2026-03-03", 2, 2, 0, True),
        # nobody's first signup of the range is on the 4th: rows with zeros, not missing
        ("2026-03-04", 0, 0, 0, True),
        ("2026-03-04", 0, 1, 0, True),
        ("2026-03-04", 0, 2, 0, True),
    ]


def test_the_range_chooses_cohort_events_only_returns_after_it_count(lake: Path) -> None:
    """--to ends the cohort events, not the return events: A's returns on the 3rd and
    the 4th fill k = 1 and 2 of a range that is only the 2nd."""
    got = _run(lake, hi=date(2026, 3, 2))
    assert [(c, size, k, n) for c, size, k, n, _ in got] == [
        ("2026-03-02", 2, 0, 2),
        ("2026-03-02", 2, 1, 1),
        ("2026-03-02", 2, 2, 2),
    ]
    unbounded = _run(lake, "unbounded", hi=date(2026, 3, 2))
    assert [n for _, _, _, n, _ in unbounded] == [2, 2, 2]


def test_period_zero_counts_a_return_before_from_in_the_same_week(tmp_path: Path) -> None:
    write_events(
        tmp_path,
        [
            ev("page_view", "2026-03-02T10:00:00+08:00", anon="x"),  # Monday, before --from
            ev("signup", "2026-03-05T10:00:00+08:00", anon="x", method="phone"),
            ev("page_view", "2026-03-10T10:00:00+08:00", anon="x"),  # the next week
        ],
    )
    got = _run(tmp_path, lo=date(2026, 3, 4), hi=date(2026, 3, 6), period="week", periods=2)
    assert got == [("2026-03-02", 1, 0, 1, True), ("2026-03-02", 1, 1, 1, True)]


def test_unbounded_counts_a_return_in_any_later_period(lake: Path) -> None:
    got = _run(lake, "unbounded")
    assert [(c, k, n) for c, _, k, n, _ in got] == [
        ("2026-03-02", 0, 2),
        ("2026-03-02", 1, 2),
        ("2026-03-02", 2, 2),
        ("2026-03-03", 0, 2),
        ("2026-03-03", 1, 1),
        ("2026-03-03", 2, 0),
        ("2026-03-04", 0, 0),
        ("2026-03-04", 1, 0),
        ("2026-03-04", 2, 0),
    ]


def test_a_period_not_over_by_now_is_incomplete(lake: Path) -> None:
    got = _run(lake, today=date(2026, 3, 4))  # the 4th has begun, not ended
    assert [(c, k, done) for c, _, k, _, done in got if c == "2026-03-02"] == [
        ("2026-03-02", 0, True),
        ("2026-03-02", 1, True),
        ("2026-03-02", 2, False),
    ]


def test_weeks_start_on_monday_and_are_labelled_by_it(tmp_path: Path) -> None:
    write_events(
        tmp_path,
        [
            # Sunday 23:30 local: the week of Monday 2 March.
            ev("signup", "2026-03-08T23:30:00+08:00", anon="x", method="phone"),
            # Monday 00:30 local (Sunday in UTC): the next week.
            ev("page_view", "2026-03-09T00:30:00+08:00", anon="x"),
            ev("signup", "2026-03-10T10:00:00+08:00", anon="y", method="phone"),
        ],
    )
    got = _run(tmp_path, lo=date(2026, 3, 4), hi=date(2026, 3, 15), period="week", periods=2)
    assert got == [
        ("2026-03-02", 1, 0, 0, True),
        ("2026-03-02", 1, 1, 1, True),
        ("2026-03-09", 1, 0, 0, True),
        ("2026-03-09", 1, 1, 0, True),
    ]


def test_periods_default_to_the_periods_of_the_range(lake: Path) -> None:
    got = _run(lake, periods=None)
    assert len(got) == 9
    assert max(k for _, _, k, _, _ in got) == 2


@pytest.mark.parametrize(
    ("cohort", "returning", "lo", "hi", "message"),
    [
        ("sign_up", "page_view", "2026-03-02", "2026-03-04", "--cohort-event: unknown event"),
        ("signup", "pageview", "2026-03-02", "2026-03-04", "--return-event: unknown event"),
        ("signup", "page_view", "2026-03-05", "2026-03-04", "is after --to"),
    ],
)
def test_bad_queries_are_refused(
    cohort: str, returning: str, lo: str, hi: str, message: str
) -> None:
    q = RetentionQuery(
        cohort, returning, date.fromisoformat(lo), date.fromisoformat(hi), Calendar(TZ)
    )
    with pytest.raises(BadInput, match=message):
        q.check(load_plan().latest)


def test_an_unknown_time_zone_is_refused() -> None:
    with pytest.raises(BadInput, match="unknown time zone 'Mars/Olympus'"):
        Calendar("Mars/Olympus")


@pytest.mark.parametrize("tz", ["Asia/Shanghai", "America/Los_Angeles", "Asia/Kathmandu", "UTC"])
def test_local_day_sql_agrees_with_zoneinfo_around_midnight(tz: str) -> None:
    """The epoch arithmetic used where a zone's offset is fixed, and ICU elsewhere, give
    the local date Python's zoneinfo gives, on both sides of local midnight."""
    cal = Calendar(tz)
    times = []
    for day in (date(1985, 6, 1), date(2024, 3, 10), date(2026, 11, 1), date(2026, 3, 2)):
        midnight = datetime(day.year, day.month, day.day, tzinfo=ZoneInfo(tz))
        times += [midnight - timedelta(minutes=30), midnight, midnight + timedelta(minutes=30)]
    con = duckdb.connect()
    con.execute("SET TimeZone = 'UTC'")
    got = [
        con.execute(f"SELECT {cal.local_day('$t::TIMESTAMPTZ')}", {"t": t}).fetchone()[0]
        for t in times
    ]
    assert got == [t.astimezone(ZoneInfo(tz)).date() for t in times]
