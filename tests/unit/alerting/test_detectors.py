"""Detectors on synthetic series, and the incident lifecycle around them."""

from __future__ import annotations

import math
import pickle
import random
from pathlib import Path

import pytest

from pipeline.alerting.detectors import Adaptive, RelativeDrop, TailModel, Threshold, make
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
    """Routine bursts every 41 hours raise this series' bar; a burst far beyond them fires.
    The same size of burst that is routine here pages on a series without bursts."""
    rng = random.Random(8)
    quiet = [100 + rng.gauss(0, 5) for _ in range(24 * 60)]
    bursty = list(quiet)
    for i in range(100, len(bursty), 41):
        bursty[i] += rng.choice([60, 80, 100])  # routine bursts, 12-20 sigma
    at = 24 * 55 + 3
    bursty[at] += 400
    got = fires("adaptive", {"slots": 1, "warmup": 48}, bursty)
    assert [i for i in got if i > 24 * 10] == [at]  # after ten days, only the outlier
    quiet[at] += 80
    assert fires("adaptive", {"slots": 1, "warmup": 48}, quiet) == [at]


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
    det = Adaptive(warmup=288 * 3, risk=1e-5)  # a pager's risk: none of 2,000 normal points
    verdicts = [det.update(T0 + i * step, v) for i, v in enumerate(series)]
    assert det.slots == 288
    flagged = [i for i, v in enumerate(verdicts) if v.anomalous]
    assert flagged
    assert flagged[0] == at
    # The dip, and the first points back up while the level it partly learned recovers
    # (the anomaly holds while p < hold).
    assert all(at <= i < at + 24 + 16 for i in flagged)


def test_adaptive_stays_quiet_on_a_flat_line() -> None:
    assert fires("adaptive", {"warmup": 10}, [42.0] * 500) == []


def test_tail_model_turns_surprises_into_tail_probabilities() -> None:
    """p falls as the surprise grows, is larger where the history is heavy-tailed, stays
    1.0 until enough history exists, and the history stays bounded."""
    rng = random.Random(10)
    light, heavy = TailModel(500), TailModel(500)
    assert light.p(100.0) == 1.0  # no history: no evidence
    for _ in range(2000):
        light.add(abs(rng.gauss(0, 1)))
        heavy.add(abs(rng.gauss(0, 1)) * (rng.paretovariate(1.5) if rng.random() < 0.05 else 1))
    assert len(light.sorted) == len(light.ring) == 500
    ps = [light.p(x) for x in (1.0, 2.0, 3.0, 5.0, 8.0)]
    assert ps == sorted(ps, reverse=True)
    assert 0.2 < ps[0] < 0.45  # P(|N(0,1)| >= 1) = 0.32, from the empirical part
    assert ps[-1] < 1e-5  # far beyond anything seen: extrapolated, tiny but not zero
    assert ps[-1] > 0.0
    assert heavy.p(5.0) > 100 * light.p(5.0)


def test_adaptive_scores_mean_the_same_on_different_kinds_of_series() -> None:
    """One threshold serves all: on normal series of very different scales and noise
    (Gaussian, heavy-tailed bytes, small counts, a daily shape) hardly any row scores
    above 0.5, and a clear anomaly in each scores above it."""
    rng = random.Random(11)
    n = 1500
    kinds = {
        "gaussian": [50 + rng.gauss(0, 2) for _ in range(n)],
        "bytes": [
            1e6 * math.exp(rng.gauss(0, 0.3)) * (rng.uniform(3, 8) if rng.random() < 0.02 else 1)
            for _ in range(n)
        ],
        "counts": [float(sum(rng.random() < 0.3 for _ in range(10))) for _ in range(n)],
        "daily": seasonal(n, seed=12),
    }
    at = 1300
    for name, series in kinds.items():
        det = Adaptive(slots=24)
        normal = [det.update(T0 + i * H, v).score for i, v in enumerate(series)]
        assert sum(s > 0.5 for s in normal[200:]) <= 2, name
        bad = list(series)
        bad[at] = 3 * max(series) + 10  # a spike far above anything routine
        det = Adaptive(slots=24)
        scores = [det.update(T0 + i * H, v).score for i, v in enumerate(bad)]
        assert scores[at] > 0.5, name


