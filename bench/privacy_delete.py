"""How long deleting one person takes on a big lake, and what privacy costs the hot path.

Three measurements (issue 18, DESIGN 15):

- ``delete``: a lake of ``--events`` events (default 10 million) written the way the lake
  writer names and checkpoints its files (``--partitions`` source partitions, ``--days``
  days, a file per flush, event name and day), with an identity map of every person; one
  person with several devices, an openid and a phone (``--person-events`` events spread
  over every day) is deleted by the real ``Deleter`` (no broker: no request log). Reports
  the seconds, files scanned and rewritten, rows removed, and checks that none of the
  person's rows is left and every other row is.
- ``barrier``: the per-take cost of validate's privacy barrier (``PrivacyFollower.sync``:
  one ListOffsets round trip, then nothing to wait for) against an embedded broker, over
  ``--syncs`` calls: median and p99.
- ``check``: the per-event cost of the suppression check in the ingestor, with nobody
  suppressed and with ``--suppressed`` persons suppressed, over the same events.

Prints JSON and writes it to ``--out`` (default ``bench/results/<date>-privacy.json``).
The machine is shared: the load average is recorded.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import statistics
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import orjson
import pyarrow as pa
import pyarrow.parquet as pq

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.report import emit  # noqa: E402
from pipeline.contract.positions import pack  # noqa: E402
from pipeline.identity.rules import load_identity_rules  # noqa: E402
from pipeline.lake.durable import atomic_write_bytes  # noqa: E402
from pipeline.lake.schema import EVENT_COLUMNS, IDENTITY_SCHEMA  # noqa: E402
from pipeline.lake.writer import file_name  # noqa: E402

DAY_MS = 86_400_000
T0 = 1_795_000_000_000 - 1_795_000_000_000 % DAY_MS
NAMES = ("page_view", "element_click", "add_to_cart")
TARGET = "m-target"


def _events_schema() -> pa.Schema:
    return pa.schema([pa.field(n, t) for n, t in EVENT_COLUMNS])


def build_lake(
    lake: Path, events: int, partitions: int, days: int, flushes: int, target_n: int
) -> dict[str, int]:
    """Writer-named files with checkpoints; the target person's events spread evenly."""
    rules = load_identity_rules()
    rng = np.random.default_rng(7)
    persons = max(1, events // 10)
    schema = _events_schema()
    per_file = events // (partitions * days * flushes * len(NAMES))
    target_files = set(
        rng.choice(partitions * days * flushes * len(NAMES), target_n, replace=False).tolist()
    )
    target_devices = ["d-target-1", "d-target-2", "d-target-3"]
    files = written = 0
    k = 0
    for p in range(partitions):
        offset = 0
        for day in range(days):
            date = datetime.fromtimestamp((T0 + day * DAY_MS) / 1000, UTC).strftime("%Y-%m-%d")
            for _ in range(flushes):
                for name in NAMES:
                    ids = rng.integers(0, persons, per_file)
                    users = np.where(rng.random(per_file) < 0.3, ids, -1)
                    user_id = pa.array(
                        [f"m-{u}" if u >= 0 else None for u in users.tolist()], pa.string()
                    )
                    anon = pa.array([f"d-{i}" for i in ids.tolist()], pa.string())
                    pid = pa.array(
                        [rules.person_id(f"user_id:m-{i}") for i in ids.tolist()], pa.string()
                    )
                    if k in target_files:  # one of the target's events in this file
                        user_id = _set(user_id, 0, TARGET if k % 2 else None)
                        anon = _set(anon, 0, target_devices[k % 3])
                        pid = _set(pid, 0, rules.person_id(f"user_id:{TARGET}"))
                    k += 1
                    t = T0 + day * DAY_MS + np.sort(rng.integers(0, DAY_MS, per_file))
                    cols = {
                        "event_id": pa.array([f"e{p}-{offset + i}" for i in range(per_file)]),
                        "event_name": pa.array([name] * per_file),
                        "event_time": pa.array(t, pa.timestamp("ms", tz="UTC")),
                        "received_at": pa.array(t + 500, pa.timestamp("ms", tz="UTC")),
                        "anonymous_id": anon,
                        "user_id": user_id,
                        "person_id": pid,
                        "platform": pa.array(["miniprogram"] * per_file),
                        "source_partition": pa.array([p] * per_file, pa.int32()),
                        "source_offset": pa.array(np.arange(offset, offset + per_file), pa.int64()),
                        "source_index": pa.array([0] * per_file, pa.int32()),
                    }
                    table = pa.table(
                        {f.name: cols.get(f.name, pa.nulls(per_file, f.type)) for f in schema},
                        schema=schema,
                    )
                    directory = lake / "events" / f"event_date={date}" / f"event_name={name}"
                    directory.mkdir(parents=True, exist_ok=True)
                    name_ = file_name(
                        "events.raw", p, pack(offset, 0), pack(offset + per_file - 1, 0)
                    )
                    pq.write_table(table, directory / name_, compression="zstd")
                    offset += per_file
                    files += 1
                    written += per_file
        checkpoint = lake / "_checkpoints" / "events" / f"events.raw-p{p}.json"
        checkpoint.parent.mkdir(parents=True, exist_ok=True)
        last = pack(offset - 1, 0)
        atomic_write_bytes(
            checkpoint, orjson.dumps({"offset": offset - 1, "index": 0, "position": last})
        )
    _identities(lake, rules, persons, target_devices)
    return {"files": files, "events": written, "target_events": target_n}


def _set(arr: pa.Array, i: int, value: str | None) -> pa.Array:
    values = arr.to_pylist()
    values[i] = value
    return pa.array(values, pa.string())


def _identities(lake: Path, rules: object, persons: int, target_devices: list[str]) -> None:
    pid_of = rules.person_id  # type: ignore[attr-defined]
    nodes = [("user_id", f"m-{i}") for i in range(persons)] + [
        ("anonymous_id", f"d-{i}") for i in range(persons)
    ]
    owners = [f"m-{i}" for i in range(persons)] * 2
    nodes += [("user_id", TARGET), ("openid", "o-target"), ("phone", "f" * 64)]
    nodes += [("anonymous_id", d) for d in target_devices]
    owners += [TARGET] * (3 + len(target_devices))
    n = len(nodes)
    t = pa.array([T0] * n, pa.timestamp("ms", tz="UTC"))
    table = pa.table(
        {
            "identifier_type": [k for k, _ in nodes],
            "identifier": [v for _, v in nodes],
            "person_id": [pid_of(f"user_id:{o}") for o in owners],
            "first_seen": t,
            "last_seen": t,
            "updated_at": t,
            "source_partition": pa.array([0] * n, pa.int32()),
            "source_offset": pa.array(range(n), pa.int64()),
            "source_index": pa.array([0] * n, pa.int32()),
        },
        schema=IDENTITY_SCHEMA,
    )
    date = datetime.fromtimestamp(T0 / 1000, UTC).strftime("%Y-%m-%d")
    directory = lake / "identities" / f"updated_date={date}"
    directory.mkdir(parents=True, exist_ok=True)
    pq.write_table(table, directory / file_name("identity.links", 0, pack(0, 0), pack(n - 1, 0)))
    checkpoint = lake / "_checkpoints" / "identities" / "identity.links-p0.json"
    checkpoint.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_bytes(
        checkpoint, orjson.dumps({"offset": n - 1, "index": 0, "position": pack(n - 1, 0)})
    )


def bench_delete(data_dir: Path, args: argparse.Namespace) -> dict[str, object]:
    from pipeline.lake.views import connect
    from pipeline.privacy.deletion import Deleter
    from pipeline.privacy.requests import DELETE, PENDING, Request
    from pipeline.privacy.resolve import resolve

    lake = data_dir / "lake"
    started = time.perf_counter()
    built = build_lake(
        lake, args.events, args.partitions, args.days, args.flushes, args.person_events
    )
    build_seconds = time.perf_counter() - started
    rules = load_identity_rules()
    started = time.perf_counter()
    person = resolve(connect(data_dir), rules, "anonymous_id:d-target-2")
    resolve_seconds = time.perf_counter() - started
    request = Request(
        "pr-bench",
        DELETE,
        tuple(sorted(person.nodes)),
        tuple(sorted(person.pids)),
        "bench",
        None,
        PENDING,
    )
    deleter = Deleter(lake, lambda: connect(data_dir), rules, None, "bench-key")
    started = time.perf_counter()
    done = deleter.run(request)
    delete_seconds = time.perf_counter() - started
    con = connect(data_dir)
    left = con.execute(
        f"SELECT count(*) FROM events WHERE user_id = '{TARGET}' OR "
        "(user_id IS NULL AND anonymous_id LIKE 'd-target-%')"
    ).fetchone()
    total = con.execute("SELECT count(*) FROM events").fetchone()
    return {
        **built,
        "build_seconds": round(build_seconds, 1),
        "resolve_seconds": round(resolve_seconds, 2),
        "delete_seconds": round(delete_seconds, 2),
        "identifiers": len(person.nodes),
        "rows_removed": done.rows_removed,
        "removed_by_table": done.removed_by_table,
        "rows_of_person_left": left[0] if left else None,
        "other_rows_kept": (total[0] if total else 0)
        == built["events"] - done.removed_by_table.get("events", 0),
    }


async def _barrier(syncs: int) -> dict[str, object]:
    from pipeline.privacy.state import PrivacyState
    from pipeline.runtime.kafka_security import KafkaCluster
    from pipeline.runtime.privacy import PrivacyFollower
    from pipeline.runtime.telemetry import PipelineMetrics
    from pipeline.tools.broker import EmbeddedBroker

    with EmbeddedBroker() as broker:
        follower = PrivacyFollower(
            KafkaCluster(bootstrap=broker.url.removeprefix("kafka://")),
            "privacy.requests",
            PrivacyState(),
            PipelineMetrics(),
        )
        task = asyncio.create_task(follower.run())
        await follower.sync()  # started, caught up
        times = []
        for _ in range(syncs):
            t = time.perf_counter()
            await follower.sync()
            times.append(time.perf_counter() - t)
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
    times.sort()
    return {
        "syncs": syncs,
        "median_ms": round(statistics.median(times) * 1000, 3),
        "p99_ms": round(times[int(len(times) * 0.99) - 1] * 1000, 3),
        "per_event_us_at_take_500": round(statistics.median(times) * 1e6 / 500, 2),
    }


def bench_check(suppressed: int, n: int = 100_000, repeats: int = 5) -> dict[str, object]:
    """The check as the ingestor calls it, per event, and the refresh validate does once
    per take; the best of ``repeats`` runs (the machine is shared)."""
    from pipeline.privacy.requests import SUPPRESS, Request
    from pipeline.privacy.state import PrivacyState

    ids = [
        (f"m-{i % 3000}" if i % 3 else None, f"d-{i % 5000}", {"openid": f"o-{i % 4000}"})
        for i in range(n)
    ]
    person = {f"anonymous_id:d-{i}": f"p{i % 3000}" for i in range(5000)}
    person.update({f"user_id:m-{i}": f"p{i}" for i in range(3000)})
    out: dict[str, object] = {"suppressed_persons": suppressed, "events": n}
    for label, count in (("nobody", 0), ("suppressed", suppressed)):
        state = PrivacyState(person.get)
        requests = [
            Request(f"r{i}", SUPPRESS, (f"user_id:x-{i}", f"anonymous_id:y-{i}"), seq=i)
            for i in range(count)
        ]
        state.apply(requests)
        best = best_refresh = float("inf")
        for _ in range(repeats):
            t = time.perf_counter()
            for user_id, anon, extra in ids:
                state.suppressed(user_id, anon, extra)
            best = min(best, time.perf_counter() - t)
            t = time.perf_counter()
            state.refresh()
            best_refresh = min(best_refresh, time.perf_counter() - t)
        out[f"{label}_us_per_event"] = round(best * 1e6 / n, 3)
        out[f"{label}_refresh_us_per_take"] = round(best_refresh * 1e6, 1)
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    ap.add_argument("--events", type=int, default=10_000_000)
    ap.add_argument("--partitions", type=int, default=8)
    ap.add_argument("--days", type=int, default=14)
    ap.add_argument("--flushes", type=int, default=8, help="files per partition, day and event")
    ap.add_argument("--person-events", type=int, default=60)
    ap.add_argument("--syncs", type=int, default=2000)
    ap.add_argument("--suppressed", type=int, default=1000)
    ap.add_argument("--data-dir", type=Path, default=None, help="keep the lake here")
    ap.add_argument(
        "--out",
        type=Path,
        default=ROOT / "bench" / "results" / f"{datetime.now(UTC):%Y-%m-%d}-privacy.json",
    )
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        data_dir = args.data_dir or Path(tmp)
        report = {
            "bench": "privacy_delete",
            "date": datetime.now(UTC).isoformat(timespec="seconds"),
            "load_average": os.getloadavg(),
            "cpus": os.cpu_count(),
            "delete": bench_delete(data_dir, args),
            "barrier": asyncio.run(_barrier(args.syncs)),
            "check": bench_check(args.suppressed),
        }
    emit(report, args.out)


if __name__ == "__main__":
    main()
