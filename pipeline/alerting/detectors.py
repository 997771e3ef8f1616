"""Anomaly detectors over one metric series, causal and online (issue 6).

Every detector sees points in time order, one at a time, and returns a score in [0, 1]
and whether the point is anomalous; it never looks ahead and needs no training run. The
detect agent and ``trackflow anomaly score`` run exactly these classes.

* ``threshold``: a fixed lower and/or upper bound.
* ``relative_drop``: the value falls ``drop`` (e.g. 20 %) or more below a trailing
  baseline (the median of the last ``baseline`` normal points), with a minimum volume so a
  quiet window cannot fire. Points judged anomalous do not feed the baseline.
* ``adaptive``: a robust, seasonal, online model for series without a fixed threshold
  (volume per event, GMV, UV, recorded series of any kind): expected = level + trend +
  the offset of the time-of-day slot (additive Holt-Winters; by default one slot per
  sampling interval), scale = 1.25 x the mean absolute deviation of residuals. Residuals
  are clipped before they update the model, so an incident does not teach the model that
  the incident is normal. A point is anomalous when its surprise (|z|) reaches a bar the
  series sets for itself: ``margin`` x a high quantile of its own past surprises, never
  below ``z_alert``; a bursty series thus pages on what is unusual for it.
  docs/anomaly-detection.md explains the parameters and how they were chosen.
"""

from __future__ import annotations

import bisect
import math
from collections import deque
from dataclasses import dataclass
from statistics import median
from typing import Any

