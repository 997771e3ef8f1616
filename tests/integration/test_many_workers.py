"""Three workers, rolling SIGTERM restarts of each and a SIGKILL: the lake ends exact."""

from __future__ import annotations

import re
import time
from collections import Counter

from tests import traffic
from tests.integration.test_metrics import expect_exact_rollups
from tests.support import Deployment, wait_for


def test_three_workers_rolling_restarts_and_a_sigkill_end_exact(deployment: Deployment) -> None:
    deployment.env["TRACKFLOW_IDLE_CLOSE_SECONDS"] = "6"
    now = int(time.time() * 1000)
    start = now - now % 60_000 - 60 * 60_000
    workers = [deployment.start_worker() for _ in range(3)]
    # 55 simulated minutes of shop traffic, payments failing from minute 35 for 6 minutes,
    # then hand-built traffic with a known outcome for every event (bad ones included).
    sim = deployment.run(
        "simulate",
        "--rate", "30",
        "--duration", str(55 * 60),
        "--fast",
        "--seed", "8",
        "--start-ms", str(start),
        "--outage-start", str(35 * 60),
        "--outage-minutes", "6",
        "--outage-success-rate", "0.3",
    )  # fmt: skip
    found = re.search(r"/ (\d+) events", sim.stderr.decode())
    assert found, sim.stderr
    simulated = int(found.group(1))
    t = traffic.build(300)
    deployment.produce(t.lines)

    for i in range(3):  # rolling restart: each worker stopped (SIGTERM) and replaced
        deployment.wait_assigned([workers[-1]])  # the newest has joined and holds input
        workers[i].stop()
        workers.append(deployment.start_worker())
    deployment.wait_assigned([workers[-1]])
    workers[-2].kill()  # and one SIGKILL
    workers.append(deployment.start_worker())
    live = [w for w in workers if w.proc.poll() is None]
    assert len(live) == 3

    deployment.wait_settled(
        lambda: (
            deployment.count("events") == simulated + len(t.valid)
            and deployment.count("dlq") == len(t.rejected)
        ),
        timeout=300,
    )
    ids = [r["event_id"] for r in deployment.query("SELECT event_id FROM events")]
    assert len(ids) == len(set(ids)), "an event is stored twice"
    assert t.valid <= set(ids)
    codes = Counter(r["error_code"] for r in deployment.query("SELECT error_code FROM dlq"))
    assert codes == Counter(code for code, _ in t.rejected)

    expect_exact_rollups(deployment, start, now)

    wait_for(
        lambda: deployment.count("alerts", "resolved_at IS NOT NULL") > 0,
        timeout=90,
        what="the outage's alert, resolved, in the lake",
    )
    alerts = deployment.query(
        "SELECT alert_id FROM alerts WHERE rule = 'payment_success_rate_drop'"
    )
    assert len(alerts) == 1, alerts
    stored = deployment.query(
        "SELECT kind, count(DISTINCT alert_id) AS n FROM read_parquet('"
        + str(deployment.data_dir / "lake" / "alerts" / "**" / "*.parquet")
        + "') WHERE rule = 'payment_success_rate_drop' GROUP BY kind ORDER BY kind"
    )
    assert stored == [{"kind": "fire", "n": 1}, {"kind": "resolve", "n": 1}], stored
    stalls = [
        v for w in live for k, v in w.metrics().items() if k.startswith("trackflow_input_stalls")
    ]
    assert sum(stalls) == 0