def test_adaptive_slow_view_sees_a_lasting_shift_the_fast_level_absorbs() -> None:
    """A lasting shift of 3.5 noise scales: the fast level adopts it within a few points,
    the slow view still sees it; without the slow view it is never flagged."""
    rng = random.Random(4)
    series = [10 + rng.gauss(0, 1) for _ in range(1500)]
    series[1200:] = [v + 3.5 for v in series[1200:]]
    with_slow = fires("adaptive", {"slots": 1}, series)
    assert with_slow
    assert 1200 <= with_slow[0] < 1215
    assert [i for i in with_slow if i < 1200] == []
    assert [i for i in fires("adaptive", {"slots": 1, "slow": False}, series) if i >= 1200] == []


def test_adaptive_log_view_sees_a_drop_where_noise_grows_with_the_level() -> None:
    """Hourly values from 100 at night to 10,000 by day with 10 % noise: a night hour at
    30 % is lost in the day's spread on the raw scale, plain on the log scale."""
    rng = random.Random(13)
    series = [
        100 * 100 ** ((1 - math.cos(2 * math.pi * (i % 24) / 24)) / 2) * math.exp(rng.gauss(0, 0.1))
        for i in range(24 * 40)
    ]
    at = 24 * 35 + 1  # 01:00, near the bottom of the day
    series[at] *= 0.3
    assert at in fires("adaptive", {"slots": 24}, series)
    assert at not in fires("adaptive", {"slots": 24, "log": False}, series)


def test_adaptive_score_is_above_the_bar_only_where_an_anomaly_starts() -> None:
    """The score column: above 0.5 on the first anomalous point, exactly 0.5 while the
    anomaly holds, below 0.5 elsewhere; so a threshold on it counts anomalies, not rows."""
    series = seasonal(24 * 20, seed=14)
    at = 24 * 15 + 6
    series[at : at + 5] = [v * 3 for v in series[at : at + 5]]
    det = Adaptive(slots=24)
    verdicts = [det.update(T0 + i * H, v) for i, v in enumerate(series)]
    above = [i for i, v in enumerate(verdicts) if v.score > 0.5]
    assert above == [at]
    assert all(v.score == 0.5 for v in verdicts[at + 1 : at + 5])
    assert all(v.anomalous == (v.score >= 0.5) for v in verdicts)


def test_adaptive_direction_down_ignores_spikes_up() -> None:
    series = seasonal(24 * 20, seed=15)
    series[24 * 15] *= 4
    series[24 * 17] *= 0.2
    assert fires("adaptive", {"slots": 24, "direction": "down"}, series) == [24 * 17]
    assert fires("adaptive", {"slots": 24, "direction": "up"}, series) == [24 * 15]


def test_adaptive_state_is_bounded_and_survives_pickling() -> None:
    """The detect stage may keep many series: memory stays bounded by ``history`` and the
    state pickles; a copy taken mid-stream continues exactly like the original."""
    rng = random.Random(16)
    det = Adaptive(slots=24, history=200)
    series = [100 + rng.gauss(0, 5) for _ in range(3000)]
    for i, v in enumerate(series[:2000]):
        det.update(T0 + i * H, v)
    assert all(len(t.ring) == len(t.sorted) == 200 for t in det.tails.values())
    copy = pickle.loads(pickle.dumps(det))
    rest = [(T0 + i * H, v) for i, v in enumerate(series) if i >= 2000]
    assert [det.update(t, v) for t, v in rest] == [copy.update(t, v) for t, v in rest]


def test_adaptive_rejects_inconsistent_parameters() -> None:
    with pytest.raises(ValueError, match="risk"):
        Adaptive(risk=0.1, hold=0.01)
    with pytest.raises(ValueError, match="direction"):
        Adaptive(direction="sideways")


def test_adaptive_log_view_waits_for_a_positive_value_and_stops_at_a_negative() -> None:
    """A count that starts with zeros gets its log offset from its first positive values
    (not a 1e-9 that would make every 0 -> 1 step enormous); a series that goes negative
    is not multiplicative and leaves the log view."""
    det = Adaptive(slots=1)
    for i, v in enumerate([0.0] * 15 + [4.0, 2.0, 3.0]):
        det.update(T0 + i * H, v)
    assert det.log_offset == pytest.approx(0.4)
    det.update(T0 + 20 * H, -1.0)
    assert det._view_value("log", 5.0) is None


def test_adaptive_skips_gaps_and_non_finite_values() -> None:
    """A NaN from a recorded file is a gap, not a point: it must not poison the model."""
    series = seasonal(24 * 10, seed=17)
    det, clean = Adaptive(slots=24), Adaptive(slots=24)
    for i, v in enumerate(series):
        if i == 24 * 5:
            assert det.update(T0 + i * H, math.nan).anomalous is False
            assert det.update(T0 + i * H, None).anomalous is False
        assert det.update(T0 + i * H, v) == clean.update(T0 + i * H, v)
