"""``trackflow lake maintain|stats`` as real processes: kills at chosen steps, bad input,
idempotence, numbers against a hand-built lake."""

from __future__ import annotations

import os
import signal
import subprocess
from pathlib import Path

import orjson
import pytest

from pipeline.lake.retention import TRASH
from pipeline.lake.rewrite import JOURNALS
from tests.support import BIN
from tests.unit.lake.lakes import Lake, days_ago


def run(lake: Lake, *args: str, **env: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(BIN), "lake", *args],
        env={**os.environ, "TRACKFLOW_DATA_DIR": str(lake.data_dir), **env},
        capture_output=True,
        text=True,
        timeout=120,
    )


def paused(lake: Lake, step: str, *args: str) -> subprocess.Popen[str]:
    """``trackflow lake maintain`` stopped at ``step`` (the test hook of rewrite.py)."""
    proc = subprocess.Popen(
        [str(BIN), "lake", "maintain", *args],
        env={
            **os.environ,
            "TRACKFLOW_DATA_DIR": str(lake.data_dir),
            "TRACKFLOW_TEST_PAUSE_AT": step,
        },
        stderr=subprocess.PIPE,
        stdout=subprocess.DEVNULL,
        text=True,
    )
    assert proc.stderr is not None
    line = proc.stderr.readline()
    assert f"paused at {step.split(':')[0]}" in line, line + proc.stderr.read()
    return proc


def kill(proc: subprocess.Popen[str]) -> None:
    proc.send_signal(signal.SIGKILL)
    proc.wait(10)


def built(tmp_path: Path) -> Lake:
    lake = Lake(tmp_path)
    lake.events(12, day=days_ago(95), per_flush=4)  # past 90 days: dropped
    lake.events(3, day=days_ago(95), name="checkout")  # orders: kept 3 years
    lake.events(20, day=days_ago(1), per_flush=2)  # 10 small files
    lake.events(6, day=days_ago(1), partition=1, per_flush=3)  # 2 small files
    lake.dead_letters(4, day=days_ago(31))  # past 30 days: dropped
    return lake


def expected_ids(lake: Lake) -> list[str]:
    rows = lake.query(
        "SELECT event_id FROM events WHERE event_date >= current_date - 90 "
        "OR event_name = 'checkout' ORDER BY event_id"
    )
    return [r[0] for r in rows]


def report(proc: subprocess.CompletedProcess[str]) -> dict[str, dict[str, int]]:
    assert proc.returncode == 0, proc.stderr
    return {r["table"]: r for r in orjson.loads(proc.stdout)}


# Every step of a rewrite is killed in tests/unit/lake/test_rewrite.py; here the command.
@pytest.mark.parametrize("step", ["rename", "renamed"])
def test_a_kill_during_compaction_leaves_the_lake_exact_and_a_rerun_completes(
    tmp_path: Path, step: str
) -> None:
    lake = built(tmp_path)
    before = lake.event_ids()
    want = expected_ids(lake)
    proc = paused(lake, step, "--table", "events")
    # Killed mid-way: every event once (old files or new, never both), retention done.
    assert lake.event_ids() == want
    kill(proc)
    ids = lake.event_ids()
    assert ids == want
    assert len(ids) == len(set(ids)) < len(before)
    # A re-run finishes the work; a third changes nothing.
    report(run(lake, "maintain", "--table", "events", "--format", "json"))
    assert lake.event_ids() == want
    assert len(lake.files()) == 3  # checkout, and one per source partition of yesterday
    journals = [orjson.loads(p.read_bytes()) for p in (lake.lake / JOURNALS).rglob("*.json")]
    assert {j["state"] for j in journals} == {"none"}  # every rewrite finished
    assert not [p for p in lake.lake.rglob(".*") if p.is_file()]  # no staged leftovers
    assert lake.files() == sorted(lake.lake.joinpath("events").rglob("*.parquet"))
    names = {p.name for p in lake.files()}
    again = report(run(lake, "maintain", "--format", "json"))
    assert {p.name for p in lake.files()} == names
    assert again["events"]["files_compacted"] == again["events"]["partitions_expired"] == 0


