"""SeenIds: the dedup memory of event ids per source partition, kept in generations."""

from __future__ import annotations

import asyncio
from types import SimpleNamespace
from typing import Any

import numpy as np
import orjson
import pytest

from pipeline.contract.pii import PiiHasher
from pipeline.contract.plan import load_plan
from pipeline.contract.positions import INDEX_BITS
from pipeline.contract.positions import pack as position
from pipeline.ingest import dedup
from pipeline.ingest.dedup import SeenIds
from pipeline.ingest.ingestor import Ingestor, RawMessage
from pipeline.ingest.validation import Validator
from tables.dedup import RECORD_IDS, DedupTable, encode_record

H = 1_000  # horizon, ms
P = 0


def test_position_packs_offset_and_index() -> None:
    assert position(0, 0) == 0
    assert position(0, 1) == 1
    assert position(1, 0) == 1 << INDEX_BITS
    assert position(5, 7) == (5 << 20) | 7
    assert position(1, 0) != position(0, 1)
    big = position(2**40, 2**20 - 1)
    assert big >> INDEX_BITS == 2**40
    assert big & (2**INDEX_BITS - 1) == 2**20 - 1


def test_generation_is_now_divided_by_horizon() -> None:
    seen = SeenIds(H)
    assert seen.generation(0) == 0
    assert seen.generation(H - 1) == 0
    assert seen.generation(H) == 1
    assert seen.generation(5 * H + 999) == 5


def test_lookup_of_unknown_id_or_partition_is_none() -> None:
    seen = SeenIds(H)
    assert seen.lookup(P, "a", 0) is None
    seen.add(P, 0, "a", 1, False)
    assert seen.lookup(P, "b", 0) is None
    assert seen.lookup(P + 1, "a", 0) is None


@pytest.mark.parametrize("rejected", [False, True])
def test_lookup_returns_position_and_rejected_flag(rejected: bool) -> None:
    seen = SeenIds(H)
    pos = position(123_456_789, 42)
    seen.add(P, 5, "a", pos, rejected)
    assert seen.lookup(P, "a", 5 * H) == (pos, rejected)


