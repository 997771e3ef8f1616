"""Tracking-data quality measures of a validated batch (埋点监控): missing property rates.

Per event name, how many events arrived and how many lacked each of the event's own
properties (absent or null). Exported as counters, so Prometheus computes rates over any
window; the label sets are bounded by the tracking plan.
"""

from __future__ import annotations

from collections import Counter

import pyarrow as pa
import pyarrow.compute as pc


def missing_counts(
    table: pa.Table, fields_by_event: dict[str, list[str]]
) -> tuple[Counter[str], Counter[tuple[str, str]]]:
    events: Counter[str] = Counter()
    missing: Counter[tuple[str, str]] = Counter()
    if table.num_rows == 0:
        return events, missing
    names = table["event_name"]
    for name in pc.unique(names).to_pylist():
        rows = table.filter(pc.equal(names, name))
        events[name] = rows.num_rows
        for prop in fields_by_event.get(name, ()):
            if prop in rows.column_names:
                nulls = rows[prop].null_count
                if nulls:
                    missing[(name, prop)] = nulls
    return events, missing
