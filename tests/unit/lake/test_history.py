"""The first activity ``lake maintain`` keeps of event partitions past retention."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from datetime import date
from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from pipeline.lake import history, maintain
from pipeline.lake.retention import Retention
from pipeline.lake.views import connect
from tests.unit.analytics.lake import ev, write_events

TODAY = date(2026, 6, 1)  # 2026-03-01 is 92 days before: past 90 days of retention
RULES = Retention({"events": 90})


def firsts(data_dir: Path) -> list[tuple]:
    return (
        connect(data_dir)
        .execute(
            "SELECT user_id, anonymous_id, person_id, strftime(first_time, '%d %H:%M') "
            "FROM first_activity ORDER BY ALL"
        )
        .fetchall()
    )


def day_dirs(data_dir: Path, day: str) -> list[Path]:
    return sorted((data_dir / "lake" / "events" / f"event_date={day}").iterdir())


def test_the_earliest_time_per_identifier_triple_is_kept(tmp_path: Path) -> None:
    write_events(
        tmp_path,
        [
            ev("page_view", "2026-03-01T10:00:00+00:00", anon="a"),
            ev("page_view", "2026-03-01T09:00:00+00:00", anon="a"),
            ev("login", "2026-03-01T11:00:00+00:00", anon="a", user="u"),
            ev("page_view", "2026-03-02T08:00:00+00:00", anon="b"),
        ],
    )
    kept = history.remember(tmp_path / "lake", day_dirs(tmp_path, "2026-03-02"))
    assert kept == 1
    assert firsts(tmp_path) == [(None, "b", "p_b", "02 08:00")]
    # An older partition lowers nothing it does not hold and adds what it does.
    assert history.remember(tmp_path / "lake", day_dirs(tmp_path, "2026-03-01")) == 3
    again = history.remember(tmp_path / "lake", day_dirs(tmp_path, "2026-03-01"))
    assert again == 3  # a fold repeated (a kill before the drop) changes nothing
    assert firsts(tmp_path) == [
        ("u", "a", "p_u", "01 11:00"),  # DuckDB sorts nulls last
        (None, "a", "p_a", "01 09:00"),
        (None, "b", "p_b", "02 08:00"),
    ]


def test_nothing_to_fold_writes_nothing(tmp_path: Path) -> None:
    assert history.remember(tmp_path / "lake", [tmp_path / "missing"]) == 0
    assert not history.first_activity_path(tmp_path / "lake").exists()
    assert firsts(tmp_path) == []  # the view exists, empty


def test_the_fold_runs_under_the_guard_and_drops_purged_rows(tmp_path: Path) -> None:
    write_events(tmp_path, [ev("page_view", "2026-03-01T10:00:00+00:00", anon=x) for x in "ab"])
    held: list[bool] = []
    target = history.first_activity_path(tmp_path / "lake")

    @contextmanager
    def lock() -> Iterator[None]:
        held.append(True)
        yield
        assert target.exists()  # written before the lock is let go
        held.append(False)

    def purge(rows: pa.Table) -> tuple[pa.Table, int]:
        assert held == [True]
        drop = pc.equal(rows["anonymous_id"], "b")
        return rows.filter(pc.invert(drop)), 1

    guard = history.Guard(lock, purge)
    assert history.remember(tmp_path / "lake", day_dirs(tmp_path, "2026-03-01"), guard) == 1
    assert held == [True, False]
    assert pq.read_table(target).column("anonymous_id").to_pylist() == ["a"]


def test_maintain_folds_the_events_it_drops_and_a_dry_run_does_not(tmp_path: Path) -> None:
    write_events(
        tmp_path,
        [
            ev("page_view", "2026-03-01T10:00:00+00:00", anon="old"),
            ev("page_view", "2026-05-30T10:00:00+00:00", anon="old"),
            ev("page_view", "2026-05-30T10:00:00+00:00", anon="new"),
        ],
    )
    lake = tmp_path / "lake"
    maintain.maintain(lake, RULES, target_rows=100, today=TODAY, dry_run=True)
    assert not history.first_activity_path(lake).exists()
    report = maintain.maintain(lake, RULES, target_rows=100, today=TODAY)
    assert report.tables["events"].partitions_expired == 1
    assert "first_activity" not in report.tables
    assert not (lake / "events" / "event_date=2026-03-01").exists()
    assert firsts(tmp_path) == [(None, "old", "p_old", "01 10:00")]