@pytest.mark.parametrize("at", [0, 1, H // 2, H - 1], ids=["start", "start+1", "middle", "end"])
def test_ids_are_remembered_for_at_least_one_horizon(at: int) -> None:
    seen = SeenIds(H)
    t = 10 * H + at
    seen.add(P, seen.generation(t), "a", 7, False)
    for dt in (0, 1, H // 2, H - 1, H):
        assert seen.lookup(P, "a", t + dt) == (7, False), dt


@pytest.mark.parametrize("at", [0, 1, H // 2, H - 1], ids=["start", "start+1", "middle", "end"])
def test_ids_are_forgotten_after_two_horizons(at: int) -> None:
    seen = SeenIds(H)
    t = 10 * H + at
    seen.add(P, seen.generation(t), "a", 7, False)
    assert seen.lookup(P, "a", t + 2 * H) is None
    assert seen.lookup(P, "a", t + 5 * H) is None
    assert seen.lookup(P, "a", 12 * H - 1) == (7, False)  # last ms of the next generation


def test_old_generations_are_dropped_from_memory() -> None:
    seen = SeenIds(H)
    seen.add(P, 5, "a", 1, False)
    seen.add(P, 5, "b", 2, False)
    seen.add(P, 6, "c", 3, False)
    assert seen.size() == 3
    seen.add(P, 7, "d", 4, False)  # generation 5 falls out
    assert seen.size() == 2
    assert seen.lookup(P, "a", 7 * H) is None
    assert seen.lookup(P, "c", 7 * H) == (3, False)
    assert seen.lookup(P, "d", 7 * H) == (4, False)
    # going back in time does not resurrect what was dropped
    assert seen.lookup(P, "a", 6 * H) is None


def test_generations_are_per_partition() -> None:
    seen = SeenIds(H)
    seen.add(0, 5, "a", 1, False)
    seen.add(1, 9, "b", 2, False)  # a newer generation elsewhere does not expire partition 0
    assert seen.lookup(0, "a", 5 * H) == (1, False)
    assert seen.size() == 2


def test_first_sighting_wins() -> None:
    seen = SeenIds(H)
    seen.add(P, 0, "a", 10, False)
    seen.add(P, 0, "a", 20, False)
    assert seen.lookup(P, "a", 0) == (10, False)
    seen.add(P, 0, "r", 10, True)
    seen.add(P, 0, "r", 20, True)
    assert seen.lookup(P, "r", 0) == (10, True)


def test_accepted_supersedes_rejected() -> None:
    seen = SeenIds(H)
    seen.add(P, 0, "a", 10, True)
    seen.add(P, 0, "a", 20, False)
    assert seen.lookup(P, "a", 0) == (20, False)
    seen.add(P, 0, "a", 30, True)  # a later rejected copy does not undo the acceptance
    assert seen.lookup(P, "a", 0) == (20, False)
    seen.add(P, 0, "a", 40, False)
    assert seen.lookup(P, "a", 0) == (20, False)


def test_accepted_in_a_new_generation_supersedes_rejected_in_the_old_one() -> None:
    seen = SeenIds(H)
    seen.add(P, 0, "a", 10, True)
    seen.add(P, 1, "a", 20, False)
    assert seen.lookup(P, "a", H) == (20, False)


def test_forget_partition() -> None:
    seen = SeenIds(H)
    seen.add(0, 0, "a", 1, False)
    seen.add(0, 0, "b", 2, True)
    seen.add(1, 0, "a", 3, False)
    seen.forget(0)
    assert seen.lookup(0, "a", 0) is None
    assert seen.lookup(0, "b", 0) is None
    assert seen.lookup(1, "a", 0) == (3, False)
    assert seen.size() == 1
    seen.forget(0)  # idempotent
    seen.forget(42)  # unknown partition
    assert seen.size() == 1


def test_changelog_replay_rebuilds_the_same_memory() -> None:
    """Entries an Ingestor emits, applied by DedupTable to a fresh SeenIds, dedup the same."""
    plan = load_plan()
    hasher = PiiHasher("s")
    now = 1_795_420_800_000
    horizon = 3_600_000
    live = SeenIds(horizon)
    ingestor = Ingestor(plan, Validator(plan, hasher), hasher, live, "events.raw")

    def ev(i: int, platform: str = "web") -> dict[str, object]:
        return {
            "event_id": f"e{i}",
            "event_name": "page_view",
            "event_time": now - 1000,
            "anonymous_id": "a",
            "platform": platform,
            "properties": {"page": "home"},
        }

    batch = [ev(1), ev(2, platform="tv"), ev(3), ev(1)]
    result = ingestor.process(P, [RawMessage(9, orjson.dumps(batch))], now)
    assert len(result.seen) == 3

    restored = SeenIds(horizon)
    table = SimpleNamespace(seen=restored)
    record = orjson.loads(orjson.dumps(encode_record(result.generation, result.seen)))
    DedupTable.apply_record(table, P, f"{P}:9", record)  # type: ignore[arg-type]
    for event_id in ("e1", "e2", "e3"):
        assert restored.lookup(P, event_id, now) == live.lookup(P, event_id, now)
    assert restored.lookup(P, "e1", now) == (position(9, 0), False)
    assert restored.lookup(P, "e2", now) == (position(9, 1), True)

    # A restarted worker with the restored memory drops a later retry.
    again = Ingestor(plan, Validator(plan, hasher), hasher, restored, "events.raw")
    retry = again.process(P, [RawMessage(12, orjson.dumps(ev(3)))], now + 1000)
    assert retry.valid == []
    assert retry.duplicates == 1


def test_a_huge_take_is_logged_in_records_that_fit_in_a_kafka_message() -> None:
    sent: list[tuple[int, str, Any]] = []

    async def append(p: int, k: str, v: Any) -> None:
        sent.append((p, k, v))

    fake = SimpleNamespace(append=append)
    entries = [[f"{'x' * 60}{i:04d}", (i << 20) << 1] for i in range(20_000)]
    asyncio.run(DedupTable.record(fake, 3, 100, 7, entries))  # type: ignore[arg-type]
    assert len(sent) == -(-20_000 // RECORD_IDS)
    assert len({k for _, k, _ in sent}) == len(sent)  # distinct keys
    assert all(len(orjson.dumps(v)) < 300_000 for _, _, v in sent)
    restored = SeenIds(H)
    for p, k, v in sent:
        DedupTable.apply_record(SimpleNamespace(seen=restored), p, k, v)  # type: ignore[arg-type]
    assert restored.size() == 20_000
    assert restored.lookup(3, entries[12_345][0], 7 * H) == (12_345 << 20, False)


def test_records_of_the_old_format_still_apply() -> None:
    """Changelogs written before fingerprints (ids as strings) are read after an upgrade."""
    restored = SeenIds(H)
    value = {"g": 2, "ids": [["a", position(4, 0) << 1], ["b", (position(4, 1) << 1) | 1]]}
    DedupTable.apply_record(SimpleNamespace(seen=restored), P, "0:4", value)  # type: ignore[arg-type]
    assert restored.lookup(P, "a", 2 * H) == (position(4, 0), False)
    assert restored.lookup(P, "b", 2 * H) == (position(4, 1), True)


# -- the compact memory: frozen runs of fingerprints ---------------------------------


def test_ids_frozen_into_runs_and_merged_keep_the_sighting_rules(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(dedup, "RUN_IDS", 4)  # a run every 4 ids: many runs and merges
    seen = SeenIds(H)
    for i in range(100):
        seen.add(P, 0, f"e{i}", i, i % 3 == 0)  # every third one rejected
    for i in range(100):  # second sightings, all in later runs
        seen.add(P, 0, f"e{i}", 1000 + i, False)
    ids = seen._parts[P][0]
    assert len(ids.runs) <= 6, [len(k) for k, _ in ids.runs]
    assert 100 <= seen.size() <= 134  # a superseded entry counts until its runs merge
    for i in range(100):
        want = (1000 + i, False) if i % 3 == 0 else (i, False)  # accepted supersedes rejected
        assert seen.lookup(P, f"e{i}", 0) == want, i
    assert seen.lookup(P, "e100", 0) is None


def test_a_merge_keeps_the_older_entry_unless_only_the_newer_was_accepted() -> None:
    def run(*entries: tuple[int, int]) -> tuple[np.ndarray, np.ndarray]:
        return (
            np.array([k for k, _ in entries], np.uint64),
            np.array([v for _, v in entries], np.int64),
        )

    older = run((1, 10 << 1), (2, (20 << 1) | 1), (3, (30 << 1) | 1), (5, 50 << 1))
    newer = run((2, 21 << 1), (3, (31 << 1) | 1), (4, 40 << 1), (5, 51 << 1))
    keys, values = dedup._merge(older, newer)
    assert keys.tolist() == [1, 2, 3, 4, 5]
    assert (values >> 1).tolist() == [10, 21, 30, 40, 50]
    # The same rule for an unsorted chunk logged by one take, ids repeated within it.
    keys, values = dedup._sorted_unique(
        *run((9, (1 << 1) | 1), (7, 2 << 1), (9, 3 << 1), (9, 4 << 1))
    )
    assert keys.tolist() == [7, 9]
    assert (values >> 1).tolist() == [2, 3]


def test_memory_is_sixteen_bytes_an_id_once_frozen() -> None:
    seen = SeenIds(H)
    keys = np.arange(1_000_000, dtype=np.uint64) * np.uint64(2_654_435_761)
    seen.add_run(P, 0, keys, np.arange(1_000_000, dtype=np.int64) << 1)
    ids = seen._parts[P][0]
    assert ids.nbytes() == 16 * 1_000_000
    assert seen.lookup(P, "not there", 0) is None


def test_a_snapshot_answers_as_lookup_and_put_as_add(monkeypatch: pytest.MonkeyPatch) -> None:
    """The validate stage's batched path (snapshot, then first/put per event) must keep the
    memory exactly as the per-id path (lookup, then add) does, runs and generations included."""
    monkeypatch.setattr(dedup, "RUN_IDS", 8)
    rng = np.random.default_rng(7)
    per_id, batched = SeenIds(H), SeenIds(H)
    for step in range(40):
        now = step * 97  # crosses generations every ~10 steps
        gen = per_id.generation(now)
        keys = [f"e{int(k)}" for k in rng.integers(0, 60, size=12)]
        snap = batched.snapshot(P, [dedup.fingerprint(k) for k in keys], now)
        for i, key in enumerate(keys):
            pos, rejected = step * 100 + i, bool(rng.integers(0, 2))
            expected = per_id.lookup(P, key, now)
            assert snap.first(dedup.fingerprint(key)) == expected
            if expected is None or rejected is False:
                per_id.add(P, gen, key, pos, rejected)
                snap.put(dedup.fingerprint(key), pos, rejected)
        snap.apply()  # the validate stage applies a take's decisions once its outputs exist
        probes = [f"e{k}" for k in range(70)]
        assert [batched.lookup(P, k, now) for k in probes] == [
            per_id.lookup(P, k, now) for k in probes
        ]
    assert any(g.runs for g in batched._parts[P].values())  # runs were searched, not only dicts
