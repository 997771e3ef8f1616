"""The HTML pages: one self-contained document with the chart, text escaped."""

from __future__ import annotations

from datetime import date

from pipeline.analytics.calendar import Calendar
from pipeline.analytics.html import page
from pipeline.analytics.retention import RetentionQuery
from pipeline.analytics.segments import SegmentRule, SegmentRules


def test_retention_heat_map_greys_incomplete_cells() -> None:
    q = RetentionQuery("signup", "page_view", date(2026, 3, 2), date(2026, 3, 3), Calendar("UTC"))
    rows = [
        {"cohort": date(2026, 3, 2), "size": 4, "k": 0, "retained": 4, "complete": True},
        {"cohort": date(2026, 3, 2), "size": 4, "k": 1, "retained": 1, "complete": False},
    ]
    html = page("retention", rows, q)
    assert html.count("<rect") == 2
    assert ">100%<" in html
    assert "fill='#eeeeee'" in html  # the incomplete cell
    assert "(period not over)" in html


def test_lifecycle_bars_and_rfm_grid_escape_text() -> None:
    rows = [{"period": date(2026, 3, 2), "new": 3, "returning": 2, "resurrecting": 1, "dormant": 4}]
    html = page("lifecycle", rows, Calendar("UTC"))
    assert html.count("<rect") == 4  # three stacked up, dormant down
    rules = SegmentRules([SegmentRule("<b>vip</b>", "", {"r": (1, 5)})], "others")
    people = [
        {"person_id": "p<1>", "recency_days": 0, "frequency": 1, "monetary": 1, "r": 5,
         "f": 1, "m": 1, "segment": "<b>vip</b>"},
    ]  # fmt: skip
    grid = page("rfm", people, rules)
    assert "<b>vip</b>" not in grid
    assert "&lt;b&gt;vip&lt;/b&gt;" in grid
    assert "p&lt;1&gt;" in grid
    assert grid.count("<rect") == 25  # the 5 x 5 R-F grid


def test_segment_names_are_sql_literals() -> None:
    rules = SegmentRules([SegmentRule("it's", "", {"r": (4, 5), "f": (1, 1)})], "o'ther")
    assert rules.case_sql() == (
        "CASE WHEN r BETWEEN 4 AND 5 AND f BETWEEN 1 AND 1 THEN 'it''s' ELSE 'o''ther' END"
    )
