"""Arrow schemas of the lake tables and the splitters that turn buffered rows into files."""

from __future__ import annotations

from collections.abc import Iterable
from decimal import Decimal
from typing import Any

import orjson
import pyarrow as pa
import pyarrow.compute as pc

from pipeline.contract.plan import FieldSpec, TrackingPlan

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
    # The HTTP collector's source name (DESIGN 13); null for events produced to Kafka
    # directly, and in files written before the column existed.
    ("source", pa.string()),
]

DLQ_SCHEMA = pa.schema(
    [
        ("error_code", pa.string()),
        ("error_detail", pa.string()),
        ("payload", pa.binary()),  # original bytes (PII masked), cut when over the limit
        ("payload_truncated", pa.bool_()),
        ("payload_size", pa.int64()),  # size before any cut
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
        # A failed replay (trackflow dlq replay): the dlq key "<topic>:<partition>:<offset>:
        # <index>" of the dead letter it replayed. Files written before it read it as null.
        ("replay_of", pa.string()),
        # The HTTP collector's source name of the event; null otherwise and in older files.
        ("source", pa.string()),
    ]
)

# The replay ledger (pipeline/dlq/ledger.py): one row per state change of a dead letter's
# replay, "sending" before it is sent, then "sent" (with its offset) or "not_sent". The
# latest state of a dead letter is its row of the highest seq.
DLQ_REPLAY_SCHEMA = pa.schema(
    [
        ("replay_of", pa.string()),  # dead_letter_key of the dead letter
        ("state", pa.string()),
        ("seq", pa.int64()),  # ledger file number
        ("run_id", pa.string()),
        ("sent_topic", pa.string()),
        ("sent_partition", pa.int32()),
        ("scan_from", pa.int64()),  # end offset of sent_partition before sending
        ("sent_offset", pa.int64()),
        ("error_code", pa.string()),
        ("event_name", pa.string()),
        ("event_id", pa.string()),
        ("at", TS),
    ]
)

