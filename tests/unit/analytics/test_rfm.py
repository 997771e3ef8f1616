"""RFM against hand-computed examples: windows in local days, ranks with ties, segments."""

from __future__ import annotations

import json
from datetime import date
from decimal import Decimal
from pathlib import Path

import pytest

from pipeline.analytics.calendar import BadInput, Calendar
from pipeline.analytics.rfm import rfm
from pipeline.analytics.segments import (
    SegmentRulesError,
    load_segment_rules,
    segments_file,
)
from pipeline.contract.plan import default_schemas_dir
from pipeline.lake import views
from tests.unit.analytics.lake import ev, write_events, write_identities

RULES = load_segment_rules(segments_file(default_schemas_dir()))


def pay(at: str, order: str, amount: float, **ids: str) -> dict:
    return ev("pay_success", at, order_id=order, amount=amount, pay_method="wechat_pay", **ids)


@pytest.fixture
def lake(tmp_path: Path) -> Path:
    write_events(
        tmp_path,
        [
            pay("2026-03-10T23:30:00+08:00", "o1", 100, anon="p1"),
            # 00:30 local on the 11th (the 10th in UTC): after --as-of, not counted.
            pay("2026-03-11T00:30:00+08:00", "o9", 1000, anon="p1"),
            pay("2026-03-01T10:00:00+08:00", "o2", 50, anon="p2"),
            pay("2026-03-05T10:00:00+08:00", "o3", 50, anon="p2"),
            # Two devices of member u3: one person.
            pay("2026-03-08T10:00:00+08:00", "o4", 30, anon="d3a", user="u3"),
            pay("2026-03-09T10:00:00+08:00", "o5", 30, anon="d3b"),
            pay("2026-02-01T10:00:00+08:00", "o6", 100, anon="p4"),
            # The window is the 365 days 2025-03-11 .. 2026-03-10.
            pay("2025-03-10T23:59:00+08:00", "o7", 500, anon="p5"),
            pay("2025-03-11T00:01:00+08:00", "o8", 5, anon="p5"),
            ev("page_view", "2026-03-10T10:00:00+08:00", anon="nobuyer"),
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
    return tmp_path


def test_values_scores_with_ties_and_segments(lake: Path) -> None:
    rows = rfm(views.connect(lake), Calendar("Asia/Shanghai"), RULES, date(2026, 3, 10), 365)
    got = {
        r["person_id"]: (r["recency_days"], r["frequency"], r["monetary"], r["r"], r["f"], r["m"])
        for r in rows
    }
    # n = 5. Ranks: recency (most days worst) p5 1, p4 2, p2 3, u3 4, p1 5; frequency 1
    # order p1, p4, p5 share rank 1, 2 orders rank 4; money 5 rank 1, 60 rank 2, 100 x3
    # rank 3. score = 1 + floor(5 * (rank - 1) / 5) = rank.
    assert got == {
        "p_p1": (0, 1, Decimal("100.00"), 5, 1, 3),
        "p_p2": (5, 2, Decimal("100.00"), 3, 4, 3),
        "p_u3": (1, 2, Decimal("60.00"), 4, 4, 2),
        "p_p4": (37, 1, Decimal("100.00"), 2, 1, 3),
        "p_p5": (364, 1, Decimal("5.00"), 1, 1, 1),
    }
    assert {r["person_id"]: r["segment"] for r in rows} == {
        "p_p1": "new_customers",
        "p_p2": "loyal_customers",
        "p_u3": "loyal_customers",
        "p_p4": "hibernating",
        "p_p5": "lost",
    }


def test_score_formula_with_seven_persons_and_a_three_way_tie(tmp_path: Path) -> None:
    amounts = [10, 20, 20, 20, 30, 40, 50]
    write_events(
        tmp_path,
        [pay("2026-03-01T10:00:00+08:00", f"o{i}", a, anon=f"q{i}") for i, a in enumerate(amounts)],
    )
    rows = rfm(views.connect(tmp_path), Calendar("Asia/Shanghai"), RULES, date(2026, 3, 10), 30)
    # ranks 1, 2, 2, 2, 5, 6, 7 -> 1 + floor(5 * (rank - 1) / 7) = 1, 1, 1, 1, 3, 4, 5
    assert [r["m"] for r in rows] == [1, 1, 1, 1, 3, 4, 5]
    # everyone tied on recency and frequency: rank 1, score 1
    assert {(r["r"], r["f"]) for r in rows} == {(1, 1)}


def test_a_purchase_at_2330_belongs_to_that_local_day(tmp_path: Path) -> None:
    # 23:30 in Los Angeles is the next day in UTC.
    write_events(tmp_path, [pay("2026-03-10T23:30:00-07:00", "o1", 10, anon="x")])
    con = views.connect(tmp_path)
    in_la = rfm(con, Calendar("America/Los_Angeles"), RULES, date(2026, 3, 10), 1)
    assert [(r["person_id"], r["recency_days"]) for r in in_la] == [("p_x", 0)]
    assert rfm(con, Calendar("UTC"), RULES, date(2026, 3, 10), 1) == []


def test_nobody_paid_gives_no_rows(tmp_path: Path) -> None:
    write_events(tmp_path, [ev("page_view", "2026-03-10T10:00:00+08:00", anon="x")])
    assert rfm(views.connect(tmp_path), Calendar("UTC"), RULES, date(2026, 3, 10), 365) == []


def test_days_must_be_positive(lake: Path) -> None:
    with pytest.raises(BadInput, match="--days"):
        rfm(views.connect(lake), Calendar("UTC"), RULES, date(2026, 3, 10), 0)


def test_rules_cover_every_score_combination() -> None:
    names = {r.name for r in RULES.rules}
    for r in range(1, 6):
        for f in range(1, 6):
            for m in range(1, 6):
                hit = next(
                    rule.name
                    for rule in [*RULES.rules]
                    if all(
                        lo <= {"r": r, "f": f, "m": m}[s] <= hi
                        for s, (lo, hi) in rule.ranges.items()
                    )
                )
                assert hit in names


def test_a_broken_rules_file_names_the_problem(tmp_path: Path) -> None:
    path = tmp_path / "rfm.json"
    path.write_text(
        json.dumps(
            {
                "segments": [{"name": "x", "description": "", "when": {"r": [0, 9]}}],
                "default": {"name": "o"},
            }
        )
    )
    with pytest.raises(SegmentRulesError, match="r range"):
        load_segment_rules(path)
