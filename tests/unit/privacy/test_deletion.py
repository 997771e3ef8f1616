"""A deletion over a lake written by the real writers: every row of the person goes, the
others stay, a crash mid-way resumes to completion with the right count."""

from __future__ import annotations

from pathlib import Path

import orjson
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from pipeline.identity.rules import load_identity_rules
from pipeline.lake.history import GuardBusy
from pipeline.lake.rewrite import live_files
from pipeline.lake.views import connect
from pipeline.privacy import deletion, purge
from pipeline.privacy.requests import DELETE, DONE, PENDING, RUNNING, Request
from pipeline.privacy.resolve import Person, resolve
from pipeline.privacy.service import NotSuppressed, Privacy, UnknownIdentifier
from tests.records import T0
from tests.unit.privacy.lake import (
    person_events,
    write_dead_letter,
    write_events,
    write_identities,
)

RULES = load_identity_rules()
PID = RULES.person_id("user_id:m1")


class FakeLog:
    links_topic = "identity.links"

    def __init__(self) -> None:
        self.records: list[Request] = []
        self.forgotten: list[tuple[str, list[str], bool]] = []

    def append(self, request: Request) -> int:
        self.records.append(request)
        return len(self.records) - 1

    def forget(self, request_id: str, nodes: list[str], undo: bool = False) -> int:
        self.forgotten.append((request_id, nodes, undo))
        return 0

    def has_topic(self, topic: str) -> bool:
        return True

    def read(self) -> list[Request]:
        return [Request.decode(r.encode(), i) for i, r in enumerate(self.records)]


def build_lake(lake: Path) -> None:
    """m1 (devices d1, d2, an openid) over 6 flushes, with a dead letter; keep alongside."""
    for f in range(6):
        base = f * 10
        rows = person_events(
            base, 2, anonymous_id="d1", person_id=RULES.person_id("anonymous_id:d1")
        )
        rows += person_events(base + 2, 1, user_id="m1", anonymous_id="d2", person_id=PID)
        rows += person_events(base + 3, 2, anonymous_id="keep", person_id="p_keep")
        rows += person_events(base + 5, 1, user_id="m2", anonymous_id="d1", person_id="p_m2")
        write_events(lake, rows)
    write_identities(
        lake,
        [("user_id:m1", PID), ("anonymous_id:d1", PID), ("anonymous_id:d2", PID),
         ("openid:o1", PID), ("anonymous_id:keep", "p_keep"), ("user_id:m2", "p_m2")],
        offset=0,
    )  # fmt: skip
    write_dead_letter(lake, orjson.dumps({"anonymous_id": "d2", "platform": "x"}), 7)
    write_dead_letter(lake, orjson.dumps({"anonymous_id": "keep", "platform": "x"}), 8)


def privacy(lake: Path, log: FakeLog) -> Privacy:
    return Privacy(lake / "lake", lambda: connect(lake), RULES, log, "k", log.read)


def count(lake: Path, sql: str) -> int:
    row = connect(lake).execute(sql).fetchone()
    return int(row[0]) if row else 0


def test_resolve_finds_the_whole_person(tmp_path: Path) -> None:
    build_lake(tmp_path / "lake")
    person = resolve(connect(tmp_path), RULES, "openid:o1")
    assert person.nodes == {"user_id:m1", "anonymous_id:d1", "anonymous_id:d2", "openid:o1"}
    assert PID in person.pids
    assert RULES.person_id("anonymous_id:d1") in person.pids
    assert not resolve(connect(tmp_path), RULES, "user_id:nobody")


def test_delete_removes_every_row_of_the_person_and_nothing_else(tmp_path: Path) -> None:
    build_lake(tmp_path / "lake")
    log = FakeLog()
    done = privacy(tmp_path, log).submit(DELETE, "anonymous_id:d2", "ann", "asked")
    assert done.status == DONE
    assert done.removed_by_table == {"events": 18, "dlq": 1, "identities": 4}
    assert done.rows_removed == 23
    assert [r.status for r in log.records] == [PENDING, RUNNING, DONE]
    assert log.forgotten[0][1] == sorted(done.identifiers)
    for table, where in [
        ("events", "anonymous_id IN ('d1', 'd2') AND user_id IS NULL OR user_id = 'm1'"),
        ("identities", "person_id = '" + PID + "'"),
        ("dlq", "true"),
    ]:
        assert count(tmp_path, f"SELECT count(*) FROM {table} WHERE {where}") == (
            1 if table == "dlq" else 0
        )
    assert count(tmp_path, "SELECT count(*) FROM events WHERE anonymous_id = 'keep'") == 12
    assert count(tmp_path, "SELECT count(*) FROM events WHERE user_id = 'm2'") == 6  # shared d1
    audit = connect(tmp_path).execute("SELECT status, rows_removed FROM audit").fetchall()
    assert audit == [(PENDING, 0), (RUNNING, 0), (DONE, 23)]
    assert purge.load(tmp_path / "lake")[done.request_id]["nodes"] == sorted(done.identifiers)


