"""The combine state's changelog: snapshots, and a replay that starts at the newest one.

A changelog is simulated as a list (a record's index is its offset); the agent's part,
noting where a snapshot group starts once it was written, is done here by hand.
"""

from __future__ import annotations

import random
from typing import Any

import orjson

from pipeline.metrics.combine import CombineState
from pipeline.metrics.partials import partials
from pipeline.metrics.windows import NO_WATERMARK
from pipeline.runtime.wire import encode_partials
from tests.unit.metrics.test_rollup import BATCHES, DEFS, T0, row

MIN = 60_000


def _json(record: dict[str, Any]) -> dict[str, Any]:
    return orjson.loads(orjson.dumps(record))


def _feed(state: CombineState, offset: int, rows: list[dict[str, Any]]) -> None:
    wm = max(r["event_time"] for r in rows)
    p = partials(BATCHES.build(rows), DEFS.values(), 60, NO_WATERMARK)
    assert state.apply(orjson.loads(encode_partials(0, offset, wm, p, DEFS)))


def _run(takes: int, min_bytes: int, seed: int = 5) -> tuple[CombineState, list[dict[str, Any]]]:
    """A combine partition over ``takes`` takes of mixed traffic (page views, payments,
    carts; people coming back, so funnels and sets span takes), closing what is due and
    snapshotting as the agent does; returns it and its changelog."""
    rnd = random.Random(seed)
    state = CombineState(DEFS, 1, lateness_s=60)
    log: list[dict[str, Any]] = []
    i = 0
    for take in range(takes):
        t = T0 + take * 20_000
        rows = []
        for _ in range(rnd.randint(1, 12)):
            i += 1
            rows.append(row(i, rnd.randint(0, 3), t + rnd.randint(0, 19_000), rnd.randint(0, 40)))
        _feed(state, take, rows)
        closed = state.close_ready()
        snapshot = state.wants_snapshot(min_bytes)
        records = state.take_records(
            outbox=(take, 0, closed) if closed else None, snapshot=snapshot
        )
        first = len(log)
        log += [_json(r) for r in records]
        if snapshot and records:
            state.snap_at = first
    return state, log


def _replay(records: list[dict[str, Any]]) -> CombineState:
    replica = CombineState(DEFS, 1, lateness_s=60)
    for record in records:
        replica.apply_record(record)
    return replica


def _same(a: CombineState, b: CombineState) -> None:
    names = ("applied", "wm", "closed", "open", "late", "offset", "fevents", "flast", "fclosed")
    for name in (*names, "needs"):
        assert getattr(a, name) == getattr(b, name), name
    waits = [{m: hours for m, hours in s.fneeds.items() if hours} for s in (a, b)]
    assert waits[0] == waits[1], "fneeds"


def _newest_snapshot(log: list[dict[str, Any]]) -> int:
    """What recovery reads first: the ``snap_at`` of the last group's progress."""
    last = next(r for r in reversed(log) if "applied" in r)
    return int(last["snap_at"])


def test_a_replay_from_the_newest_snapshot_equals_the_whole_replay() -> None:
    state, log = _run(takes=400, min_bytes=4_000)
    start = _newest_snapshot(log)
    snapshots = [n for n, r in enumerate(log) if r.get("reset")]
    assert len(snapshots) >= 3
    assert start in snapshots
    assert start > len(log) // 2  # the replay is a fraction of the log
    whole, from_snapshot = _replay(log), _replay(log[start:])
    _same(whole, state)
    _same(from_snapshot, state)
    assert from_snapshot.unsent == whole.unsent  # the last outbox, to send again
    # and the windows they close are the same
    assert from_snapshot.close_all() == whole.close_all() == state.close_all()


def test_a_replay_from_an_older_snapshot_or_mid_group_is_still_exact() -> None:
    """Recovery may start earlier than the newest snapshot (none found, an old one, the
    broker's short end): a torn group's tail is dropped and the snapshot resets the rest."""
    state, log = _run(takes=300, min_bytes=4_000, seed=9)
    snapshots = [n for n, r in enumerate(log) if r.get("reset")]
    for start in (0, snapshots[0], snapshots[0] + 1, snapshots[-1] - 1):
        _same(_replay(log[start:]), state)


def test_a_snapshot_cut_short_by_a_crash_changes_nothing() -> None:
    state, log = _run(takes=60, min_bytes=10**9)
    before = _replay(log)
    torn = [_json(r) for r in state.take_records(max_bytes=200, snapshot=True)][:-1]
    assert len(torn) >= 1
    assert torn[0]["reset"]
    _same(_replay(log + torn), before)


def test_snapshots_come_when_the_deltas_outweigh_the_last_one() -> None:
    state = CombineState(DEFS, 1, lateness_s=60)
    assert not state.wants_snapshot(1_000)  # nothing logged yet
    _feed(state, 0, [row(n, 0, T0 + n, n) for n in range(30)])
    state.take_records()
    assert state.logged > 1_000
    assert state.wants_snapshot(1_000)
    snap = state.take_records(snapshot=True)
    assert state.logged == 0
    assert state.snap_bytes == sum(len(orjson.dumps(r)) for r in snap)
    # Twice the snapshot's size of changes before the next one, whatever the minimum.
    offset = 0
    while state.logged < 2 * state.snap_bytes:
        assert not state.wants_snapshot(1)
        offset += 1
        _feed(state, offset, [row(9, 1, T0 + 5, 1)])
        state.take_records()
    assert state.wants_snapshot(1)


def test_a_snapshot_of_a_million_identifiers_stays_in_bounded_records() -> None:
    state = CombineState(DEFS, 1, lateness_s=60)
    hour = T0 - T0 % 3_600_000
    ids = [f"anonymous_id:d{i}" for i in range(1_000_000)]
    state.apply({"p": 0, "o": 1, "wm": T0 + 1, "s": [["uv", 3600, hour, "{}", ids]], "f": {}})
    state.take_records()
    records = [_json(r) for r in state.take_records(snapshot=True)]
    assert max(len(orjson.dumps(r)) for r in records) < 1_000_000 / 2
    assert records[0]["reset"]
    assert _replay(records).open[("uv", 3600, hour, "{}")] == set(ids)


def test_an_empty_exact_set_survives_a_snapshot() -> None:
    state = CombineState(DEFS, 1, lateness_s=60)
    state.apply({"p": 0, "o": 1, "wm": T0, "s": [["orders", 60, T0, "{}", []]], "f": {}})
    replica = _replay([_json(r) for r in state.take_records(snapshot=True)])
    assert replica.open == state.open
