"""Review findings of issue 17 on reading rows: the watermark never moves into the
future; a key a JSON line lacks leaves its field untouched."""

from __future__ import annotations

from pathlib import Path

from tests.unit.members.test_apply import MAPPING, Lake, lake, row

__all__ = ["lake"]  # the fixture


def _rejects(lake: Lake) -> list[tuple[object, ...]]:
    return lake.rows("SELECT field, error_code, rule FROM member_rejects ORDER BY rule")


def test_a_rejected_row_with_a_valid_time_is_not_read_again(lake: Lake) -> None:
    lake.load([row("M1", "2024-02-06 10:00", level="gold")])
    report = lake.load([row("M2", "2024-02-20 10:00", level="not-a-level")])
    assert (report.rows_read, report.rows_rejected) == (1, 1)
    again = lake.load([row("M2", "2024-02-20 10:00", level="not-a-level")])
    assert (again.rows_read, again.rows_skipped) == (0, 1)
    fixed = lake.load([row("M2", "2024-02-21 10:00", level="gold")])
    assert (fixed.rows_read, fixed.rows_accepted) == (1, 1)


def test_a_future_update_time_is_rejected_and_keeps_the_watermark(lake: Lake) -> None:
    lake.load([row("M1", "2024-02-06 10:00", level="gold")])
    # The reviewer's repro: a far-future time, in a row that is bad anyway...
    bad = lake.load([row("M9", "2094-03-01 00:00", level="not-a-level")])
    assert bad.rows_rejected == 1
    # ...and one that is good apart from its time.
    future = lake.load([row("M3", "2094-03-01 00:00", level="gold")])
    assert (future.rows_accepted, future.rows_rejected) == (0, 1)
    assert ("updated_at", "invalid_timestamp", "incremental.future") in _rejects(lake)
    assert lake.rows("SELECT count(*) FROM profiles WHERE user_id = 'M3'") == [(0,)]
    assert lake.rows("SELECT max(watermark) FROM member_imports")[0][0].year == 2024
    legit = lake.load([row("M1", "2024-03-01 10:00", level="silver")])
    assert (legit.rows_accepted, legit.rows_skipped) == (1, 0)
    assert lake.rows("SELECT level FROM profiles WHERE user_id = 'M1'") == [("silver",)]


def test_a_time_within_the_tolerance_is_accepted(lake: Lake) -> None:
    from datetime import UTC, datetime, timedelta

    soon = (datetime.now(UTC) + timedelta(hours=2)).strftime("%Y-%m-%dT%H:%M:%SZ")
    report = lake.load([row("M1", soon, level="gold")])
    assert (report.rows_accepted, report.rows_rejected) == (1, 0)


def test_a_missing_key_leaves_the_field_untouched(tmp_path: Path) -> None:
    lake = Lake(tmp_path)
    lake.load([{"id": "M1", "updated_at": "2024-05-01 10:00", "level": "gold", "points": "5"}])
    # A JSON line without "points": the level changes, the points stay.
    report = lake.load([{"id": "M1", "updated_at": "2024-05-02 10:00", "level": "silver"}])
    assert (report.rows_accepted, report.rows_rejected) == (1, 0)
    assert lake.rows("SELECT level, points FROM profiles") == [("silver", 5)]
    # An explicit null still removes the field.
    lake.load([{"id": "M1", "updated_at": "2024-05-03 10:00", "points": None}])
    assert lake.rows("SELECT level, points FROM profiles") == [("silver", None)]


def test_a_missing_required_key_is_still_rejected(tmp_path: Path) -> None:
    mapping = MAPPING | {"fields": {**MAPPING["fields"], "level": {"required": True}}}
    lake = Lake(tmp_path, mapping)
    report = lake.load([{"id": "M1", "updated_at": "2024-05-01 10:00", "points": "5"}])
    assert report.rows_rejected == 1
    assert _rejects(lake) == [("level", "missing_required_field", "level.required")]
