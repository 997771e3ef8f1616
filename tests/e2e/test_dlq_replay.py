"""Dead-letter replay end to end (DESIGN 17): real broker, real worker, the real CLI.

Events fail a tracking plan that lacks a page and a login method; the plan is fixed (a
plan directory of the deployment, TRACKFLOW_SCHEMAS_DIR) and the worker restarted; then
``trackflow dlq replay`` must store them once with their original ids, leave what still
fails as a new dead letter marked ``replay_of``, change nothing when run again or dry, and
refuse bad arguments with a clear message.
"""

from __future__ import annotations

import json
import shutil
import time
from pathlib import Path
from typing import Any

import orjson
import pytest

from pipeline.contract.pii import PiiHasher
from pipeline.contract.plan import default_schemas_dir
from tests.support import Deployment, wait_for

PHONE = "13912345678"
SECRET = "test-secret"  # tests.support.Deployment's TRACKFLOW_PII_SECRET


def add_symbol(plan: Path, event: str, field: str, symbol: str) -> None:
    path = plan / "events" / event / "v1.avsc"
    schema = json.loads(path.read_text())
    spec = next(f for f in schema["fields"] if f["name"] == field)
    spec["type"]["symbols"].append(symbol)
    path.write_text(json.dumps(schema, indent=2))


def event(i: int, page: str = "live", **over: Any) -> dict[str, Any]:
    e: dict[str, Any] = {
        "event_id": f"rp-{i}",
        "event_name": "page_view",
        "event_time": int(time.time() * 1000) - 60_000,
        "anonymous_id": f"dev-{i}",
        "platform": "miniprogram",
        "properties": {"page": page},
    }
    e.update(over)
    return e


def replay(dep: Deployment, *args: str) -> dict[str, Any]:
    out = dep.run("dlq", "replay", "--format", "json", *args).stdout
    report: dict[str, Any] = orjson.loads(out)
    return report


def lake_files(dep: Deployment) -> set[str]:
    lake = dep.data_dir / "lake"
    return {str(p.relative_to(lake)) for p in lake.rglob("*") if p.is_file()}


@pytest.fixture
def plan(deployment: Deployment) -> Path:
    root = deployment.tmp / "schemas"
    shutil.copytree(default_schemas_dir(), root)
    deployment.env["TRACKFLOW_SCHEMAS_DIR"] = str(root)
    deployment.env["TRACKFLOW_DLQ_MAX_PAYLOAD_BYTES"] = "1024"  # the minimum: cut one
    return root


def test_replay_after_a_plan_fix_stores_once_and_marks_what_fails_again(
    deployment: Deployment, plan: Path
) -> None:
    dep = deployment
    fixable = [event(i) for i in range(4)]
    login = event(
        5,
        event_name="login",
        user_id="m-5",
        identities={"phone": PHONE},
        properties={"method": "sms"},
    )
    still_bad = event(6, page="bogus")
    cut = event(7, properties={"page": "live", "referrer": "r" * 1500})
    good = event(8, page="home")
    worker = dep.start_worker()
    dep.produce([orjson.dumps(e) for e in [*fixable, login, still_bad, cut, good]])
    dep.wait_settled(lambda: dep.count("events") == 1 and dep.count("dlq") == 7)
    originals = {
        r["event_id"]: r
        for r in dep.query(
            "SELECT event_id, error_code, source_partition, source_offset, source_index, "
            "payload_truncated FROM dlq"
        )
    }
    assert originals["rp-7"]["payload_truncated"]

    # Bad arguments: a clear message, exit 2, nothing done.
    late = dep.run(
        "dlq", "replay", "--from", "2026-11-24T00:00:00Z", "--to", "2026-11-23", check=False
    )
    assert late.returncode == 2
    assert b"--from" in late.stderr
    assert b"must be before --to" in late.stderr
    unknown = dep.run("dlq", "replay", "--code", "no_such_code", check=False)
    assert unknown.returncode == 2
    assert b"'no_such_code' is not an error code" in unknown.stderr
    assert dep.run("dlq", "stats", "--from", "soon", check=False).returncode == 2

    stats = orjson.loads(dep.run("dlq", "stats", "--format", "json").stdout)
    assert sum(r["count"] for r in stats) == 7
    by = {(r["error_code"], r["event_name"]): r for r in stats}
    assert by[("invalid_value", "page_view")]["count"] == 6
    assert by[("invalid_value", "page_view")]["truncated"] == 1
    assert by[("invalid_value", "login")]["count"] == 1

    # A dry run counts and changes nothing (and needs no fix yet).
    before = lake_files(dep)
    dry = replay(dep, "--dry-run")
    assert dry["dry_run"]
    assert (dry["matched"], dry["replayed"], dry["truncated"]) == (7, 6, 1)
    assert lake_files(dep) == before

    # Fix the plan; the worker reads it when it starts.
    worker.stop()
    add_symbol(plan, "page_view", "page", "live")
    add_symbol(plan, "login", "method", "sms")
    fixed_worker = dep.start_worker()
    first = replay(dep)
    assert (first["matched"], first["replayed"], first["truncated"]) == (7, 6, 1)
    assert first["failed"] == 0
    assert first["in_doubt"] == 0

    fixed_ids = {e["event_id"] for e in [*fixable, login]}
    dep.wait_settled(
        lambda: dep.count("events") == 1 + len(fixed_ids) and dep.count("dlq") == 8, timeout=120
    )
    stored = dep.query("SELECT event_id, identities FROM events")
    assert sorted(r["event_id"] for r in stored) == sorted({*fixed_ids, good["event_id"]})
    (login_row,) = [r for r in stored if r["event_id"] == "rp-5"]
    # The dead letter's hashed phone is stored as the original would have been.
    assert orjson.loads(login_row["identities"])["phone"] == PiiHasher(SECRET).hash_phone(PHONE)

    (again,) = dep.query("SELECT * FROM dlq WHERE replay_of IS NOT NULL")
    o = originals["rp-6"]
    assert again["replay_of"] == (
        f"events.raw:{o['source_partition']}:{o['source_offset']}:{o['source_index']}"
    )
    assert (again["event_id"], again["error_code"]) == ("rp-6", "invalid_value")
    assert again["source_partition"] == o["source_partition"]  # sent where it came from

    # Again: nothing is sent, nothing changes.
    second = replay(dep)
    assert (second["replayed"], second["already_replayed"]) == (0, 6)
    assert (second["failed_again"], second["truncated"]) == (1, 1)
    dep.wait_settled(lambda: dep.count("events") == 6 and dep.count("dlq") == 8, quiet=4)
    stats = orjson.loads(dep.run("dlq", "stats", "--format", "json").stdout)
    assert sum(r["replayed"] for r in stats) == 6
    assert sum(r["failed_again"] for r in stats) == 1

    # An SDK retry of a replayed event is a duplicate of it.
    duplicates = fixed_worker.metric("trackflow_duplicates_total")
    dep.produce([orjson.dumps(event(0))])
    wait_for(
        lambda: fixed_worker.metric("trackflow_duplicates_total") > duplicates,
        what="the retry dropped as a duplicate",
    )
    assert dep.count("events", "event_id = 'rp-0'") == 1
