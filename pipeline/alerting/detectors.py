"""Anomaly detectors over one metric series, causal and online (issue 6).

Every detector sees points in time order, one at a time, and returns a score in [0, 1]
and whether the point is anomalous; it never looks ahead and needs no training run. The
detect agent and ``trackflow anomaly score`` run exactly these classes.

* ``threshold``: a fixed lower and/or upper bound.
* ``relative_drop``: the value falls ``drop`` (e.g. 20 %) or more below a trailing
  baseline (the median of the last ``baseline`` normal points), with a minimum volume so a
  quiet window cannot fire. Points judged anomalous do not feed the baseline.
* ``adaptive``: for series without a fixed threshold (volume per event, GMV, UV,
  recorded series of any kind): robust seasonal forecasts (additive Holt-Winters, one
  slot per sampling interval by default) of the value, its logarithm and a slow level;
  each surprise becomes a tail probability against the series' own history of surprises
  (peaks over threshold), so ``score`` > 0.5 means "rarer than ``risk`` for this series"
  on every series, bursty or quiet (issue 15). docs/anomaly-detection.md explains the
  parameters and how they were chosen.
"""

from __future__ import annotations

import bisect
import math
from array import array
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


class TailModel:
    """How rare a value of one evidence stream is for this series: its tail probability.

    Keeps the last ``size`` values (bounded: a ring and the same values sorted) and fits
    a generalised Pareto distribution to the excesses over its top ``tail`` fraction
    (peaks over threshold, as SPOT does: Siffer et al., "Anomaly Detection in Streams with
    Extreme Value Theory", KDD 2017). Within the history the probability is the empirical
    one; beyond its threshold it is extrapolated, so a value larger than any seen still
    gets a finite, comparable probability. A series whose surprises are heavy-tailed (a
    bursty count) thus needs a larger surprise for the same probability than a quiet one,
    and one probability threshold serves every series.
    """

    MIN_TAIL = 10  # excesses needed for a fit; fewer values answer 1.0 (no evidence)
    MAX_SHAPE = 0.5  # heavier tails are fitted as this shape (method of moments' range)
    MIN_SIGMA = 0.25  # in noise scales: ties (quantised values) must not make p collapse

    def __init__(self, size: int = 2000, tail: float = 0.02) -> None:
        if size < 2 * self.MIN_TAIL:
            raise ValueError(f"history must be at least {2 * self.MIN_TAIL}")
        self.size, self.tail = size, tail
        self.ring = array("d")  # the last values, oldest at ``pos`` once full
        self.pos = 0
        self.sorted = array("d")
        self.fit: tuple[int, float, float, float] | None = None  # (k, u, shape, sigma)

    def add(self, x: float) -> None:
        if len(self.ring) < self.size:
            self.ring.append(x)
            self.fit = None  # the count changed
        else:
            old = self.ring[self.pos]
            self.ring[self.pos] = x
            self.pos = (self.pos + 1) % self.size
            del self.sorted[bisect.bisect_left(self.sorted, old)]
            if self.fit is not None and (old >= self.fit[1] or x >= self.fit[1]):
                self.fit = None  # the top of the history changed
        bisect.insort(self.sorted, x)

    def _fit(self) -> tuple[int, float, float, float]:
        n = len(self.sorted)
        k = max(self.MIN_TAIL, int(self.tail * n))
        u = self.sorted[n - k - 1]
        top = self.sorted[n - k :]
        mean = sum(top) / k - u
        var = sum((y - u - mean) ** 2 for y in top) / (k - 1)
        shape = 0.5 * (1.0 - mean * mean / var) if var > 0 and mean > 0 else 0.0
        shape = min(self.MAX_SHAPE, max(0.0, shape))  # never lighter than exponential
        sigma = max(mean * (1.0 - shape), self.MIN_SIGMA)
        return k, u, shape, sigma

    def p(self, x: float) -> float:
        """P(a value >= x) for this stream; 1.0 until the history holds 2 x MIN_TAIL."""
        n = len(self.sorted)
        if n < 2 * self.MIN_TAIL:
            return 1.0
        if self.fit is None:
            self.fit = self._fit()
        k, u, shape, sigma = self.fit
        if x <= u:
            return (n - bisect.bisect_left(self.sorted, x) + 1) / (n + 1)
        y = x - u
        excess = math.exp(-y / sigma) if shape < 1e-6 else (1 + shape * y / sigma) ** (-1 / shape)
        return (k + 1) / (n + 1) * excess


