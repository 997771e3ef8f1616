"""DuckDB over the lake, with the views of DESIGN section 7."""

from __future__ import annotations

import base64
import csv
import io
from collections.abc import Collection
from datetime import date, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

import duckdb
import orjson
import pyarrow as pa

from pipeline.contract.plan import TrackingPlan, load_plan
from pipeline.contract.profiles import load_profile_dictionary
from pipeline.contract.sql import literal
from pipeline.lake import profiles as member_views
from pipeline.lake.history import FIRST_ACTIVITY_SCHEMA
from pipeline.lake.journals import NO_JOURNAL, journal_dir
from pipeline.lake.schema import (
    ALERT_SCHEMA,
    AUDIT_SCHEMA,
    DLQ_REPLAY_SCHEMA,
    DLQ_SCHEMA,
    EVENT_COLUMNS,
    IDENTITY_SCHEMA,
    MERGE_SCHEMA,
    PERSON_TAGS_SCHEMA,
    ROLLUP_SCHEMA,
    arrow_type,
)
from pipeline.names import (
    LAKE_AUDIT,
    LAKE_DLQ_REPLAYS,
    LAKE_FIRST_ACTIVITY,
    LAKE_PERSON_TAGS,
    VIEW_AUDIT,
)

_DUCK_TYPES = {
    pa.string(): "VARCHAR",
    pa.int32(): "INTEGER",
    pa.int64(): "BIGINT",
    pa.float64(): "DOUBLE",
    pa.bool_(): "BOOLEAN",
    pa.binary(): "BLOB",
    pa.date32(): "DATE",
}


def _duck_type(typ: pa.DataType) -> str:
    if pa.types.is_timestamp(typ):
        return "TIMESTAMPTZ"
    if pa.types.is_decimal(typ):
        return f"DECIMAL({typ.precision},{typ.scale})"
    return _DUCK_TYPES[typ]


def _source(
    root: Path, columns: list[tuple[str, str]], partition_cols: list[tuple[str, str]]
) -> str:
    """SQL of a table: its Parquet files (if any) united by name with an empty typed frame.

    The empty frame gives every view its full column list even before the first file (or
    before the first event that fills an optional column) is written. For a table with the
    journal marker (its writers put it there before their first file, ``lake/journals.py``)
    each query also reads the rewrite journals (compaction, privacy deletion) and leaves out
    the files they say are not current, so a query shows each row once while a rewrite is
    in progress (``lake/rewrite.py``).
    """
    empty = ", ".join(f'NULL::{typ} AS "{name}"' for name, typ in columns + partition_cols)
    frame = f"SELECT {empty} WHERE false"
    if not root.exists() or next(root.rglob("*.parquet"), None) is None:
        return frame
    glob = literal((root / "**" / "*.parquet").as_posix())
    files = f"SELECT * FROM read_parquet({glob}, hive_partitioning = true, union_by_name = true)"
    journals = journal_dir(root.parent, root.name)
    if (journals / NO_JOURNAL).exists():
        lake = literal(root.parent.as_posix() + "/")
        hidden = (
            f"SELECT {lake} || unnest(CASE WHEN state = 'renamed' "
            "THEN list_filter(old, lambda x: NOT list_contains(new, x)) "
            "ELSE list_filter(new, lambda x: NOT list_contains(old, x)) END) "
            f"FROM read_json({literal((journals / '*.json').as_posix())}, "
            "columns = {'state': 'VARCHAR', 'old': 'VARCHAR[]', 'new': 'VARCHAR[]'})"
        )
        files = (
            f"SELECT * EXCLUDE (filename) FROM read_parquet({glob}, hive_partitioning = true, "
            f"union_by_name = true, filename = true) WHERE filename NOT IN ({hidden})"
        )
    return f"{files} UNION ALL BY NAME {frame}"


def _person_tags(lake: Path) -> str:
    """One file, replaced whole by each ``trackflow segments build``."""
    tag_cols = [(f.name, _duck_type(f.type)) for f in PERSON_TAGS_SCHEMA]
    return f"SELECT * FROM ({_source(lake / LAKE_PERSON_TAGS, tag_cols, [])})"


def _first_activity(lake: Path) -> str:
    """One file, written by ``lake maintain`` before it drops event partitions."""
    cols = [(f.name, _duck_type(f.type)) for f in FIRST_ACTIVITY_SCHEMA]
    return f"SELECT * FROM ({_source(lake / LAKE_FIRST_ACTIVITY, cols, [])})"


