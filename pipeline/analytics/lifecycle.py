"""Lifecycle (DESIGN 16): per period, the active persons split into new, returning and
resurrecting, and the dormant ones who were active the period before and are not now.

* ``new``: first event ever (the whole lake, before ``--from`` too) in this period;
* ``returning``: active in this period and in the previous one;
* ``resurrecting``: active, not in the previous period, not new;
* ``dormant``: active in the previous period, not in this one. A person is counted dormant
  once, in the first period they miss, not again in the periods after.

History before ``--from`` decides the first reported period; events after ``--to`` are not
read. Every period of the range has a row, zeros when nobody was active.
"""

from __future__ import annotations

from datetime import date, timedelta
from typing import Any

import duckdb

from pipeline.analytics.calendar import Calendar, check_range

COLUMNS = ["period", "new", "returning", "resurrecting", "dormant"]


def lifecycle(
    con: duckdb.DuckDBPyConnection, cal: Calendar, lo: date, hi: date
) -> list[dict[str, Any]]:
    """Rows ``{period, new, returning, resurrecting, dormant}`` ordered by period."""
    check_range(lo, hi)
    periods = cal.periods(lo, hi)
    step = cal.step
    sql = f"""
    WITH act AS (
        SELECT DISTINCT person_id, {cal.bucket()} AS p FROM events_resolved
        WHERE event_time < $t_hi AND person_id IS NOT NULL),
    first AS (SELECT person_id, min(p) AS f FROM act GROUP BY person_id),
    cur AS (
        SELECT a.p, f.f = a.p AS is_new, prev.person_id IS NOT NULL AS had_prev
        FROM act a JOIN first f ON f.person_id = a.person_id
        LEFT JOIN act prev ON prev.person_id = a.person_id AND prev.p = a.p - {step}
        WHERE a.p BETWEEN $p_lo AND $p_hi),
    counts AS (
        SELECT p, count(*) FILTER (is_new) AS new,
               count(*) FILTER (had_prev) AS returning,
               count(*) FILTER (NOT had_prev AND NOT is_new) AS resurrecting
        FROM cur GROUP BY p),
    dormant AS (
        SELECT b.p + {step} AS p, count(*) AS n FROM act b
        LEFT JOIN act a ON a.person_id = b.person_id AND a.p = b.p + {step}
        WHERE a.person_id IS NULL AND b.p BETWEEN $p_lo - {step} AND $p_hi - {step}
        GROUP BY b.p)
    SELECT grid.p AS period, coalesce(counts.new, 0), coalesce(counts.returning, 0),
           coalesce(counts.resurrecting, 0), coalesce(dormant.n, 0)
    FROM (SELECT unnest($periods::DATE[]) AS p) grid
    LEFT JOIN counts ON counts.p = grid.p
    LEFT JOIN dormant ON dormant.p = grid.p
    ORDER BY period
    """
    params = {
        "t_hi": cal.midnight(hi + timedelta(days=1)),
        "p_lo": periods[0],
        "p_hi": periods[-1],
        "periods": periods,
    }
    rows = con.execute(sql, params).fetchall()
    return [dict(zip(COLUMNS, (p, *map(int, rest)), strict=True)) for p, *rest in rows]