def test_a_crash_mid_way_leaves_whole_files_and_resumes_to_the_same_total(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    lake = tmp_path / "lake"
    build_lake(lake)
    log = FakeLog()
    real = deletion.remove_rows
    calls = {"n": 0}

    def dies_on_the_fourth(*args: object, **kw: object) -> int:
        calls["n"] += 1
        if calls["n"] == 4:
            raise KeyboardInterrupt  # the process is killed here
        return real(*args, **kw)  # type: ignore[arg-type]

    monkeypatch.setattr(deletion, "remove_rows", dies_on_the_fourth)
    with pytest.raises(KeyboardInterrupt):
        privacy(tmp_path, log).submit(DELETE, "user_id:m1", "ann", None)
    assert [r.status for r in log.records] == [PENDING, RUNNING]
    # No half state: each file holds its 6 rows, or the 3 that are not the person's.
    shapes = set()
    for path in sorted((lake / "events").rglob("*.parquet")):
        t = pq.read_table(path, columns=["user_id", "anonymous_id"]).to_pylist()
        mine = [
            r
            for r in t
            if r["user_id"] == "m1" or (r["user_id"] is None and r["anonymous_id"] == "d1")
        ]
        shapes.add((len(t), len(mine)))
    assert shapes == {(6, 3), (3, 0)}
    monkeypatch.setattr(deletion, "remove_rows", real)
    [done] = privacy(tmp_path, log).resume()
    assert done.status == DONE
    assert done.rows_removed == 23
    assert count(tmp_path, "SELECT count(*) FROM events WHERE user_id = 'm1'") == 0
    assert privacy(tmp_path, log).resume() == []  # nothing left


def test_unknown_identifiers_and_unsuppress_of_nobody_change_nothing(tmp_path: Path) -> None:
    build_lake(tmp_path / "lake")
    log = FakeLog()
    with pytest.raises(UnknownIdentifier):
        privacy(tmp_path, log).submit(DELETE, "user_id:nobody", "ann", None)
    with pytest.raises(NotSuppressed):
        privacy(tmp_path, log).submit("unsuppress", "user_id:m1", "ann", None)
    assert log.records == []
    assert not (tmp_path / "lake" / "privacy_audit").exists()


def test_a_deleted_person_can_be_unsuppressed_by_an_identifier_the_lake_lost(
    tmp_path: Path,
) -> None:
    build_lake(tmp_path / "lake")
    log = FakeLog()
    p = privacy(tmp_path, log)
    p.submit(DELETE, "user_id:m1", "ann", None)
    lifted = p.submit("unsuppress", "anonymous_id:d2", "ann", "consented again")
    assert set(lifted.identifiers) >= {"user_id:m1", "anonymous_id:d2"}
    assert purge.load(tmp_path / "lake") == {}
    assert log.forgotten[-1][2] is True  # unforget
    assert not p.state().suppressed("m1", None, None)
    assert Person({"x"})  # a person with identifiers is true


def test_delete_removes_the_first_activity_kept_past_retention(tmp_path: Path) -> None:
    from pipeline.lake import history

    lake = tmp_path / "lake"
    build_lake(lake)
    # as lake maintain does before a drop
    history.remember(lake, live_files(lake, "events"), None)
    where = "user_id = 'm1' OR anonymous_id IN ('d1', 'd2') AND user_id IS NULL"
    before = count(tmp_path, f"SELECT count(*) FROM first_activity WHERE {where}")
    assert before > 0
    done = privacy(tmp_path, FakeLog()).submit(DELETE, "anonymous_id:d2", "ann", "asked")
    assert done.removed_by_table["first_activity"] == before
    assert count(tmp_path, f"SELECT count(*) FROM first_activity WHERE {where}") == 0
    assert count(tmp_path, "SELECT count(*) FROM first_activity WHERE anonymous_id = 'keep'") == 1
    # A fold of a partition still holding their rows (dropped by retention while the
    # deletion ran) cannot bring them back: the purge list filters it.
    late = tmp_path / "late"
    late.mkdir()
    at = pa.array([T0], pa.timestamp("ms", tz="UTC"))
    row = {"user_id": ["m1"], "anonymous_id": ["d1"], "person_id": [PID], "event_time": at}
    pq.write_table(pa.table(row), late / "x.parquet")
    guard = deletion.lake_guard(lake)
    with guard.lock():
        history.remember(lake, {late / "x.parquet"}, guard.purge)
    assert count(tmp_path, f"SELECT count(*) FROM first_activity WHERE {where}") == 0
    history.remember(lake, {late / "x.parquet"}, None)  # without the purge it would be
    assert count(tmp_path, f"SELECT count(*) FROM first_activity WHERE {where}") == 1


def test_the_lake_guard_waits_for_a_deletion_then_defers(tmp_path: Path) -> None:
    lake = tmp_path / "lake"
    with deletion.exclusive(lake):
        guard = deletion.lake_guard(lake, wait_seconds=0.6)
        with pytest.raises(GuardBusy, match="privacy deletions"), guard.lock():
            pass
    with deletion.lake_guard(lake).lock():  # free again: taken at once
        pass
