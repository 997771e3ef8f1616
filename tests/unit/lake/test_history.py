"""The first activity ``lake maintain`` keeps of event partitions past retention."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from datetime import date
from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import pytest

from pipeline.lake import history, maintain, retention
from pipeline.lake.retention import Retention
from pipeline.lake.rewrite import live_files
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


def day_files(data_dir: Path, day: str) -> set[Path]:
    lake = data_dir / "lake"
    return set(live_files(lake, "events", [lake / "events" / f"event_date={day}"]))


def run(data_dir: Path, guard: history.Guard = history.NO_PRIVACY, **kw: object) -> object:
    return maintain.maintain(
        data_dir / "lake", RULES, target_rows=100, today=TODAY, guard=guard, **kw
    )  # type: ignore[arg-type]


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
    lake = tmp_path / "lake"
    assert history.remember(lake, day_files(tmp_path, "2026-03-02"), None) == 1
    assert firsts(tmp_path) == [(None, "b", "p_b", "02 08:00")]
    # An older partition lowers nothing it does not hold and adds what it does.
    assert history.remember(lake, day_files(tmp_path, "2026-03-01"), None) == 3
    # A fold repeated (a kill between the fold and the drop) changes nothing.
    assert history.remember(lake, day_files(tmp_path, "2026-03-01"), None) == 3
    assert firsts(tmp_path) == [
        ("u", "a", "p_u", "01 11:00"),  # DuckDB sorts nulls last
        (None, "a", "p_a", "01 09:00"),
        (None, "b", "p_b", "02 08:00"),
    ]


def test_nothing_to_fold_writes_nothing_and_a_killed_fold_stage_is_removed(
    tmp_path: Path,
) -> None:
    lake = tmp_path / "lake"
    history.staged_path(lake).parent.mkdir(parents=True)
    history.staged_path(lake).write_bytes(b"identifiers of a kill")
    assert history.remember(lake, set(), None) == 0
    assert not history.staged_path(lake).exists()
    assert not history.first_activity_path(lake).exists()
    assert firsts(tmp_path) == []  # the view exists, empty


def test_the_purge_drops_rows_before_the_file_is_written(tmp_path: Path) -> None:
    write_events(tmp_path, [ev("page_view", "2026-03-01T10:00:00+00:00", anon=x) for x in "ab"])

    def purge(rows: pa.Table) -> tuple[pa.Table, int]:
        drop = pc.equal(rows["anonymous_id"], "b")
        return rows.filter(pc.invert(drop)), 1

    lake = tmp_path / "lake"
    assert history.remember(lake, day_files(tmp_path, "2026-03-01"), purge) == 1
    assert pq.read_table(history.first_activity_path(lake))["anonymous_id"].to_pylist() == ["a"]


def test_maintain_folds_the_events_it_drops_under_the_guard(tmp_path: Path) -> None:
    write_events(
        tmp_path,
        [
            ev("page_view", "2026-03-01T10:00:00+00:00", anon="old"),
            ev("page_view", "2026-05-30T10:00:00+00:00", anon="old"),
            ev("page_view", "2026-05-30T10:00:00+00:00", anon="new"),
        ],
    )
    lake = tmp_path / "lake"
    held: list[str] = []

    @contextmanager
    def lock() -> Iterator[None]:
        held.append("locked")
        yield
        held.append("dropped" if not (lake / "events" / "event_date=2026-03-01").exists() else "")

    run(tmp_path, history.Guard(lock), dry_run=True)
    assert not history.first_activity_path(lake).exists()
    assert held == []
    report = run(tmp_path, history.Guard(lock))
    assert held == ["locked", "dropped"]  # fold and drop inside the lock
    assert report.tables["events"].partitions_expired == 1  # type: ignore[attr-defined]
    assert "first_activity" not in report.tables  # type: ignore[attr-defined]
    assert firsts(tmp_path) == [(None, "old", "p_old", "01 10:00")]


def test_a_file_arriving_after_the_fold_is_folded_before_the_drop(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A backfill (no age limit) can write into a partition between fold and drop."""
    write_events(tmp_path, [ev("page_view", "2026-03-01T10:00:00+00:00", anon="a")])
    real_drop = retention.drop

    def drop_after_a_backfill(lake_dir: Path, gone: retention.Expired, before: object) -> None:
        write_events(tmp_path, [ev("page_view", "2026-03-01T07:00:00+00:00", anon="late")], "b")
        real_drop(lake_dir, gone, before)  # type: ignore[arg-type]

    monkeypatch.setattr(retention, "drop", drop_after_a_backfill)
    run(tmp_path)
    assert firsts(tmp_path) == [
        (None, "a", "p_a", "01 10:00"),
        (None, "late", "p_late", "01 07:00"),
    ]


def test_a_busy_guard_defers_the_event_drops_and_drops_the_rest(tmp_path: Path) -> None:
    write_events(tmp_path, [ev("page_view", "2026-03-01T10:00:00+00:00", anon="a")])
    lake = tmp_path / "lake"
    (lake / "dlq" / "received_date=2026-01-01").mkdir(parents=True)

    @contextmanager
    def busy() -> Iterator[None]:
        raise history.GuardBusy("another process is running privacy deletions")
        yield

    report = maintain.maintain(
        lake,
        Retention({"events": 90, "dlq": 30}),
        target_rows=100,
        today=TODAY,
        guard=history.Guard(busy),
    )
    assert report.events_deferred == 1
    assert (lake / "events" / "event_date=2026-03-01").exists()  # the next run drops it
    assert not (lake / "dlq" / "received_date=2026-01-01").exists()
    assert not history.first_activity_path(lake).exists()


def test_retention_cannot_name_first_activity(tmp_path: Path) -> None:
    path = tmp_path / "retention.json"
    path.write_text('{"tables": {"first_activity": {"days": 30, "description": "x"}}}')
    with pytest.raises(retention.RetentionError, match="first_activity: unknown lake table"):
        maintain.load_rules(path, None)
