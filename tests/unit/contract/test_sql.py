"""SQL string literals: what DuckDB reads back is what was quoted."""

from __future__ import annotations

from pathlib import Path

import duckdb
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from pipeline.contract.sql import literal, path_literal


@pytest.mark.parametrize("text", ["plain", "o'brien", "''", "'; DROP TABLE x; --", "路径 \\ %"])
def test_literal_reads_back_as_the_text(text: str) -> None:
    assert duckdb.connect().execute(f"SELECT {literal(text)}").fetchone() == (text,)


def test_path_literal_reads_a_file_under_a_quoted_directory(tmp_path: Path) -> None:
    root = tmp_path / "it's here"
    root.mkdir()
    pq.write_table(pa.table({"n": [1, 2, 3]}), root / "t.parquet")
    con = duckdb.connect()
    sql = f"SELECT sum(n) FROM read_parquet({path_literal(root / '*.parquet')})"
    assert con.execute(sql).fetchone() == (6,)
