"""replace_files: old files or new files after a SIGKILL at any step, never both or neither."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path

import duckdb
import orjson
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from pipeline.lake import rewrite
from pipeline.lake.rewrite import Stale, hidden_files, recover, replace_files, span_of
from pipeline.lake.views import _source
from pipeline.lake.writer import TableWriter, file_name
from tests.unit.lake.test_writer import rows, split

T = "events.raw"


def flushed(lake: Path, batches: list[range], partition: int = 1) -> list[Path]:
    """A table ``t`` written by the real writer, one flush (file) per batch."""
    w = TableWriter(lake, "t", split)
    for batch in batches:
        w.add(T, partition, rows(batch))
        w.flush(T, partition)
    return sorted((lake / "t").rglob("*.parquet"))


def merged(paths: list[Path]) -> tuple[Path, pa.Table]:
    first, last = span_of(paths[0])[0], span_of(paths[-1])[1]
    table = pa.concat_tables(pq.read_table(p) for p in paths)
    return paths[0].with_name(file_name(T, 1, first, last)), table.drop_columns(["day"])


def visible(lake: Path, table: str = "t") -> list[int]:
    """source_offset of every row a view shows (files minus the journal's hidden ones)."""
    hidden = hidden_files(lake, table)
    out: list[int] = []
    for path in sorted((lake / table).rglob("*.parquet")):
        if path not in hidden:
            out += pq.read_table(path).column("source_offset").to_pylist()
    return sorted(out)


def pending(lake: Path) -> list[Path]:
    return [p for p in (lake / rewrite.JOURNALS).rglob("*.json") if p.name != rewrite.NO_JOURNAL]


def test_compaction_replaces_many_files_by_one_named_by_their_span(tmp_path: Path) -> None:
    files = flushed(tmp_path, [range(0, 3), range(3, 5), range(5, 9)])
    target, table = merged(files)
    result = replace_files(tmp_path, files, [(target, table)])
    assert sorted((tmp_path / "t").rglob("*.parquet")) == [target]
    assert target.name == f"{T}-p1-000000000000.0000000-000000000008.0000000.parquet"
    assert visible(tmp_path) == list(range(9))
    assert (result.files_removed, result.files_written, result.rows_written) == (3, 1, 9)
    assert not pending(tmp_path)
    assert not [p for p in tmp_path.rglob("*") if p.name.endswith(".rewrite")]


def test_a_file_rewritten_in_place_keeps_its_name(tmp_path: Path) -> None:
    [path] = flushed(tmp_path, [range(0, 6)])
    table = pq.read_table(path).drop_columns(["day"])
    kept = table.filter(pa.array([v % 2 == 0 for v in table["source_offset"].to_pylist()]))
    result = replace_files(tmp_path, [path], [(path, kept)])
    assert visible(tmp_path) == [0, 2, 4]
    assert result.files_removed == 0
    # Every row removed: the file goes.
    replace_files(tmp_path, [path], [(path, kept.slice(0, 0))])
    assert not path.exists()


def test_the_live_writer_keeps_a_compacted_file_and_a_replay_stores_nothing_twice(
    tmp_path: Path,
) -> None:
    files = flushed(tmp_path, [range(0, 4), range(4, 8)])
    replace_files(tmp_path, files, [merged(files)])
    # A worker restarted after a crash claims the partition and re-reads its input.
    again = TableWriter(tmp_path, "t", split)
    again.add(T, 1, rows(range(0, 12)))
    again.flush(T, 1)
    assert visible(tmp_path) == list(range(12))


def test_refusals_change_nothing(tmp_path: Path) -> None:
    other = flushed(tmp_path, [range(0, 2)], partition=2)
    files = sorted(set(flushed(tmp_path, [range(0, 2), range(2, 4)])) - set(other))
    before = sorted(p.name for p in (tmp_path / "t").rglob("*.parquet"))
    target, table = merged(files)
    with pytest.raises(Stale):
        replace_files(tmp_path, [*files, files[0].with_name(file_name(T, 1, 100, 101))], [])
    with pytest.raises(ValueError, match="one source partition"):
        replace_files(tmp_path, [*files, *other], [])
    past = target.with_name(file_name(T, 1, 0, 4 << 20))  # offset 4 was never committed
    with pytest.raises(ValueError, match="checkpoint"):
        replace_files(tmp_path, files, [(past, table)])
    with pytest.raises(ValueError, match="not a lake writer file"):
        replace_files(tmp_path, files, [(target.with_name("x.parquet"), table)])
    assert sorted(p.name for p in (tmp_path / "t").rglob("*.parquet")) == before
    assert visible(tmp_path) == [0, 0, 1, 1, 2, 3]


def test_a_rewrite_waits_for_a_flush_of_the_same_partition(tmp_path: Path) -> None:
    files = flushed(tmp_path, [range(0, 2), range(2, 4)])
    w = TableWriter(tmp_path, "t", split)
    w.claim(T, 1)
    w.add(T, 1, rows(range(4, 6)))
    done = threading.Event()
    with w.fence.owned((T, 1)):  # as a flush does
        t = threading.Thread(
            target=lambda: (replace_files(tmp_path, files, [merged(files)]), done.set())
        )
        t.start()
        assert not done.wait(0.5)
    t.join(10)
    assert done.is_set()
    w.flush(T, 1)  # not fenced out: the rewrite does not claim
    assert visible(tmp_path) == list(range(6))


_CHILD = textwrap.dedent(
    """
    import sys
    from pathlib import Path
    import pyarrow as pa
    import pyarrow.parquet as pq
    from pipeline.lake.rewrite import replace_files
    from pipeline.lake.writer import file_name
    lake = Path(sys.argv[1])
    old = sorted((lake / "t").rglob("*.parquet"))
    table = pa.concat_tables([pq.read_table(p).drop_columns(["day"]) for p in old])
    # two new files, so the kill can fall between their renames
    n = table.num_rows // 2
    a = old[0].with_name(file_name("events.raw", 1, 0, (n - 1) << 20))
    b = old[0].with_name(file_name("events.raw", 1, n << 20, (table.num_rows - 1) << 20))
    replace_files(lake, old, [(a, table.slice(0, n)), (b, table.slice(n))])
    """
)


@pytest.mark.parametrize(
    "step", ["stage:2", "journal", "rename:1", "rename:2", "renamed", "unlink:2", "done"]
)
def test_a_sigkill_at_any_step_leaves_old_or_new_rows_and_recover_finishes(
    tmp_path: Path, step: str
) -> None:
    flushed(tmp_path, [range(0, 3), range(3, 5), range(5, 9), range(9, 10)])
    env = {**os.environ, "TRACKFLOW_TEST_PAUSE_AT": step}
    proc = subprocess.Popen(
        [sys.executable, "-c", _CHILD, str(tmp_path)], env=env, stderr=subprocess.PIPE
    )
    assert proc.stderr is not None
    line = proc.stderr.readline().decode()
    assert f"paused at {step.split(':')[0]}" in line, line + proc.stderr.read().decode()
    proc.send_signal(signal.SIGKILL)
    proc.wait(10)
    assert visible(tmp_path) == list(range(10))  # exact before any recovery
    assert recover(tmp_path) == (0 if step == "stage:2" else 1)
    names = sorted(p.name for p in (tmp_path / "t").rglob("*.parquet"))
    assert len(names) == (4 if step == "stage:2" else 2)
    assert visible(tmp_path) == list(range(10))
    assert hidden_files(tmp_path, "t") == set()
    assert not [p for p in tmp_path.rglob("*") if p.name.endswith((".rewrite", ".tmp"))]


def test_the_view_hides_what_the_journal_says_in_duckdb(tmp_path: Path) -> None:
    files = flushed(tmp_path, [range(0, 3), range(3, 6)])
    target, table = merged(files)
    pq.write_table(table, target)  # renamed, journal still "staged": the view ignores it
    journal = tmp_path / rewrite.JOURNALS / "t" / f"{T}-p1.1f.json"
    assert (journal.parent / rewrite.NO_JOURNAL).exists()  # the writer's, before its first file
    rel = [p.relative_to(tmp_path).as_posix() for p in files]
    new = target.relative_to(tmp_path).as_posix()

    def count(state: str | None) -> tuple[int, int]:
        if state:
            journal.write_bytes(orjson.dumps({"state": state, "old": rel, "new": [new]}))
        sql = _source(tmp_path / "t", [("source_offset", "BIGINT")], [("day", "VARCHAR")])
        query = f"SELECT count(*), count(DISTINCT source_offset) FROM ({sql})"
        got = duckdb.connect().execute(query).fetchone()
        assert got is not None
        return got[0], got[1]

    assert count("staged") == (6, 6)
    assert count("renamed") == (6, 6)
    journal.unlink()
    assert count(None) == (12, 6)  # without the journal: twice


@pytest.mark.parametrize("step", ["rename:2", "renamed", "unlink:2"])
def test_a_view_created_before_the_tables_first_rewrite_shows_each_row_once_during_it(
    tmp_path: Path, step: str
) -> None:
    """A long-lived connection (a notebook, a dashboard's DuckDB) opened its views before
    any rewrite of the table; the table's first compaction, paused half-way, must not show
    its rows twice there."""
    flushed(tmp_path, [range(0, 3), range(3, 5), range(5, 9), range(9, 10)])
    assert pending(tmp_path) == []
    con = duckdb.connect()
    sql = _source(tmp_path / "t", [("source_offset", "BIGINT")], [("day", "VARCHAR")])
    con.execute(f"CREATE VIEW v AS {sql}")
    query = "SELECT count(*), count(DISTINCT source_offset) FROM v"
    assert con.execute(query).fetchone() == (10, 10)
    env = {**os.environ, "TRACKFLOW_TEST_PAUSE_AT": step}
    proc = subprocess.Popen(
        [sys.executable, "-c", _CHILD, str(tmp_path)], env=env, stderr=subprocess.PIPE
    )
    try:
        assert proc.stderr is not None
        line = proc.stderr.readline().decode()
        assert f"paused at {step.split(':')[0]}" in line, line + proc.stderr.read().decode()
        assert len(list((tmp_path / "t").rglob("*.parquet"))) > 2  # old files beside the 2 new
        assert con.execute(query).fetchone() == (10, 10)
    finally:
        proc.kill()
        proc.wait(10)


def test_old_files_kept_for_readers_stay_hidden_until_their_time_is_over(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    files = flushed(tmp_path, [range(0, 3), range(3, 6)])
    target, table = merged(files)
    result = replace_files(tmp_path, files, [(target, table)], keep_old_seconds=600)
    assert result.files_removed == 0
    assert all(f.exists() for f in files)  # a query that listed them can still read them
    assert hidden_files(tmp_path, "t") == set(files)
    assert visible(tmp_path) == list(range(6))
    assert recover(tmp_path) == 0  # not yet
    assert all(f.exists() for f in files)
    now = time.time()
    monkeypatch.setattr(rewrite.time, "time", lambda: now + 601)
    assert recover(tmp_path) == 1
    assert not any(f.exists() for f in files)
    assert not pending(tmp_path)
    assert visible(tmp_path) == list(range(6))


def test_a_privacy_rewrite_deletes_the_kept_old_files_of_its_partition_first(
    tmp_path: Path,
) -> None:
    files = flushed(tmp_path, [range(0, 3), range(3, 6)])
    target, table = merged(files)
    replace_files(tmp_path, files, [(target, table)], keep_old_seconds=600)
    kept = table.filter(pa.array([v != 4 for v in table["source_offset"].to_pylist()]))
    replace_files(tmp_path, [target], [(target, kept)])  # e.g. without one person's rows
    assert sorted((tmp_path / "t").rglob("*.parquet")) == [target]  # no old copy left
    assert visible(tmp_path) == [0, 1, 2, 3, 5]
