"""RFM (DESIGN 16): recency, frequency and monetary value per paying person, scored 1-5.

The window is ``--days`` local days ending with ``--as-of`` (both included; 365: the year up
to and including ``--as-of``); only ``pay_success`` events count:

* ``recency_days``: ``--as-of`` minus the local day of the last ``pay_success`` (0: that day);
* ``frequency``: distinct ``order_id``; ``monetary``: sum of ``amount`` (every event);
* scores: ``1 + floor(5 * (rank - 1) / n)`` over the n persons, rank 1 the worst value (the
  most days, the fewest orders, the least money), ties sharing the lowest rank (SQL RANK),
  so tied persons always get the same score;
* ``segment``: the first rule of ``schemas/segments/rfm.json`` that the scores satisfy.
"""

from __future__ import annotations

from datetime import date, timedelta
from typing import Any

import duckdb

from pipeline.analytics.calendar import BadInput, Calendar, utc_dates
from pipeline.analytics.persons import resolve
from pipeline.analytics.segments import SegmentRules

COLUMNS = ["person_id", "recency_days", "frequency", "monetary", "r", "f", "m", "segment"]
PAY_EVENT = "pay_success"


def rfm_sql(cal: Calendar, rules: SegmentRules, ids: str = "identities") -> str:
    """SQL of the RFM rows; parameters ``as_of``, ``t_lo``, ``t_hi``, ``d_lo``, ``d_hi``."""
    rows = (
        f"SELECT user_id, anonymous_id, person_id, {cal.local_day()} AS d, order_id, amount "
        f"FROM events WHERE event_name = '{PAY_EVENT}' AND event_date BETWEEN $d_lo AND $d_hi "
        "AND event_time >= $t_lo AND event_time < $t_hi"
    )
    return f"""
    WITH pay AS (SELECT * FROM ({resolve(rows, ids)}) WHERE person_id IS NOT NULL),
    per AS (
        SELECT person_id, date_diff('day', max(d), $as_of) AS recency_days,
               count(DISTINCT order_id) AS frequency, coalesce(sum(amount), 0) AS monetary
        FROM pay GROUP BY person_id),
    ranked AS (
        SELECT *, count(*) OVER () AS n,
               rank() OVER (ORDER BY recency_days DESC) AS r_rank,
               rank() OVER (ORDER BY frequency) AS f_rank,
               rank() OVER (ORDER BY monetary) AS m_rank
        FROM per),
    scored AS (
        SELECT person_id, recency_days, frequency, monetary,
               1 + (5 * (r_rank - 1)) // n AS r, 1 + (5 * (f_rank - 1)) // n AS f,
               1 + (5 * (m_rank - 1)) // n AS m
        FROM ranked)
    SELECT person_id, recency_days, frequency, monetary, r, f, m, {rules.case_sql()} AS segment
    FROM scored
    """


def rfm_params(cal: Calendar, as_of: date, days: int) -> dict[str, Any]:
    if not 1 <= days <= 36_600:
        raise BadInput(f"--days must be between 1 and 36600, not {days}")
    first = as_of - timedelta(days=days - 1)
    d_lo, d_hi = utc_dates(first, as_of)
    return {
        "as_of": as_of,
        "t_lo": cal.midnight(first),
        "t_hi": cal.midnight(as_of + timedelta(days=1)),
        "d_lo": d_lo,
        "d_hi": d_hi,
    }


def rfm(
    con: duckdb.DuckDBPyConnection, cal: Calendar, rules: SegmentRules, as_of: date, days: int
) -> list[dict[str, Any]]:
    """One row per person with a ``pay_success`` in the window, ordered by person_id."""
    sql = f"SELECT * FROM ({rfm_sql(cal, rules)}) ORDER BY person_id"
    rows = con.execute(sql, rfm_params(cal, as_of, days)).fetchall()
    return [
        {
            "person_id": pid,
            "recency_days": int(rec),
            "frequency": int(freq),
            "monetary": money,
            "r": int(r),
            "f": int(f),
            "m": int(m),
            "segment": seg,
        }
        for pid, rec, freq, money, r, f, m, seg in rows
    ]
