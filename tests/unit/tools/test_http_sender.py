"""``simulate --via http``: an envelope turned into a Segment call maps back to itself."""

from __future__ import annotations

import contextlib
from typing import Any

import orjson

from pipeline.collector.mapping import RequestInfo, envelope
from pipeline.contract.errors import Rejected
from pipeline.contract.timeparse import parse_event_time
from pipeline.tools.http_sender import to_segment
from pipeline.tools.simulator import SimConfig, generate

RECEIVED = 1_795_420_800_000


def roundtrip(env: dict[str, Any]) -> dict[str, Any]:
    call = to_segment(env)
    kind = call.pop("type")
    return envelope(orjson.loads(orjson.dumps(call)), kind, RequestInfo(RECEIVED, "server"))


def comparable(env: dict[str, Any]) -> dict[str, Any]:
    out = {k: v for k, v in env.items() if k != "channel"}  # the mapping has no channel
    if isinstance(out.get("event_time"), int | str):
        with contextlib.suppress(Rejected):  # junk keeps its own value
            out["event_time"] = parse_event_time(out["event_time"])
    if out.get("identities") == {}:
        del out["identities"]
    return out


def test_simulated_envelopes_survive_the_segment_roundtrip() -> None:
    config = SimConfig(rate=200, duration=30, seed=5, consent_withdrawn_share=0.05)
    seen = 0
    for message in generate(config):
        decoded = orjson.loads(message.value)
        for env in decoded if isinstance(decoded, list) else [decoded]:
            assert comparable(roundtrip(env)) == comparable(env), env
            seen += 1
    assert seen > 1000


def test_page_views_become_page_calls() -> None:
    env = {
        "event_id": "e1",
        "event_name": "page_view",
        "event_time": RECEIVED,
        "anonymous_id": "a",
        "platform": "web",
        "identities": {"phone": "13800000000"},
        "consent": {"analytics": True, "marketing": False},
        "properties": {"page": "home", "referrer": "r"},
    }
    call = to_segment(env)
    assert call["type"] == "page"
    assert call["name"] == "home"
    assert call["properties"] == {"referrer": "r"}
    assert call["timestamp"] == "2026-11-23T08:00:00.000+00:00"
    assert call["context"]["traits"] == {"phone": "13800000000"}
    assert call["context"]["consent"] == {"categoryPreferences": env["consent"]}
    assert to_segment("junk") == "junk"
