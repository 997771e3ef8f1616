"""``trackflow segments build``: one row of tags per person, the ``person_tags`` table.

Built as of a local date (default today), from every event up to the end of that day:

* ``lifecycle_stage`` in the period (``--period``, default week) holding ``--as-of``:
  ``new``, ``returning`` or ``resurrecting`` when active in it (as the lifecycle report
  splits them), ``dormant`` when active only in the period before, ``inactive`` otherwise;
* ``rfm_segment`` (and ``r``, ``f``, ``m``) as ``report rfm --as-of --days`` gives them, null
  for a person without a ``pay_success`` in that window;
* ``first_seen``, ``last_seen``: first and last event (``first_seen`` also from the first
  activity ``lake maintain`` kept of events past retention); ``orders``: distinct ``order_id`` of
  ``pay_success`` ever; ``gmv``: their summed ``amount``; ``repurchase``: two or more orders.

The table is one Parquet file replaced whole and atomically by each build (written under a
temporary name, synced, renamed), so readers see the previous build or the new one.
"""

from __future__ import annotations

import os
from datetime import date, timedelta
from pathlib import Path

import duckdb

from pipeline.analytics.calendar import Calendar
from pipeline.analytics.persons import MAP, resolve
from pipeline.analytics.rfm import rfm_params, rfm_sql
from pipeline.analytics.segments import SegmentRules
from pipeline.contract.sql import path_literal
from pipeline.lake.durable import fsync_dir, fsync_file
from pipeline.names import LAKE_PERSON_TAGS

STAGES = ("new", "returning", "resurrecting", "dormant", "inactive")
FILE = "person_tags.parquet"


def tags_sql(cal: Calendar, rules: SegmentRules) -> str:
    p = cal.bucket()
    seen = (
        "SELECT user_id, anonymous_id, person_id, min(event_time) AS first_seen, "
        f"max(event_time) AS last_seen, min({p}) AS first_p, bool_or({p} = $cur) AS now, "
        f"bool_or({p} = $prev) AS before FROM events WHERE event_time < $t_end GROUP BY ALL"
    )
    # Events past retention: their first activity, as lake maintain kept it.
    gone = (
        "SELECT user_id, anonymous_id, person_id, first_time AS first_seen, "
        f"NULL::TIMESTAMPTZ AS last_seen, {cal.bucket('first_time')} AS first_p, false AS now, "
        "false AS before FROM first_activity WHERE first_time < $t_end"
    )
    paid = (
        "SELECT user_id, anonymous_id, person_id, order_id, amount FROM events "
        "WHERE event_name = 'pay_success' AND event_time < $t_end"
    )
    return f"""
    WITH {MAP},
    seen AS (SELECT * FROM ({resolve(seen, "map")}) WHERE person_id IS NOT NULL),
    gone AS (SELECT * FROM ({resolve(gone, "map")}) WHERE person_id IS NOT NULL),
    per AS (
        SELECT person_id, min(first_seen) AS first_seen, max(last_seen) AS last_seen,
               min(first_p) AS first_p, bool_or(now) AS now, bool_or(before) AS before
        FROM (SELECT * FROM seen UNION ALL BY NAME SELECT * FROM gone)
        GROUP BY person_id HAVING bool_or(last_seen IS NOT NULL)),
    paid AS (
        SELECT person_id, count(DISTINCT order_id) AS orders, sum(amount) AS gmv
        FROM ({resolve(paid, "map")}) GROUP BY person_id),
    rfm AS ({rfm_sql(cal, rules, "map")})
    SELECT per.person_id,
           CASE WHEN now AND first_p = $cur THEN 'new'
                WHEN now AND before THEN 'returning'
                WHEN now THEN 'resurrecting'
                WHEN before THEN 'dormant'
                ELSE 'inactive' END AS lifecycle_stage,
           rfm.segment AS rfm_segment, rfm.r, rfm.f, rfm.m,
           per.first_seen, per.last_seen, coalesce(paid.orders, 0) AS orders,
           coalesce(paid.gmv, 0) AS gmv, coalesce(paid.orders, 0) >= 2 AS repurchase,
           $as_of::DATE AS as_of, '{cal.period}' AS period, now() AS built_at
    FROM per LEFT JOIN rfm ON rfm.person_id = per.person_id
    LEFT JOIN paid ON paid.person_id = per.person_id
    ORDER BY per.person_id
    """


def build_tags(
    con: duckdb.DuckDBPyConnection,
    lake_dir: Path,
    cal: Calendar,
    rules: SegmentRules,
    as_of: date,
    days: int,
) -> int:
    """Writes ``person_tags`` as of ``as_of``; returns how many persons it holds."""
    cur = cal.start(as_of)
    params = {
        **rfm_params(cal, as_of, days),
        "t_end": cal.midnight(as_of + timedelta(days=1)),
        "cur": cur,
        "prev": cur - timedelta(days=cal.step),
    }
    root = lake_dir / LAKE_PERSON_TAGS
    root.mkdir(parents=True, exist_ok=True)
    final, tmp = root / FILE, root / f".{FILE}.tmp"
    con.execute(
        f"COPY ({tags_sql(cal, rules)}) TO {path_literal(tmp)} (FORMAT parquet, COMPRESSION zstd)",
        params,
    )
    fsync_file(tmp)
    os.replace(tmp, final)
    fsync_dir(root)
    row = con.execute(f"SELECT count(*) FROM read_parquet({path_literal(final)})").fetchone()
    return int(row[0]) if row else 0
