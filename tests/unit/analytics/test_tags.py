"""person_tags against a hand-computed example (as of 2026-03-04, daily stages)."""

from __future__ import annotations

from datetime import date
from decimal import Decimal
from pathlib import Path

from pipeline.analytics.calendar import Calendar
from pipeline.analytics.segments import load_segment_rules, segments_file
from pipeline.analytics.tags import build_tags
from pipeline.contract.plan import default_schemas_dir
from pipeline.lake import views
from tests.unit.analytics.lake import drop_past_retention, ev, write_events, write_identities

RULES = load_segment_rules(segments_file(default_schemas_dir()))


def pay(at: str, order: str, amount: float, **ids: str) -> dict:
    return ev("pay_success", at, order_id=order, amount=amount, pay_method="alipay", **ids)


def test_tags(tmp_path: Path) -> None:
    write_events(
        tmp_path,
        [
            ev("page_view", "2026-03-04T10:00:00+08:00", anon="p1"),
            ev("page_view", "2026-03-03T10:00:00+08:00", anon="p2"),
            pay("2026-03-03T10:00:00+08:00", "o1", 10, anon="p2"),
            pay("2026-03-04T23:30:00+08:00", "o2", 20, anon="p2"),
            pay("2026-02-01T10:00:00+08:00", "o3", 5, anon="d3a", user="u3"),
            ev("page_view", "2026-03-04T10:00:00+08:00", anon="d3b"),
            ev("page_view", "2026-03-03T10:00:00+08:00", anon="p4"),
            ev("page_view", "2026-02-01T10:00:00+08:00", anon="p5"),
            # 00:30 local on the 5th (the 4th in UTC) is after --as-of
            ev("page_view", "2026-03-05T00:30:00+08:00", anon="p6"),
            pay("2026-03-05T00:30:00+08:00", "o4", 99, anon="p2"),
        ],
    )
    write_identities(
        tmp_path,
        [
            ("user_id", "u3", "p_u3"),
            ("anonymous_id", "d3a", "p_u3"),
            ("anonymous_id", "d3b", "p_u3"),
        ],
    )
    con = views.connect(tmp_path)
    n = build_tags(con, tmp_path / "lake", Calendar("Asia/Shanghai"), RULES, date(2026, 3, 4), 365)
    assert n == 5
    rows = (
        views.connect(tmp_path)
        .execute(
            "SELECT person_id, lifecycle_stage, rfm_segment, r, f, m, orders, gmv, repurchase, "
            "strftime(timezone('Asia/Shanghai', first_seen), '%m-%d'), as_of FROM person_tags "
            "ORDER BY person_id"
        )
        .fetchall()
    )
    d = date(2026, 3, 4)
    assert rows == [
        ("p_p1", "new", None, None, None, None, 0, Decimal("0.00"), False, "03-04", d),
        ("p_p2", "returning", "need_attention", 3, 3, 3, 2, Decimal("30.00"), True, "03-03", d),
        ("p_p4", "dormant", None, None, None, None, 0, Decimal("0.00"), False, "03-03", d),
        ("p_p5", "inactive", None, None, None, None, 0, Decimal("0.00"), False, "02-01", d),
        ("p_u3", "resurrecting", "lost", 1, 1, 1, 1, Decimal("5.00"), False, "02-01", d),
    ]
    # a second build replaces the first whole
    build_tags(con, tmp_path / "lake", Calendar("Asia/Shanghai"), RULES, date(2026, 3, 5), 365)
    again = views.connect(tmp_path).execute("SELECT count(*), min(as_of) FROM person_tags")
    assert again.fetchall() == [(6, date(2026, 3, 5))]
    assert [p.name for p in (tmp_path / "lake" / "person_tags").iterdir()] == [
        "person_tags.parquet"
    ]


def test_tags_in_a_data_directory_with_a_quote_in_its_name(tmp_path: Path) -> None:
    """Paths go into the SQL text as literals; a quote in the directory must not end one."""
    data = tmp_path / "o'brien"
    write_events(data, [pay("2026-03-03T10:00:00+08:00", "o1", 10, anon="p1")])
    write_identities(data, [])
    con = views.connect(data)
    n = build_tags(con, data / "lake", Calendar("Asia/Shanghai"), RULES, date(2026, 3, 4), 365)
    assert n == 1
    rows = views.connect(data).execute("SELECT person_id, orders FROM person_tags").fetchall()
    assert rows == [("p_p1", 1)]


def test_first_seen_and_the_stage_remember_events_past_retention(tmp_path: Path) -> None:

    write_events(
        tmp_path,
        [
            ev("page_view", "2026-03-01T10:00:00+08:00", anon="x"),
            ev("page_view", "2026-06-01T10:00:00+08:00", anon="x"),
            ev("page_view", "2026-03-01T10:00:00+08:00", anon="gone"),  # nothing left of them
        ],
    )
    drop_past_retention(tmp_path, date(2026, 6, 2))  # 90 days of events
    con = views.connect(tmp_path)
    cal = Calendar("Asia/Shanghai", "day")
    assert build_tags(con, tmp_path / "lake", cal, RULES, date(2026, 6, 1), 365) == 1
    rows = (
        views.connect(tmp_path)
        .execute(
            "SELECT person_id, lifecycle_stage, strftime(timezone('Asia/Shanghai', first_seen), "
            "'%m-%d'), strftime(timezone('Asia/Shanghai', last_seen), '%m-%d') FROM person_tags"
        )
        .fetchall()
    )
    assert rows == [("p_x", "resurrecting", "03-01", "06-01")]
