"""Two-phase aggregation: partials per partition and batch, combined, equal one pass."""

from __future__ import annotations

from collections import defaultdict
from decimal import Decimal
from typing import Any

import orjson
from hypothesis import given, settings
from hypothesis import strategies as st

from pipeline.contract.plan import load_plan
from pipeline.lake.schema import EventBatches
from pipeline.metrics.combine import CombineState
from pipeline.metrics.definitions import load_metrics, seconds
from pipeline.metrics.funnel import counts_by_hour, entries, step_mask
from pipeline.metrics.partials import partials
from pipeline.metrics.windows import NO_WATERMARK, window_start
from pipeline.runtime.wire import encode_partials

PLAN = load_plan()
DEFS = load_metrics(PLAN)
BATCHES = EventBatches(PLAN)
T0 = 1_795_420_000_000 - 1_795_420_000_000 % 3_600_000
PAGES = ["home", "product_detail", "cart"]


def row(i: int, kind: int, t: int, person: int) -> dict[str, Any]:
    name, props = [
        ("page_view", {"page": PAGES[i % 3]}),
        ("pay_request", {"order_id": f"o{i % 7}", "amount": 10.5, "pay_method": "wechat_pay"}),
        ("pay_success", {"order_id": f"o{i % 7}", "amount": "19.99", "pay_method": "wechat_pay"}),
        ("add_to_cart", {"product_id": "p1", "quantity": 1, "price": 5}),
    ][kind]
    return {
        "event_id": f"e{i}",
        "event_name": name,
        "event_time": t,
        "received_at": t,
        "anonymous_id": f"d{person}",
        "user_id": None,
        "person_id": f"p{person}",
        "platform": "miniprogram",
        "app_version": None,
        "channel": None,
        "identities": None,
        "consent_marketing": None,
        "schema_version": 1,
        "properties": props,
        "source_partition": 0,
        "source_offset": i,
        "source_index": 0,
    }


def one_pass(rows: list[dict[str, Any]]) -> dict[tuple[str, str, int, str], float | None]:
    """The definitions of DESIGN section 10, written out directly."""
    acc: dict[tuple[str, str, int, str], Any] = defaultdict(int)
    sets: dict[tuple[str, str, int, str], set[str]] = defaultdict(set)
    for r in rows:
        for label, size in (("1m", 60), ("1h", 3600)):
            w = window_start(r["event_time"], size)
            name = r["event_name"]
            acc[("events", label, w, orjson.dumps({"event_name": name}).decode())] += 1
            sets[("uv", label, w, "{}")].add(r["person_id"])
            if name == "page_view":
                acc[("pv", label, w, orjson.dumps({"page": r["properties"]["page"]}).decode())] += 1
            if name == "pay_request":
                acc[("pay_requests", label, w, "{}")] += 1
            if name == "pay_success":
                acc[("pay_successes", label, w, "{}")] += 1
                sets[("orders", label, w, "{}")].add(r["properties"]["order_id"])
                acc[("gmv", label, w, "{}")] += Decimal(str(r["properties"]["amount"]))
    # The funnel per person in one pass (the state machine itself is tested in test_funnel).
    funnel = DEFS["purchase_funnel"]
    by_person: dict[str, list[tuple[int, int]]] = defaultdict(list)
    for r in rows:
        mask = step_mask(funnel, r["event_name"], r["properties"])
        if mask:
            by_person[r["person_id"]].append((r["event_time"], mask))
    found = [e for evs in by_person.values() for e in entries(sorted(evs), 5, 30 * 60_000)]
    for hour, counts in counts_by_hour(found, 5).items():
        for step, n in enumerate(counts, 1):
            acc[("purchase_funnel", "1h", hour, f'{{"step":{step}}}')] = n
    out: dict[tuple[str, str, int, str], float | None] = {k: float(v) for k, v in acc.items()}
    out.update({k: float(len(v)) for k, v in sets.items()})
    for ratio, num, den in (
        ("payment_success_rate", "pay_successes", "pay_requests"),
        ("aov", "gmv", "orders"),
    ):
        for label, w in {(k[1], k[2]) for k in out}:
            n, d = out.get((num, label, w, "{}")), out.get((den, label, w, "{}"))
            if n is None and d is None:
                continue
            out[(ratio, label, w, "{}")] = (n or 0.0) / d if d else None
    return out


