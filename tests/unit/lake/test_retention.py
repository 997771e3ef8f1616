"""Retention as data: the file's checks, the edges of a day partition, event name over table."""

from __future__ import annotations

from pathlib import Path

import orjson
import pytest

from pipeline.lake.history import NO_PRIVACY
from pipeline.lake.inventory import lake_tables
from pipeline.lake.maintain import load_rules, maintain
from pipeline.lake.retention import Retention, RetentionError, expired, load_retention
from tests.unit.lake.lakes import PLAN, Lake, days_ago, today

BUILTIN = Path(__file__).resolve().parents[3] / "schemas" / "retention.json"


def test_the_built_in_file_has_the_defaults_and_a_description_everywhere() -> None:
    doc = orjson.loads(BUILTIN.read_bytes())
    r = load_retention(BUILTIN, lake_tables(), set(PLAN.latest))
    assert r.days("events", "page_view") == 90  # browsing
    assert r.days("events", "element_click") == 90
    assert r.days("events", "checkout") == 3 * 365  # orders
    assert r.days("events", "pay_success") == 3 * 365  # payments
    assert r.days("dlq") == 30
    assert r.days("identities") is None  # kept for ever
    assert doc["description"]
    assert all(doc["fields"].values())
    for section in ("tables", "event_names"):
        assert all(e["description"].strip() for e in doc[section].values())
    assert load_rules(None, None) == r


@pytest.mark.parametrize(
    ("doc", "message"),
    [
        (b"{not json", "not JSON"),
        (b"[]", "needs an object with a 'tables' object"),
        (b'{"tables": {"event": {"days": 3, "description": "x"}}}', "tables.event: unknown lake"),
        (b'{"tables": {"events": {"days": 0, "description": "x"}}}', ">= 1, or null"),
        (b'{"tables": {"events": {"days": 1.5, "description": "x"}}}', ">= 1, or null"),
        (b'{"tables": {"events": {"days": true, "description": "x"}}}', ">= 1, or null"),
        (b'{"tables": {"events": {"days": 3}}}', "exactly 'days' and 'description'"),
        (b'{"tables": {"events": {"days": 3, "description": " "}}}', "non-empty"),
        (
            b'{"tables": {}, "event_names": {"pageview": {"days": 3, "description": "x"}}}',
            "event_names.pageview: unknown event",
        ),
    ],
)
def test_a_broken_file_is_refused_in_one_line(tmp_path: Path, doc: bytes, message: str) -> None:
    path = tmp_path / "retention.json"
    path.write_bytes(doc)
    with pytest.raises(RetentionError, match=message) as err:
        load_retention(path, lake_tables(), set(PLAN.latest))
    assert "\n" not in str(err.value)
    assert str(path) in str(err.value)


def test_a_partition_exactly_at_the_limit_is_kept_the_day_before_goes(tmp_path: Path) -> None:
    lake = Lake(tmp_path)
    for age in (89, 90, 91, 92):
        lake.events(2, day=days_ago(age))
    for age in (30, 31):
        lake.dead_letters(1, day=days_ago(age))
    r = Retention({"events": 90, "dlq": 30})
    gone = expired(lake.lake, r, today())
    assert sorted((g.table, (today() - g.day).days) for g in gone) == [
        ("dlq", 31),
        ("events", 91),
        ("events", 92),
    ]
    maintain(lake.lake, r, guard=NO_PRIVACY, target_rows=100)
    ages = lake.query("SELECT DISTINCT current_date - event_date FROM events ORDER BY 1")
    assert [a for (a,) in ages] == [89, 90]
    assert lake.query("SELECT current_date - received_date FROM dlq") == [(30,)]
    assert not (lake.lake / "events" / f"event_date={days_ago(91)}").exists()


def test_an_event_name_keeps_its_own_days_over_the_tables(tmp_path: Path) -> None:
    lake = Lake(tmp_path)
    old = days_ago(400)
    lake.events(3, day=old, name="page_view")
    lake.events(2, day=old, name="checkout")
    lake.events(1, day=days_ago(1096), name="checkout")
    lake.events(1, day=days_ago(1095), name="pay_success")
    lake.events(1, day=days_ago(10), name="login")
    r = Retention({"events": 90}, {"checkout": 1095, "pay_success": 1095, "login": 5})
    maintain(lake.lake, r, guard=NO_PRIVACY, target_rows=100)
    kept = lake.query(
        "SELECT event_name, current_date - event_date, count(*) FROM events GROUP BY ALL ORDER BY 1"
    )
    assert kept == [("checkout", 400, 2), ("pay_success", 1095, 1)]
    # The 400-day-old day keeps its checkout directory only.
    assert [p.name for p in (lake.lake / "events" / f"event_date={old}").iterdir()] == [
        "event_name=checkout"
    ]


def test_tables_without_days_and_unlisted_tables_are_kept(tmp_path: Path) -> None:
    lake = Lake(tmp_path)
    lake.dead_letters(2, day=days_ago(5000))
    maintain(lake.lake, Retention({"events": 1}), guard=NO_PRIVACY, target_rows=100)
    assert lake.query("SELECT count(*) FROM dlq") == [(2,)]
    maintain(lake.lake, Retention({"dlq": None}), guard=NO_PRIVACY, target_rows=100)
    assert lake.query("SELECT count(*) FROM dlq") == [(2,)]
