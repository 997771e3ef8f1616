"""A payment outage in simulated traffic fires the payment alert, once, and only there."""

from __future__ import annotations

import time
from datetime import datetime

from tests.support import Deployment, wait_for


def ms(text: str) -> int:
    return int(datetime.fromisoformat(text).timestamp() * 1000)


def test_payment_outage_fires_within_minutes_of_onset(deployment: Deployment) -> None:
    deployment.env["TRACKFLOW_IDLE_CLOSE_SECONDS"] = "5"
    now = int(time.time() * 1000)
    start = now - now % 60_000 - 60 * 60_000
    onset = start + 35 * 60_000
    worker = deployment.start_worker()
    deployment.run(
        "simulate",
        "--rate", "40",
        "--duration", str(55 * 60),
        "--fast",
        "--seed", "4",
        "--start-ms", str(start),
        "--outage-start", str(35 * 60),
        "--outage-minutes", "6",
        "--outage-success-rate", "0.3",
    )  # fmt: skip
    wait_for(
        lambda: (
            worker.metric('trackflow_metric_windows_closed_total{reason="idle",window="1m"}') > 0
        ),
        timeout=180,
        what="the last windows closed",
    )
    wait_for(lambda: deployment.count("alerts") > 0, timeout=30, what="an alert in the lake")
    alerts = deployment.query(
        "SELECT rule, window_start, window_end, observed, expected, resolved_at FROM alerts "
        "WHERE rule = 'payment_success_rate_drop'"
    )
    assert len(alerts) == 1, alerts  # one incident, no alert outside it
    fired = alerts[0]
    assert onset <= ms(fired["window_end"]) <= onset + 10 * 60_000
    assert fired["observed"] < 0.8 * fired["expected"]
    assert fired["resolved_at"] is not None  # the traffic recovered for 14 minutes after
    m = worker.metrics()
    key = 'trackflow_alerts_fired_total{rule="payment_success_rate_drop",severity="critical"}'
    assert m[key] == 1