def _audit(lake: Path) -> str:
    """Privacy requests: one row per request and state change (DESIGN 15)."""
    cols = [(f.name, _duck_type(f.type)) for f in AUDIT_SCHEMA]
    return f'SELECT * FROM ({_source(lake / LAKE_AUDIT, cols, [])}) ORDER BY "at"'


def view_sql(lake: Path, plan: TrackingPlan) -> dict[str, str]:
    event_cols = [(n, _duck_type(t)) for n, t in EVENT_COLUMNS]
    props = [(s.name, _duck_type(arrow_type(s))) for s in plan.property_columns().values()]
    events_src = _source(lake / "events", event_cols + props, [("event_date", "DATE")])
    envelope = ", ".join(n for n, _ in EVENT_COLUMNS if n not in ("properties", "identities"))
    typed = ", ".join(n for n, _ in props)
    events = (
        f"SELECT {envelope}, properties::JSON AS properties, identities::JSON AS identities, "
        f"event_date, {typed} FROM ({events_src})"
    )
    dlq_cols = [(f.name, _duck_type(f.type)) for f in DLQ_SCHEMA]
    dlq_src = _source(lake / "dlq", dlq_cols, [("received_date", "DATE")])
    dlq = f"SELECT {', '.join(n for n, _ in dlq_cols)}, received_date FROM ({dlq_src})"
    replay_cols = [(f.name, _duck_type(f.type)) for f in DLQ_REPLAY_SCHEMA]
    # The replay ledger: each dead letter's latest state (its highest ledger file).
    dlq_replays = (
        f"SELECT * FROM ({_source(lake / LAKE_DLQ_REPLAYS, replay_cols, [])}) "
        "QUALIFY row_number() OVER (PARTITION BY replay_of ORDER BY seq DESC) = 1"
    )
    ident_cols = [(f.name, _duck_type(f.type)) for f in IDENTITY_SCHEMA]
    ident_src = _source(lake / "identities", ident_cols, [("updated_date", "DATE")])
    # The writer appends a row whenever an identifier's person or seen-range changes; the
    # latest row is the identifier's state: the latest decision (updated_at), then the
    # highest source position. updated_at first because two writers write here: the
    # stream's identity writer and ``trackflow backfill``, whose positions are not comparable.
    identities = (
        "SELECT identifier_type, identifier, person_id, first_seen, last_seen, updated_at "
        f"FROM ({ident_src}) QUALIFY row_number() OVER (PARTITION BY identifier_type, "
        "identifier ORDER BY updated_at DESC NULLS LAST, source_offset DESC, "
        "source_index DESC) = 1"
    )
    merge_cols = [(f.name, _duck_type(f.type)) for f in MERGE_SCHEMA]
    merge_src = _source(lake / "identity_merges", merge_cols, [("decided_date", "DATE")])
    merges = (
        'SELECT from_person_id, to_person_id, reason, accepted, "at", link_from, link_to, '
        f"decided_at FROM ({merge_src})"
    )
    # An event carrying a user_id belongs to that member; otherwise to its device's person.
    resolved = (
        "SELECT e.* REPLACE (CASE WHEN e.user_id IS NOT NULL "
        "THEN coalesce(u.person_id, e.person_id) "
        "ELSE coalesce(a.person_id, e.person_id) END AS person_id) "
        "FROM events e "
        "LEFT JOIN identities u ON u.identifier_type = 'user_id' AND u.identifier = e.user_id "
        "LEFT JOIN identities a ON a.identifier_type = 'anonymous_id' "
        "AND a.identifier = e.anonymous_id"
    )
    roll_cols = [(f.name, _duck_type(f.type)) for f in ROLLUP_SCHEMA]
    roll_src = _source(lake / "rollups", roll_cols, [("window_date", "DATE")])
    # One row per final value; a value re-sent after a crash (same series) is kept once.
    rollups = (
        'SELECT metric, "window", window_start, window_end, dimensions, value, numerator, '
        f"denominator, finalised_at FROM ({roll_src}) QUALIFY row_number() OVER ("
        'PARTITION BY metric, "window", window_start, dimensions '
        "ORDER BY source_offset, source_index) = 1"
    )
    alert_cols = [(f.name, _duck_type(f.type)) for f in ALERT_SCHEMA]
    alert_src = _source(lake / "alerts", alert_cols, [("alert_date", "DATE")])
    # One row per incident: the first fire record, and when its resolve record arrived.
    alerts = (
        f"WITH a AS (SELECT * FROM ({alert_src})), "
        "f AS (SELECT * FROM a WHERE kind = 'fire' QUALIFY row_number() OVER ("
        "PARTITION BY alert_id ORDER BY source_offset, source_index) = 1), "
        'r AS (SELECT alert_id, min("at") AS resolved_at, min(window_end) AS resolved_window_end '
        "FROM a WHERE kind = 'resolve' GROUP BY alert_id) "
        "SELECT f.alert_id, f.rule, f.metric, f.dimensions, f.severity, f.window_start, "
        'f.window_end, f.observed, f.expected, f.message, f."at", r.resolved_at, '
        "r.resolved_window_end, f.runbook_url FROM f LEFT JOIN r USING (alert_id)"
    )
    return {
        LAKE_PERSON_TAGS: _person_tags(lake),
        "alerts": alerts,
        "rollups": rollups,
        "events": events,
        "dlq": dlq,
        LAKE_DLQ_REPLAYS: dlq_replays,
        "identities": identities,
        "identity_merges": merges,
        "events_resolved": resolved,
    }


