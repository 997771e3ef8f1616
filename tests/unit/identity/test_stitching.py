"""The stitch stage's per-batch work: person ids from the local map, and which links to send."""

from __future__ import annotations

from typing import Any

import pyarrow as pa

from pipeline.identity.graph import IdentityGraph
from pipeline.identity.rules import load_identity_rules
from pipeline.lake.schema import EVENT_COLUMNS, TS

RULES = load_identity_rules()
HOUR = 3_600_000


def batch(rows: list[dict[str, Any]]) -> pa.Table:
    cols = dict(EVENT_COLUMNS)
    data = {
        "user_id": [r.get("user_id") for r in rows],
        "anonymous_id": [r.get("anonymous_id") for r in rows],
        "identities": [r.get("identities") for r in rows],
        "event_time": [r["t"] for r in rows],
        "person_id": [None] * len(rows),
    }
    return pa.table(
        {k: pa.array(v, type=cols[k] if k != "event_time" else TS) for k, v in data.items()}
    )


def stitcher() -> Any:
    from pipeline.identity.stitching import Stitcher

    return Stitcher(RULES, IdentityGraph(RULES), HOUR)


def test_member_events_belong_to_the_member_even_on_anothers_device() -> None:
    s = stitcher()
    s.graph.add([("user_id:a", "anonymous_id:d", 1)])
    out, _ = s.stitch(batch([{"user_id": "b", "anonymous_id": "d", "t": 5}]))
    assert out.column("person_id").to_pylist() == [RULES.person_id("user_id:b")]


def test_anonymous_events_follow_the_device_owner() -> None:
    s = stitcher()
    s.graph.add([("user_id:a", "anonymous_id:d", 1)])
    out, _ = s.stitch(batch([{"anonymous_id": "d", "t": 5}, {"anonymous_id": "new", "t": 5}]))
    assert out.column("person_id").to_pylist() == [
        RULES.person_id("user_id:a"),
        RULES.person_id("anonymous_id:new"),
    ]


def test_links_are_a_star_sent_once_per_refresh_period() -> None:
    s = stitcher()
    rows = [
        {"user_id": "a", "anonymous_id": "d", "identities": '{"openid":"o"}', "t": 10},
        {"user_id": "a", "anonymous_id": "d", "identities": '{"openid":"o"}', "t": 30},
    ]
    _, links = s.stitch(batch(rows))
    # last_seen is kept to within TRACKFLOW_IDENTITY_REFRESH_SECONDS, not per event.
    assert sorted(links) == [("user_id:a", "anonymous_id:d", 10), ("user_id:a", "openid:o", 10)]
    # Sent, not yet applied: not sent again. Applied and fresh: not sent again either.
    assert s.stitch(batch(rows))[1] == []
    s.graph.add(links)
    s._sent.clear()
    assert s.stitch(batch(rows))[1] == []


def test_earlier_sighting_and_stale_last_seen_are_sent_again() -> None:
    s = stitcher()
    s.graph.add([("anonymous_id:d", "anonymous_id:d", 10 * HOUR)])
    assert s.stitch(batch([{"anonymous_id": "d", "t": 10 * HOUR + 5}]))[1] == []
    assert s.stitch(batch([{"anonymous_id": "d", "t": 9 * HOUR}]))[1] == [
        ("anonymous_id:d", "anonymous_id:d", 9 * HOUR)
    ]
    later = 12 * HOUR
    assert s.stitch(batch([{"anonymous_id": "d", "t": later}]))[1] == [
        ("anonymous_id:d", "anonymous_id:d", later)
    ]
