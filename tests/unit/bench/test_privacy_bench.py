"""bench/privacy_delete.py on a small lake: the person is found, removed entirely, and
every other row kept (the bench checks its own result, so a broken deletion shows)."""

from __future__ import annotations

import argparse
from pathlib import Path

from bench.privacy_delete import bench_check, bench_delete


def test_the_deletion_bench_removes_the_person_and_keeps_the_rest(tmp_path: Path) -> None:
    args = argparse.Namespace(events=20_000, partitions=2, days=2, flushes=2, person_events=6)
    result = bench_delete(tmp_path, args)
    assert result["files"] == 2 * 2 * 2 * 3
    assert result["identifiers"] == 6  # member, three devices, openid, phone
    assert result["removed_by_table"] == {"events": 6, "identities": 6}
    assert result["rows_of_person_left"] == 0
    assert result["other_rows_kept"] is True


def test_the_check_bench_reports_both_cases() -> None:
    result = bench_check(10, n=1000, repeats=1)
    assert set(result) >= {"nobody_us_per_event", "suppressed_us_per_event"}
