"""bench/lake_maintain.py builds a lake the writer could have written and measures it."""

from __future__ import annotations

from bench.lake_maintain import EVENT_NAMES, run


def test_a_small_run_merges_every_directory_and_source_and_stays_exact() -> None:
    got = run(files=60, rows=5, partitions=3, names=EVENT_NAMES[:2], target=1000)
    assert got["exact"]
    assert got["before"]["files"] == 60
    assert got["after"]["files"] == 6  # 2 directories x 3 source partitions
    assert got["compacted"] == {"files_merged": 60, "files_written": 6, "rows": 300}
    assert got["second_run"]["files_merged"] == 0
