"""Windowed scoring of streaming anomaly detectors, as the Numenta Anomaly Benchmark does it.

Written from the method's description (Lavin & Ahmad, "Evaluating Real-time Anomaly
Detection Algorithms - the Numenta Anomaly Benchmark", 2015), not from its code:

* Each label gets a window of ``0.1 * rows / labels`` rows centred on it (overlaps merge).
* The first ``min(0.15 * rows, 750)`` rows are probationary: detections there count for
  nothing.
* In a window only the first detection counts, rewarded ``tp * s(y)`` where
  ``s(y) = 2 / (1 + e^(5y)) - 1`` and ``y`` runs from -1 at the window's start to 0 at its
  end: early detection earns almost 1, late almost 0. A window without a detection costs
  ``fn``.
* A detection outside every window costs ``fp * s(y)`` with ``y`` the distance past the
  preceding window in window lengths (just after a window it costs little; far away or
  with no window before it, the full ``fp``).
* Raw scores are summed over the corpus and normalised: 100 for the perfect detector
  (detects at each window's start), 0 for the null detector (never detects).
* A detector that emits scores rather than decisions is run at the single threshold that
  maximises its corpus score, per profile (NAB's optimiser); ``sweep`` finds it exactly.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

PROFILES: dict[str, dict[str, float]] = {
    "standard": {"tp": 1.0, "fp": 0.11, "fn": 1.0},
    "reward_low_FP_rate": {"tp": 1.0, "fp": 0.22, "fn": 1.0},
    "reward_low_FN_rate": {"tp": 1.0, "fp": 0.11, "fn": 2.0},
}


def scaled_sigmoid(y: float) -> float:
    if y > 3.0:
        return -1.0
    return 2.0 / (1.0 + math.exp(5.0 * y)) - 1.0


def windows(rows: int, label_rows: list[int]) -> list[tuple[int, int]]:
    """Inclusive (start, end) row ranges around the labels, merged where they overlap."""
    if not label_rows:
        return []
    half = int(0.1 * rows / len(label_rows)) // 2
    out: list[tuple[int, int]] = []
    for i in sorted(label_rows):
        start, end = max(0, i - half), min(rows - 1, i + half)
        if out and start <= out[-1][1]:
            out[-1] = (out[-1][0], max(out[-1][1], end))
        else:
            out.append((start, end))
    return out


def probation(rows: int) -> int:
    return min(int(0.15 * rows), 750)


@dataclass(frozen=True)
class Layout:
    """Where each row of one series stands relative to its windows."""

    rows: int
    windows: list[tuple[int, int]]
    window_of: list[int]  # window index per row, -1 outside
    weight: list[float]  # s(y): reward in a window (> 0), cost factor outside (<= 0)

    @classmethod
    def of(cls, rows: int, label_rows: list[int]) -> Layout:
        wins = windows(rows, label_rows)
        window_of = [-1] * rows
        weight = [-1.0] * rows
        for w, (start, end) in enumerate(wins):
            length = end - start + 1
            for i in range(start, end + 1):
                window_of[i] = w
                weight[i] = scaled_sigmoid(-(end - i + 1) / length)
            nxt = wins[w + 1][0] if w + 1 < len(wins) else rows
            for i in range(end + 1, nxt):
                weight[i] = scaled_sigmoid((i - end) / length)
        return cls(rows, wins, window_of, weight)


@dataclass
class Counts:
    score: float = 0.0
    tp: int = 0
    fp: int = 0
    fn: int = 0


def score_detections(layout: Layout, detected: list[bool], profile: dict[str, float]) -> Counts:
    """Raw score of one series' boolean detections (the ``alert`` column)."""
    out = Counts()
    first: dict[int, int] = {}
    for i in range(probation(layout.rows), layout.rows):
        if not detected[i]:
            continue
        w = layout.window_of[i]
        if w >= 0:
            first.setdefault(w, i)
        else:
            out.fp += 1
            out.score += profile["fp"] * layout.weight[i]
    for w in range(len(layout.windows)):
        if w in first:
            out.tp += 1
            out.score += profile["tp"] * layout.weight[first[w]]
        else:
            out.fn += 1
            out.score -= profile["fn"]
    return out


def perfect_and_null(layouts: list[Layout], profile: dict[str, float]) -> tuple[float, float]:
    perfect = sum(profile["tp"] * lay.weight[start] for lay in layouts for start, _ in lay.windows)
    null = -profile["fn"] * sum(len(lay.windows) for lay in layouts)
    return perfect, null


def normalise(raw: float, perfect: float, null: float) -> float:
    return 100.0 * (raw - null) / (perfect - null) if perfect != null else 0.0


def sweep(
    layouts: list[Layout], scores: list[list[float]], profile: dict[str, float]
) -> tuple[float, Counts]:
    """The threshold that maximises the corpus's raw score, and the counts there.

    Rows enter in descending score; a window's reward is that of its earliest row at or
    above the threshold, so the running total is updated in O(1) per row.
    """
    entries: list[tuple[float, int, int]] = []
    for s, (lay, row_scores) in enumerate(zip(layouts, scores, strict=True)):
        for i in range(probation(lay.rows), lay.rows):
            entries.append((row_scores[i], s, i))
    entries.sort(key=lambda e: -e[0])
    n_windows = sum(len(lay.windows) for lay in layouts)
    total = -profile["fn"] * n_windows
    counts = Counts(score=total, fn=n_windows)
    best = (math.inf, Counts(score=total, fn=n_windows))
    earliest: dict[tuple[int, int], int] = {}
    k = 0
    while k < len(entries):
        threshold = entries[k][0]
        while k < len(entries) and entries[k][0] == threshold:
            _, s, i = entries[k]
            lay = layouts[s]
            w = lay.window_of[i]
            if w < 0:
                counts.score += profile["fp"] * lay.weight[i]
                counts.fp += 1
            else:
                key = (s, w)
                before = earliest.get(key)
                if before is None:
                    counts.score += profile["fn"] + profile["tp"] * lay.weight[i]
                    counts.tp += 1
                    counts.fn -= 1
                    earliest[key] = i
                elif i < before:
                    counts.score += profile["tp"] * (lay.weight[i] - lay.weight[before])
                    earliest[key] = i
            k += 1
        if counts.score > best[1].score:
            best = (threshold, Counts(counts.score, counts.tp, counts.fp, counts.fn))
    return best
