"""Compaction of a lake of many small files (issue 18): time, resulting files, query time.

Builds a lake the way the sink leaves it after a busy day: ``--files`` small Parquet files
(default 50,000, ``--rows`` events each) of the events table, spread over ``--partitions``
source partitions and ``--event-names`` event names of one day, each file named and
checkpointed as the lake writer does (written directly, without the writer's fsyncs, so
the build is quick). Then runs ``trackflow lake maintain`` (in process: ``maintain``) and
reports the time it took, the files before and after, a second run (idempotence: nothing
to do) and the time of a count and a per-event aggregate through the ``events`` view
before and after. The rows are checked: same count, each event id once.

Run: ``.venv/bin/python -m bench.lake_maintain [--files N] [--rows N] [--out PATH]``.
Prints (and with --out writes) JSON. The machine is shared: compare figures of one run.
"""

from __future__ import annotations

import argparse
import shlex
import sys
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import orjson
import pyarrow as pa
import pyarrow.parquet as pq

from bench.report import emit, machine
from pipeline.contract.plan import load_plan
from pipeline.contract.positions import pack
from pipeline.lake.durable import atomic_write_bytes
from pipeline.lake.history import NO_PRIVACY
from pipeline.lake.inventory import table_stats
from pipeline.lake.maintain import maintain
from pipeline.lake.retention import Retention
from pipeline.lake.schema import EventBatches, EventsSplitter
from pipeline.lake.views import connect
from pipeline.lake.writer import file_name
from pipeline.names import LAKE_EVENTS, TOPIC_RAW

EVENT_NAMES = ["page_view", "element_click", "exposure", "add_to_cart", "login"]
PROPS: dict[str, dict[str, Any]] = {
    "page_view": {"page": "home"},
    "element_click": {"element_id": "buy", "page": "item"},
    "exposure": {"element_id": "banner", "page": "home"},
    "add_to_cart": {"product_id": "p1", "quantity": 1, "price": 9.9},
    "login": {"method": "phone"},
}


