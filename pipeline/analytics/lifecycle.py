"""Lifecycle (DESIGN 16): per period, the active persons split into new, returning and
resurrecting, and the dormant ones who were active the period before and are not now.

* ``new``: first event ever (the whole lake, before ``--from`` too) in this period;
* ``returning``: active in this period and in the previous one;
* ``resurrecting``: active, not in the previous period, not new;
* ``dormant``: active in the previous period, not in this one. A person is counted dormant
  once, in the first period they miss, not again in the periods after.

History before ``--from`` decides the first reported period; events after ``--to`` are not
read. Every period of the range has a row, zeros when nobody was active. Activity is what
the lake holds; of events past retention ``lake maintain`` kept only each person's first
activity (``first_activity``), which decides ``new`` alone: a person whose first event was
deleted is not new again, and their first period in the lake is ``resurrecting``.
"""

from __future__ import annotations

from datetime import date, timedelta
from typing import Any

import duckdb

from pipeline.analytics.calendar import Calendar, check_range
from pipeline.analytics.persons import MAP, resolve

COLUMNS = ["period", "new", "returning", "resurrecting", "dormant"]


def lifecycle(
    con: duckdb.DuckDBPyConnection, cal: Calendar, lo: date, hi: date
) -> list[dict[str, Any]]:
    """Rows ``{period, new, returning, resurrecting, dormant}`` ordered by period."""
    check_range(lo, hi)
    periods = cal.periods(lo, hi)
    step = cal.step
    keys = (
        f"SELECT DISTINCT user_id, anonymous_id, person_id, {cal.bucket()} AS p FROM events "
        "WHERE event_time < $t_hi"
    )
    firsts = (
        f"SELECT DISTINCT user_id, anonymous_id, person_id, {cal.bucket('first_time')} AS p "
        "FROM first_activity WHERE first_time < $t_hi"
    )
    sql = f"""
    WITH {MAP},
    lake AS (SELECT DISTINCT person_id, p FROM ({resolve(keys, "map")})
             WHERE person_id IS NOT NULL),
    gone AS (SELECT person_id, min(p) AS first_p FROM ({resolve(firsts, "map")})
             WHERE person_id IS NOT NULL GROUP BY person_id),
    seq AS (
        SELECT p, row_number() OVER w = 1 AND coalesce(first_p >= p, true) AS is_new,
               lag(p) OVER w AS prev_p, lead(p) OVER w AS next_p
        FROM lake LEFT JOIN gone USING (person_id)
        WINDOW w AS (PARTITION BY person_id ORDER BY p)),
    counts AS (
        SELECT p, count(*) FILTER (is_new) AS new,
               count(*) FILTER (prev_p = p - {step}) AS returning,
               count(*) FILTER (NOT is_new AND coalesce(prev_p <> p - {step}, true))
                   AS resurrecting
        FROM seq WHERE p BETWEEN $p_lo AND $p_hi GROUP BY p),
    dormant AS (
        SELECT p + {step} AS p, count(*) AS n FROM seq
        WHERE (next_p IS NULL OR next_p <> p + {step})
          AND p BETWEEN $p_lo - {step} AND $p_hi - {step}
        GROUP BY p)
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
