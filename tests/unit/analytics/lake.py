"""Tiny hand-built lakes for the analytics tests: events and identities written the way the
sink writes them (same schemas and Hive layout), without a broker."""

from __future__ import annotations

from datetime import date, datetime
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from pipeline.contract.plan import load_plan
from pipeline.lake import history, maintain
from pipeline.lake.retention import Retention
from pipeline.lake.schema import IDENTITY_SCHEMA, EventBatches, EventsSplitter

_PLAN = load_plan()


def ms(text: str) -> int:
    """Epoch ms of an RFC 3339 time with offset, e.g. 2026-03-02T23:30:00+08:00."""
    return int(datetime.fromisoformat(text).timestamp() * 1000)


def ev(
    name: str,
    at: str,
    anon: str | None = None,
    user: str | None = None,
    person: str | None = None,
    **props: Any,
) -> dict[str, Any]:
    """One stored event. ``person`` is the person_id the stream gave it (default: the
    user_id, else the device), as the stitch stage does before any link is known."""
    if name == "page_view" and not props:
        props = {"page": "home"}
    if name == "login" and not props:
        props = {"method": "phone"}
    return {
        "event_name": name,
        "event_time": ms(at),
        "anonymous_id": anon,
        "user_id": user,
        "person_id": person or (f"p_{user}" if user else f"p_{anon}"),
        "properties": props,
    }


def write_events(data_dir: Path, events: list[dict[str, Any]], name: str = "t") -> None:
    rows = []
    for i, e in enumerate(events):
        rows.append(
            {
                "event_id": f"{name}-{i}",
                "received_at": e["event_time"],
                "platform": "miniprogram",
                "app_version": None,
                "channel": None,
                "identities": None,
                "consent_marketing": None,
                "schema_version": 1,
                "source_partition": 0,
                "source_offset": i,
                "source_index": 0,
                **e,
            }
        )
    table = EventBatches(_PLAN).build(rows)
    for rel, part in EventsSplitter(_PLAN)(table):
        folder = data_dir / "lake" / "events" / rel
        folder.mkdir(parents=True, exist_ok=True)
        pq.write_table(part, folder / f"{name}.parquet")


def write_identities(data_dir: Path, rows: list[tuple[str, str, str]], name: str = "t") -> None:
    """(identifier_type, identifier, person_id) rows: One ID's current map."""
    records = [
        {
            "identifier_type": kind,
            "identifier": value,
            "person_id": person,
            "first_seen": 0,
            "last_seen": 0,
            "updated_at": 0,
            "source_partition": 0,
            "source_offset": i,
            "source_index": 0,
        }
        for i, (kind, value, person) in enumerate(rows)
    ]
    folder = data_dir / "lake" / "identities" / "updated_date=1970-01-01"
    folder.mkdir(parents=True, exist_ok=True)
    pq.write_table(
        pa.Table.from_pylist(records, schema=IDENTITY_SCHEMA), folder / f"{name}.parquet"
    )


def drop_past_retention(data_dir: Path, today: date, days: int = 90) -> None:
    """``lake maintain`` on ``today`` with ``days`` of events kept (no privacy requests)."""
    maintain.maintain(
        data_dir / "lake",
        Retention({"events": days}),
        target_rows=100,
        today=today,
        guard=history.NO_PRIVACY,
    )