def _member_views(lake: Path, plan: TrackingPlan) -> dict[str, str]:
    """Profiles and imports (DESIGN 14), after ``identities``: the plan's own member
    dictionary, else the built-in one (a test plan may lack it)."""
    own = plan.root / "profiles" / "member"
    dictionary = load_profile_dictionary(own if own.is_dir() else None)
    return member_views.view_sql(lake, dictionary, _source, _duck_type)


def connect(
    data_dir: Path, plan: TrackingPlan | None = None, only: Collection[str] | None = None
) -> duckdb.DuckDBPyConnection:
    """A DuckDB connection with the lake's views; ``only`` creates just those of
    ``view_sql`` (the caller names any view they read).

    Creating a view binds it, and binding a table's view reads the footer of every one
    of its Parquet files: on a lake of 16,000 small event files (ten minutes of the
    soak's traffic, before the daily compaction) all views took 8.4 s and 800 MB. A
    worker that only reads ``rollups`` names it (docs/performance.md, "The takeover peak").
    """
    con = duckdb.connect()
    con.execute("SET TimeZone = 'UTC'")
    lake, plan = Path(data_dir) / "lake", plan or load_plan()
    if only is not None:
        views = {name: sql for name, sql in view_sql(lake, plan).items() if name in only}
        missing = set(only) - set(views)
        if missing:
            raise ValueError(f"no such lake view(s) for only=: {', '.join(sorted(missing))}")
    else:
        views = {
            **view_sql(lake, plan),
            **_member_views(lake, plan),
            VIEW_AUDIT: _audit(lake),
            LAKE_FIRST_ACTIVITY: _first_activity(lake),
        }
    for name, sql in views.items():
        con.execute(f"CREATE VIEW {name} AS {sql}")
    return con


def run(con: duckdb.DuckDBPyConnection, sql: str) -> tuple[list[str], list[tuple[Any, ...]]]:
    cur = con.execute(sql)
    columns = [d[0] for d in cur.description] if cur.description else []
    return columns, cur.fetchall()


def _plain(value: Any) -> Any:
    if isinstance(value, bytes):
        try:
            return value.decode("utf-8")
        except UnicodeDecodeError:
            return "base64:" + base64.b64encode(value).decode()
    if isinstance(value, Decimal):
        return float(value) if value == Decimal(repr(float(value))) else str(value)
    if isinstance(value, datetime | date):
        return value.isoformat()
    return value


def to_json(columns: list[str], rows: list[tuple[Any, ...]]) -> str:
    records = [{c: _plain(v) for c, v in zip(columns, row, strict=True)} for row in rows]
    return orjson.dumps(records, default=str).decode()


def to_json_object(value: Any) -> str:
    """Any nest of dicts and lists, with lake values made plain (times as ISO 8601)."""

    def plain(v: Any) -> Any:
        if isinstance(v, dict):
            return {k: plain(x) for k, x in v.items()}
        if isinstance(v, list):
            return [plain(x) for x in v]
        return _plain(v)

    return orjson.dumps(plain(value), default=str).decode()


def to_csv(columns: list[str], rows: list[tuple[Any, ...]]) -> str:
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(columns)
    for row in rows:
        writer.writerow(["" if v is None else _plain(v) for v in row])
    return out.getvalue()