def run_two_phase(
    rows: list[dict[str, Any]], partitions: int, assign: list[int], batch: int
) -> dict:
    by_part: dict[int, list[dict[str, Any]]] = defaultdict(list)
    for r, p in zip(rows, assign, strict=True):
        by_part[p].append(r)
    combine = CombineState(DEFS, partitions, lateness_s=10**7)
    offset = 0
    for p in range(partitions):
        wm = NO_WATERMARK
        part_rows = by_part[p]
        for i in range(0, len(part_rows), batch):
            table = BATCHES.build(part_rows[i : i + batch])
            got = partials(table, DEFS.values(), 10**7, wm)
            wm = max(wm, got.max_time)
            offset += 1
            msg = orjson.loads(encode_partials(p, offset, wm, got, DEFS))
            assert combine.apply(msg)
            assert not combine.apply(msg)  # a replay is skipped
    finals = combine.close_all()
    return {
        (r["metric"], r["window"], r["window_start"], r["dimensions"]): r["value"] for r in finals
    }


@settings(max_examples=40, deadline=None)
@given(
    st.lists(
        st.tuples(st.integers(0, 3), st.integers(0, 3 * 3_600_000), st.integers(0, 30)),
        min_size=1,
        max_size=120,
    ),
    st.integers(1, 4),
    st.data(),
)
def test_two_phase_equals_one_pass(
    events: list[tuple[int, int, int]], partitions: int, data: Any
) -> None:
    rows = [row(i, kind, T0 + dt, person) for i, (kind, dt, person) in enumerate(events)]
    assign = data.draw(
        st.lists(st.integers(0, partitions - 1), min_size=len(rows), max_size=len(rows))
    )
    batch = data.draw(st.integers(1, 20))
    got = run_two_phase(rows, partitions, assign, batch)
    assert got == one_pass(rows)


def test_late_events_are_dropped_and_counted() -> None:
    rows = [row(0, 0, T0 + 10 * 60_000, 1), row(1, 0, T0 + 1_000, 2)]
    first = partials(BATCHES.build(rows[:1]), DEFS.values(), 60, NO_WATERMARK)
    late = partials(BATCHES.build(rows[1:]), DEFS.values(), 60, first.max_time)
    assert late.late[60] == 1  # its minute closed 9 minutes ago
    assert late.late[3600] == 0  # its hour is still open
    assert not any(k[1] == 60 for k in late.series)
    assert any(k[1] == 3600 for k in late.series)


def test_a_client_clock_ahead_cannot_make_other_events_late() -> None:
    """One event 9 minutes ahead (accepted: the limit is +10) among on-time traffic."""
    skewed = {**row(0, 0, T0 + 9 * 60_000, 1), "received_at": T0}
    on_time = [row(i, i % 4, T0 + i * 10_000, i % 5) for i in range(1, 40)]
    rows = [skewed, *on_time]
    combine = CombineState(DEFS, 1, lateness_s=60)
    wm, late = NO_WATERMARK, 0
    for offset, r in enumerate(rows):  # one event per message, in arrival order
        got = partials(BATCHES.build([r]), DEFS.values(), 60, wm)
        late += sum(got.late.values())
        wm = max(wm, got.max_time)
        assert combine.apply(orjson.loads(encode_partials(0, offset, wm, got, DEFS)))
    assert late == 0
    assert wm == on_time[-1]["event_time"]  # not the skewed clock's T0 + 9 min
    finals = combine.close_all()
    got = {
        (r["metric"], r["window"], r["window_start"], r["dimensions"]): r["value"] for r in finals
    }
    assert got == one_pass(rows)


def test_a_quiet_partition_stops_holding_windows_open_after_the_idle_time() -> None:
    combine = CombineState(DEFS, 2, lateness_s=60)
    combine.idle_ms = 60_000
    minute = T0 - T0 % 60_000
    p0 = partials(BATCHES.build([row(0, 0, minute + 5_000, 1)]), DEFS.values(), 60, NO_WATERMARK)
    far = minute + 10 * 60_000  # partition 0 is ten minutes further on
    combine.apply(orjson.loads(encode_partials(0, 1, far, p0, DEFS)), now_ms=1_000)
    # Partition 1 never sent anything: it holds the window while it may still be busy.
    assert combine.close_ready(now_ms=30_000) == []
    again = partials(BATCHES.build([row(2, 0, far, 1)]), DEFS.values(), 60, far)
    combine.apply(orjson.loads(encode_partials(0, 2, far, again, DEFS)), now_ms=61_000)
    closed = combine.close_ready(now_ms=61_001)  # partition 1 quiet for 60 s now
    assert ("pv", "1m", minute) in {(r["metric"], r["window"], r["window_start"]) for r in closed}
    # It wakes up with an event of that closed minute: late, counted, not a new final.
    p1 = partials(BATCHES.build([row(1, 0, minute + 6_000, 2)]), DEFS.values(), 60, NO_WATERMARK)
    late_msg = orjson.loads(encode_partials(1, 1, minute + 6_000, p1, DEFS))
    assert combine.apply(late_msg, now_ms=62_000)
    assert combine.late >= 1
    assert not any(r["window_start"] == minute for r in combine.close_ready(now_ms=62_000))


