"""Two-phase metric aggregation: per-partition partials, combined and finalised per window.

Phase 1 (``partials``) turns one batch of stitched events into one value per
(metric, window, window start, dimensions), vectorised with pyarrow group-by. Phase 2
(``CombineState``) merges those partials from every source partition (sums, counts, set
and HyperLogLog unions) and finalises a window once every partition's watermark has passed
it, computing ratios from their parts. Funnels keep their step events per identifier until
their hour closes, then group identifiers into persons through the identity map and run
``pipeline.metrics.funnel.entries``.
"""

from __future__ import annotations

import base64
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

import datasketches as ds
import orjson
import pyarrow as pa
import pyarrow.compute as pc

from pipeline.metrics.definitions import ALL_EVENTS, MetricDef, seconds
from pipeline.metrics.funnel import entries, step_mask
from pipeline.metrics.windows import NO_WATERMARK, closable, window_end, window_label

HLL_LG_K = 14  # relative standard error ~0.8%: the 2% bound at about 2.5 sigma
SeriesKey = tuple[str, int, int, str]  # metric, window seconds, window start ms, dims JSON
SIMPLE = ("count", "sum", "distinct_count")


def kind_of(d: MetricDef) -> str:
    if d.type == "distinct_count":
        if d.resolve_persons:
            return "persons"  # identifiers, resolved to persons when the window closes
        return "set" if d.exact else "hll"
    return d.type


def dims_json(values: dict[str, Any]) -> str:
    return orjson.dumps(values, option=orjson.OPT_SORT_KEYS).decode()


# -- accumulators ---------------------------------------------------------------------


def new_hll() -> Any:
    return ds.hll_sketch(HLL_LG_K, ds.tgt_hll_type.HLL_8)


def merge(kind: str, a: Any, b: Any) -> Any:
    if a is None:
        return b
    if kind in ("count", "sum"):
        return a + b
    if kind in ("set", "persons"):
        a |= b
        return a
    union = ds.hll_union(HLL_LG_K)
    union.update(a)
    union.update(b)
    return union.get_result(ds.tgt_hll_type.HLL_8)


def encode(kind: str, value: Any) -> Any:
    if kind == "count":
        return value
    if kind == "sum":
        return str(value)
    if kind in ("set", "persons"):
        return sorted(value)
    return base64.b64encode(value.serialize_compact()).decode()


def decode(kind: str, value: Any) -> Any:
    if kind == "count":
        return int(value)
    if kind == "sum":
        return Decimal(value)
    if kind in ("set", "persons"):
        return set(value)
    return ds.hll_sketch.deserialize(base64.b64decode(value))


def result(kind: str, value: Any, resolve: Any = None) -> float:
    if kind == "persons":
        sketch = new_hll()
        for person in {resolve(n) for n in value}:
            sketch.update(person)
        return float(round(sketch.get_estimate()))
    if kind == "set":
        return float(len(value))
    if kind == "hll":
        return float(round(value.get_estimate()))
    return float(value)


# -- phase 1: partials of one batch ---------------------------------------------------


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


def partials(
    table: pa.Table, defs: Iterable[MetricDef], lateness_s: int, watermark_before: int
) -> Partials:
    out = Partials()
    if table.num_rows == 0:
        return out
    t = pc.cast(table["event_time"], pa.int64())
    out.max_time = int(pc.max(t).as_py())
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


# -- phase 2: combine -----------------------------------------------------------------


