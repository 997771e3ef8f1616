"""The validate stage's side of a dead-letter replay (DESIGN 17): a dead letter sent back
with the replay marker after the plan was fixed."""

from __future__ import annotations

import json
import shutil
from typing import Any

import orjson
import pytest

from pipeline.contract.pii import PiiHasher
from pipeline.contract.plan import TrackingPlan, default_schemas_dir, load_plan
from pipeline.contract.replay import ReplayMarker, dead_letter_key
from pipeline.ingest.codecs import unb64
from pipeline.ingest.dedup import SeenIds
from pipeline.ingest.ingestor import Ingestor, IngestResult, RawMessage
from pipeline.ingest.validation import Validator

NOW = 1_795_420_800_000  # 2026-11-23T08:00:00Z
DAY = 86_400_000
PART = 2
PHONE = "138 1234 5678"


@pytest.fixture(scope="module")
def fixed_plan(tmp_path_factory: pytest.TempPathFactory) -> TrackingPlan:
    """The built-in plan with a page "live" added: the fix of the events that failed."""
    root = tmp_path_factory.mktemp("plan") / "schemas"
    shutil.copytree(default_schemas_dir(), root)
    path = root / "events" / "page_view" / "v1.avsc"
    schema = json.loads(path.read_text())
    page = next(f for f in schema["fields"] if f["name"] == "page")
    page["type"]["symbols"].append("live")
    path.write_text(json.dumps(schema))
    return load_plan(root)


@pytest.fixture
def hasher() -> PiiHasher:
    return PiiHasher("unit-test-secret")


@pytest.fixture
def seen() -> SeenIds:
    return SeenIds(3_600_000)


def ingestor(plan: TrackingPlan, hasher: PiiHasher, seen: SeenIds) -> Ingestor:
    return Ingestor(plan, Validator(plan, hasher), hasher, seen, "events.raw")


def ev(i: int, page: str = "live", **over: Any) -> dict[str, Any]:
    obj: dict[str, Any] = {
        "event_id": f"e{i}",
        "event_name": "page_view",
        "event_time": NOW - 60_000,
        "anonymous_id": "anon-1",
        "platform": "miniprogram",
        "properties": {"page": page},
    }
    obj.update(over)
    return obj


def rejected(
    hasher: PiiHasher, seen: SeenIds, offset: int, event: dict[str, Any]
) -> dict[str, Any]:
    """The dead letter the built-in plan makes of ``event``."""
    result = ingestor(load_plan(), hasher, seen).process(
        PART, [RawMessage(offset, orjson.dumps(event))], NOW
    )
    assert len(result.dlq) == 1, result
    return result.dlq[0]


def replay_of(row: dict[str, Any], offset: int, hashed_pii: bool = True) -> RawMessage:
    key = dead_letter_key(row["source_topic"], PART, row["source_offset"], row["source_index"])
    marker = ReplayMarker(key, row["received_at"], hashed_pii)
    return RawMessage(offset, unb64(row["payload"]), replay=marker)


def test_a_replay_that_now_passes_is_stored_with_its_id_despite_the_rejected_sighting(
    fixed_plan: TrackingPlan, hasher: PiiHasher, seen: SeenIds
) -> None:
    row = rejected(hasher, seen, 1, ev(1))
    assert row["error_code"] == "invalid_value"
    assert row["replay_of"] is None
    fixed = ingestor(fixed_plan, hasher, seen)  # the worker restarted with the fixed plan
    result = fixed.process(PART, [replay_of(row, 50)], NOW + 60_000)
    assert [(r["event_id"], r["source_offset"]) for r in result.valid] == [("e1", 50)]
    assert result.dlq == []
    assert result.duplicates == 0

    # Re-read after a crash (same position): the same output, the sink skips it.
    reread = fixed.process(PART, [replay_of(row, 50)], NOW + 61_000)
    assert [r["source_offset"] for r in reread.valid] == [50]
    # A second copy of the replay, and an SDK retry of the event: duplicates now.
    later = fixed.process(
        PART, [replay_of(row, 51), RawMessage(52, orjson.dumps(ev(1)))], NOW + 62_000
    )
    assert later.valid == []
    assert later.dlq == []
    assert later.duplicates == 2


