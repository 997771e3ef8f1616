"""The detect stage over final rollups: rules, volume guard, one row per incident."""

from __future__ import annotations

import random
from typing import Any

from pipeline.alerting.detection import Detection, alert_rows
from pipeline.alerting.rules import load_alert_rules

M = 60_000
T0 = 1_795_400_000_000 - 1_795_400_000_000 % M
RULES = load_alert_rules()


def window(i: int, rate: float, requests: float) -> list[dict[str, Any]]:
    start = T0 + i * M
    base = {"window": "1m", "window_start": start, "window_end": start + M, "dimensions": "{}"}
    successes = round(rate * requests)
    return [
        {
            **base,
            "metric": "payment_success_rate",
            "value": successes / requests if requests else None,
            "numerator": successes,
            "denominator": requests,
        },
        {**base, "metric": "pay_requests", "value": requests},
    ]


def test_payment_outage_fires_once_within_minutes_and_resolves() -> None:
    rng = random.Random(2)
    d = Detection({"payment_success_rate_drop": RULES["payment_success_rate_drop"]})
    events = []
    for i in range(90):
        outage = 40 <= i < 50
        rate = (0.35 if outage else 0.9) + rng.uniform(-0.04, 0.04)
        events += [(i, kind, inc) for kind, inc in d.feed(window(i, rate, 60))]
    # The 5-minute rate is 20 % down after 2 bad minutes; sustained for 2 windows.
    assert [(i, kind) for i, kind, _ in events] == [(42, "fire"), (55, "resolve")]
    fired = events[0][2]
    assert fired.window_start == T0 + 41 * M  # the first window judged anomalous
    assert fired.window_end == T0 + 43 * M  # the data that made it fire ends here
    assert fired.severity == "critical"
    assert "payment_success_rate" in fired.message
    rows = alert_rows([("fire", fired)])
    assert rows[0]["kind"] == "fire"
    assert rows[0]["runbook_url"] == "docs/runbooks/payment-success-rate.md"


def test_quiet_minutes_cannot_page() -> None:
    d = Detection({"payment_success_rate_drop": RULES["payment_success_rate_drop"]})
    found = []
    for i in range(60):
        quiet = i >= 30
        found += d.feed(window(i, 0.0 if quiet else 0.9, 2 if quiet else 60))
    # 5 quiet minutes hold under 30 requests: never judged, whatever their rate.
    assert [inc.window_start for _, inc in found if inc.window_start >= T0 + 36 * M] == []


def test_low_volume_noise_does_not_page() -> None:
    rng = random.Random(7)
    d = Detection({"payment_success_rate_drop": RULES["payment_success_rate_drop"]})
    found = []
    for i in range(24 * 60):  # a day of minutes at 8 requests a minute, p = 0.9
        n = 8
        ok = sum(rng.random() < 0.9 for _ in range(n))
        found += d.feed(window(i, ok / n, n))
    assert found == []


def test_rows_already_fed_are_skipped() -> None:
    d = Detection({"payment_success_rate_drop": RULES["payment_success_rate_drop"]})
    for i in range(30):
        d.feed(window(i, 0.9, 60))
    assert d.feed(window(40, 0.3, 60) + window(41, 0.3, 60)) != []
    assert d.feed(window(41, 0.3, 60)) == []  # a replay of a window fed before


def test_an_event_that_stops_arriving_fires_the_volume_rule() -> None:
    """Rollups have no row for an event that vanished; the rule must see a zero."""
    rule = RULES["event_volume_anomaly"]
    d = Detection({rule.name: rule})
    rng = random.Random(3)
    hour = 3_600_000
    fired = []
    for i in range(24 * 5):
        start = T0 + i * hour
        base = {"metric": "events", "window": "1h", "window_start": start}
        rows = [
            {
                **base,
                "window_end": start + hour,
                "dimensions": '{"event_name":"page_view"}',
                "value": 1000 + rng.gauss(0, 30),
            }
        ]
        if i < 24 * 4:  # add_to_cart stops on day 5
            rows.append(
                {
                    **base,
                    "window_end": start + hour,
                    "dimensions": '{"event_name":"add_to_cart"}',
                    "value": 200 + rng.gauss(0, 10),
                }
            )
        fired += [(i, kind, inc) for kind, inc in d.feed(rows)]
    assert [(i, kind) for i, kind, _ in fired][:1] == [(24 * 4, "fire")]
    # It stays open for hours; the adaptive model adopts a lasting new level only slowly.
    assert all(i >= 24 * 4 + 6 for i, kind, _ in fired[1:])
    inc = fired[0][2]
    assert inc.dimensions == '{"event_name":"add_to_cart"}'
    assert inc.observed == 0.0
    assert inc.expected is not None
    assert inc.expected > 150
