"""The windowed scorer behind bench/anomaly/nab.py: its numbers decide which detector wins."""

from __future__ import annotations

import pytest

from bench.anomaly.nab_score import (
    PROFILES,
    Layout,
    normalise,
    perfect_and_null,
    probation,
    score_detections,
    sweep,
    windows,
)

STD = PROFILES["standard"]
LOW_FP = PROFILES["reward_low_FP_rate"]


def test_windows_are_centred_sized_by_label_count_and_merged() -> None:
    assert windows(1000, [500]) == [(450, 550)]
    assert windows(1000, [300, 700]) == [(275, 325), (675, 725)]
    assert windows(1000, [500, 510]) == [(475, 535)]  # overlapping windows merge
    assert windows(1000, []) == []
    assert probation(1000) == 150
    assert probation(100_000) == 750


def test_perfect_scores_100_null_0_and_earlier_beats_later() -> None:
    lay = Layout.of(1000, [500])
    perfect, null = perfect_and_null([lay], STD)

    def norm(hit: int | None) -> float:
        detected = [i == hit for i in range(1000)]
        return normalise(score_detections(lay, detected, STD).score, perfect, null)

    assert norm(450) == pytest.approx(100.0)
    assert norm(None) == pytest.approx(0.0)
    assert 0 < norm(540) < norm(500) < norm(460) < 100


def test_only_the_first_detection_in_a_window_counts() -> None:
    lay = Layout.of(1000, [500])
    once = score_detections(lay, [i == 460 for i in range(1000)], STD)
    many = score_detections(lay, [460 <= i <= 550 for i in range(1000)], STD)
    assert many.score == pytest.approx(once.score)
    assert (many.tp, many.fp, many.fn) == (1, 0, 0)


def test_false_positives_cost_more_far_from_a_window_and_in_the_low_fp_profile() -> None:
    lay = Layout.of(1000, [500])
    near = score_detections(lay, [i == 560 for i in range(1000)], STD)
    far = score_detections(lay, [i == 900 for i in range(1000)], STD)
    before = score_detections(lay, [i == 300 for i in range(1000)], STD)
    assert near.fp == far.fp == before.fp == 1
    assert -1.0 - STD["fp"] <= far.score < near.score < -1.0  # each still misses the window
    assert before.score == pytest.approx(-1.0 - STD["fp"])
    heavy = score_detections(lay, [i == 300 for i in range(1000)], LOW_FP)
    assert heavy.score == pytest.approx(-1.0 - LOW_FP["fp"])


def test_detections_in_the_probationary_period_are_ignored() -> None:
    lay = Layout.of(1000, [500])
    c = score_detections(lay, [i < 150 for i in range(1000)], STD)
    assert (c.tp, c.fp, c.fn) == (0, 0, 1)


def test_sweep_finds_the_threshold_a_brute_force_search_finds() -> None:
    layouts = [Layout.of(600, [300]), Layout.of(600, [200, 450]), Layout.of(600, [])]
    scores = [
        [((i * 37) % 101) / 100 for i in range(600)],
        [0.9 if i in (190, 460, 520) else ((i * 53) % 97) / 120 for i in range(600)],
        [((i * 29) % 89) / 100 for i in range(600)],
    ]
    threshold, best = sweep(layouts, scores, STD)
    brute = max(
        sum(
            score_detections(lay, [x >= t for x in s], STD).score
            for lay, s in zip(layouts, scores, strict=True)
        )
        for t in {x for s in scores for x in s}
    )
    assert best.score == pytest.approx(max(brute, -STD["fn"] * 3))
    again = sum(
        score_detections(lay, [x >= threshold for x in s], STD).score
        for lay, s in zip(layouts, scores, strict=True)
    )
    assert again == pytest.approx(best.score)
