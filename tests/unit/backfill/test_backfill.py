"""Backfill in-process: historic events stored once, bad lines dead-lettered with the
stream's codes, dedup against the lake, One ID links applied, a crashed run resumed."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import orjson
import pytest

from pipeline.backfill.run import Backfill, BackfillStats
from pipeline.backfill.source import run_number
from pipeline.contract.pii import PiiHasher
from pipeline.contract.plan import load_plan
from pipeline.identity.rules import load_identity_rules
from pipeline.lake import views
from tests.unit.analytics.lake import ev, write_events, write_identities

PLAN = load_plan()
RULES = load_identity_rules()


def event(eid: str, name: str, at: str, **kw: Any) -> dict[str, Any]:
    props = kw.pop("properties", {"page": "home"} if name == "page_view" else {})
    if name == "login":
        props = {"method": "phone"}
    return {
        "event_id": eid,
        "event_name": name,
        "event_time": at,
        "platform": "ios",
        "properties": props,
        **kw,
    }


HISTORY = [
    event("e1", "page_view", "2024-05-01T10:00:00+08:00", anonymous_id="d1"),
    event(
        "e2",
        "login",
        "2024-05-01T10:05:00+08:00",
        anonymous_id="d1",
        user_id="u1",
        identities={"phone": "+86 138 0000 0001"},
    ),
    event("e3", "page_view", "2024-05-02T10:00:00+08:00", anonymous_id="d2"),
    event("e4", "login", "2024-05-02T10:01:00+08:00", anonymous_id="d2", user_id="u1"),
    event("e5", "page_view", "2024-05-03T09:00:00+08:00", anonymous_id="v1"),
]


def write(path: Path, lines: list[bytes]) -> Path:
    path.write_bytes(b"\n".join(lines) + b"\n")
    return path


def backfill(data_dir: Path, path: Path, chunk: int = 50_000) -> BackfillStats:
    con = views.connect(data_dir, PLAN)
    job = Backfill(data_dir / "lake", PLAN, RULES, PiiHasher("k" * 32), con, 256 * 1024)
    return job.run(path, run_number(path), chunk)


def query(data_dir: Path, sql: str) -> list[tuple]:
    return views.connect(data_dir, PLAN).execute(sql).fetchall()


def test_history_older_than_seven_days_is_stored_once_and_stitched(tmp_path: Path) -> None:
    path = write(tmp_path / "h.jsonl", [orjson.dumps(e) for e in HISTORY])
    first = backfill(tmp_path, path)
    assert (first.stored, first.dead_lettered, first.duplicates) == (5, 0, 0)
    persons = dict(query(tmp_path, "SELECT event_id, person_id FROM events_resolved"))
    assert (
        persons["e1"] == persons["e2"] == persons["e3"] == persons["e4"]
    )  # two devices, one member
    assert persons["e5"] != persons["e1"]
    assert persons["e1"] == RULES.person_id("user_id:u1")
    # phone hashed, never in clear
    ids = query(tmp_path, "SELECT identifier_type, identifier FROM identities")
    assert ("phone", "+8613800000001") not in ids
    assert any(kind == "phone" for kind, _ in ids)
    assert "13800000001" not in str(query(tmp_path, "SELECT * FROM events"))

    again = backfill(tmp_path, path)
    assert (again.stored, again.dead_lettered, again.identities, again.merges) == (0, 0, 0, 0)
    assert query(tmp_path, "SELECT count(*) FROM events") == [(5,)]
    assert query(tmp_path, "SELECT count(*), count(DISTINCT event_id) FROM events") == [(5, 5)]


def test_bad_lines_are_dead_lettered_with_the_streams_codes(tmp_path: Path) -> None:
    lines = [
        b"not json",
        orjson.dumps(event("b1", "nope", "2024-05-01T10:00:00+08:00", anonymous_id="d")),
        orjson.dumps(event("b2", "page_view", "2024-05-01T10:00:00+08:00")),  # no id
        orjson.dumps(event("b3", "page_view", "2999-01-01T00:00:00+08:00", anonymous_id="d")),
        orjson.dumps(
            event(
                "b4",
                "pay_success",
                "2024-05-01T10:00:00+08:00",
                anonymous_id="d",
                properties={"order_id": "o", "amount": 1.234, "pay_method": "card"},
            )
        ),
        orjson.dumps(
            [
                event("b5", "page_view", "2024-05-01T10:00:00+08:00", anonymous_id="d"),
                {"event_id": "b6"},
            ]
        ),
    ]
    path = write(tmp_path / "bad.jsonl", lines)
    stats = backfill(tmp_path, path)
    assert stats.stored == 1  # b5
    rows = query(
        tmp_path,
        "SELECT source_offset, source_index, error_code, source_topic FROM dlq ORDER BY 1, 2",
    )
    assert rows == [
        (0, 0, "malformed_payload", "backfill"),
        (1, 0, "unknown_event", "backfill"),
        (2, 0, "missing_required_field", "backfill"),
        (3, 0, "invalid_timestamp", "backfill"),
        (4, 0, "invalid_value", "backfill"),
        (5, 1, "missing_required_field", "backfill"),
    ]
    # the same bad lines in another file (another run) are not dead-lettered twice
    other = write(tmp_path / "bad2.jsonl", [b"", *lines])
    assert backfill(tmp_path, other).dead_lettered == 0
    assert query(tmp_path, "SELECT count(*) FROM dlq") == [(6,)]


def test_events_the_stream_stored_are_duplicates(tmp_path: Path) -> None:
    write_events(tmp_path, [ev("page_view", "2024-05-01T10:00:00+08:00", anon="d1")], name="e")
    # tests.unit.analytics.lake names events "<name>-<i>": e-0 is in the lake already
    lines = [
        orjson.dumps(event("e-0", "page_view", "2024-05-01T10:00:00+08:00", anonymous_id="d1")),
        orjson.dumps(event("new", "page_view", "2024-05-01T11:00:00+08:00", anonymous_id="d1")),
    ]
    stats = backfill(tmp_path, write(tmp_path / "x.jsonl", lines))
    assert (stats.stored, stats.duplicates) == (1, 1)
    assert query(tmp_path, "SELECT count(*) FROM events WHERE event_id = 'e-0'") == [(1,)]


def test_links_join_the_persons_the_lake_already_knows(tmp_path: Path) -> None:
    member = RULES.person_id("user_id:u7")
    write_identities(tmp_path, [("user_id", "u7", member), ("anonymous_id", "old", member)])
    lines = [
        orjson.dumps(event("n1", "page_view", "2024-06-01T10:00:00+08:00", anonymous_id="new")),
        orjson.dumps(
            event("n2", "login", "2024-06-01T10:01:00+08:00", anonymous_id="new", user_id="u7")
        ),
        # another member on the same device does not join the two members
        orjson.dumps(
            event("n3", "login", "2024-06-02T10:01:00+08:00", anonymous_id="new", user_id="u8")
        ),
    ]
    stats = backfill(tmp_path, write(tmp_path / "l.jsonl", lines))
    persons = dict(query(tmp_path, "SELECT event_id, person_id FROM events_resolved"))
    assert persons["n1"] == persons["n2"] == member
    assert persons["n3"] == RULES.person_id("user_id:u8")
    assert query(tmp_path, "SELECT person_id FROM identities WHERE identifier = 'old'") == [
        (member,)
    ]
    refused = query(tmp_path, "SELECT reason, accepted FROM identity_merges")
    assert refused == [("would_join_two_user_ids", False)]
    assert stats.merges == 1


def test_a_run_killed_halfway_is_resumed_exactly(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    lines = [
        orjson.dumps(
            event(
                f"c{i}",
                "page_view",
                f"2024-05-{1 + i % 28:02d}T10:00:00+08:00",
                anonymous_id=f"d{i % 7}",
            )
        )
        for i in range(40)
    ]
    lines.insert(13, b"{broken")
    path = write(tmp_path / "c.jsonl", lines)
    calls = {"n": 0}
    original = Backfill._chunk

    def dying(self: Backfill, *args: Any) -> None:
        calls["n"] += 1
        if calls["n"] == 3:
            raise KeyboardInterrupt  # the kill, between two chunks
        original(self, *args)

    monkeypatch.setattr(Backfill, "_chunk", dying)
    with pytest.raises(KeyboardInterrupt):
        backfill(tmp_path, path, chunk=10)
    monkeypatch.setattr(Backfill, "_chunk", original)
    # two chunks of ten lines, one of them broken
    assert query(tmp_path, "SELECT count(*) FROM events") == [(19,)]
    assert query(tmp_path, "SELECT count(*) FROM identities") == [(0,)]  # written at the end
    rest = backfill(tmp_path, path, chunk=10)
    assert rest.stored == 21
    assert query(tmp_path, "SELECT count(*), count(DISTINCT event_id) FROM events") == [(40, 40)]
    assert query(tmp_path, "SELECT count(*) FROM dlq") == [(1,)]
    assert query(tmp_path, "SELECT count(*) FROM identities") == [(7,)]


def test_links_to_publish_are_the_inputs_even_when_the_lake_knows_them(tmp_path: Path) -> None:
    path = write(tmp_path / "h.jsonl", [orjson.dumps(e) for e in HISTORY])
    backfill(tmp_path, path)
    con = views.connect(tmp_path, PLAN)
    job = Backfill(tmp_path / "lake", PLAN, RULES, PiiHasher("k" * 32), con, 256 * 1024, True)
    job.run(path, run_number(path))
    assert job.identity.merges == []  # nothing new for the lake ...
    pairs = {(a, b) for a, b, _ in job.links or []}
    assert ("user_id:u1", "anonymous_id:d2") in pairs  # ... yet the links go out again
    assert ("anonymous_id:v1", "anonymous_id:v1") in pairs


def test_a_deleted_person_is_not_brought_back_by_a_backfill(tmp_path: Path) -> None:
    """DESIGN 15: the privacy purge list (deleted persons) holds for backfills too."""
    from pipeline.privacy import purge

    purge.add(tmp_path / "lake", "pr-1", {"user_id:u1", "anonymous_id:d1"}, set())
    path = write(tmp_path / "h.jsonl", [orjson.dumps(e) for e in HISTORY])
    stats = backfill(tmp_path, path)
    assert stats.stored == 2  # e3 (d2, before d2's link to u1 is known) and e5
    assert query(tmp_path, "SELECT count(*) FROM events WHERE user_id = 'u1'") == [(0,)]
    assert query(tmp_path, "SELECT count(*) FROM events WHERE anonymous_id = 'd1'") == [(0,)]
    ids = query(tmp_path, "SELECT identifier FROM identities")
    assert ("u1",) not in ids
    assert ("d1",) not in ids
