"""User analytics at scale (issue 19): each report over 10 million events and 1 million
persons in under 30 s.

The lake is generated directly as Parquet, in the layout the views read (DuckDB ``COPY
... PARTITION_BY (event_date, event_name)`` for ``events``, one file for ``identities``),
since sending 10 million events through a worker would measure the pipeline, not the
reports. 90 local days from 2026-01-01; every person signs up on their first day and comes back in
sessions of three events (page views, a login or a payment) on skewed random days; 40 %
are members, whose events partly carry their member id, on one or two devices; so One ID
has real joins to make. Then each report runs once as the CLI runs it
(a fresh DuckDB connection over the views, the time zone Asia/Shanghai), timed from
connect to the last row:

* retention: daily cohorts over the 90 days, 30 periods, n-day and unbounded, and weekly;
* lifecycle: daily and weekly over the 90 days;
* rfm: as of the last day, 365 days;
* segments build (person_tags), as of the last day.

Reported per report: wall seconds and the process's CPU seconds (all DuckDB threads); on
a shared machine the wall time mostly measures the other load, CPU / cores estimates the
time on idle cores.

Run: ``.venv/bin/python -m bench.analytics [--events N] [--persons N] [--keep DIR]
[--out PATH]`` (default out: ``bench/results/<date>-analytics.json``). Prints JSON. The
machine is shared: compare figures of one run.
"""

from __future__ import annotations

import argparse
import os
import platform
import shutil
import tempfile
import time
from collections.abc import Callable
from datetime import date
from pathlib import Path
from typing import Any

import duckdb

from bench.report import emit
from pipeline.analytics.calendar import Calendar
from pipeline.analytics.lifecycle import lifecycle
from pipeline.analytics.retention import RetentionQuery, retention
from pipeline.analytics.rfm import rfm
from pipeline.analytics.segments import load_segment_rules, segments_file
from pipeline.analytics.tags import build_tags
from pipeline.contract.plan import default_schemas_dir, load_plan
from pipeline.lake import views

TZ = "Asia/Shanghai"
START, DAYS = date(2026, 1, 1), 90
TARGET_SECONDS = 30.0


def generate(lake: Path, events: int, persons: int, seed: float = 0.42) -> dict[str, float]:
    """Write ``events`` events of ``persons`` persons; returns timings."""
    con = duckdb.connect()
    con.execute("SET TimeZone = 'UTC'")
    con.execute(f"SELECT setseed({seed})")
    t0 = time.perf_counter()
    con.execute(
        f"""CREATE TABLE persons AS SELECT i AS pid, 'P' || i AS person_id,
            i % 10 < 4 AS member, i % 2 = 0 AS two_devices,
            CAST(floor(random() * {DAYS - 10}) AS INTEGER) AS first_day
            FROM range({persons}) t(i)"""
    )
    # One signup each; the rest in sessions of three events (two page views, then a page
    # view, a login or a payment) on a person's active days, within minutes of each other.
    sessions = (events - persons) // 3
    con.execute(
        f"""CREATE TABLE sessions AS
        WITH picked AS (
            SELECT s, CAST(floor(pow(random(), 1.6) * {persons}) AS BIGINT) AS pid
            FROM range({sessions}) t(s))
        SELECT s, p.pid, p.member, p.two_devices,
               TIMESTAMPTZ '{START.isoformat()} 00:00:00+08:00'
                 + to_seconds(CAST(floor(p.first_day + random() * ({DAYS} - p.first_day))
                                   * 86400 + random() * 85000 AS BIGINT)) AS t0
        FROM picked JOIN persons p USING (pid)"""
    )
    con.execute(
        f"""CREATE TABLE ev AS
        SELECT j, pid, member, two_devices, event_time,
               CASE WHEN i < 2 OR r >= 0.15 THEN 'page_view'
                    WHEN r < 0.1 THEN 'pay_success' ELSE 'login' END AS event_name
        FROM (SELECT s * 3 + i AS j, i, random() AS r, pid, member, two_devices,
                     t0 + to_seconds(CAST(i * 60 + random() * 50 AS BIGINT)) AS event_time
              FROM sessions, range(3) t(i))
        UNION ALL
        SELECT {3 * sessions} + pid, pid, member, two_devices,
               TIMESTAMPTZ '{START.isoformat()} 00:00:00+08:00'
                 + to_seconds(CAST((first_day + random() * 0.9) * 86400 AS BIGINT)),
               'signup'
        FROM persons"""
    )
    t1 = time.perf_counter()
    out = (lake / "events").as_posix()
    con.execute(
        f"""COPY (
        SELECT 'e' || j AS event_id, event_name, event_time, event_time AS received_at,
               'd' || pid || '-' || CASE WHEN two_devices THEN (j // 3) % 2 ELSE 0 END
                 AS anonymous_id,
               CASE WHEN member AND (event_name IN ('login', 'pay_success') OR j % 3 = 0)
                    THEN 'u' || pid END AS user_id,
               'p_d' || pid AS person_id, 'miniprogram' AS platform,
               NULL::VARCHAR AS app_version, NULL::VARCHAR AS channel,
               NULL::VARCHAR AS identities, NULL::BOOLEAN AS consent_marketing,
               1::INTEGER AS schema_version, '{{}}' AS properties,
               0::INTEGER AS source_partition, j AS source_offset, 0::INTEGER AS source_index,
               CASE WHEN event_name = 'page_view' THEN 'home' END AS page,
               CASE WHEN event_name = 'pay_success' THEN 'o' || j END AS order_id,
               CASE WHEN event_name = 'pay_success'
                    THEN CAST(round(1 + random() * 500, 2) AS DECIMAL(18, 2)) END AS amount,
               CASE WHEN event_name IN ('login', 'signup') THEN 'wechat' END AS method,
               CASE WHEN event_name = 'pay_success' THEN 'wechat_pay' END AS pay_method,
               strftime(event_time, '%Y-%m-%d') AS event_date
        FROM ev) TO '{out}' (FORMAT parquet, PARTITION_BY (event_date, event_name),
                             COMPRESSION zstd)"""
    )
    t2 = time.perf_counter()
    ident = lake / "identities" / "updated_date=2026-04-01"
    ident.mkdir(parents=True)
    con.execute(
        f"""COPY (
        SELECT identifier_type, identifier, person_id,
               TIMESTAMPTZ '2026-01-01 00:00:00+00' AS first_seen,
               TIMESTAMPTZ '2026-04-01 00:00:00+00' AS last_seen,
               TIMESTAMPTZ '2026-04-01 00:00:00+00' AS updated_at,
               0::INTEGER AS source_partition, row_number() OVER () AS source_offset,
               0::INTEGER AS source_index
        FROM (
            SELECT 'anonymous_id' AS identifier_type, 'd' || pid || '-0' AS identifier,
                   person_id FROM persons
            UNION ALL SELECT 'anonymous_id', 'd' || pid || '-1', person_id FROM persons
                WHERE two_devices
            UNION ALL SELECT 'user_id', 'u' || pid, person_id FROM persons WHERE member))
        TO '{(ident / "bench.parquet").as_posix()}' (FORMAT parquet)"""
    )
    t3 = time.perf_counter()
    con.close()
    return {
        "build_seconds": t1 - t0,
        "events_write_seconds": t2 - t1,
        "identities_write_seconds": t3 - t2,
    }


