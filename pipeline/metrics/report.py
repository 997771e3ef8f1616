"""The batch side of the metric definitions: the same formulas with DuckDB over the lake.

``events_resolved`` is the input (person ids through the latest identity map), so an
analyst can check the stream's ``rollups`` against the lake. Differences are expected only
for events later than the allowed lateness (stored, but not counted by the stream) and
within the sketch error for ``uv``, which is exact here.
"""

from __future__ import annotations

from typing import Any

import duckdb

from pipeline.metrics.definitions import ALL_EVENTS, MetricDef, seconds
from pipeline.metrics.funnel import counts_by_hour, entries, step_mask
from pipeline.metrics.windows import window_label


def _where(d: MetricDef) -> tuple[str, list[Any]]:
    clauses: list[str] = []
    params: list[Any] = []
    if ALL_EVENTS not in d.events:
        clauses.append(f"event_name IN ({', '.join('?' for _ in d.events)})")
        params.extend(d.events)
    for f in d.filters:
        col = f'"{f.property}"'
        if f.op == "eq":
            clauses.append(f"{col} = ?")
            params.append(f.value)
        elif f.op == "ne":
            clauses.append(f"{col} IS DISTINCT FROM ?")
            params.append(f.value)
        else:
            clauses.append(f"{col} IN ({', '.join('?' for _ in f.value)})")
            params.extend(f.value)
    return (" AND ".join(clauses) or "true"), params


def _simple(
    con: duckdb.DuckDBPyConnection, d: MetricDef, size: int, lo: Any, hi: Any
) -> list[dict[str, Any]]:
    where, params = _where(d)
    ms = size * 1000
    names = sorted(d.dimensions)  # the stream's dimension JSON has sorted keys
    dims = ", ".join(f'"{x}"' for x in names)
    dims_json = (
        "json_object(" + ", ".join(f"'{x}', \"{x}\"" for x in names) + ")::VARCHAR"
        if names
        else "'{}'"
    )
    if d.type == "count":
        agg = "count(*)::DOUBLE"
    elif d.type == "sum":
        agg = f'sum("{d.prop}")::DOUBLE'
    else:
        agg = f'count(DISTINCT "{d.prop}")::DOUBLE'
    group = ", ".join(["ws", *([dims] if dims else [])])
    sql = (
        f"SELECT ws, {dims_json} AS dimensions, {agg} AS value FROM ("
        f"  SELECT *, (epoch_ms(event_time) // {ms}) * {ms} AS ws FROM events_resolved"
        f"  WHERE {where} AND event_time >= ? AND event_time < ?"
        f") GROUP BY {group} ORDER BY 1, 2"
    )
    rows = con.execute(sql, [*params, lo, hi]).fetchall()
    label = window_label(size)
    return [
        {
            "metric": d.name,
            "window": label,
            "window_start": int(ws),
            "window_end": int(ws) + ms,
            "dimensions": dims_val,
            "value": value,
            "numerator": None,
            "denominator": None,
        }
        for ws, dims_val, value in rows
    ]


def batch_values(
    con: duckdb.DuckDBPyConnection, defs: dict[str, MetricDef], name: str, lo: Any, hi: Any
) -> list[dict[str, Any]]:
    """Every window of ``name`` with data in [lo, hi), as rollup rows."""
    d = defs[name]
    out: list[dict[str, Any]] = []
    for size in d.window_seconds:
        if d.type == "ratio":
            assert d.numerator is not None
            assert d.denominator is not None
            nums = {
                r["window_start"]: r["value"]
                for r in _simple(con, defs[d.numerator], size, lo, hi)
                if r["dimensions"] == "{}"
            }
            dens = {
                r["window_start"]: r["value"]
                for r in _simple(con, defs[d.denominator], size, lo, hi)
                if r["dimensions"] == "{}"
            }
            for ws in sorted(set(nums) | set(dens)):
                num, den = nums.get(ws, 0.0), dens.get(ws, 0.0)
                out.append(
                    {
                        "metric": name,
                        "window": window_label(size),
                        "window_start": ws,
                        "window_end": ws + size * 1000,
                        "dimensions": "{}",
                        "value": num / den if den else None,
                        "numerator": num,
                        "denominator": den,
                    }
                )
        elif d.type == "funnel":
            out.extend(batch_funnel(con, d, lo, hi))
        else:
            out.extend(_simple(con, d, size, lo, hi))
    return out


def batch_funnel(
    con: duckdb.DuckDBPyConnection, d: MetricDef, lo: Any, hi: Any
) -> list[dict[str, Any]]:
    """The funnel over ``events_resolved``: the stream's state machine, fed from the lake.

    Reads from 1 hour before ``lo`` (so the entry chain into the first hour is known) to
    ``within`` after ``hi`` (so late steps of the last hour's entries count).
    """
    assert d.funnel is not None
    within = seconds(d.funnel.within) * 1000
    names = sorted({s.event for s in d.funnel.steps})
    props = sorted({f.property for s in d.funnel.steps for f in s.filters})
    cols = "".join(f', "{p}"' for p in props)
    rows = con.execute(
        f"SELECT person_id, epoch_ms(event_time), event_name{cols} FROM events_resolved "
        f"WHERE event_name IN ({', '.join('?' for _ in names)}) "
        "AND event_time >= ?::TIMESTAMPTZ - INTERVAL 1 HOUR "
        "AND event_time < ?::TIMESTAMPTZ + INTERVAL 1 HOUR "
        "ORDER BY person_id, 2, event_id",
        [*names, lo, hi],
    ).fetchall()
    by_person: dict[str, list[tuple[int, int]]] = {}
    for person, t, name, *values in rows:
        mask = step_mask(d, name, dict(zip(props, values, strict=True)))
        if mask:
            by_person.setdefault(person, []).append((int(t), mask))
    steps = len(d.funnel.steps)
    found = [e for evs in by_person.values() for e in entries(evs, steps, within)]
    lo_ms = int(con.execute("SELECT epoch_ms(?::TIMESTAMPTZ)", [lo]).fetchone()[0])  # type: ignore[index]
    hi_ms = int(con.execute("SELECT epoch_ms(?::TIMESTAMPTZ)", [hi]).fetchone()[0])  # type: ignore[index]
    out = []
    for hour, counts in sorted(counts_by_hour(found, steps).items()):
        if not lo_ms <= hour < hi_ms:
            continue
        for step, n in enumerate(counts, 1):
            out.append(
                {
                    "metric": d.name,
                    "window": "1h",
                    "window_start": hour,
                    "window_end": hour + 3_600_000,
                    "dimensions": f'{{"step":{step}}}',
                    "value": float(n),
                    "numerator": None,
                    "denominator": None,
                }
            )
    return out
