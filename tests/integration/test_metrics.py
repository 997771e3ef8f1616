"""Metric rollups through the real broker and worker, checked against the lake."""

from __future__ import annotations

import random
import time
from datetime import UTC, datetime
from typing import Any

import orjson

from pipeline.metric_defs import load_metrics
from pipeline.metric_report import batch_values
from pipeline.plan import load_plan
from pipeline.query import connect
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
    m = worker.metrics()
    assert m['trackflow_metric_value{dimensions="{}",metric="pay_requests",window="1h"}'] > 0
    assert m['trackflow_metric_windows_closed_total{reason="idle",window="1h"}'] >= 1


def test_sigkills_during_the_stream_leave_the_same_rollups(deployment: Deployment) -> None:
    deployment.env["TRACKFLOW_IDLE_CLOSE_SECONDS"] = "6"
    now = int(time.time() * 1000)
    start = now - now % 3_600_000 - 3_600_000 + 40 * 60_000
    events = shop_traffic(6000, start, minutes=30, seed=5)
    # In event-time order, like a replay: nothing is late, so the stream must equal the lake.
    chunks = [events[i : i + 2000] for i in range(0, len(events), 2000)]
    worker = deployment.start_worker()
    for n, chunk in enumerate(chunks):
        deployment.produce([orjson.dumps(chunk[i : i + 10]) for i in range(0, len(chunk), 10)])
        wait_for(lambda w=worker: w.metric("trackflow_events_received_total") > 0, timeout=60)
        time.sleep(0.5 * n)
        worker.kill()
        worker = deployment.start_worker()
    wait_for(lambda: deployment.count("events") == len(events), timeout=180)
    plan = load_plan()
    defs = load_metrics(plan)
    con = connect(deployment.data_dir)
    lo = datetime.fromtimestamp(start / 1000 - 3600, UTC)
    hi = datetime.fromtimestamp(now / 1000 + 3600, UTC)
    expected = {
        (r["metric"], r["window"], r["window_start"], r["dimensions"]): r["value"]
        for name in EXACT
        for r in batch_values(con, defs, name, lo, hi)
    }

    def exact_rollups() -> dict[tuple[str, str, int, str], float | None]:
        return {k: v["value"] for k, v in stream_rollups(deployment).items() if k[0] in EXACT}

    wait_for(lambda: set(exact_rollups()) >= set(expected), timeout=180, what="rollups")
    got = exact_rollups()
    diff = {k: (got.get(k), v) for k, v in expected.items() if got.get(k) != v}
    assert not diff, sorted(diff.items())[:10]
    late_events = sum(
        v
        for k, v in deployment.workers[-1].metrics().items()
        if k.startswith("trackflow_late_events_total{")
    )
    assert late_events == 0
    assert got == expected
    rows = deployment.query(
        'SELECT metric, "window", window_start, dimensions, count(*) AS n FROM ('
        "SELECT * FROM read_parquet('"
        + str(deployment.data_dir / "lake" / "rollups" / "**" / "*.parquet")
        + "')"
        ") GROUP BY ALL HAVING count(*) > 1"
    )
    assert rows == [], "a final value was stored twice"
