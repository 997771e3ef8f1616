"""Detectors on synthetic series, and the incident lifecycle around them."""

from __future__ import annotations

import math
import random
from pathlib import Path

import pytest

from pipeline.alerting.detectors import Adaptive, RelativeDrop, Threshold, make
from pipeline.alerting.rules import load_alert_rules
from pipeline.alerting.scoring import ad_hoc_rule, score_rows
from pipeline.contract.plan import load_plan
from pipeline.metrics.definitions import load_metrics

M = 60_000
H = 3_600_000
T0 = 1_699_920_000_000  # a UTC midnight, in ms


def fires(
    rule_kind: str, params: dict, series: list[float], sustain: int = 1, volume=None
) -> list[int]:  # type: ignore[no-untyped-def]
    rule = ad_hoc_rule(rule_kind, params, sustain, 3)
    rows = [
        {
            "timestamp": str(T0 + i * H),
            "value": str(v),
            "volume": "" if volume is None else str(volume[i]),
        }
        for i, v in enumerate(series)
    ]
    return [i for i, out in enumerate(score_rows(rule, rows)) if out["alert"]]


def seasonal(n: int, seed: int, noise: float = 0.05, base: float = 1000.0) -> list[float]:
    rng = random.Random(seed)
    return [
        base * (1 + 0.5 * math.sin(2 * math.pi * (i % 24) / 24)) * (1 + rng.gauss(0, noise))
        for i in range(n)
    ]


def test_threshold() -> None:
    d = Threshold(lower=0.5)
    assert not d.update(0, 0.7).anomalous
    assert d.update(0, 0.4).anomalous
    with pytest.raises(ValueError, match="lower and/or upper"):
        Threshold()


def test_relative_drop_fires_on_a_step_drop_and_not_on_noise() -> None:
    rng = random.Random(1)
    normal = [0.9 + rng.uniform(-0.03, 0.03) for _ in range(60)]
    outage = [0.5 + rng.uniform(-0.03, 0.03) for _ in range(10)]
    params = {"drop": 0.2, "baseline": 30, "min_points": 5}
    assert fires("relative_drop", params, normal) == []
    assert fires("relative_drop", params, normal + outage, sustain=2) == [61]


def test_relative_drop_does_not_learn_the_incident() -> None:
    d = RelativeDrop(drop=0.2, baseline=10, min_points=3)
    for _ in range(10):
        d.update(0, 1.0)
    for _ in range(30):
        assert d.update(0, 0.5).anomalous  # a long outage stays anomalous


def test_minimum_volume_guard() -> None:
    params = {"drop": 0.2, "baseline": 30, "min_points": 5, "min_volume": 20}
    series = [0.9] * 30 + [0.0] * 5
    volume = [100] * 30 + [2] * 5  # a quiet minute with 0 of 2 payments
    assert fires("relative_drop", params, series, volume=volume) == []
    volume = [100] * 30 + [50] * 5
    assert fires("relative_drop", params, series, volume=volume) == [30]


def test_adaptive_learns_seasonality_and_ignores_noise() -> None:
    series = seasonal(24 * 14, seed=2)
    assert fires("adaptive", {"slots": 24, "warmup": 48}, series) == []


def test_adaptive_fires_on_a_drop_against_the_season() -> None:
    series = seasonal(24 * 10, seed=3)
    at = 24 * 8 + 5
    series[at : at + 3] = [v * 0.3 for v in series[at : at + 3]]
    got = fires("adaptive", {"slots": 24, "warmup": 48}, series)
    assert got
    assert got[0] == at
    assert all(at <= i < at + 4 for i in got)


def test_adaptive_fires_on_a_spike() -> None:
    series = seasonal(24 * 10, seed=4)
    series[24 * 9] *= 3
    assert fires("adaptive", {"slots": 24, "warmup": 48}, series) == [24 * 9]


def test_adaptive_follows_a_slow_drift_without_alerting() -> None:
    rng = random.Random(5)
    series = [1000 * (1 + 0.002 * i) * (1 + rng.gauss(0, 0.03)) for i in range(400)]
    assert fires("adaptive", {"slots": 1, "warmup": 20}, series) == []


def test_adaptive_is_causal() -> None:
    """A score depends only on the points before it: changing the future changes nothing."""
    a, b = seasonal(100, seed=6), seasonal(100, seed=6)
    b[80:] = [0.0] * 20
    da, db = Adaptive(slots=24, warmup=10), Adaptive(slots=24, warmup=10)
    sa = [da.update(T0 + i * H, v).score for i, v in enumerate(a)]
    sb = [db.update(T0 + i * H, v).score for i, v in enumerate(b)]
    assert sa[:80] == sb[:80]


