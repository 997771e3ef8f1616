"""The ``audit`` lake table: one row per privacy request and state change (DESIGN 15).

Written by whoever changes a request's state (the CLI, or the worker resuming a deletion),
one small Parquet file per row, renamed into place durably: it lives in the lake as long as
the data it accounts for, and ``trackflow query`` reads it as the ``audit`` view.
Identifiers are shown hashed again (``shown_identifiers``), so the audit keeps no value a
deleted person could be found by.
"""

from __future__ import annotations

import os
import time
import uuid
from pathlib import Path

import orjson
import pyarrow as pa
import pyarrow.parquet as pq

from pipeline.lake.durable import fsync_dir, fsync_file
from pipeline.lake.schema import AUDIT_SCHEMA
from pipeline.names import LAKE_AUDIT
from pipeline.privacy.requests import Request, shown_identifiers


def audit_row(request: Request, key: str, at: int | None = None) -> dict[str, object]:
    return {
        "request_id": request.request_id,
        "action": request.action,
        "identifiers": orjson.dumps(shown_identifiers(key, request.identifiers)).decode(),
        "actor": request.actor,
        "reason": request.reason,
        "status": request.status,
        "rows_removed": request.rows_removed,
        "at": at if at is not None else request.updated_at or int(time.time() * 1000),
        "requested_at": request.requested_at,
        "detail": orjson.dumps({"removed_by_table": request.removed_by_table}).decode(),
    }


def write_audit(lake_dir: Path, request: Request, key: str) -> Path:
    """Append the request's current state to the audit table; returns the file."""
    row = audit_row(request, key)
    at = row["at"]
    assert isinstance(at, int)
    directory = lake_dir / LAKE_AUDIT
    directory.mkdir(parents=True, exist_ok=True)
    name = f"{at:013d}-{request.request_id}-{request.status}-{uuid.uuid4().hex[:8]}"
    final = directory / f"{name}.parquet"
    tmp = directory / f".{name}.parquet.tmp"
    pq.write_table(pa.Table.from_pylist([row], schema=AUDIT_SCHEMA), tmp)
    fsync_file(tmp)
    os.replace(tmp, final)
    fsync_dir(directory)
    return final


def audited_states(lake_dir: Path) -> dict[str, set[str]]:
    """request id -> statuses the audit holds (to write what a crash left out)."""
    directory = lake_dir / LAKE_AUDIT
    out: dict[str, set[str]] = {}
    if not directory.exists():
        return out
    for path in directory.glob("*.parquet"):
        table = pq.read_table(path, columns=["request_id", "status"])
        for rid, status in zip(
            table["request_id"].to_pylist(), table["status"].to_pylist(), strict=True
        ):
            out.setdefault(rid, set()).add(status)
    return out
