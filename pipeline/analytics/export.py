"""Retention and lifecycle as rollups, so Grafana can show them (``--export``).

``trackflow report retention|lifecycle --export`` writes each *complete* cell of its
report as a final value in the lake's ``rollups`` table, as the combine stage writes its
finals: metric ``retention`` (value = retained / size, numerator retained, denominator size;
dimensions ``cohort_event``, ``return_event``, ``k``, ``mode``) or ``lifecycle`` (value =
persons; dimension ``stage``), window ``1d`` or ``1w`` starting at the local midnight of the
period. A complete cell no longer changes, so it is written once: cells already stored are
skipped. The rows are positioned in the pseudo source ``analytics`` (files
``analytics-p0-<export>...``, the export number rising with each run).

Workers show the newest value of each such series as ``trackflow_metric_final`` (read from
those files only, ``latest_finals``), which the business dashboard plots.
"""

from __future__ import annotations

import time
from datetime import date, timedelta
from pathlib import Path
from typing import Any

import duckdb
import orjson
import pyarrow as pa

from pipeline.analytics.calendar import Calendar
from pipeline.analytics.lifecycle import COLUMNS as LIFECYCLE_COLUMNS
from pipeline.contract.positions import unpack
from pipeline.lake.schema import ROLLUP_SCHEMA, split_by_day
from pipeline.lake.writer import TableWriter
from pipeline.names import ANALYTICS_SOURCE, LAKE_ROLLUPS

METRICS = ("retention", "lifecycle")
STAGES = LIFECYCLE_COLUMNS[1:]


def _window(cal: Calendar) -> str:
    return "1w" if cal.period == "week" else "1d"


def _dims(values: dict[str, str]) -> str:
    return orjson.dumps(values, option=orjson.OPT_SORT_KEYS).decode()


def _row(cal: Calendar, start: date, metric: str, dims: str, value: float) -> dict[str, Any]:
    return {
        "metric": metric,
        "window": _window(cal),
        "window_start": cal.midnight(start),
        "window_end": cal.midnight(start + timedelta(days=cal.step)),
        "dimensions": dims,
        "value": value,
    }


def retention_rollups(rows: list[dict[str, Any]], q: Any) -> list[dict[str, Any]]:
    out = []
    for r in rows:
        if not r["complete"]:
            continue
        dims = _dims(
            {
                "cohort_event": q.cohort_event,
                "return_event": q.return_event,
                "k": str(r["k"]),
                "mode": q.mode,
            }
        )
        share = r["retained"] / r["size"] if r["size"] else 0.0
        row = _row(q.cal, r["cohort"], "retention", dims, share)
        row["numerator"], row["denominator"] = float(r["retained"]), float(r["size"])
        out.append(row)
    return out


def lifecycle_rollups(
    rows: list[dict[str, Any]], cal: Calendar, hi: date, today: date
) -> list[dict[str, Any]]:
    """Rows of the periods that ended by the end of ``hi`` and by ``today``."""
    limit = min(hi + timedelta(days=1), today)
    out = []
    for r in rows:
        if r["period"] + timedelta(days=cal.step) > limit:
            continue
        for stage in STAGES:
            row = _row(cal, r["period"], "lifecycle", _dims({"stage": stage}), float(r[stage]))
            row["numerator"] = row["denominator"] = None
            out.append(row)
    return out


def write_rollups(
    con: duckdb.DuckDBPyConnection, lake_dir: Path, rows: list[dict[str, Any]]
) -> int:
    """Stores the rows whose series and window the rollups table lacks; returns how many."""
    stored = {
        (m, w, start, d)
        for m, w, start, d in con.execute(
            'SELECT metric, "window", epoch_ms(window_start), dimensions FROM rollups '
            f"WHERE metric IN {METRICS}"
        ).fetchall()
    }
    new = [
        r
        for r in rows
        if (r["metric"], r["window"], int(r["window_start"].timestamp() * 1000), r["dimensions"])
        not in stored
    ]
    if not new:
        return 0
    writer = TableWriter(lake_dir, LAKE_ROLLUPS, split_by_day("window_start", "window_date"))
    high = writer.high_water(ANALYTICS_SOURCE, 0)
    export = max(unpack(high)[0] + 1 if high >= 0 else 0, int(time.time()))
    now = int(time.time() * 1000)
    for i, row in enumerate(new):
        row.update(finalised_at=now, source_partition=0, source_offset=export, source_index=i)
    writer.add(ANALYTICS_SOURCE, 0, pa.Table.from_pylist(new, schema=ROLLUP_SCHEMA))
    writer.flush(ANALYTICS_SOURCE, 0)
    return len(new)


def latest_finals(lake_dir: Path) -> list[tuple[str, str, str, float]]:
    """(metric, window, dimensions, value) of each exported series' newest window."""
    files = sorted((lake_dir / LAKE_ROLLUPS).glob(f"*/{ANALYTICS_SOURCE}-p*.parquet"))
    if not files:
        return []
    con = duckdb.connect()
    try:
        rows = con.execute(
            'SELECT metric, "window", dimensions, value FROM read_parquet(?) '
            'QUALIFY row_number() OVER (PARTITION BY metric, "window", dimensions '
            "ORDER BY window_start DESC, source_offset, source_index) = 1",
            [[f.as_posix() for f in files]],
        ).fetchall()
    finally:
        con.close()
    return [(m, w, d, float(v)) for m, w, d, v in rows]