def test_lifecycle_fires_once_resolves_and_does_not_flap() -> None:
    params = {"drop": 0.2, "baseline": 20, "min_points": 5}
    series = [1.0] * 20 + [0.5] * 10 + [1.0] * 10 + [0.5] * 5 + [1.0] * 5
    rule = ad_hoc_rule("relative_drop", params, sustain=2, recover=3)
    rows = [{"timestamp": str(T0 + i * M), "value": str(v)} for i, v in enumerate(series)]
    out = list(score_rows(rule, rows))
    assert [i for i, r in enumerate(out) if r["alert"]] == [21, 41]  # one per incident
    # A single good point inside an outage does not resolve it, nor does it re-fire.
    series = [1.0] * 20 + [0.5, 0.5, 1.0, 0.5, 0.5, 1.0, 0.5] + [1.0] * 5
    rows = [{"timestamp": str(T0 + i * M), "value": str(v)} for i, v in enumerate(series)]
    assert [i for i, r in enumerate(score_rows(rule, rows)) if r["alert"]] == [21]


def test_shipped_rules_load_and_name_known_metrics() -> None:
    metrics = set(load_metrics(load_plan()))
    rules = load_alert_rules(metrics=metrics)
    pay = rules["payment_success_rate_drop"]
    assert pay.volume is not None
    assert pay.volume.metric == "pay_requests"
    assert pay.detector.kind == "relative_drop"
    assert pay.detector.params["drop"] == 0.2
    for rule in rules.values():
        assert rule.runbook.startswith("docs/runbooks/")
        assert Path(rule.runbook).exists(), rule.runbook


def test_unknown_detector_is_refused() -> None:
    with pytest.raises(ValueError, match="unknown detector"):
        make("prophet", {})


def test_score_cli_writes_scores_and_rejects_bad_input(tmp_path: Path) -> None:
    from typer.testing import CliRunner

    from pipeline.cli import cli

    good = tmp_path / "series.csv"
    rows = [f"{T0 + i * M},{0.9 if i < 30 else 0.4}" for i in range(40)]
    good.write_text("timestamp,value\n" + "\n".join(rows) + "\n")
    out = tmp_path / "scored.csv"
    args = ["anomaly", "score", "--detector", "relative_drop", "--param", "drop=0.2"]
    result = CliRunner().invoke(cli, [*args, "--input", str(good), "--output", str(out)])
    assert result.exit_code == 0, result.output
    lines = out.read_text().splitlines()
    assert lines[0] == "timestamp,value,score,alert"
    assert [i for i, line in enumerate(lines[1:]) if line.endswith(",1")] == [30]

    bad = tmp_path / "bad.csv"
    bad.write_text("time,val\n1,2\n")
    result = CliRunner().invoke(cli, [*args, "--input", str(bad), "--output", str(out)])
    assert result.exit_code == 2
    assert "timestamp and value" in result.output
    result = CliRunner().invoke(
        cli, ["anomaly", "score", "--detector", "prophet", "--input", str(good), "--output", "-"]
    )
    assert result.exit_code == 2
    assert "Input should be 'threshold', 'relative_drop' or 'adaptive'" in result.output


def test_adaptive_learns_what_surprise_is_normal_for_a_bursty_series() -> None:
    """Heavy-tailed bursts every few hours raise the bar; a burst far beyond them fires."""
    rng = random.Random(8)
    series = [100 + rng.gauss(0, 5) for _ in range(24 * 60)]
    for i in range(100, len(series), 41):
        series[i] += rng.choice([60, 80, 100])  # routine bursts, 12-20 sigma
    at = 24 * 55 + 3
    series[at] += 400
    got = fires("adaptive", {"slots": 1, "warmup": 48}, series)
    assert [i for i in got if i > 24 * 10] == [at]  # after ten days, only the outlier
    # A fixed 4-sigma rule pages on every routine burst.
    fixed = fires("adaptive", {"slots": 1, "warmup": 48, "margin": 0.0}, series)
    assert len(fixed) > 10


def test_adaptive_picks_the_seasonal_resolution_from_the_sampling_interval() -> None:
    """5-minute data with a square daily shape: learned per 5-minute slot, then quiet."""
    rng = random.Random(9)
    step = 5 * M
    days = 10
    series = [
        (80.0 if 8 * 12 <= i % 288 < 20 * 12 else 20.0) + rng.gauss(0, 1) for i in range(288 * days)
    ]
    at = 288 * 8 + 12 * 12
    series[at : at + 24] = [v - 50 for v in series[at : at + 24]]  # midday dip
    det = Adaptive(warmup=288 * 3)
    verdicts = [det.update(T0 + i * step, v) for i, v in enumerate(series)]
    assert det.slots == 288
    flagged = [i for i, v in enumerate(verdicts) if v.anomalous]
    assert flagged
    assert flagged[0] == at
    # The dip, and the first points back up while the level it partly learned recovers.
    assert all(at <= i < at + 24 + 6 for i in flagged)


def test_adaptive_stays_quiet_on_a_flat_line() -> None:
    assert fires("adaptive", {"warmup": 10}, [42.0] * 500) == []