MAX_AUTO_SLOTS = 288  # 5-minute resolution over a day


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
        slots: int = 0,
        alpha: float = 0.1,
        beta: float = 0.05,
        seasonal_alpha: float = 0.2,
        scale_alpha: float = 0.02,
        z_alert: float = 4.0,
        warmup: int = 20,
        clip: float = 3.0,
        min_volume: float = 0.0,
        direction: str = "both",
        run: int = 1,
        history: int = 2000,
        quantile: float = 0.99,
        margin: float = 2.0,
    ) -> None:
        if direction not in ("both", "up", "down"):
            raise ValueError("direction must be both, up or down")
        self.season_ms, self.slots = season_ms, slots
        self.alpha, self.beta, self.seasonal_alpha = alpha, beta, seasonal_alpha
        self.scale_alpha = scale_alpha
        self.z_alert, self.warmup, self.clip = z_alert, warmup, clip
        self.min_volume, self.direction = min_volume, direction
        self.quantile, self.margin = quantile, margin
        self.level: float | None = None
        self.trend = 0.0
        self.scale = 0.0  # exponentially weighted mean absolute deviation of residuals
        self.seasonal: list[float] = [0.0] * slots
        self.seen: list[int] = [0] * slots
        self.last_t: int | None = None
        self.n = 0
        self.scale_n = 0  # residuals the scale has learned from
        self.run_bar: float | None = None  # the bar while a run of anomalous points lasts
        self.recent_z: deque[float] = deque(maxlen=max(1, run))
        self.history: deque[float] = deque(maxlen=history)  # past surprises, in order
        self.sorted: list[float] = []  # the same values, sorted

    def _slot(self, t_ms: int) -> int:
        if not self.slots:
            # Auto: one slot per sampling interval (from the first two points), at most
            # MAX_AUTO_SLOTS, so a daily shape is learned at the series' own resolution.
            step = t_ms - self.last_t if self.last_t is not None else 0
            if step <= 0:
                return 0
            self.slots = max(1, min(MAX_AUTO_SLOTS, self.season_ms // step))
            self.seasonal, self.seen = [0.0] * self.slots, [0] * self.slots
        return int((t_ms % self.season_ms) * self.slots // self.season_ms)

    def _bar(self) -> float:
        """The surprise that counts as anomalous: z_alert, or more where the series'
        own history (heavy tails, bursts) shows larger surprises are normal."""
        if not self.sorted:
            return self.z_alert
        q = self.sorted[min(len(self.sorted) - 1, int(self.quantile * len(self.sorted)))]
        return max(self.z_alert, self.margin * q)

    def _remember(self, surprise: float) -> None:
        if len(self.history) == self.history.maxlen:
            old = self.history[0]
            del self.sorted[bisect.bisect_left(self.sorted, old)]
        self.history.append(surprise)
        bisect.insort(self.sorted, surprise)

    def update(self, t_ms: int, value: float | None, volume: float | None = None) -> Verdict:
        if value is None or (volume is not None and volume < self.min_volume):
            return Verdict(0.0, False, None)
        slot = self._slot(t_ms)
        self.last_t = t_ms
        if self.level is None:
            self.level = value
            self.n = 1
            return Verdict(0.0, False, value)
        known = bool(self.seen) and self.seen[slot] > 0
        expected = self.level + self.trend + (self.seasonal[slot] if known else 0.0)
        resid = value - expected
        # 1.25 x mean absolute deviation estimates a standard deviation (normal noise).
        scale = max(1.25 * self.scale, 1e-9 + 0.01 * abs(expected))
        z = resid / scale
        # Surprise: the point's own z, or the mean z of the last ``run`` points scaled to
        # the same units, so a shift too small for one point is seen once it lasts.
        self.recent_z.append(z)
        k = len(self.recent_z)
        mean_z = sum(self.recent_z) / k * math.sqrt(k)
        if self.direction == "down":
            surprise = max(0.0, -z, -mean_z)
        elif self.direction == "up":
            surprise = max(0.0, z, mean_z)
        else:
            surprise = max(abs(z), abs(mean_z))
        # A slot never seen has no seasonal offset yet: its residual is not evidence.
        ready = self.n >= self.warmup and self.scale_n >= 3 and (known or len(self.seen) <= 1)
        bar = self.run_bar if self.run_bar is not None else self._bar()
        ratio = surprise / bar
        score = ratio**4 / (1.0 + ratio**4) if ready else 0.0  # 0.5 at the bar
        anomalous = ready and surprise >= bar
        if ready:
            self._remember(surprise)
        # While points stay anomalous the bar holds where the run started: an incident
        # must not talk the detector out of itself (it is remembered for the next one).
        self.run_bar = bar if anomalous else None
        # Learn with the residual clipped, so outliers move the model only a little.
        c = max(-self.clip * scale, min(self.clip * scale, resid)) if self.n > 2 else resid
        first_visit = bool(self.seen) and not known and len(self.seen) > 1
        if first_visit:
            # First visit of a time-of-day slot: its offset is the whole residual (classic
            # Holt-Winters start), else a daily shape far above the noise would be learned
            # at the clipped pace for weeks.
            self.seasonal[slot] = resid
            self.seen[slot] = 1
            c = 0.0
        self.level += self.trend + self.alpha * c
        self.trend += self.beta * self.alpha * c
        if self.seen and known:
            self.seasonal[slot] += self.seasonal_alpha * (c - self.alpha * c)
            self.seen[slot] += 1
        elif len(self.seen) == 1:
            self.seen[0] = 1  # one slot: no first-visit start, the level already holds it
        if not first_visit:
            # A plain mean of the first residuals, then exponentially weighted.
            self.scale_n += 1
            a = max(self.scale_alpha, 1 / self.scale_n)
            self.scale = (1 - a) * self.scale + a * abs(c)
        self.n += 1
        return Verdict(score, anomalous, expected)


KINDS: dict[str, type[Detector]] = {cls.kind: cls for cls in (Threshold, RelativeDrop, Adaptive)}


def make(kind: str, params: dict[str, Any]) -> Detector:
    if kind not in KINDS:
        raise ValueError(f"unknown detector {kind!r}; known: {', '.join(sorted(KINDS))}")
    return KINDS[kind](**params)