def timed(run: Callable[[duckdb.DuckDBPyConnection], Any], data: Path) -> dict[str, Any]:
    t0, c0 = time.perf_counter(), time.process_time()
    con = views.connect(data, load_plan())
    rows = run(con)
    seconds, cpu = time.perf_counter() - t0, time.process_time() - c0
    con.close()
    return {
        "seconds": round(seconds, 2),
        # CPU of every thread: on a shared machine, what the report costs; divided by the
        # cores, about its time on an idle machine of that size.
        "cpu_seconds": round(cpu, 2),
        "rows": rows if isinstance(rows, int) else len(rows),
    }


def reports(data: Path) -> dict[str, dict[str, Any]]:
    day, week = Calendar(TZ, "day"), Calendar(TZ, "week")
    lo, hi = START, date.fromordinal(START.toordinal() + DAYS - 1)
    rules = load_segment_rules(segments_file(default_schemas_dir()))
    today = date.today()

    def ret(cal: Calendar, mode: str, periods: int) -> Callable[[Any], Any]:
        q = RetentionQuery("signup", "page_view", lo, hi, cal, mode, periods)  # type: ignore[arg-type]
        return lambda con: retention(con, q, today)

    return {
        "retention_day_n_day_30": timed(ret(day, "n-day", 30), data),
        "retention_day_unbounded_30": timed(ret(day, "unbounded", 30), data),
        "retention_week_n_day": timed(ret(week, "n-day", 13), data),
        "lifecycle_day": timed(lambda con: lifecycle(con, day, lo, hi), data),
        "lifecycle_week": timed(lambda con: lifecycle(con, week, lo, hi), data),
        "rfm_365": timed(lambda con: rfm(con, day, rules, hi, 365), data),
        "segments_build": timed(
            lambda con: build_tags(con, data / "lake", week, rules, hi, 365), data
        ),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=10_000_000)
    parser.add_argument("--persons", type=int, default=1_000_000)
    parser.add_argument("--keep", type=Path, help="Data directory to write and keep")
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()
    data = args.keep or Path(tempfile.mkdtemp(prefix="bench-analytics-"))
    lake = data / "lake"
    if lake.exists():
        shutil.rmtree(lake)
    lake.mkdir(parents=True)
    try:
        made = generate(lake, args.events, args.persons)
        results = reports(data)
    finally:
        if args.keep is None:
            shutil.rmtree(data, ignore_errors=True)
    slowest = max(r["seconds"] for r in results.values())
    cores = os.cpu_count() or 1
    idle_estimate = max(r["cpu_seconds"] for r in results.values()) / cores
    out = {
        "bench": "analytics",
        "date": date.today().isoformat(),
        "events": args.events,
        "persons": args.persons,
        "days": DAYS,
        "timezone": TZ,
        "load_average_1m_at_end": round(os.getloadavg()[0], 1),
        "machine": {
            "cpus": os.cpu_count(),
            "python": platform.python_version(),
            "duckdb": duckdb.__version__,
        },
        "generate": {k: round(v, 1) for k, v in made.items()},
        "reports": results,
        "slowest_seconds": slowest,
        "target_seconds": TARGET_SECONDS,
        "within_target": slowest < TARGET_SECONDS,
        "slowest_cpu_seconds_per_core": round(idle_estimate, 2),
        "within_target_on_idle_cores": idle_estimate < TARGET_SECONDS,
    }
    emit(
        out,
        args.out
        or Path(__file__).parent / "results" / f"{date.today().isoformat()}-analytics.json",
    )


if __name__ == "__main__":
    main()
