"""Arrow schemas of the lake tables and the splitters that turn buffered rows into files."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

import orjson
import pyarrow as pa

from pipeline.plan import FieldSpec, TrackingPlan

TS = pa.timestamp("ms", tz="UTC")

EVENT_COLUMNS: list[tuple[str, pa.DataType]] = [
    ("event_id", pa.string()),
    ("event_name", pa.string()),
    ("event_time", TS),
    ("received_at", TS),
    ("anonymous_id", pa.string()),
    ("user_id", pa.string()),
    ("person_id", pa.string()),
    ("platform", pa.string()),
    ("app_version", pa.string()),
    ("channel", pa.string()),
    ("identities", pa.string()),  # JSON text; phone/email hashed
    ("consent_marketing", pa.bool_()),
    ("schema_version", pa.int32()),
    ("properties", pa.string()),  # JSON text of every property, known or not
    ("source_partition", pa.int32()),
    ("source_offset", pa.int64()),
    ("source_index", pa.int32()),
]

DLQ_SCHEMA = pa.schema(
    [
        ("error_code", pa.string()),
        ("error_detail", pa.string()),
        ("payload", pa.binary()),
        ("source_topic", pa.string()),
        ("source_partition", pa.int32()),
        ("source_offset", pa.int64()),
        ("source_index", pa.int32()),
        ("event_id", pa.string()),
        ("event_name", pa.string()),
        ("received_at", TS),
        ("failed_at", TS),
        ("processor_name", pa.string()),
        ("processor_version", pa.string()),
    ]
)

_ARROW = {
    "string": pa.string(),
    "enum": pa.string(),
    "long": pa.int64(),
    "double": pa.float64(),
    "boolean": pa.bool_(),
}


def arrow_type(spec: FieldSpec) -> pa.DataType:
    if spec.kind == "money":
        return pa.decimal128(spec.precision, spec.scale)
    return _ARROW.get(spec.kind, pa.string())


def _money(value: Any) -> Decimal | None:
    if value is None:
        return None
    return Decimal(repr(value)) if isinstance(value, float) else Decimal(value)


def day(ms: int) -> str:
    return datetime.fromtimestamp(ms / 1000, UTC).strftime("%Y-%m-%d")


def _json(value: Any) -> str | None:
    return None if value is None else orjson.dumps(value).decode()


class EventsSplitter:
    """Rows -> one file per (event date, event name), with that event's typed columns."""

    def __init__(self, plan: TrackingPlan) -> None:
        self._typed: dict[str, list[tuple[str, pa.DataType, bool]]] = {
            name: [(s.name, arrow_type(s), s.kind == "money") for s in schema.fields.values()]
            for name, schema in plan.latest.items()
        }

    def __call__(self, rows: list[dict[str, Any]]) -> Iterable[tuple[str, pa.Table]]:
        groups: dict[tuple[str, str], list[dict[str, Any]]] = defaultdict(list)
        for row in rows:
            groups[(day(row["event_time"]), row["event_name"])].append(row)
        for (date, name), group in groups.items():
            yield f"event_date={date}/event_name={name}", self.table(name, group)

    def table(self, name: str, rows: list[dict[str, Any]]) -> pa.Table:
        arrays: list[pa.Array] = []
        fields: list[pa.Field] = []
        for col, typ in EVENT_COLUMNS:
            if col in ("identities", "properties"):
                values = [_json(r.get(col)) for r in rows]
            else:
                values = [r.get(col) for r in rows]
            arrays.append(pa.array(values, type=typ))
            fields.append(pa.field(col, typ))
        for prop, typ, is_money in self._typed.get(name, []):
            values = [r["properties"].get(prop) for r in rows]
            if is_money:
                values = [_money(v) for v in values]
            arrays.append(pa.array(values, type=typ))
            fields.append(pa.field(prop, typ))
        return pa.Table.from_arrays(arrays, schema=pa.schema(fields))


def split_dlq(rows: list[dict[str, Any]]) -> Iterable[tuple[str, pa.Table]]:
    groups: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for row in rows:
        groups[day(row["received_at"])].append(row)
    for date, group in groups.items():
        table = pa.Table.from_pylist(group, schema=DLQ_SCHEMA)
        yield f"received_date={date}", table