# The privacy audit (pipeline/privacy/audit.py): one row per request and state change.
# ``identifiers`` is a JSON list of "<type>:<HMAC>" (never a value the lake holds),
# ``detail`` a JSON object (rows removed per table).
AUDIT_SCHEMA = pa.schema(
    [
        ("request_id", pa.string()),
        ("action", pa.string()),
        ("identifiers", pa.string()),
        ("actor", pa.string()),
        ("reason", pa.string()),
        ("status", pa.string()),
        ("rows_removed", pa.int64()),
        ("at", TS),
        ("requested_at", TS),
        ("detail", pa.string()),
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


def _json(value: Any) -> str | None:
    return None if value is None else orjson.dumps(value).decode()


class EventBatches:
    """Validated event records <-> one Arrow table with every column of the plan.

    Internal topics carry this table as Arrow IPC: built once in the validate stage, read
    without parsing downstream, and written to Parquet by column (DESIGN section 3).
    """

    def __init__(self, plan: TrackingPlan) -> None:
        self.props: dict[str, tuple[pa.DataType, bool]] = {
            name: (arrow_type(spec), spec.kind == "money")
            for name, spec in plan.property_columns().items()
        }
        self.by_event: dict[str, list[str]] = {
            name: list(schema.fields) for name, schema in plan.latest.items()
        }
        self.schema = pa.schema(
            [pa.field(n, t) for n, t in EVENT_COLUMNS]
            + [pa.field(n, t) for n, (t, _) in self.props.items()]
        )

    def build(self, rows: list[dict[str, Any]]) -> pa.Table:
        n = len(rows)
        arrays: list[pa.Array] = []
        values: list[Any]
        for col, typ in EVENT_COLUMNS:
            if col in ("identities", "properties"):
                values = [_json(r[col]) for r in rows]
            elif col == "source":  # rows built before the column existed lack it
                values = [r.get(col) for r in rows]
            else:
                values = [r[col] for r in rows]
            arrays.append(pa.array(values, type=typ))
        present = {name for r in rows for name in self.by_event.get(r["event_name"], ())}
        for prop, (typ, is_money) in self.props.items():
            if prop not in present:
                arrays.append(pa.nulls(n, typ))
                continue
            values = [r["properties"].get(prop) for r in rows]
            if is_money:
                values = [_money(v) for v in values]
            arrays.append(pa.array(values, type=typ))
        return pa.Table.from_arrays(arrays, schema=self.schema)

    def build_each(
        self, rows: list[dict[str, Any]]
    ) -> tuple[pa.Table, list[tuple[dict[str, Any], Exception]]]:
        """Like ``build``, but a row Arrow cannot hold is returned with its error instead of
        failing the batch: one bad row must not stop a partition. Halves the batch until
        the bad rows are found, so a good batch costs one ``build``."""
        try:
            return self.build(rows), []
        except (pa.ArrowException, OverflowError, ValueError, TypeError) as exc:
            if len(rows) == 1:
                return self.build([]), [(rows[0], exc)]
        half = len(rows) // 2
        left, left_bad = self.build_each(rows[:half])
        right, right_bad = self.build_each(rows[half:])
        return pa.concat_tables([left, right]), left_bad + right_bad


class EventsSplitter:
    """One file per (event date, event name), holding that event's own typed columns."""

    def __init__(self, plan: TrackingPlan) -> None:
        self.common = [n for n, _ in EVENT_COLUMNS]
        self.by_event = {name: list(schema.fields) for name, schema in plan.latest.items()}

    def __call__(self, table: pa.Table) -> Iterable[tuple[str, pa.Table]]:
        dates = pc.strftime(table["event_time"], format="%Y-%m-%d")
        names = table["event_name"]
        for date, name in sorted(set(zip(dates.to_pylist(), names.to_pylist(), strict=True))):
            mask = pc.and_(pc.equal(dates, date), pc.equal(names, name))
            columns = self.common + [
                c for c in self.by_event.get(name, []) if c in table.column_names
            ]
            yield f"event_date={date}/event_name={name}", table.filter(mask).select(columns)


def dlq_table(rows: list[dict[str, Any]]) -> pa.Table:
    return pa.Table.from_pylist(rows, schema=DLQ_SCHEMA)


def split_dlq(table: pa.Table) -> Iterable[tuple[str, pa.Table]]:
    dates = pc.strftime(table["received_at"], format="%Y-%m-%d")
    for date in sorted(set(dates.to_pylist())):
        yield f"received_date={date}", table.filter(pc.equal(dates, date))


# Written by the identity writer through identity.changes; positions are identity.links
# (partition, offset of the link message, row index), so a replayed link batch is skipped.
IDENTITY_SCHEMA = pa.schema(
    [
        ("identifier_type", pa.string()),
        ("identifier", pa.string()),
        ("person_id", pa.string()),
        ("first_seen", TS),
        ("last_seen", TS),
        ("updated_at", TS),
        ("source_partition", pa.int32()),
        ("source_offset", pa.int64()),
        ("source_index", pa.int32()),
    ]
)

MERGE_SCHEMA = pa.schema(
    [
        ("from_person_id", pa.string()),
        ("to_person_id", pa.string()),
        ("reason", pa.string()),
        ("accepted", pa.bool_()),
        ("at", TS),  # event time of the link that caused the decision
        ("link_from", pa.string()),  # "<type>:<identifier>" of a refused link
        ("link_to", pa.string()),
        ("decided_at", TS),
        ("source_partition", pa.int32()),
        ("source_offset", pa.int64()),
        ("source_index", pa.int32()),
    ]
)


def positioned_table(
    rows: list[dict[str, Any]], schema: pa.Schema, partition: int, offset: int, base: int = 0
) -> pa.Table:
    """Rows made from one source message: their positions are its offset and base + i."""
    for i, row in enumerate(rows):
        row["source_partition"], row["source_offset"] = partition, offset
        row["source_index"] = base + i
    return pa.Table.from_pylist(rows, schema=schema)


def split_by_day(column: str, partition_name: str) -> Any:
    def split(table: pa.Table) -> Iterable[tuple[str, pa.Table]]:
        dates = pc.strftime(table[column], format="%Y-%m-%d")
        for date in sorted(set(dates.to_pylist())):
            yield f"{partition_name}={date}", table.filter(pc.equal(dates, date))

    return split


ROLLUP_SCHEMA = pa.schema(
    [
        ("metric", pa.string()),
        ("window", pa.string()),
        ("window_start", TS),
        ("window_end", TS),
        ("dimensions", pa.string()),  # JSON text, "{}" when none
        ("value", pa.float64()),
        ("numerator", pa.float64()),
        ("denominator", pa.float64()),
        ("finalised_at", TS),
        ("source_partition", pa.int32()),
        ("source_offset", pa.int64()),
        ("source_index", pa.int32()),
    ]
)


# One row when an incident fires and one when it resolves (same alert_id); the alerts view
# joins them into one row per incident.
ALERT_SCHEMA = pa.schema(
    [
        ("alert_id", pa.string()),
        ("kind", pa.string()),  # "fire" | "resolve"
        ("rule", pa.string()),
        ("metric", pa.string()),
        ("dimensions", pa.string()),
        ("severity", pa.string()),
        ("window_start", TS),
        ("window_end", TS),  # event time of the data that made it fire (or resolve)
        ("observed", pa.float64()),
        ("expected", pa.float64()),
        ("message", pa.string()),
        ("runbook_url", pa.string()),
        ("at", TS),
        ("source_partition", pa.int32()),
        ("source_offset", pa.int64()),
        ("source_index", pa.int32()),
    ]
)


# ``trackflow segments build`` (pipeline/analytics/tags.py): one row per person.
PERSON_TAGS_SCHEMA = pa.schema(
    [
        ("person_id", pa.string()),
        ("lifecycle_stage", pa.string()),  # new | returning | resurrecting | dormant | inactive
        ("rfm_segment", pa.string()),  # null without a pay_success in the RFM window
        ("r", pa.int64()),
        ("f", pa.int64()),
        ("m", pa.int64()),
        ("first_seen", TS),
        ("last_seen", TS),
        ("orders", pa.int64()),
        ("gmv", pa.decimal128(38, 2)),
        ("repurchase", pa.bool_()),
        ("as_of", pa.date32()),
        ("period", pa.string()),
        ("built_at", TS),
    ]
)
