"""Phase 1 of the metric aggregation: the partials of one batch of stitched events.

``partials`` turns one batch (one source partition) into one value per (metric, window,
window start, dimensions), vectorised with pyarrow group-by, plus the step events of every
funnel under the identifier that resolves their person. ``pipeline.metrics.combine``
merges them across partitions (phase 2).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc

from pipeline.metrics.definitions import ALL_EVENTS, MetricDef, seconds
from pipeline.metrics.funnel import step_mask
from pipeline.metrics.series import SIMPLE, SeriesKey, dims_json, kind_of, merge, new_hll
from pipeline.metrics.windows import NO_WATERMARK


@dataclass
class Partials:
    series: dict[SeriesKey, Any] = field(default_factory=dict)
    late: Counter[int] = field(default_factory=Counter)  # window seconds -> late events
    max_time: int = NO_WATERMARK
    # funnel metric -> [node, event time, step mask] of events matching any of its steps
    funnel: dict[str, list[list[Any]]] = field(default_factory=dict)


def _mask(table: pa.Table, d: MetricDef) -> pa.ChunkedArray | None:
    mask = None
    if ALL_EVENTS not in d.events:
        mask = pc.is_in(table["event_name"], value_set=pa.array(list(d.events)))
    for f in d.filters:
        col = table[f.property] if f.property in table.column_names else None
        if col is None:
            return pc.equal(table["event_name"], "\x00")  # nothing matches
        if f.op == "eq":
            m = pc.equal(col, f.value)
        elif f.op == "ne":
            m = pc.not_equal(col, f.value)
        else:
            m = pc.is_in(col, value_set=pa.array(f.value))
        m = pc.fill_null(m, False)
        mask = m if mask is None else pc.and_(mask, m)
    return mask


def _watermark_times(table: pa.Table, event_time: pa.ChunkedArray) -> pa.ChunkedArray:
    """Event time, but never past the time trackflow received the event.

    A client whose clock runs ahead (accepted up to +10 minutes) would otherwise push the
    partition's watermark minutes into the future and make every other client's on-time
    events of those minutes late. Receive time is monotonic per worker and honest; for a
    replay or backfill of old events it is later than their event time, so the watermark
    still follows event time there.
    """
    if "received_at" not in table.column_names:
        return event_time
    received = pc.cast(table["received_at"], pa.int64())
    return pc.min_element_wise(event_time, received)


def partials(
    table: pa.Table, defs: Iterable[MetricDef], lateness_s: int, watermark_before: int
) -> Partials:
    out = Partials()
    if table.num_rows == 0:
        return out
    t = pc.cast(table["event_time"], pa.int64())
    out.max_time = int(pc.max(_watermark_times(table, t)).as_py())
    defs = list(defs)
    for d in defs:
        if d.type == "funnel":
            out.funnel[d.name] = funnel_events(table, d, lateness_s, watermark_before)
    defs = [d for d in defs if d.type in SIMPLE]
    sizes = sorted({s for d in defs for s in d.window_seconds})
    starts: dict[int, pa.ChunkedArray] = {}
    on_time: dict[int, pa.ChunkedArray] = {}
    for size in sizes:
        ms = size * 1000
        start = pc.multiply(pc.divide(t, ms), ms)  # integer division: event times are >= 0
        starts[size] = start
        ok = pc.greater(pc.add(start, ms + lateness_s * 1000), watermark_before)
        on_time[size] = ok
        out.late[size] = table.num_rows - int(pc.sum(pc.cast(ok, pa.int64())).as_py() or 0)
    for d in defs:
        kind = kind_of(d)
        base = _mask(table, d)
        for size in d.window_seconds:
            mask = on_time[size] if base is None else pc.and_(base, on_time[size])
            cols = {"_start": starts[size]}
            for dim in d.dimensions:
                cols[dim] = table[dim]
            if kind == "persons":
                cols["_v"] = identifier_column(table)
            elif d.prop:
                cols["_v"] = table[d.prop] if d.prop in table.column_names else None
            view = pa.table({k: v for k, v in cols.items() if v is not None}).filter(mask)
            if view.num_rows == 0:
                continue
            if d.type == "count":
                agg = view.group_by(["_start", *d.dimensions]).aggregate([([], "count_all")])
                values = agg["count_all"].to_pylist()
            else:
                if d.type == "distinct_count":
                    view = view.filter(pc.is_valid(view["_v"]))
                    if view.num_rows == 0:
                        continue
                how = "sum" if d.type == "sum" else "distinct"
                agg = view.group_by(["_start", *d.dimensions]).aggregate([("_v", how)])
                values = agg[f"_v_{how}"].to_pylist()
            dim_cols = [agg[dim].to_pylist() for dim in d.dimensions]
            for i, (start_ms, value) in enumerate(
                zip(agg["_start"].to_pylist(), values, strict=True)
            ):
                dims = dims_json(
                    {dim: col[i] for dim, col in zip(d.dimensions, dim_cols, strict=True)}
                )
                key = (d.name, size, int(start_ms), dims)
                if kind == "sum":
                    value = Decimal(0) if value is None else Decimal(value)
                elif kind in ("set", "persons"):
                    value = {str(v) for v in value}
                elif kind == "hll":
                    sketch = new_hll()
                    for v in value:
                        sketch.update(str(v))
                    value = sketch
                out.series[key] = merge(kind, out.series.get(key), value)
    return out


def identifier_column(table: pa.Table) -> pa.ChunkedArray:
    """The identifier that resolves each event's person: its user_id, else anonymous_id."""
    users = pc.binary_join_element_wise("user_id:", table["user_id"], "")
    anons = pc.binary_join_element_wise("anonymous_id:", table["anonymous_id"], "")
    return pc.if_else(pc.is_valid(table["user_id"]), users, anons)


def funnel_events(
    table: pa.Table, d: MetricDef, lateness_s: int, watermark_before: int
) -> list[list[Any]]:
    """Step events of funnel ``d``, each under the identifier that resolves its person."""
    assert d.funnel is not None
    within = seconds(d.funnel.within) * 1000
    names = pa.array(sorted({s.event for s in d.funnel.steps}))
    view = table.filter(pc.is_in(table["event_name"], value_set=names))
    if view.num_rows == 0:
        return []
    props = sorted({f.property for s in d.funnel.steps for f in s.filters})
    cols = {p: view[p].to_pylist() for p in props if p in view.column_names}
    out = []
    times = pc.cast(view["event_time"], pa.int64()).to_pylist()
    nodes = identifier_column(view).to_pylist()
    for i, (name, n, t) in enumerate(
        zip(view["event_name"].to_pylist(), nodes, times, strict=True)
    ):
        hour_end = t - t % 3_600_000 + 3_600_000
        if hour_end + within + lateness_s * 1000 <= watermark_before:
            continue  # its funnel hour has closed (counted with the late events)
        mask = step_mask(d, name, {p: c[i] for p, c in cols.items()})
        if mask:
            out.append([n, t, mask])
    return out
