"""Metric rollups through the real broker and worker, checked against the lake."""

from __future__ import annotations

import random
import time
from datetime import UTC, datetime
from typing import Any

import orjson
import pytest

from pipeline.contract.plan import load_plan
from pipeline.lake.views import connect
from pipeline.metrics.definitions import load_metrics
from pipeline.metrics.report import batch_values
from tests.support import Deployment, wait_for

EXACT = ["events", "pv", "pay_requests", "pay_successes", "payment_success_rate", "orders", "gmv"]


def shop_traffic(n: int, start_ms: int, minutes: int, seed: int = 3) -> list[dict[str, Any]]:
    rng = random.Random(seed)
    events = []
    for i in range(n):
        t = start_ms + int(i * minutes * 60_000 / n) + rng.randrange(1000)
        device = f"dev{rng.randrange(60)}"
        kind = rng.random()
        if kind < 0.6:
            name = "page_view"
            props: dict[str, Any] = {"page": rng.choice(["home", "product_detail", "cart"])}
        elif kind < 0.8:
            name = "pay_request"
            props = {"order_id": f"o{i}", "amount": 59.9, "pay_method": "wechat_pay"}
        else:
            name = "pay_success"
            order = f"o{i - rng.randrange(3)}"
            props = {
                "order_id": order,
                "amount": rng.randrange(100, 50_000) / 100,
                "pay_method": "wechat_pay",
            }
        events.append(
            {
                "event_id": f"m{i}",
                "event_name": name,
                "event_time": t,
                "anonymous_id": device,
                "platform": "miniprogram",
                "properties": props,
            }
        )
    return events


def stream_rollups(dep: Deployment) -> dict[tuple[str, str, int, str], dict[str, Any]]:
    rows = dep.query("SELECT * FROM rollups")
    out = {}
    for r in rows:
        start = int(datetime.fromisoformat(r["window_start"]).timestamp() * 1000)
        out[(r["metric"], r["window"], start, r["dimensions"])] = r
    return out


def test_rollups_equal_the_lake_recomputation(deployment: Deployment) -> None:
    deployment.env["TRACKFLOW_IDLE_CLOSE_SECONDS"] = "4"
    now = int(time.time() * 1000)
    start = now - now % 3_600_000 - 3_600_000 + 50 * 60_000  # spans an hour boundary
    events = shop_traffic(1500, start, minutes=20)
    worker = deployment.start_worker()
    deployment.produce([orjson.dumps(events[i : i + 10]) for i in range(0, len(events), 10)])
    wait_for(lambda: deployment.count("events") == len(events), timeout=90)
    plan = load_plan()
    defs = load_metrics(plan)
    lo = datetime.fromtimestamp(start / 1000 - 3600, UTC)
    hi = datetime.fromtimestamp(now / 1000 + 3600, UTC)
    con = connect(deployment.data_dir)
    expected = {
        name: {
            (r["metric"], r["window"], r["window_start"], r["dimensions"]): r
            for r in batch_values(con, defs, name, lo, hi)
        }
        for name in [*EXACT, "uv"]
    }
    total = sum(len(v) for v in expected.values())
    wait_for(lambda: len(stream_rollups(deployment)) >= total, timeout=120, what="rollups")
    got = stream_rollups(deployment)
    for name in EXACT:
        for key, want in expected[name].items():
            have = got[key]
            assert have["value"] == want["value"], (key, have, want)
            assert have["numerator"] == want["numerator"]
            assert have["denominator"] == want["denominator"]
    for key, want in expected["uv"].items():
        assert abs(got[key]["value"] - want["value"]) <= 0.02 * want["value"]
    assert {k for k in got if k[0] in EXACT} == {k for n in EXACT for k in expected[n]}
    # Every window closed (idle): the newest hour's final shown once the gauges refresh
    # (every 5 s), no provisional value left.
    final = 'trackflow_metric_final{dimensions="{}",metric="pay_requests",window="1h"}'
    hours = {k[2]: r["value"] for k, r in got.items() if k[:2] == ("pay_requests", "1h")}
    wait_for(lambda: worker.metric(final) == hours[max(hours)], timeout=15, what=final)
    m = worker.metrics()
    assert not [k for k in m if k.startswith("trackflow_metric_value{")]
    assert m['trackflow_metric_windows_closed_total{reason="idle",window="1h"}'] >= 1