class _Forecast:
    """Robust additive Holt-Winters: the z of each point against level + trend + the
    offset of its slot, scale = 1.25 x the mean absolute deviation of clipped residuals."""

    def __init__(
        self,
        slots: int,
        alpha: float,
        beta: float,
        seasonal_alpha: float,
        scale_alpha: float,
        clip: float,
    ) -> None:
        self.alpha, self.beta, self.seasonal_alpha = alpha, beta, seasonal_alpha
        self.scale_alpha, self.clip = scale_alpha, clip
        self.level: float | None = None
        self.trend = 0.0
        self.scale = 0.0  # exponentially weighted mean absolute deviation of residuals
        self.seasonal: list[float] = [0.0] * slots
        self.seen: list[int] = [0] * slots
        self.n = 0
        self.scale_n = 0  # residuals the scale has learned from

    def resize(self, slots: int) -> None:
        self.seasonal, self.seen = [0.0] * slots, [0] * slots

    def step(self, slot: int, value: float) -> tuple[float, float, bool]:
        """(z, expected, ready): ready once the scale has learned and the slot is known."""
        if self.level is None:
            self.level, self.n = value, 1
            return 0.0, value, False
        known = bool(self.seen) and self.seen[slot] > 0
        expected = self.level + self.trend + (self.seasonal[slot] if known else 0.0)
        resid = value - expected
        # 1.25 x mean absolute deviation estimates a standard deviation (normal noise).
        scale = max(1.25 * self.scale, 1e-9 + 0.01 * abs(expected))
        z = resid / scale
        # A slot never seen has no seasonal offset yet: its residual is not evidence.
        ready = self.scale_n >= 3 and (known or len(self.seen) <= 1)
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
        if len(self.seen) == 1:
            self.seen[0] = 1  # one slot: no seasonal offset, the level alone holds it
        elif known:
            self.seasonal[slot] += self.seasonal_alpha * (c - self.alpha * c)
            self.seen[slot] += 1
        if not first_visit:
            # A plain mean of the first residuals, then exponentially weighted.
            self.scale_n += 1
            a = max(self.scale_alpha, 1 / self.scale_n)
            self.scale = (1 - a) * self.scale + a * abs(c)
        self.n += 1
        return z, expected, ready


