"""Anomaly detectors over one metric series, causal and online (issue 6).

Every detector sees points in time order, one at a time, and returns a score in [0, 1]
and whether the point is anomalous; it never looks ahead and needs no training run. The
detect agent and ``trackflow anomaly score`` run exactly these classes.

* ``threshold``: a fixed lower and/or upper bound.
* ``relative_drop``: the value falls ``drop`` (e.g. 20 %) or more below a trailing
  baseline (the median of the last ``baseline`` normal points), with a minimum volume so a
  quiet window cannot fire. Points judged anomalous do not feed the baseline.
* ``adaptive``: a robust, seasonal, online model for series without a fixed threshold
  (volume per event, GMV, UV): expected = level + trend + seasonal profile for the time
  of day (additive Holt-Winters), scale = 1.25 x the exponentially weighted mean absolute
  deviation of residuals; residuals are clipped before
  they update the model (Huber-style), so an incident does not teach the model that the
  incident is normal. Scores are ``1 - exp(-(|z| / z_alert) ** 2)``-shaped, and a point
  is anomalous when ``|z|`` is at least ``z_alert``.
"""

from __future__ import annotations

import math
from collections import deque
from dataclasses import dataclass
from statistics import median
from typing import Any


@dataclass(frozen=True)
class Verdict:
    score: float  # 0 = normal .. 1 = certainly anomalous
    anomalous: bool
    expected: float | None


class Detector:
    kind = ""

    def update(self, t_ms: int, value: float | None, volume: float | None = None) -> Verdict:
        raise NotImplementedError


class Threshold(Detector):
    kind = "threshold"

    def __init__(self, lower: float | None = None, upper: float | None = None) -> None:
        if lower is None and upper is None:
            raise ValueError("threshold needs lower and/or upper")
        self.lower, self.upper = lower, upper

    def update(self, t_ms: int, value: float | None, volume: float | None = None) -> Verdict:
        if value is None:
            return Verdict(0.0, False, None)
        bad = (self.lower is not None and value < self.lower) or (
            self.upper is not None and value > self.upper
        )
        expected = self.lower if self.lower is not None else self.upper
        return Verdict(1.0 if bad else 0.0, bad, expected)


class RelativeDrop(Detector):
    kind = "relative_drop"

    def __init__(
        self,
        drop: float = 0.2,
        baseline: int = 30,
        min_points: int = 5,
        min_volume: float = 0.0,
    ) -> None:
        if not 0 < drop < 1:
            raise ValueError("drop must be between 0 and 1")
        self.drop, self.min_points, self.min_volume = drop, min_points, min_volume
        self.history: deque[float] = deque(maxlen=baseline)

    def update(self, t_ms: int, value: float | None, volume: float | None = None) -> Verdict:
        if value is None or (volume is not None and volume < self.min_volume):
            return Verdict(0.0, False, self._baseline())
        base = self._baseline()
        if base is None or len(self.history) < self.min_points or base <= 0:
            self.history.append(value)
            return Verdict(0.0, False, base)
        fall = (base - value) / base
        score = min(1.0, max(0.0, fall / self.drop) ** 2) if fall > 0 else 0.0
        anomalous = fall >= self.drop
        if not anomalous:
            self.history.append(value)  # an incident must not become the baseline
        return Verdict(score, anomalous, base)

    def _baseline(self) -> float | None:
        return median(self.history) if self.history else None


class Adaptive(Detector):
    kind = "adaptive"

    def __init__(
        self,
        season_ms: int = 86_400_000,
        slots: int = 24,
        alpha: float = 0.1,
        beta: float = 0.05,
        seasonal_alpha: float = 0.2,
        z_alert: float = 4.0,
        warmup: int = 20,
        clip: float = 3.0,
        min_volume: float = 0.0,
        direction: str = "both",
    ) -> None:
        self.season_ms, self.slots = season_ms, slots
        self.alpha, self.beta, self.seasonal_alpha = alpha, beta, seasonal_alpha
        self.z_alert, self.warmup, self.clip = z_alert, warmup, clip
        self.min_volume, self.direction = min_volume, direction
        self.level: float | None = None
        self.trend = 0.0
        self.scale = 0.0  # exponentially weighted mean absolute deviation of residuals
        self.seasonal = [0.0] * slots
        self.seen = [0] * slots
        self.n = 0

    def _slot(self, t_ms: int) -> int:
        return int((t_ms % self.season_ms) * self.slots // self.season_ms)

    def update(self, t_ms: int, value: float | None, volume: float | None = None) -> Verdict:
        if value is None or (volume is not None and volume < self.min_volume):
            return Verdict(0.0, False, None)
        slot = self._slot(t_ms)
        if self.level is None:
            self.level = value
            self.n = 1
            return Verdict(0.0, False, value)
        expected = self.level + self.trend + (self.seasonal[slot] if self.seen[slot] else 0.0)
        resid = value - expected
        # 1.25 x mean absolute deviation estimates a standard deviation (normal noise).
        scale = max(1.25 * self.scale, 1e-9 + 0.01 * abs(expected))
        z = resid / scale
        if self.direction == "down":
            zz = max(0.0, -z)
        elif self.direction == "up":
            zz = max(0.0, z)
        else:
            zz = abs(z)
        ready = self.n >= self.warmup
        score = 1.0 - math.exp(-((zz / self.z_alert) ** 2)) if ready else 0.0
        anomalous = ready and zz >= self.z_alert
        # Learn with the residual clipped, so outliers move the model only a little.
        c = max(-self.clip * scale, min(self.clip * scale, resid)) if self.n > 2 else resid
        self.level += self.trend + self.alpha * c
        self.trend += self.beta * self.alpha * c
        s = self.seasonal[slot] if self.seen[slot] else 0.0
        self.seasonal[slot] = s + self.seasonal_alpha * (c - self.alpha * c)
        self.seen[slot] += 1
        self.scale = (1 - self.alpha) * self.scale + self.alpha * abs(c) if self.n > 1 else abs(c)
        self.n += 1
        return Verdict(score, anomalous, expected)


KINDS: dict[str, type[Detector]] = {cls.kind: cls for cls in (Threshold, RelativeDrop, Adaptive)}


def make(kind: str, params: dict[str, Any]) -> Detector:
    if kind not in KINDS:
        raise ValueError(f"unknown detector {kind!r}; known: {', '.join(sorted(KINDS))}")
    return KINDS[kind](**params)