class CombineState:
    """Open windows of every source partition, merged; plus what has been applied.

    ``applied[p]`` is the last source offset (events.stitched partition p) merged: a
    partial message at or below it is a replay and is skipped, so a restart never counts
    an event twice. ``closed[size]`` is the end of the last finalised window of that size;
    a partial for a window at or below it arrived after its window closed (late).
    """

    def __init__(self, defs: dict[str, MetricDef], partitions: int, lateness_s: int) -> None:
        self.defs = defs
        self.partitions = partitions
        self.lateness_s = lateness_s
        self.applied: dict[int, int] = {}
        self.wm: dict[int, int] = {}
        self.closed: dict[int, int] = {}
        self.open: dict[SeriesKey, Any] = {}
        self.late = 0
        self.offset = -1  # last metrics.partials offset read (positions of idle closes)
        # Funnels: step events per identifier of open hours, last entry per identifier,
        # end of the last closed hour; ``resolve`` maps an identifier to its person.
        self.fevents: dict[str, dict[str, list[list[int]]]] = {}
        self.flast: dict[str, dict[str, int]] = {}
        self.fclosed: dict[str, int] = {}
        self.resolve: Any = lambda n: n
        self._fdirty: set[tuple[str, str]] = set()
        self._dirty: set[SeriesKey] = set()
        self._deleted: set[SeriesKey] = set()
        self._progress_dirty = False

    # -- applying partials ----------------------------------------------------------

    def apply(self, message: dict[str, Any]) -> bool:
        p, offset = int(message["p"]), int(message["o"])
        if offset <= self.applied.get(p, -1):
            return False
        for m, size, start, dims, raw in message["s"]:
            d = self.defs.get(m)
            if d is None:
                continue  # a metric removed since the partial was made
            if window_end(start, size) <= self.closed.get(size, NO_WATERMARK):
                self.late += 1
                continue
            key = (m, int(size), int(start), dims)
            kind = kind_of(d)
            self.open[key] = merge(kind, self.open.get(key), decode(kind, raw))
            self._dirty.add(key)
            self._deleted.discard(key)
        for m, events in (message.get("f") or {}).items():
            if m not in self.defs:
                continue
            store = self.fevents.setdefault(m, {})
            closed = self.fclosed.get(m, NO_WATERMARK)
            for n, t, mask in events:
                if t < closed:
                    self.late += 1
                    continue
                store.setdefault(n, []).append([int(t), int(mask)])
                self._fdirty.add((m, n))
        self.applied[p] = offset
        self.wm[p] = max(self.wm.get(p, NO_WATERMARK), int(message["wm"]))
        self._progress_dirty = True
        return True

    # -- finalising -----------------------------------------------------------------

    def _windows(self) -> list[tuple[int, int]]:
        return sorted(
            {(size, start) for (_, size, start, _) in self.open},
            key=lambda w: (w[1] + w[0] * 1000, w[0]),
        )

    def close_ready(self, funnels: bool = True) -> list[dict[str, Any]]:
        marks = [self.wm.get(p, NO_WATERMARK) for p in range(self.partitions)]
        ready = [
            w for w in self._windows() if closable(window_end(w[1], w[0]), self.lateness_s, marks)
        ]
        rows = self._finalise(ready)
        if funnels:
            for m, d in self.defs.items():
                if d.type == "funnel" and d.funnel is not None:
                    within = seconds(d.funnel.within)
                    for hour in self._funnel_hours(m):
                        if not closable(hour + 3_600_000, self.lateness_s + within, marks):
                            break
                        rows.extend(self._close_funnel(m, hour))
        return rows

    def close_all(self) -> list[dict[str, Any]]:
        """Idle input: finalise every open window (the last windows of a replay)."""
        rows = self._finalise(self._windows())
        for m in list(self.fevents):
            for hour in self._funnel_hours(m):
                rows.extend(self._close_funnel(m, hour))
        return rows

    def _funnel_hours(self, m: str) -> list[int]:
        hours = {
            t - t % 3_600_000
            for evs in self.fevents.get(m, {}).values()
            for t, mask in evs
            if mask & 1
        }
        return sorted(hours)

    def _close_funnel(self, m: str, hour: int) -> list[dict[str, Any]]:
        d = self.defs[m]
        assert d.funnel is not None
        steps, within = len(d.funnel.steps), seconds(d.funnel.within) * 1000
        end = hour + 3_600_000
        events, last = self.fevents.get(m, {}), self.flast.setdefault(m, {})
        persons: dict[str, list[str]] = {}
        for n in set(events) | set(last):
            persons.setdefault(self.resolve(n), []).append(n)
        counts = [0] * steps
        for nodes in persons.values():
            merged = sorted((e[0], e[1]) for n in nodes for e in events.get(n, ()))
            prev = max((last[n] for n in nodes if n in last), default=None)
            found = entries(merged, steps, within, prev, since=hour, until=end)
            for _, k in found:
                for s in range(k):
                    counts[s] += 1
            if found:
                for n in nodes:
                    last[n] = found[-1][0]
                    self._fdirty.add((m, n))
        for n in list(events):
            kept = [e for e in events[n] if e[0] >= end]
            if kept != events[n]:
                self._fdirty.add((m, n))
            if kept:
                events[n] = kept
            else:
                del events[n]
        self.fclosed[m] = max(self.fclosed.get(m, NO_WATERMARK), end)
        self._progress_dirty = True
        if not counts[0]:
            return []
        return [
            _row(m, "1h", hour, end, dims_json({"step": s + 1}), float(counts[s]), None, None)
            for s in range(steps)
        ]

    def _finalise(self, windows: list[tuple[int, int]]) -> list[dict[str, Any]]:
        rows: list[dict[str, Any]] = []
        for size, start in windows:
            rows.extend(self.values(size, start))
            for key in [k for k in self.open if k[1] == size and k[2] == start]:
                del self.open[key]
                self._dirty.discard(key)
                self._deleted.add(key)
            end = window_end(start, size)
            self.closed[size] = max(self.closed.get(size, NO_WATERMARK), end)
            self._progress_dirty = True
        return rows

    def values(self, size: int, start: int) -> list[dict[str, Any]]:
        """Rows of one window from its open accumulators (final when the window closes)."""
        label, end = window_label(size), window_end(start, size)
        rows = []
        found: dict[tuple[str, str], float] = {}
        for (m, s, st, dims), acc in sorted(self.open.items(), key=lambda kv: kv[0]):
            if s != size or st != start:
                continue
            value = result(kind_of(self.defs[m]), acc, self.resolve)
            found[(m, dims)] = value
            rows.append(_row(m, label, start, end, dims, value, None, None))
        for d in self.defs.values():
            if d.type != "ratio" or size not in d.window_seconds:
                continue
            n = found.get((str(d.numerator), "{}"))
            q = found.get((str(d.denominator), "{}"))
            if n is None and q is None:
                continue
            num, den = n or 0.0, q or 0.0
            rows.append(_row(d.name, label, start, end, "{}", num / den if den else None, num, den))
        return rows

    def provisional(self) -> list[dict[str, Any]]:
        return [row for size, start in self._windows() for row in self.values(size, start)]

    # -- changelog ------------------------------------------------------------------

    def take_record(self) -> dict[str, Any] | None:
        """What changed since the last record (None when nothing did)."""
        if not (self._dirty or self._deleted or self._progress_dirty or self._fdirty):
            return None
        funnel = [
            [m, n, self.fevents.get(m, {}).get(n), self.flast.get(m, {}).get(n)]
            for m, n in sorted(self._fdirty)
        ]
        record = {
            "applied": self.applied,
            "wm": self.wm,
            "closed": self.closed,
            "late": self.late,
            "offset": self.offset,
            "set": [
                [*k, encode(kind_of(self.defs[k[0]]), self.open[k])] for k in sorted(self._dirty)
            ],
            "del": [list(k) for k in sorted(self._deleted)],
            "funnel": funnel,
            "fclosed": self.fclosed,
        }
        data = orjson.loads(orjson.dumps(record, option=orjson.OPT_NON_STR_KEYS))
        self._dirty.clear()
        self._deleted.clear()
        self._fdirty.clear()
        self._progress_dirty = False
        return data

    def apply_record(self, record: dict[str, Any]) -> None:
        self.applied = {int(k): int(v) for k, v in record["applied"].items()}
        self.wm = {int(k): int(v) for k, v in record["wm"].items()}
        self.closed = {int(k): int(v) for k, v in record["closed"].items()}
        self.late = int(record.get("late", 0))
        self.offset = int(record.get("offset", -1))
        self.fclosed = {k: int(v) for k, v in record.get("fclosed", {}).items()}
        for m, n, evs, last in record.get("funnel", []):
            if evs:
                self.fevents.setdefault(m, {})[n] = evs
            else:
                self.fevents.get(m, {}).pop(n, None)
            if last is not None:
                self.flast.setdefault(m, {})[n] = int(last)
        for m, size, start, dims in record["del"]:
            self.open.pop((m, int(size), int(start), dims), None)
        for m, size, start, dims, raw in record["set"]:
            d = self.defs.get(m)
            if d is not None:
                self.open[(m, int(size), int(start), dims)] = decode(kind_of(d), raw)

    def reset(self) -> None:
        resolve = self.resolve
        self.__init__(self.defs, self.partitions, self.lateness_s)  # type: ignore[misc]
        self.resolve = resolve


def _row(
    metric: str,
    label: str,
    start: int,
    end: int,
    dims: str,
    value: float | None,
    num: float | None,
    den: float | None,
) -> dict[str, Any]:
    return {
        "metric": metric,
        "window": label,
        "window_start": start,
        "window_end": end,
        "dimensions": dims,
        "value": value,
        "numerator": num,
        "denominator": den,
    }