class Adaptive(Detector):
    """Seasonal forecasts seen three ways, each surprise turned into a tail probability.

    Views: the value (``raw``), its logarithm while the series is non-negative (``log``:
    multiplicative noise, bytes and counts whose spread grows with the level) and the value
    against a slowly moving level (``slow``: a lasting shift the fast level would adopt
    before it looks significant). Evidence per view: the point's z and the mean z of its
    last ``run`` points (``slow_run`` for the slow view), each split into its upward and
    downward part. Each evidence is compared with its own history (``TailModel``), and the
    smallest probability, times the number of evidences (Bonferroni), is the point's p.
    Anomalous when p < ``risk`` and the evidence behind it is at least ``z_alert`` noise
    scales; an open anomaly lasts while p < ``hold`` (hysteresis, so an incident does not
    flap) and teaches the tail histories nothing. score = log10(1/p) / (2 x log10(1/risk)),
    capped at 1: 0.5 at the bar, comparable across series; above 0.5 only where an anomaly
    starts, 0.5 while it holds.
    """

    kind = "adaptive"

    def __init__(
        self,
        season_ms: int = 86_400_000,
        slots: int = 0,
        alpha: float = 0.1,
        beta: float = 0.05,
        seasonal_alpha: float = 0.2,
        scale_alpha: float = 0.02,
        z_alert: float = 5.0,
        warmup: int = 20,
        clip: float = 3.0,
        min_volume: float = 0.0,
        direction: str = "both",
        run: int = 4,
        history: int = 2000,
        risk: float = 1e-3,
        hold: float = 1e-2,
        slow_alpha: float = 0.01,
        slow_run: int = 12,
        log: bool = True,
        slow: bool = True,
    ) -> None:
        if direction not in ("both", "up", "down"):
            raise ValueError("direction must be both, up or down")
        if not 0 < risk <= hold < 1:
            raise ValueError("need 0 < risk <= hold < 1")
        if run < 1 or slow_run < 1:
            raise ValueError("run and slow_run must be at least 1")
        self.season_ms, self.slots = season_ms, slots
        self.z_alert, self.warmup = z_alert, warmup
        self.min_volume, self.direction = min_volume, direction
        self.risk, self.hold = risk, hold
        self.bar_log = -math.log10(risk)
        self.views: dict[str, _Forecast] = {
            "raw": _Forecast(slots, alpha, beta, seasonal_alpha, scale_alpha, clip)
        }
        if log:
            self.views["log"] = _Forecast(slots, alpha, beta, seasonal_alpha, scale_alpha, clip)
        if slow:
            self.views["slow"] = _Forecast(
                slots, slow_alpha, 0.0, seasonal_alpha, scale_alpha, clip
            )
        self.recent: dict[str, deque[float]] = {
            v: deque(maxlen=slow_run if v == "slow" else run) for v in self.views
        }
        # One tail per view, evidence and side: a series whose bursts go up has a heavy
        # upper tail and may still have a light lower one, where a drop is rare.
        sides = {"both": ("up", "down"), "up": ("up",), "down": ("down",)}[direction]
        self.tails: dict[str, TailModel] = {}
        for v in self.views:
            for e in ("run",) if v == "slow" else ("point", "run"):
                for side in sides:
                    self.tails[f"{v}.{e}.{side}"] = TailModel(history)
        self.log_offset: float | None = None  # set from the first values' magnitude
        self.early = 0  # values seen before the offset was set
        self.min_positive: float | None = None
        self.log_ok = log
        self.last_t: int | None = None
        self.n = 0
        self.active = False

    def _slot(self, t_ms: int) -> int:
        if not self.slots:
            # Auto: one slot per sampling interval (from the first two points), at most
            # MAX_AUTO_SLOTS, so a daily shape is learned at the series' own resolution.
            step = t_ms - self.last_t if self.last_t is not None else 0
            if step <= 0:
                return 0
            self.slots = max(1, min(MAX_AUTO_SLOTS, self.season_ms // step))
            for f in self.views.values():
                f.resize(self.slots)
        return int((t_ms % self.season_ms) * self.slots // self.season_ms)

    def _view_value(self, view: str, value: float) -> float | None:
        if view != "log":
            return value
        if value < 0:
            self.log_ok = False  # a series that goes negative is not multiplicative
        if not self.log_ok:
            return None
        if self.log_offset is None:
            # log(x + c), c = 10 % of the smallest positive of the first values: zeros stay
            # finite, and the noise of values near zero does not dominate the view.
            self.early += 1
            if value > 0:
                self.min_positive = min(self.min_positive or value, value)
            if self.early < 10 or self.min_positive is None:
                return None
            self.log_offset = 0.1 * self.min_positive
        return math.log(value + self.log_offset)

    def update(self, t_ms: int, value: float | None, volume: float | None = None) -> Verdict:
        if value is None or not math.isfinite(value):
            return Verdict(0.0, False, None)  # a gap, or a NaN from a recorded file
        if volume is not None and volume < self.min_volume:
            return Verdict(0.0, False, None)
        slot = self._slot(t_ms)
        self.last_t = t_ms
        self.n += 1
        expected: float | None = None
        evidence: list[tuple[float, float]] = []  # (p, surprise)
        for view, forecast in self.views.items():
            x = self._view_value(view, value)
            if x is None:
                continue
            z, exp_x, ready = forecast.step(slot, x)
            if view == "raw":
                expected = exp_x
            recent = self.recent[view]
            recent.append(z)
            run_z = sum(recent) / math.sqrt(len(recent))  # N(0, 1) for independent noise
            if not ready or self.n < self.warmup:
                continue
            for name, s in (("point", z), ("run", run_z)):
                for side, surprise in (("up", max(0.0, s)), ("down", max(0.0, -s))):
                    tail = self.tails.get(f"{view}.{name}.{side}")
                    if tail is not None:
                        evidence.append((tail.p(surprise), surprise))
                        if not self.active:  # an open anomaly must not teach what is normal
                            tail.add(surprise)
        if not evidence:
            return Verdict(0.0, False, expected)
        m = len(evidence)
        p = min(1.0, m * min(q for q, _ in evidence))
        # Only evidence of at least z_alert noise scales may open an anomaly: a series
        # that has been almost constant must not page on a deviation of a hair.
        strong = [q for q, s in evidence if s >= self.z_alert]
        p_open = min(1.0, m * min(strong)) if strong else 1.0
        score = min(1.0, max(0.0, -math.log10(max(p_open, 1e-300)) / (2 * self.bar_log)))
        if not strong:
            score = min(score, 0.499 * max(s for _, s in evidence) / self.z_alert)
        if self.active:
            # An open anomaly goes on while p < hold; its later points are not news, so
            # their score stays at the bar: above 0.5 means "an anomaly starts here".
            anomalous = p < self.hold
            score = 0.5 if anomalous else min(score, 0.499)
        else:
            anomalous = p_open < self.risk
        self.active = anomalous
        return Verdict(score, anomalous, expected)


KINDS: dict[str, type[Detector]] = {cls.kind: cls for cls in (Threshold, RelativeDrop, Adaptive)}


def make(kind: str, params: dict[str, Any]) -> Detector:
    if kind not in KINDS:
        raise ValueError(f"unknown detector {kind!r}; known: {', '.join(sorted(KINDS))}")
    return KINDS[kind](**params)
