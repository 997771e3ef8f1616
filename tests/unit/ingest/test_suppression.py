"""The ingestor drops a suppressed person's events before storage and before the DLQ."""

from __future__ import annotations

from typing import Any

import orjson
import pytest

from pipeline.contract.pii import PiiHasher
from pipeline.contract.plan import load_plan
from pipeline.ingest.dedup import SeenIds
from pipeline.ingest.ingestor import Ingestor, RawMessage
from pipeline.ingest.validation import Validator
from pipeline.privacy.requests import SUPPRESS, Request
from pipeline.privacy.state import PrivacyState

NOW = 1_795_420_800_000
HASHER = PiiHasher("unit-test-secret")


def ev(i: int, **over: Any) -> dict[str, Any]:
    obj: dict[str, Any] = {
        "event_id": f"e{i}",
        "event_name": "page_view",
        "event_time": NOW - 60_000,
        "anonymous_id": "d-other",
        "platform": "web",
        "properties": {"page": "home"},
    }
    obj.update(over)
    return obj


@pytest.fixture
def state() -> PrivacyState:
    phone = HASHER.hash_phone("13800000001")
    s = PrivacyState()
    nodes = ("user_id:u1", "anonymous_id:d1", f"phone:{phone}")
    s.apply([Request("r1", SUPPRESS, nodes, seq=0)])
    return s


def ingestor(suppression: PrivacyState | None) -> Ingestor:
    plan = load_plan()
    return Ingestor(
        plan, Validator(plan, HASHER), HASHER, SeenIds(3_600_000), "events.raw",
        suppression=suppression,
    )  # fmt: skip


def run(ing: Ingestor, events: list[dict[str, Any]]) -> Any:
    messages = [RawMessage(i, orjson.dumps(e)) for i, e in enumerate(events)]
    return ing.process(0, messages, NOW)


EVENTS = [
    ev(1, anonymous_id="d1"),  # the person's device
    ev(2, user_id="u1", event_name="login", properties={"method": "phone"}),
    ev(3, identities={"phone": "138 0000 0001"}),  # their phone, given in clear
    ev(4, anonymous_id="d1", platform="windows"),  # invalid: would be dead-lettered
    ev(5, user_id="u1", event_name="nope"),  # invalid too
    ev(6),  # somebody else
    ev(7, user_id="u2", anonymous_id="d1", event_name="login", properties={"method": "phone"}),
]


def test_suppressed_events_are_counted_not_stored_not_dead_lettered(state: PrivacyState) -> None:
    result = run(ingestor(state), EVENTS)
    assert [r["event_id"] for r in result.valid] == ["e6", "e7"]  # e7: another member's
    assert result.dlq == []
    assert result.suppressed == 5
    assert sum(result.rejected.values()) == 0


def test_without_suppression_the_same_events_are_stored_and_dead_lettered() -> None:
    for suppression in (None, PrivacyState()):
        result = run(ingestor(suppression), EVENTS)
        assert len(result.valid) == 5
        assert len(result.dlq) == 2
        assert result.suppressed == 0


def test_a_suppressed_event_is_not_remembered_so_it_is_stored_once_lifted(
    state: PrivacyState,
) -> None:
    ing = ingestor(state)
    assert run(ing, [ev(1, anonymous_id="d1")]).suppressed == 1
    ing.suppression = PrivacyState()  # unsuppressed
    result = run(ing, [ev(1, anonymous_id="d1")])
    assert [r["event_id"] for r in result.valid] == ["e1"]
    assert result.duplicates == 0