def test_without_processing_time_every_partition_counts() -> None:
    combine = CombineState(DEFS, 2, lateness_s=60)
    combine.idle_ms = 60_000
    p0 = partials(BATCHES.build([row(0, 0, T0, 1)]), DEFS.values(), 60, NO_WATERMARK)
    combine.apply(orjson.loads(encode_partials(0, 1, T0 + 3_600_000, p0, DEFS)))
    assert combine.close_ready() == []  # partition 1 has no watermark yet


def test_windows_close_when_every_partition_passed_them() -> None:
    combine = CombineState(DEFS, 2, lateness_s=60)
    t = T0 + 5_000
    p0 = partials(BATCHES.build([row(0, 0, t, 1)]), DEFS.values(), 60, NO_WATERMARK)
    combine.apply(orjson.loads(encode_partials(0, 1, t + 3 * 60_000, p0, DEFS)))
    assert combine.close_ready() == []  # partition 1 has no watermark yet
    p1 = partials(BATCHES.build([row(1, 0, t + 2 * 60_000, 2)]), DEFS.values(), 60, NO_WATERMARK)
    combine.apply(orjson.loads(encode_partials(1, 1, t + 2 * 60_000, p1, DEFS)))
    closed = combine.close_ready()
    assert {(r["metric"], r["window"]) for r in closed} >= {("pv", "1m"), ("uv", "1m")}
    assert all(r["window"] == "1m" and r["window_start"] == T0 for r in closed)
    # A partial for the closed minute arriving now is late at the combine.
    again = partials(BATCHES.build([row(2, 0, t, 3)]), DEFS.values(), 60, NO_WATERMARK)
    combine.apply(orjson.loads(encode_partials(0, 2, t + 3 * 60_000, again, DEFS)))
    assert combine.late > 0


def test_changelog_records_rebuild_the_state() -> None:
    combine = CombineState(DEFS, 1, lateness_s=60)
    replica = CombineState(DEFS, 1, lateness_s=60)
    for i in range(5):
        t = T0 + i * 50_000
        p = partials(BATCHES.build([row(i, i % 3, t, i)]), DEFS.values(), 60, NO_WATERMARK)
        combine.apply(orjson.loads(encode_partials(0, i, t, p, DEFS)))
        combine.close_ready()
        records = combine.take_records()
        assert records
        for record in records:
            replica.apply_record(orjson.loads(orjson.dumps(record)))
    assert replica.applied == combine.applied
    assert replica.closed == combine.closed
    assert replica.provisional() == combine.provisional()


def test_a_group_of_records_cut_short_by_a_crash_is_not_applied() -> None:
    """A take logged as several records: the state after a crash between them is the
    state before the take, so its replay counts each event once."""
    combine = CombineState(DEFS, 1, lateness_s=60)
    for i in range(2):
        p = partials(BATCHES.build([row(i, 0, T0 + i, 1)]), DEFS.values(), 60, NO_WATERMARK)
        combine.apply(orjson.loads(encode_partials(0, i, T0 + i, p, DEFS)))
    first = combine.take_records()
    p = partials(BATCHES.build([row(2, 0, T0 + 2, 1)]), DEFS.values(), 60, NO_WATERMARK)
    combine.apply(orjson.loads(encode_partials(0, 2, T0 + 2, p, DEFS)))
    second = combine.take_records(max_bytes=10)  # forced into one record per part
    assert len(second) > 2
    replica = CombineState(DEFS, 1, lateness_s=60)
    for record in [*first, *second[:-1]]:
        replica.apply_record(orjson.loads(orjson.dumps(record)))
    assert replica.applied == {0: 1}
    assert replica.open[("events", 60, T0, '{"event_name":"page_view"}')] == 2
    replica.apply_record(orjson.loads(orjson.dumps(second[-1])))
    assert replica.applied == {0: 2}
    assert replica.open == combine.open