def build(lake: Path, files: int, rows: int, partitions: int, names: list[str]) -> dict[str, Any]:
    """Small files named and checkpointed as the writer leaves them; returns counts."""
    started = time.monotonic()
    plan = load_plan()
    batches, splitter = EventBatches(plan), EventsSplitter(plan)
    day = datetime.now(UTC).date() - timedelta(days=1)
    t0 = int(datetime(day.year, day.month, day.day, 12, tzinfo=UTC).timestamp() * 1000)
    templates: dict[str, tuple[str, pa.Table]] = {}
    for name in names:
        row = _row(name, t0)
        [(rel, table)] = list(splitter(batches.build([row] * rows)))
        templates[name] = (rel, table)
    offsets = dict.fromkeys(range(partitions), 0)
    for i in range(files):
        partition = i % partitions
        name = names[(i // partitions) % len(names)]
        rel, template = templates[name]
        first = offsets[partition]
        offsets[partition] += rows
        table = _positioned(template, partition, first, rows)
        directory = lake / LAKE_EVENTS / rel
        directory.mkdir(parents=True, exist_ok=True)
        path = directory / file_name(
            TOPIC_RAW, partition, pack(first, 0), pack(first + rows - 1, 0)
        )
        pq.write_table(table, path, compression="zstd")
    checkpoints = lake / "_checkpoints" / LAKE_EVENTS
    checkpoints.mkdir(parents=True, exist_ok=True)
    for partition, end in offsets.items():
        last = pack(end - 1, 0)
        doc = {"offset": end - 1, "index": 0, "position": last}
        atomic_write_bytes(checkpoints / f"{TOPIC_RAW}-p{partition}.json", orjson.dumps(doc))
    return {"seconds": round(time.monotonic() - started, 1), "rows": files * rows}


def _row(name: str, t: int) -> dict[str, Any]:
    return {
        "event_id": "x",
        "event_name": name,
        "event_time": t,
        "received_at": t + 500,
        "anonymous_id": "dev-1",
        "user_id": None,
        "person_id": "p_1",
        "platform": "web",
        "app_version": "1.0.0",
        "channel": None,
        "identities": None,
        "consent_marketing": None,
        "schema_version": 1,
        "properties": PROPS[name],
        "source_partition": 0,
        "source_offset": 0,
        "source_index": 0,
    }


def _positioned(template: pa.Table, partition: int, first: int, rows: int) -> pa.Table:
    offsets = pa.array(range(first, first + rows), pa.int64())
    ids = pa.array([f"e{partition}-{o}" for o in range(first, first + rows)])
    parts = pa.array([partition] * rows, pa.int32())
    table = template
    for column, values in (
        ("source_offset", offsets),
        ("event_id", ids),
        ("source_partition", parts),
    ):
        table = table.set_column(table.schema.get_field_index(column), column, values)
    return table


def queries(data_dir: Path) -> dict[str, Any]:
    con = connect(data_dir)
    out: dict[str, Any] = {}
    started = time.monotonic()
    row = con.execute("SELECT count(*), count(DISTINCT event_id) FROM events").fetchone()
    out["count_seconds"] = round(time.monotonic() - started, 2)
    assert row is not None
    out["rows"], out["distinct_event_ids"] = row
    started = time.monotonic()
    con.execute("SELECT event_name, count(*) FROM events GROUP BY 1").fetchall()
    out["group_by_seconds"] = round(time.monotonic() - started, 2)
    con.close()
    return out


def run(files: int, rows: int, partitions: int, names: list[str], target: int) -> dict[str, Any]:
    with tempfile.TemporaryDirectory(prefix="lake-maintain-") as tmp:
        data_dir = Path(tmp)
        lake = data_dir / "lake"
        result: dict[str, Any] = {
            "files": files,
            "rows_per_file": rows,
            "source_partitions": partitions,
            "event_names": len(names),
            "target_rows": target,
        }
        result["build"] = build(lake, files, rows, partitions, names)
        before = table_stats(lake, LAKE_EVENTS)
        result["before"] = {"files": before.files, "bytes": before.bytes, **queries(data_dir)}
        started = time.monotonic()
        report = maintain(lake, Retention({}), guard=NO_PRIVACY, target_rows=target)
        result["maintain_seconds"] = round(time.monotonic() - started, 1)
        events = report.tables[LAKE_EVENTS]
        result["compacted"] = {
            "files_merged": events.files_compacted,
            "files_written": events.files_written,
            "rows": events.rows_compacted,
        }
        after = table_stats(lake, LAKE_EVENTS)
        result["after"] = {"files": after.files, "bytes": after.bytes, **queries(data_dir)}
        started = time.monotonic()
        again = maintain(lake, Retention({}), guard=NO_PRIVACY, target_rows=target)
        result["second_run"] = {
            "seconds": round(time.monotonic() - started, 1),
            "files_merged": again.tables[LAKE_EVENTS].files_compacted,
        }
        exact = (
            result["after"]["rows"] == result["before"]["rows"] == files * rows
            and result["after"]["distinct_event_ids"] == files * rows
        )
        result["exact"] = exact
        return result


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0] if __doc__ else None)
    ap.add_argument("--files", type=int, default=50_000, help="small files to build")
    ap.add_argument("--rows", type=int, default=20, help="events per small file")
    ap.add_argument("--partitions", type=int, default=8, help="source partitions")
    ap.add_argument("--event-names", type=int, default=len(EVENT_NAMES), help="directories")
    ap.add_argument("--target-rows", type=int, default=1_000_000, help="compaction target")
    ap.add_argument("--out", type=Path)
    args = ap.parse_args()
    names = EVENT_NAMES[: max(1, min(args.event_names, len(EVENT_NAMES)))]
    results: dict[str, Any] = {"machine": machine()}
    results["compaction"] = run(args.files, args.rows, args.partitions, names, args.target_rows)
    results["command"] = ".venv/bin/python -m bench.lake_maintain " + shlex.join(sys.argv[1:])
    emit(results, args.out)


if __name__ == "__main__":
    main()
