"""Cohort retention (DESIGN 16): who comes back, period by period after their first time.

A person belongs to the cohort of the period of their first cohort-event in the range.
``retained(k)`` counts cohort persons with a return-event in period cohort+k (``n-day``) or
in any period at or after cohort+k (``unbounded``); period 0 counts a return-event before
the cohort event too. The range (local days ``--from`` .. ``--to``) chooses the cohort
events only: a return-event counts wherever period cohort+k lies, after ``--to`` as well,
and in period 0 also on a day of that period before ``--from``. ``complete`` is true when
period cohort+k has ended by now; every cohort period of the range has rows for
k = 0 .. N-1, with zeros when nobody is in it.
"""

from __future__ import annotations

from collections.abc import Collection
from dataclasses import dataclass
from datetime import date, timedelta
from typing import Any, Literal

import duckdb

from pipeline.analytics.calendar import BadInput, Calendar, check_range, utc_dates
from pipeline.analytics.persons import resolve

Mode = Literal["n-day", "unbounded"]
MODES: tuple[Mode, ...] = ("n-day", "unbounded")
COLUMNS = ["cohort", "size", "k", "retained", "complete"]


@dataclass(frozen=True)
class RetentionQuery:
    cohort_event: str
    return_event: str
    lo: date
    hi: date
    cal: Calendar
    mode: Mode = "n-day"
    periods: int | None = None  # None: as many as the range has periods

    def check(self, known_events: Collection[str]) -> None:
        for flag, name in (
            ("--cohort-event", self.cohort_event),
            ("--return-event", self.return_event),
        ):
            if name not in known_events:
                raise BadInput(f"{flag}: unknown event {name!r} (not in the tracking plan)")
        check_range(self.lo, self.hi)
        if self.mode not in MODES:
            raise BadInput(f"--mode must be n-day or unbounded, not {self.mode!r}")
        if self.periods is not None and not 1 <= self.periods <= 1000:
            raise BadInput(f"--periods must be between 1 and 1000, not {self.periods}")

    @property
    def n(self) -> int:
        return self.periods or len(self.cal.periods(self.lo, self.hi))


def retention(
    con: duckdb.DuckDBPyConnection, q: RetentionQuery, today: date
) -> list[dict[str, Any]]:
    """Rows ``{cohort, size, k, retained, complete}`` ordered by cohort, then k."""
    cal = q.cal
    step = cal.step
    cohorts = cal.periods(q.lo, q.hi)
    d_lo, d_hi = utc_dates(q.lo, q.hi)
    if q.mode == "n-day":
        retained = "SELECT c, k, count(*) AS n FROM gaps GROUP BY c, k"
    else:  # a person counts at every k up to their furthest return period
        retained = (
            "SELECT g.c, ks.k, sum(h.n) AS n FROM (SELECT c, km, count(*) AS n FROM "
            "(SELECT c, person_id, max(k) AS km FROM gaps GROUP BY c, person_id) GROUP BY c, km) h "
            "JOIN (SELECT DISTINCT c FROM gaps) g ON g.c = h.c "
            "JOIN range(0, $n) ks(k) ON h.km >= ks.k GROUP BY g.c, ks.k"
        )
    # Cohort events in the range; return events from the first cohort period on, with no
    # end (a return after --to still fills its cell). An event can be both.
    in_range = (
        "event_name = $cohort AND event_date BETWEEN $d_lo AND $d_hi "
        "AND event_time >= $t_lo AND event_time < $t_hi"
    )
    returning = "event_name = $return AND event_date >= $r_d_lo AND event_time >= $r_t_lo"
    keys = (
        f"SELECT DISTINCT user_id, anonymous_id, person_id, {cal.bucket()} AS p, "
        f"({in_range}) AS is_cohort, ({returning}) AS is_return "
        f"FROM events WHERE ({in_range}) OR ({returning})"
    )
    sql = f"""
    WITH ev AS (SELECT * FROM ({resolve(keys)}) WHERE person_id IS NOT NULL),
    cohort AS (SELECT person_id, min(p) AS c FROM ev WHERE is_cohort GROUP BY person_id),
    ret AS (SELECT DISTINCT person_id, p FROM ev WHERE is_return),
    gaps AS (SELECT co.c, (r.p - co.c) // {step} AS k, co.person_id
             FROM cohort co JOIN ret r ON r.person_id = co.person_id AND r.p >= co.c),
    sizes AS (SELECT c, count(*) AS size FROM cohort GROUP BY c),
    kept AS ({retained})
    SELECT grid.c AS cohort, coalesce(sizes.size, 0) AS size, k.k,
           coalesce(kept.n, 0) AS retained
    FROM (SELECT unnest($cohorts::DATE[]) AS c) grid CROSS JOIN range(0, $n) k(k)
    LEFT JOIN sizes ON sizes.c = grid.c
    LEFT JOIN kept ON kept.c = grid.c AND kept.k = k.k
    ORDER BY cohort, k.k
    """
    params = {
        "cohort": q.cohort_event,
        "return": q.return_event,
        "d_lo": d_lo,
        "d_hi": d_hi,
        "t_lo": cal.midnight(q.lo),
        "t_hi": cal.midnight(q.hi + timedelta(days=1)),
        "r_d_lo": utc_dates(cohorts[0], cohorts[0])[0],
        "r_t_lo": cal.midnight(cohorts[0]),
        "cohorts": cohorts,
        "n": q.n,
    }
    rows = con.execute(sql, params).fetchall()
    limit = today  # a period is complete once it has ended
    return [
        {
            "cohort": c,
            "size": int(size),
            "k": int(k),
            "retained": int(n),
            "complete": c + timedelta(days=step * (int(k) + 1)) <= limit,
        }
        for c, size, k, n in rows
    ]