def test_a_torn_group_is_dropped_not_glued_to_the_next_one() -> None:
    """Found in review: the records of a group cut short by a crash stayed buffered and were
    applied with the next complete group (its outbox rows shifted, its sets mixed in)."""
    combine = CombineState(DEFS, 1, lateness_s=60)
    p = partials(BATCHES.build([row(1, 0, T0, 1)]), DEFS.values(), 60, NO_WATERMARK)
    combine.apply(orjson.loads(encode_partials(0, 1, T0 + 5 * 60_000, p, DEFS)))
    rows = combine.close_ready()
    torn = combine.take_records(max_bytes=10, outbox=(3, 0, rows))[:-1]  # crash: no end
    replica = CombineState(DEFS, 1, lateness_s=60)
    fresh = CombineState(DEFS, 1, lateness_s=60)  # what the next owner logs, from scratch
    p = partials(BATCHES.build([row(2, 0, T0 + 1, 1)]), DEFS.values(), 60, NO_WATERMARK)
    fresh.apply(orjson.loads(encode_partials(0, 1, T0 + 1, p, DEFS)))
    complete = fresh.take_records()
    for record in [*torn, *complete]:
        replica.apply_record(orjson.loads(orjson.dumps(record)))
    assert replica.unsent is None
    assert replica.open == fresh.open
    assert replica.applied == {0: 1}


def test_the_outbox_of_the_last_group_is_recovered_as_unsent() -> None:
    combine = CombineState(DEFS, 1, lateness_s=60)
    p = partials(BATCHES.build([row(1, 0, T0, 1)]), DEFS.values(), 60, NO_WATERMARK)
    combine.apply(orjson.loads(encode_partials(0, 1, T0 + 5 * 60_000, p, DEFS)))
    rows = combine.close_ready()
    assert rows
    records = combine.take_records(max_bytes=200, outbox=(7, 0, rows))
    assert len(records) > 1
    replica = CombineState(DEFS, 1, lateness_s=60)
    for record in records:
        replica.apply_record(orjson.loads(orjson.dumps(record)))
    assert replica.unsent == (7, 0, rows)
    # A later group without finals means the outbox was delivered (publish awaits it).
    p = partials(BATCHES.build([row(2, 0, T0 + 6 * 60_000, 1)]), DEFS.values(), 60, NO_WATERMARK)
    combine.apply(orjson.loads(encode_partials(0, 2, T0 + 6 * 60_000, p, DEFS)))
    for record in combine.take_records():
        replica.apply_record(orjson.loads(orjson.dumps(record)))
    assert replica.unsent is None


def test_uv_sketch_error_is_within_two_percent_after_merging_partitions() -> None:
    from pipeline.metrics.series import merge, new_hll, result

    parts = [new_hll() for _ in range(4)]
    for i in range(60_000):
        parts[i % 4].update(f"person-{i}")
        parts[(i * 7) % 4].update(f"person-{i}")  # the same person seen on two partitions
    merged = None
    for p in parts:
        merged = merge("hll", merged, p)
    assert abs(result("hll", merged) - 60_000) <= 0.02 * 60_000


def test_funnel_merges_the_states_of_two_identifiers_of_one_person() -> None:
    """Anonymous browsing on a device, then a logged-in purchase: one person's entry."""
    combine = CombineState(DEFS, 1, lateness_s=60)
    combine.resolve = lambda n: "p-member" if n in ("anonymous_id:d1", "user_id:m1") else n
    device = [row(1, 0, T0 + 1_000, 1), row(2, 0, T0 + 60_000, 1)]
    device[0]["properties"] = {"page": "home"}
    device[1]["properties"] = {"page": "product_detail"}
    member = [row(3, 3, T0 + 120_000, 1)]  # add_to_cart
    member[0]["user_id"] = "m1"
    # Out of order: the member's later step arrives before the device's browsing.
    late_first = partials(BATCHES.build(member), DEFS.values(), 60, NO_WATERMARK)
    combine.apply(orjson.loads(encode_partials(0, 1, T0 + 120_000, late_first, DEFS)))
    early = partials(BATCHES.build(device), DEFS.values(), 60, NO_WATERMARK)
    combine.apply(orjson.loads(encode_partials(0, 2, T0 + 120_000, early, DEFS)))
    rows = {
        r["dimensions"]: r["value"] for r in combine.close_all() if r["metric"] == "purchase_funnel"
    }
    assert rows == {
        '{"step":1}': 1.0,
        '{"step":2}': 1.0,
        '{"step":3}': 1.0,
        '{"step":4}': 0.0,
        '{"step":5}': 0.0,
    }