@pytest.mark.parametrize("workers", [1, 2], ids=["one-worker", "two-workers"])
def test_sigkills_during_the_stream_leave_the_same_rollups(
    deployment: Deployment, workers: int
) -> None:
    """SIGKILLs mid-stream: of the only worker, or of one of two (alternately), so the
    other takes its partitions over while input flows."""
    deployment.env["TRACKFLOW_IDLE_CLOSE_SECONDS"] = "6"
    now = int(time.time() * 1000)
    start = now - now % 3_600_000 - 3_600_000 + 40 * 60_000
    events = shop_traffic(6000, start, minutes=30, seed=5)
    # In event-time order, like a replay: nothing is late, so the stream must equal the lake.
    chunks = [events[i : i + 2000] for i in range(0, len(events), 2000)]
    live = [deployment.start_worker() for _ in range(workers)]
    for n, chunk in enumerate(chunks):
        deployment.produce([orjson.dumps(chunk[i : i + 10]) for i in range(0, len(chunk), 10)])
        victim = live[n % workers]
        wait_for(lambda w=victim: w.metric("trackflow_events_received_total") > 0, timeout=60)
        time.sleep(0.5 * n)
        victim.kill()
        live[n % workers] = deployment.start_worker()
    wait_for(lambda: deployment.count("events") == len(events), timeout=180)
    expect_exact_rollups(deployment, start, now)
    late_events = sum(
        v
        for w in live
        for k, v in w.metrics().items()
        if k.startswith("trackflow_late_events_total{")
    )
    assert late_events == 0


def expect_exact_rollups(deployment: Deployment, start_ms: int, now_ms: int) -> None:
    """Every exact rollup and funnel step of [start - 1 h, now + 1 h] equals the lake's
    recomputation, and no final value is stored twice in the rollups files."""
    plan = load_plan()
    defs = load_metrics(plan)
    con = connect(deployment.data_dir)
    lo = datetime.fromtimestamp(start_ms / 1000 - 3600, UTC)
    hi = datetime.fromtimestamp(now_ms / 1000 + 3600, UTC)
    names = [*EXACT, "purchase_funnel"]
    try:
        expected = {
            (r["metric"], r["window"], r["window_start"], r["dimensions"]): r["value"]
            for name in names
            for r in batch_values(con, defs, name, lo, hi)
        }
    finally:
        con.close()

    def exact_rollups() -> dict[tuple[str, str, int, str], float | None]:
        return {k: v["value"] for k, v in stream_rollups(deployment).items() if k[0] in names}

    wait_for(lambda: set(exact_rollups()) >= set(expected), timeout=180, what="rollups")
    got = exact_rollups()
    diff = {k: (got.get(k), v) for k, v in expected.items() if got.get(k) != v}
    assert not diff, sorted(diff.items())[:10]
    assert got == expected
    rows = deployment.query(
        'SELECT metric, "window", window_start, dimensions, count(*) AS n FROM ('
        "SELECT * FROM read_parquet('"
        + str(deployment.data_dir / "lake" / "rollups" / "**" / "*.parquet")
        + "')"
        ") GROUP BY ALL HAVING count(*) > 1"
    )
    assert rows == [], "a final value was stored twice"


def funnel_traffic(
    people: int, start_ms: int, seed: int = 9
) -> tuple[list[dict[str, Any]], dict[str, str]]:
    """Shoppers who browse anonymously, log in mid-way and buy; some on a second device.

    Returns the events and each event's true person, so the funnel can be checked against
    people, not only against the lake.
    """
    rng = random.Random(seed)
    events: list[dict[str, Any]] = []
    truth: dict[str, str] = {}
    n = 0

    def emit(
        person: str, t: int, name: str, props: dict[str, Any], device: str, user: str | None
    ) -> None:
        nonlocal n
        n += 1
        e = {
            "event_id": f"f{n}",
            "event_name": name,
            "event_time": t,
            "anonymous_id": device,
            "platform": "miniprogram",
            "properties": props,
        }
        if user:
            e["user_id"] = user
        events.append(e)
        truth[e["event_id"]] = person

    for p in range(people):
        member = f"buyer{p}" if p % 4 else None  # every fourth never logs in
        t = start_ms + rng.randrange(100 * 60_000)
        for d in range(1 + p % 2):
            device = f"fd{p}-{d}"
            user = None
            steps = rng.randrange(1, 6)
            t += rng.randrange(1, 40) * 60_000
            emit(member or device, t, "page_view", {"page": "home"}, device, None)
            if steps >= 2:
                t += rng.randrange(5_000, 300_000)
                emit(member or device, t, "page_view", {"page": "product_detail"}, device, None)
            if member:
                t += 10_000
                user = member
                emit(member, t, "login", {"method": "wechat"}, device, user)
            if steps >= 3:
                t += rng.randrange(5_000, 300_000)
                emit(
                    member or device,
                    t,
                    "add_to_cart",
                    {"product_id": "sku1", "quantity": 1, "price": 9.9},
                    device,
                    user,
                )
            if steps >= 4:
                t += rng.randrange(5_000, 300_000)
                emit(
                    member or device,
                    t,
                    "checkout",
                    {"order_id": f"fo{p}-{d}", "amount": 9.9, "item_count": 1},
                    device,
                    user,
                )
            if steps >= 5:
                t += rng.randrange(5_000, 300_000)
                emit(
                    member or device,
                    t,
                    "pay_success",
                    {"order_id": f"fo{p}-{d}", "amount": 9.9, "pay_method": "wechat_pay"},
                    device,
                    user,
                )
    events.sort(key=lambda e: e["event_time"])
    return events, truth


