"""Tracking-data quality measures of a validated batch (埋点监控): missing optional properties.

Per event name, how many valid events arrived and how many lacked each of the event's
optional properties (absent or null). A required property cannot be missing from a valid
event: its absence dead-letters the event (``missing_required_field``), watched by the
per-event dead-letter share. An optional property is absent by design in a share of
events that is the event's own (``checkout.coupon_id`` in most checkouts), so its level
means nothing; its change does: the alert compares the share now with the series' own
past (docs/runbooks/property-missing.md, docs/decisions.md). Exported as counters, so
Prometheus computes shares over any window; the label sets are bounded by the plan.
"""

from __future__ import annotations

from collections import Counter

import pyarrow as pa
import pyarrow.compute as pc

from pipeline.contract.plan import TrackingPlan


def optional_properties(plan: TrackingPlan) -> dict[str, list[str]]:
    """Event name -> its optional properties (latest version), the ones counted."""
    return {
        name: [spec.name for spec in schema.fields.values() if not spec.required]
        for name, schema in plan.latest.items()
    }


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
            nulls = rows[prop].null_count if prop in rows.column_names else 0
            if nulls:
                missing[(name, prop)] = nulls
    return events, missing