def test_funnel_state_is_dropped_after_its_conversion_window() -> None:
    """An identifier's last entry is kept only while a later event could fall within
    ``within`` of it; the replica rebuilt from the records forgets it as well."""
    within = seconds(DEFS["purchase_funnel"].funnel.within) * 1000  # type: ignore[union-attr]
    combine = CombineState(DEFS, 1, lateness_s=60)
    replica = CombineState(DEFS, 1, lateness_s=60)

    def feed(offset: int, rows: list[dict[str, Any]]) -> None:
        wm = max(r["event_time"] for r in rows)
        p = partials(BATCHES.build(rows), DEFS.values(), 60, NO_WATERMARK)
        combine.apply(orjson.loads(encode_partials(0, offset, wm, p, DEFS)))

    home = [row(3 * i, 0, T0 + i * 36_000, i) for i in range(100)]  # every 36 s, 1 hour
    feed(1, home)
    combine.close_all()
    last = combine.flast["purchase_funnel"]
    late_entries = range(100)
    late_entries = [i for i in late_entries if T0 + i * 36_000 + within > T0 + 3_600_000]
    assert set(last) == {f"anonymous_id:d{i}" for i in late_entries}
    assert last  # the hour's last entries still matter to the next hour
    feed(2, [row(3 * 200, 0, T0 + 4 * 3_600_000 - 60_000, 200)])  # hours later
    combine.close_all()
    assert set(combine.flast["purchase_funnel"]) == {"anonymous_id:d200"}
    assert combine.fevents["purchase_funnel"] == {}
    for record in combine.take_records():
        replica.apply_record(orjson.loads(orjson.dumps(record)))
    assert replica.flast == combine.flast


def test_changelog_records_stay_batch_sized_with_a_million_identifiers_an_hour() -> None:
    """Exact sets are logged as what each batch added, split to fit in a Kafka message."""
    combine = CombineState(DEFS, 1, lateness_s=60)
    replica = CombineState(DEFS, 1, lateness_s=60)
    people = 1_000_000
    batch = 50_000
    biggest = 0
    hour = T0 - T0 % 3_600_000
    for b in range(people // batch):
        ids = [f"anonymous_id:d{b}-{i}" for i in range(batch)]
        orders = [f"o{b}-{i}" for i in range(batch)]
        msg = {
            "p": 0,
            "o": b,
            "wm": T0 + 1_000 + b,  # all within one hour
            "s": [["uv", 3600, hour, "{}", ids], ["orders", 3600, hour, "{}", orders]],
            "f": {},
        }
        assert combine.apply(msg)
        for record in combine.take_records():
            size = len(orjson.dumps(record))
            biggest = max(biggest, size)
            replica.apply_record(orjson.loads(orjson.dumps(record)))
    assert biggest < 1_000_000 / 2  # never the whole set
    key_uv = ("uv", 3600, hour, "{}")
    assert len(combine.open[key_uv]) == people
    assert replica.open[key_uv] == combine.open[key_uv]
    assert replica.applied == combine.applied


def test_a_funnel_hour_waits_for_the_links_of_events_up_to_its_conversion_window() -> None:
    """The hour's entries and the steps within ``within`` after it are resolved together:
    an event in the next half hour whose link is not here yet holds the hour too."""
    within = seconds(DEFS["purchase_funnel"].funnel.within) * 1000  # type: ignore[union-attr]
    combine = CombineState(DEFS, 1, lateness_s=60)
    home = row(1, 0, T0 + 1_000, 1)
    home["properties"] = {"page": "home"}
    detail = row(2, 0, T0 + 3_600_000 + within - 60_000, 1)  # inside the conversion window
    detail["properties"] = {"page": "product_detail"}
    later = row(3, 0, T0 + 3 * 3_600_000, 2)  # moves the watermark past the hour + within
    for offset, (r, links) in enumerate([(home, 3), (detail, 8), (later, 9)], 1):
        p = partials(BATCHES.build([r]), DEFS.values(), 60, NO_WATERMARK)
        value = orjson.loads(encode_partials(0, offset, r["event_time"], p, DEFS, links))
        combine.apply(value)
    assert combine.funnel_need("purchase_funnel", T0) == 8  # not 9: that event is later
    assert combine.waiting_for() == 9

    def funnel_rows(known: int) -> list[dict[str, Any]]:
        got = combine.close_ready(known=known)
        return [r for r in got if r["metric"] == "purchase_funnel"]

    assert funnel_rows(7) == []
    assert {r["window_start"] for r in funnel_rows(8)} == {T0}
    replica = CombineState(DEFS, 1, lateness_s=60)
    for record in combine.take_records():
        replica.apply_record(orjson.loads(orjson.dumps(record)))
    assert replica.fneeds == combine.fneeds  # the closed hour's needs are gone from both
    assert min(h for f in replica.fneeds.values() for h in f) >= T0 + 3_600_000
