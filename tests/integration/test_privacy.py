"""Privacy (DESIGN 15) through the real broker, real workers, the CLI and the lake."""

from __future__ import annotations

import itertools
import time
from typing import Any

import orjson

from pipeline.identity.rules import load_identity_rules
from tests.support import Deployment, Worker, wait_for

_ids = itertools.count()


def ev(name: str = "page_view", **over: Any) -> bytes:
    props = {"login": {"method": "phone"}}.get(name, {"page": "home"})
    obj: dict[str, Any] = {
        "event_id": f"pv-{next(_ids)}",
        "event_name": name,
        "event_time": int(time.time() * 1000) - 5_000,
        "platform": "miniprogram",
        "properties": props,
    }
    obj.update(over)
    return orjson.dumps(obj)


def login(user: str, device: str, **ids: str) -> bytes:
    return ev("login", user_id=user, anonymous_id=device, identities=ids or None)


def privacy(dep: Deployment, *args: str, check: bool = True) -> Any:
    proc = dep.run("privacy", *args, "--format", "json", check=check)
    return proc if not check else orjson.loads(proc.stdout)


def lake_text(dep: Deployment) -> str:
    """Every row of the tables deletion covers, as text (to search for any trace)."""
    rows = []
    for table in ("events", "dlq", "identities", "identity_merges"):
        rows += dep.query(f"SELECT * FROM {table}")
    return orjson.dumps(rows, default=str).decode()


def test_delete_by_each_identifier_type_leaves_no_trace(deployment: Deployment) -> None:
    dep = deployment
    worker = dep.start_worker()
    # a: two devices, two openids, a phone (browsing before login on each device); b, c, d
    # small persons deleted by device, member id and e-mail; keep: untouched.
    people = [
        ev(anonymous_id="dev-a1"),
        login("mem-a", "dev-a1", openid="open-a1", phone="138 0013 8001"),
        ev(anonymous_id="dev-a2"),
        login("mem-a", "dev-a2", openid="open-a2"),
        ev(anonymous_id="dev-a2", platform="windows"),  # dead-lettered: a's too
        ev(anonymous_id="dev-b1"),
        ev(anonymous_id="dev-b1", identities={"openid": "open-b1"}),
        login("mem-c", "dev-c1"),
        ev(anonymous_id="dev-d1", identities={"email": "D.Person@Example.com"}),
        login("mem-keep", "dev-keep"),
        ev(anonymous_id="dev-keep"),
        ev(anonymous_id="dev-keep", platform="windows"),
    ]
    dep.produce([people[0], people[2]])  # browsing first: the logins then merge persons
    wait_for(lambda: dep.count("identities") >= 2, timeout=60)
    dep.produce([people[1], people[3], *people[4:]])
    dep.wait_settled(
        lambda: (
            dep.count("events") == 10 and dep.count("dlq") == 2 and dep.count("identities") == 14
        )
    )
    keep_before = dep.query(
        "SELECT event_id, person_id FROM events WHERE anonymous_id = 'dev-keep' ORDER BY 1"
    )
    rules = load_identity_rules()
    ids_a = ("user_id:mem-a", "anonymous_id:dev-a1", "anonymous_id:dev-a2", "openid:open-a1")
    pids_a = ", ".join(f"'{rules.person_id(n)}'" for n in ids_a)
    merged = f"from_person_id IN ({pids_a}) OR to_person_id IN ({pids_a})"
    assert dep.count("identity_merges", merged) >= 1  # browsing, then the login

    done = [
        privacy(dep, "delete", "--phone", "+86 138-0013-8001", "--reason", "asked"),
        privacy(dep, "delete", "--anonymous-id", "dev-b1"),
        privacy(dep, "delete", "--user-id", "mem-c"),
        privacy(dep, "delete", "--email", " d.person@example.COM "),
    ]
    assert [r[0]["status"] for r in done] == ["done"] * 4
    assert done[0][0]["removed_by_table"]["events"] == 4
    assert done[0][0]["removed_by_table"]["dlq"] == 1
    assert done[0][0]["rows_removed"] >= 4 + 1 + 5

    text = lake_text(dep)
    for trace in ("mem-a", "dev-a1", "dev-a2", "open-a1", "open-a2", "dev-b1", "open-b1"):
        assert trace not in text, trace
    for trace in ("mem-c", "dev-c1", "dev-d1"):
        assert trace not in text, trace
    assert dep.count("events") == 2
    assert dep.count("identity_merges", merged) == 0
    assert dep.count("dlq") == 1
    assert (
        dep.query(
            "SELECT event_id, person_id FROM events WHERE anonymous_id = 'dev-keep' ORDER BY 1"
        )
        == keep_before
    )

    # The audit: each request pending, running, done; identifiers never in clear.
    audit = dep.query("SELECT request_id, action, status, actor, reason, identifiers FROM audit")
    by_request: dict[str, list[str]] = {}
    for row in audit:
        by_request.setdefault(row["request_id"], []).append(row["status"])
    assert sorted(by_request.values()) == [["pending", "running", "done"]] * 4
    assert {r["reason"] for r in audit} == {"asked", None}
    assert all(r["actor"] for r in audit)
    assert "mem-a" not in orjson.dumps(audit).decode()

    # The worker's identity map no longer holds them; their new events are suppressed.
    wait_for(lambda: worker.metric("trackflow_identity_identifiers") == dep.count("identities"))
    dep.produce(
        [
            ev(anonymous_id="dev-a1"),
            ev(user_id="mem-c", anonymous_id="dev-new"),
            ev(anonymous_id="dev-new2", identities={"phone": "13800138001"}),
            ev(anonymous_id="dev-b1", platform="windows"),  # bad: not dead-lettered either
            ev(anonymous_id="dev-keep"),
        ]
    )
    dep.wait_settled(lambda: dep.count("events") == 3)
    assert dep.count("dlq") == 1
    assert worker.metric("trackflow_privacy_suppressed_events_total") == 4
    assert "dev-new" not in lake_text(dep)

    # An unknown identifier: a clear message, exit 2, nothing recorded.
    proc = privacy(dep, "delete", "--user-id", "nobody-at-all", check=False)
    assert proc.returncode == 2
    assert b"no person in One ID has user_id 'nobody-at-all'" in proc.stderr
    assert b"Traceback" not in proc.stderr
    assert [r["status"] for r in privacy(dep, "status")] == ["done"] * 4
    assert dep.count("audit") == 12


