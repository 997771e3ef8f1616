"""``connect(only=...)``: a worker's reads bind only the views they name.

Binding a view reads the footer of each of its files; the events table holds thousands
of small files between compactions, and the workers' reads at a takeover (detect's
history, combine's stored finals) need only rollups and alerts.
"""

from __future__ import annotations

from pathlib import Path

import duckdb
import pytest

from pipeline.lake.views import connect


def broken_event_file(root: Path) -> None:
    """A file whose footer cannot be read: binding the events view must touch it."""
    folder = root / "lake" / "events" / "event_date=2026-11-30" / "event_name=page_view"
    folder.mkdir(parents=True)
    (folder / "cut-short.parquet").write_bytes(b"PAR1 not a footer")


def views(con: duckdb.DuckDBPyConnection) -> set[str]:
    sql = "SELECT view_name FROM duckdb_views() WHERE NOT internal"
    return {row[0] for row in con.execute(sql).fetchall()}


def test_only_the_named_views_are_created_and_the_events_files_are_not_read(
    tmp_path: Path,
) -> None:
    broken_event_file(tmp_path)
    with pytest.raises(duckdb.Error):
        connect(tmp_path)  # every view: the events view reads the broken footer
    con = connect(tmp_path, only=("rollups", "alerts"))
    assert views(con) == {"rollups", "alerts"}
    assert con.execute("SELECT count(*) FROM rollups").fetchone() == (0,)
    assert con.execute("SELECT count(*) FROM alerts").fetchone() == (0,)


def test_an_unknown_view_name_is_an_error(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="rolups"):
        connect(tmp_path, only=("rolups",))