def test_a_replay_that_fails_again_is_a_new_dead_letter_marked_replay_of(
    fixed_plan: TrackingPlan, hasher: PiiHasher, seen: SeenIds
) -> None:
    row = rejected(hasher, seen, 2, ev(2, page="bogus"))
    fixed = ingestor(fixed_plan, hasher, seen)
    result = fixed.process(PART, [replay_of(row, 60)], NOW + 60_000)
    assert result.valid == []
    assert result.duplicates == 0
    (again,) = result.dlq
    assert again["replay_of"] == f"events.raw:{PART}:2:0"
    assert (again["error_code"], again["event_id"], again["source_offset"]) == (
        "invalid_value",
        "e2",
        60,
    )
    assert unb64(again["payload"]) == unb64(row["payload"])
    assert fixed.process(PART, [replay_of(row, 60)], NOW + 61_000).dlq[0]["source_offset"] == 60
    second_copy = fixed.process(PART, [replay_of(row, 61)], NOW + 62_000)
    assert second_copy.dlq == []
    assert second_copy.duplicates == 1
    # Without the marker the same bytes are a retry of the original: dropped, as before.
    retry = fixed.process(PART, [RawMessage(62, unb64(row["payload"]))], NOW + 63_000)
    assert retry.dlq == []
    assert retry.duplicates == 1


def test_a_replay_is_time_checked_as_when_the_original_was_received(
    fixed_plan: TrackingPlan, hasher: PiiHasher, seen: SeenIds
) -> None:
    row = rejected(hasher, seen, 3, ev(3))
    later = NOW + 8 * DAY  # past the 7-day limit for event_time
    fixed = ingestor(fixed_plan, hasher, SeenIds(3_600_000))
    assert [r["event_id"] for r in fixed.process(PART, [replay_of(row, 70)], later).valid] == ["e3"]
    fresh = ingestor(fixed_plan, hasher, SeenIds(3_600_000))
    plain = fresh.process(PART, [RawMessage(71, unb64(row["payload"]))], later)
    assert plain.dlq[0]["error_code"] == "invalid_timestamp"


def outcome(result: IngestResult) -> dict[str, Any]:
    (record,) = result.valid
    return {k: record[k] for k in ("event_id", "identities", "properties", "anonymous_id")}


def test_hashed_pii_of_a_masked_dead_letter_is_stored_as_the_original_would_have_been(
    fixed_plan: TrackingPlan, hasher: PiiHasher, seen: SeenIds
) -> None:
    event = ev(
        4,
        identities={"phone": PHONE, "openid": "o-1"},
        properties={"page": "live", "mobile": PHONE, "contact": {"email": "A@b.com"}},
    )
    row = rejected(hasher, seen, 4, event)
    masked = unb64(row["payload"])
    assert PHONE.encode() not in masked
    assert b"A@b.com" not in masked
    fixed = ingestor(fixed_plan, hasher, seen)
    replayed = fixed.process(PART, [replay_of(row, 80)], NOW + 60_000)
    direct = ingestor(fixed_plan, hasher, SeenIds(3_600_000)).process(
        PART, [RawMessage(4, orjson.dumps(event))], NOW
    )
    assert outcome(replayed) == outcome(direct)
    assert outcome(replayed)["identities"]["phone"] == hasher.hash_phone(PHONE)


def test_a_dead_letter_whose_fault_was_its_phone_fails_again(
    fixed_plan: TrackingPlan, hasher: PiiHasher, seen: SeenIds
) -> None:
    row = rejected(hasher, seen, 5, ev(5, page="home", identities={"phone": "12"}))
    assert row["error_detail"].startswith("identities.phone")
    fixed = ingestor(fixed_plan, hasher, seen)
    result = fixed.process(PART, [replay_of(row, 90, hashed_pii=False)], NOW + 60_000)
    assert result.valid == []
    assert result.dlq[0]["error_detail"].startswith("identities.phone")
    assert result.dlq[0]["replay_of"] == f"events.raw:{PART}:5:0"
