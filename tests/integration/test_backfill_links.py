"""Backfill next to a running pipeline: with --publish-links the workers' identity map
learns the backfilled links, so a live anonymous event of a backfilled device stays with
the member who logged in on it in the history (without them, the writer would record the
device under its own person again; docs/analytics.md, "Backfill")."""

from __future__ import annotations

import time

import orjson

from pipeline.identity.rules import load_identity_rules
from tests.support import Deployment, wait_for


def test_published_links_reach_the_running_writer(deployment: Deployment) -> None:
    member = load_identity_rules().person_id("user_id:u-hist")
    history = [
        {"event_id": "h1", "event_name": "page_view", "event_time": "2025-06-01T10:00:00+08:00",
         "anonymous_id": "dev-hist", "platform": "ios", "properties": {"page": "home"}},
        {"event_id": "h2", "event_name": "login", "event_time": "2025-06-01T10:01:00+08:00",
         "anonymous_id": "dev-hist", "user_id": "u-hist", "platform": "ios",
         "properties": {"method": "phone"}},
    ]  # fmt: skip
    worker = deployment.start_worker()
    deployment.wait_assigned([worker])
    source = deployment.tmp / "history.jsonl"
    source.write_bytes(b"\n".join(orjson.dumps(e) for e in history) + b"\n")
    out = orjson.loads(deployment.run("backfill", str(source), "--publish-links").stdout)
    assert (out["stored"], out["link_messages"]) == (2, 1)
    wait_for(
        lambda: worker.metric("trackflow_identity_persons") >= 1,
        timeout=60,
        what="the writer applied the backfilled links",
    )
    live = {
        "event_id": "live-1",
        "event_name": "page_view",
        "event_time": int(time.time() * 1000),
        "anonymous_id": "dev-hist",
        "platform": "ios",
        "properties": {"page": "home"},
    }
    deployment.produce([orjson.dumps(live)])
    wait_for(lambda: deployment.count("events", "event_id = 'live-1'") == 1, timeout=60)
    time.sleep(2)  # the writer's identity rows of the live event, if any, are stored
    rows = deployment.query("SELECT event_id, person_id FROM events_resolved ORDER BY event_id")
    assert rows == [
        {"event_id": "h1", "person_id": member},
        {"event_id": "h2", "person_id": member},
        {"event_id": "live-1", "person_id": member},
    ]