def test_funnel_follows_people_and_equals_the_lake(deployment: Deployment) -> None:
    from pipeline.metrics.funnel import counts_by_hour, entries, step_mask

    deployment.env["TRACKFLOW_IDLE_CLOSE_SECONDS"] = "5"
    now = int(time.time() * 1000)
    start = now - now % 3_600_000 - 3 * 3_600_000
    events, truth = funnel_traffic(120, start)
    deployment.start_worker()
    deployment.produce([orjson.dumps(events[i : i + 8]) for i in range(0, len(events), 8)])
    wait_for(lambda: deployment.count("events") == len(events), timeout=90)
    defs = load_metrics(load_plan())
    funnel = defs["purchase_funnel"]
    # The funnel over the true persons, straight from the scenario.
    by_person: dict[str, list[tuple[int, int]]] = {}
    for e in events:
        mask = step_mask(funnel, e["event_name"], e["properties"])
        if mask:
            by_person.setdefault(truth[e["event_id"]], []).append((e["event_time"], mask))
    true_counts = counts_by_hour(
        [x for evs in by_person.values() for x in entries(sorted(evs), 5, 30 * 60_000)], 5
    )
    expected = {
        (hour, step): float(c)
        for hour, counts in true_counts.items()
        for step, c in enumerate(counts, 1)
    }

    def stream() -> dict[tuple[int, int], float]:
        rows = stream_rollups(deployment)
        return {
            (k[2], orjson.loads(k[3])["step"]): v["value"]
            for k, v in rows.items()
            if k[0] == "purchase_funnel"
        }

    wait_for(lambda: set(stream()) >= set(expected), timeout=120, what="funnel rollups")
    assert stream() == expected
    con = connect(deployment.data_dir)
    lo = datetime.fromtimestamp(start / 1000 - 3600, UTC)
    hi = datetime.fromtimestamp(now / 1000 + 3600, UTC)
    lake = {
        (r["window_start"], orjson.loads(r["dimensions"])["step"]): r["value"]
        for r in batch_values(con, defs, "purchase_funnel", lo, hi)
    }
    assert lake == expected
    # uv counts persons as the map knows them: the browsing before a login counts once.
    resolved = {
        (r["window"], r["window_start"]): r["value"] for r in batch_values(con, defs, "uv", lo, hi)
    }
    streamed = {
        (k[1], k[2]): v["value"] for k, v in stream_rollups(deployment).items() if k[0] == "uv"
    }
    assert set(streamed) == set(resolved)
    for key, want in resolved.items():
        assert abs(streamed[key] - want) <= 0.02 * want, key
    out = deployment.run(
        "report", "funnel", "--from", lo.isoformat(), "--to", hi.isoformat(), "--format", "json"
    ).stdout
    assert len(orjson.loads(out)) == len(expected)
    # Through the real broker, partials carry the identity.links offset their windows wait
    # for (stitch's header), and no partial asks for more than the writer ever read.
    links_end = len(topic_values(deployment, "identity.links"))
    needs = [orjson.loads(v).get("l", -1) for v in topic_values(deployment, "metrics.partials")]
    assert max(needs) >= 0
    assert max(needs) < links_end


def topic_values(dep: Deployment, topic: str) -> list[bytes]:
    """Every message value of the deployment's ``topic``, all partitions."""
    from confluent_kafka import Consumer, TopicPartition

    name = f"{dep.name}.{topic}"
    consumer = Consumer(
        {
            "bootstrap.servers": dep.env["TRACKFLOW_BROKER"].split("://")[-1],
            "group.id": f"{dep.name}-probe",
            "enable.partition.eof": True,
        }
    )
    try:
        partitions = consumer.list_topics(name, timeout=10).topics[name].partitions
        consumer.assign([TopicPartition(name, p, 0) for p in partitions])
        out: list[bytes] = []
        left = set(partitions)
        while left and (msg := consumer.poll(20)) is not None:
            if msg.error() is not None:
                left.discard(msg.partition())  # end of the partition
            else:
                out.append(msg.value())
        return out
    finally:
        consumer.close()