def test_a_kill_during_a_retention_drop_and_the_rerun(tmp_path: Path) -> None:
    lake = built(tmp_path)
    before, want = lake.event_ids(), expected_ids(lake)
    proc = paused(lake, "dropped")  # dlq's partition first (tables in name order)
    kill(proc)
    assert lake.query("SELECT count(*) FROM dlq") == [(0,)]  # went in one rename
    assert lake.event_ids() == before  # not reached yet
    assert any((lake.lake / TRASH).iterdir())
    got = report(run(lake, "maintain", "--format", "json"))
    assert not any((lake.lake / TRASH).iterdir())
    assert lake.event_ids() == want
    assert lake.query("SELECT count(*) FROM dlq") == [(0,)]
    assert got["dlq"]["partitions_expired"] == 0  # already gone
    assert got["events"]["partitions_expired"] == 1
    assert got["events"]["files_compacted"] == 12


def test_maintain_refuses_bad_input_with_one_line_and_changes_nothing(tmp_path: Path) -> None:
    lake = built(tmp_path)
    files = lake.files()
    broken = tmp_path / "retention.json"
    broken.write_text('{"tables": {"events": {"days": -1, "description": "x"}}}')
    cases = [
        (("maintain", "--retention", str(broken)), "tables.events.days"),
        (("maintain", "--table", "evnets"), "unknown table evnets"),
        (("stats", "--table", "nope"), "unknown table nope"),
    ]
    for args, message in cases:
        proc = run(lake, *args)
        assert proc.returncode == 2, (args, proc.stderr)
        assert message in proc.stderr
        assert proc.stderr.count("\n") == 1
        assert "Traceback" not in proc.stderr
    proc = run(lake, "maintain", TRACKFLOW_RETENTION=str(broken))  # the env twin too
    assert proc.returncode == 2
    assert lake.files() == files


def test_a_second_maintain_while_one_runs_is_refused(tmp_path: Path) -> None:
    lake = built(tmp_path)
    first = paused(lake, "journal")
    try:
        proc = run(lake, "maintain")
        assert proc.returncode == 1
        assert "another trackflow lake maintain is running" in proc.stderr
    finally:
        kill(first)
    report(run(lake, "maintain", "--format", "json"))


def test_stats_numbers_match_the_lake(tmp_path: Path) -> None:
    lake = built(tmp_path)
    got = report(run(lake, "stats", "--format", "json"))
    events = got["events"]
    files = lake.files()
    assert events["files"] == len(files) == 3 + 1 + 10 + 2
    assert events["bytes"] == sum(f.stat().st_size for f in files)
    assert events["rows"] == 12 + 3 + 20 + 6
    assert events["partitions"] == 3
    assert events["max_files_per_partition"] == 12  # yesterday's page_view, both sources
    assert (events["oldest"], events["newest"]) == (str(days_ago(95)), str(days_ago(1)))
    assert (got["dlq"]["files"], got["dlq"]["rows"]) == (1, 4)
    assert got["identities"]["files"] == 0
    csv = run(lake, "stats", "--table", "dlq", "--format", "csv")
    assert csv.stdout.splitlines()[0] == (
        "table,files,bytes,rows,partitions,max_files_per_partition,oldest,newest"
    )
    assert csv.stdout.splitlines()[1].startswith("dlq,1,")
    # After maintain: the expired partitions are gone and the small files merged.
    run(lake, "maintain")
    after = report(run(lake, "stats", "--format", "json"))
    assert (after["events"]["files"], after["events"]["rows"]) == (3, 29)
    assert after["dlq"]["files"] == 0
    assert after["dlq"]["oldest"] is None


def test_a_kill_after_the_first_activity_fold_and_the_rerun(tmp_path: Path) -> None:
    """The fold is durable before the events go; a rerun folds nothing twice."""
    lake = built(tmp_path)
    before = lake.query(
        "SELECT min(epoch_ms(event_time)) FROM events WHERE event_name <> 'checkout'"
    )
    proc = paused(lake, "dropped:2")  # the dead letters' partition, then the page views'
    kill(proc)
    assert lake.query("SELECT count(*) FROM events WHERE event_date < current_date - 90 "
                      "AND event_name = 'page_view'") == [(0,)]  # fmt: skip
    first = "SELECT anonymous_id, epoch_ms(first_time) FROM first_activity"
    assert lake.query(first) == [("d1", before[0][0])]
    got = report(run(lake, "maintain", "--format", "json"))
    assert "first_activity" not in got
    assert lake.query(first) == [("d1", before[0][0])]
    assert lake.event_ids() == expected_ids(lake)
    assert not any((lake.lake / TRASH).iterdir())