def test_suppression_holds_on_every_worker_from_when_the_command_returns(
    deployment: Deployment,
) -> None:
    dep = deployment
    workers = [dep.start_worker(), dep.start_worker()]
    dep.wait_assigned(workers)
    devices = [f"dev-s{i}" for i in range(12)]  # keys spread over both workers' partitions
    dep.produce([login("mem-s", d) for d in devices] + [login("mem-t", "dev-t")])
    dep.wait_settled(lambda: dep.count("identities") == len(devices) + 3)

    [request] = privacy(dep, "suppress", "--user-id", "mem-s", "--reason", "objected")
    assert request["status"] == "done"
    assert request["action"] == "suppress"
    # Produced right after the command returned: none of it may be stored.
    dep.produce([ev(anonymous_id=d) for d in devices] + [ev(anonymous_id="dev-t")])
    dep.produce([ev(user_id="mem-s", anonymous_id=d, platform="windows") for d in devices[:4]])
    dep.wait_settled(lambda: dep.count("events") == 14)
    counted = [w.metric("trackflow_privacy_suppressed_events_total") for w in workers]
    assert sum(counted) == 16, counted
    assert all(n > 0 for n in counted), counted
    assert dep.count("dlq") == 0

    # Lifted: stored again, on every worker.
    privacy(dep, "unsuppress", "--anonymous-id", "dev-s3")
    dep.produce([ev(anonymous_id=d) for d in devices])
    dep.wait_settled(lambda: dep.count("events") == 26)
    statuses = [(r["action"], r["status"]) for r in privacy(dep, "status")]
    assert statuses == [("suppress", "done"), ("unsuppress", "done")]
    _metrics_agree(workers)


def _metrics_agree(workers: list[Worker]) -> None:
    for w in workers:
        metrics = w.metrics()
        assert metrics['trackflow_privacy_requests{action="suppress",status="done"}'] == 1
        assert metrics["trackflow_privacy_oldest_pending_age_seconds"] == 0
        assert metrics["trackflow_privacy_sync_seconds_count"] > 0


def test_a_deletion_killed_mid_way_leaves_whole_files_and_a_worker_finishes_it(
    deployment: Deployment,
) -> None:
    """SIGKILL of ``trackflow privacy delete`` between two file rewrites (the third file
    staged and journaled, not renamed): every file old or new, each row once in the views;
    the request stays running and a worker finishes it with the full count."""
    import signal
    import subprocess

    import pyarrow.parquet as pq

    from tests.support import BIN
    from tests.unit.privacy.lake import person_events, write_events, write_identities

    dep = deployment
    lake = dep.data_dir / "lake"
    pid_k = "p_k"
    for f in range(6):  # six flushes: six files, each with the person's and others' rows
        rows = person_events(f * 10, 3, user_id="mem-k", anonymous_id="dev-k", person_id=pid_k)
        rows += person_events(f * 10 + 3, 2, anonymous_id="dev-other", person_id="p_o")
        write_events(lake, rows)
    write_identities(lake, [("user_id:mem-k", pid_k), ("anonymous_id:dev-k", pid_k)], 0)
    files = sorted((lake / "events").rglob("*.parquet"))
    assert len(files) == 6

    env = {**dep.env, "TRACKFLOW_TEST_PAUSE_AT": "journal:3"}
    proc = subprocess.Popen(
        [str(BIN), "privacy", "delete", "--user-id", "mem-k"],
        env=env,
        stderr=subprocess.PIPE,
        stdout=subprocess.DEVNULL,
    )
    assert proc.stderr is not None
    line = proc.stderr.readline()
    while line and b"paused at journal" not in line:
        line = proc.stderr.readline()
    assert b"paused at journal" in line
    proc.send_signal(signal.SIGKILL)
    proc.wait(10)

    assert dep.count("events", "anonymous_id = 'dev-other'") == 12  # each other row once
    left = dep.count("events", "user_id = 'mem-k'")
    assert left == 18 - 2 * 3  # two files rewritten, the third not yet renamed
    for path in files:  # old or new, never half
        users = set(pq.read_table(path, columns=["user_id"]).column("user_id").to_pylist())
        assert users in ({None, "mem-k"}, {None})
    [request] = privacy(dep, "status")
    assert request["status"] == "running"

    dep.env["TRACKFLOW_PRIVACY_RESUME_SECONDS"] = "1"
    dep.start_worker()
    wait_for(lambda: privacy(dep, "status")[0]["status"] == "done", timeout=90)
    [request] = privacy(dep, "status")
    assert request["rows_removed"] == 18 + 2
    assert request["removed_by_table"] == {"events": 18, "identities": 2}
    assert dep.count("events", "user_id = 'mem-k' OR anonymous_id = 'dev-k'") == 0
    assert dep.count("events") == 12
    assert not list(lake.rglob(".*.rewrite"))
    statuses = [r["status"] for r in dep.query("SELECT status FROM audit")]
    assert statuses == ["pending", "running", "running", "done"]
