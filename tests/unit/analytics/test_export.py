"""--export: complete retention and lifecycle cells become rollups rows, once; workers read
each series' newest value from the export's own files."""

from __future__ import annotations

from datetime import date
from pathlib import Path

from pipeline.analytics.calendar import Calendar
from pipeline.analytics.export import (
    latest_finals,
    lifecycle_rollups,
    retention_rollups,
    write_rollups,
)
from pipeline.analytics.lifecycle import lifecycle
from pipeline.analytics.retention import RetentionQuery, retention
from pipeline.lake import views
from tests.unit.analytics.lake import ev, write_events

CAL = Calendar("Asia/Shanghai")


def lake(tmp_path: Path) -> Path:
    write_events(
        tmp_path,
        [
            ev("signup", "2026-03-02T10:00:00+08:00", anon="a", method="phone"),
            ev("page_view", "2026-03-03T00:30:00+08:00", anon="a"),
            ev("signup", "2026-03-02T11:00:00+08:00", anon="b", method="phone"),
            ev("signup", "2026-03-03T11:00:00+08:00", anon="c", method="phone"),
        ],
    )
    return tmp_path


def test_retention_cells_once_and_complete_only(tmp_path: Path) -> None:
    lake(tmp_path)
    q = RetentionQuery("signup", "page_view", date(2026, 3, 2), date(2026, 3, 3), CAL, periods=2)
    con = views.connect(tmp_path)
    rows = retention(con, q, today=date(2026, 3, 4))
    rollups = retention_rollups(rows, q)
    # cohort 2 Mar: k 0, 1 complete; cohort 3 Mar: k 0 complete, k 1 (4 Mar) still running
    assert len(rollups) == 3
    assert write_rollups(con, tmp_path / "lake", rollups) == 3
    got = (
        views.connect(tmp_path)
        .execute(
            "SELECT strftime(timezone('Asia/Shanghai', window_start), '%d %H:%M'), \"window\", "
            "dimensions, value, numerator, denominator FROM rollups ORDER BY 1, 3"
        )
        .fetchall()
    )
    dims = '{{"cohort_event":"signup","k":"{}","mode":"n-day","return_event":"page_view"}}'
    assert got == [
        ("02 00:00", "1d", dims.format(0), 0.0, 0.0, 2.0),
        ("02 00:00", "1d", dims.format(1), 0.5, 1.0, 2.0),
        ("03 00:00", "1d", dims.format(0), 0.0, 0.0, 1.0),
    ]
    # exporting again stores nothing new
    assert write_rollups(views.connect(tmp_path), tmp_path / "lake", rollups) == 0
    latest = {(m, d): v for m, w, d, v in latest_finals(tmp_path / "lake")}
    assert latest == {
        ("retention", dims.format(0)): 0.0,  # the newest cohort with k = 0: 3 Mar
        ("retention", dims.format(1)): 0.5,
    }


def test_lifecycle_periods_that_ended(tmp_path: Path) -> None:
    lake(tmp_path)
    con = views.connect(tmp_path)
    rows = lifecycle(con, CAL, date(2026, 3, 2), date(2026, 3, 4))
    rollups = lifecycle_rollups(rows, CAL, date(2026, 3, 4), today=date(2026, 3, 4))
    assert {r["window_start"].date().isoformat() for r in rollups} == {"2026-03-02", "2026-03-03"}
    assert write_rollups(con, tmp_path / "lake", rollups) == 8
    latest = {d: v for m, w, d, v in latest_finals(tmp_path / "lake")}
    # 3 Mar: c new, a returning (00:30 local), b dormant
    assert latest == {
        '{"stage":"new"}': 1.0,
        '{"stage":"returning"}': 1.0,
        '{"stage":"resurrecting"}': 0.0,
        '{"stage":"dormant"}': 1.0,
    }


def test_nothing_exported_reads_as_nothing(tmp_path: Path) -> None:
    assert latest_finals(tmp_path / "lake") == []
