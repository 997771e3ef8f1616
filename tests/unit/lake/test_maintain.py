"""maintain: one run at a time, dry runs, and the schedule the workers share."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
from prometheus_client import CollectorRegistry

from pipeline.lake import maintain
from pipeline.lake.history import NO_PRIVACY
from pipeline.lake.retention import Retention
from pipeline.runtime.maintenance import run_if_due, sample_files
from pipeline.runtime.telemetry import PipelineMetrics, parse_text
from pipeline.settings import Settings
from tests.unit.lake.lakes import Lake, days_ago

RULES = Retention({"events": 90})


def lake_with_work(tmp_path: Path) -> Lake:
    lake = Lake(tmp_path)
    lake.events(6, day=days_ago(100), per_flush=2)  # past retention
    lake.events(9, day=days_ago(3), per_flush=3)  # three small files
    return lake


def test_a_dry_run_reports_what_a_run_does_and_changes_nothing(tmp_path: Path) -> None:
    lake = lake_with_work(tmp_path)
    files = lake.files()
    planned = maintain.maintain(lake.lake, RULES, guard=NO_PRIVACY, target_rows=100, dry_run=True)
    assert lake.files() == files
    done = maintain.maintain(lake.lake, RULES, guard=NO_PRIVACY, target_rows=100)
    assert planned.tables == done.tables
    events = done.tables["events"]
    assert (events.partitions_expired, events.files_deleted, events.rows_deleted) == (1, 3, 6)
    assert (events.files_compacted, events.files_written, events.rows_compacted) == (3, 1, 9)
    assert len(lake.event_ids()) == 9


def test_a_second_run_at_the_same_time_is_refused(tmp_path: Path) -> None:
    lake = lake_with_work(tmp_path)
    with maintain.exclusive(lake.lake), pytest.raises(maintain.MaintainBusy, match="another"):
        maintain.maintain(lake.lake, RULES, guard=NO_PRIVACY, target_rows=100)
    assert len(lake.files()) == 6


def test_due_after_the_interval_or_sooner_after_a_failure() -> None:
    assert not maintain.due({}, 86400, 1000.0)  # never checked: the clock starts first
    assert not maintain.due({"first_check": 1000.0}, 86400, 1000.0 + 86399)
    assert maintain.due({"first_check": 1000.0}, 86400, 1000.0 + 86400)
    ok = {"last_attempt": 1000.0, "last_success": 1000.0, "last_error": None}
    assert not maintain.due(ok, 86400, 1000.0 + 86399)
    assert maintain.due(ok, 86400, 1000.0 + 86400)
    failed = {**ok, "last_error": "OSError: disk full"}
    assert not maintain.due(failed, 86400, 1000.0 + maintain.RETRY_SECONDS - 1)
    assert maintain.due(failed, 86400, 1000.0 + maintain.RETRY_SECONDS)
    assert maintain.due(failed, 5, 1005.0)  # an interval shorter than the retry wins


def worker(tmp_path: Path, **settings: Any) -> Any:
    s = Settings(data_dir=tmp_path, lake_compact_target_rows=100, **settings)
    return SimpleNamespace(settings=s, metrics=PipelineMetrics(CollectorRegistry()))


def samples(ctx: Any) -> dict[str, float]:
    return parse_text(ctx.metrics.render().decode())


def test_workers_run_it_once_per_interval_between_them(tmp_path: Path) -> None:
    lake = lake_with_work(tmp_path)
    a, b = worker(tmp_path), worker(tmp_path)
    assert run_if_due(a, now=1_000_000.0) is None  # a new deployment: the clock starts
    assert run_if_due(b, now=1_000_000.0 + 86399) is None
    assert len(lake.files()) == 6
    report = run_if_due(b, now=1_000_000.0 + 86400)
    assert report is not None
    assert report.tables["events"].partitions_expired == 1
    assert run_if_due(a) is None  # just done by b: not due
    assert run_if_due(b) is None
    assert len(lake.files()) == 1
    got = samples(b)
    assert got['trackflow_lake_maintenance_runs_total{outcome="ok"}'] == 1
    assert got['trackflow_lake_retention_deleted_files_total{table="events"}'] == 3
    assert got['trackflow_lake_retention_deleted_rows_total{table="events"}'] == 6
    assert got['trackflow_lake_compacted_files_total{table="events"}'] == 3
    state = maintain.read_state(lake.lake)
    assert (
        got["trackflow_lake_maintenance_last_success_timestamp_seconds"] == (state["last_success"])
    )
    sample_files(b)  # b learns the deployment's last success from the lake
    assert (
        samples(b)["trackflow_lake_maintenance_last_success_timestamp_seconds"]
        == (state["last_success"])
    )


def test_a_failed_run_is_counted_recorded_and_does_not_raise(tmp_path: Path) -> None:
    lake = lake_with_work(tmp_path)
    broken = tmp_path / "retention.json"
    broken.write_text("{")
    ctx = worker(tmp_path, retention=broken)
    assert run_if_due(ctx, now=1000.0) is None  # starts the clock
    assert run_if_due(ctx, now=1000.0 + 86400) is None  # fails
    assert samples(ctx)['trackflow_lake_maintenance_runs_total{outcome="failed"}'] == 1
    state = maintain.read_state(lake.lake)
    assert "not JSON" in state["last_error"]
    assert "last_success" not in state
    assert len(lake.files()) == 6  # nothing changed


def test_file_gauges_count_settled_partitions(tmp_path: Path) -> None:
    lake = Lake(tmp_path)
    lake.events(5, day=days_ago(0), per_flush=1)  # today: still written, not judged
    lake.events(3, day=days_ago(2), per_flush=1)
    lake.dead_letters(1, day=days_ago(5))
    ctx = worker(tmp_path)
    sample_files(ctx)
    got = samples(ctx)
    assert got['trackflow_lake_table_files{table="events"}'] == 8
    assert got['trackflow_lake_partition_files_max{table="events"}'] == 3
    assert got['trackflow_lake_partition_files_max{table="dlq"}'] == 1
    assert got['trackflow_lake_partition_files_max{table="rollups"}'] == 0
