"""Published streaming anomaly detectors, for comparison with ours under NAB-style scoring.

Re-implemented here from the published algorithm descriptions (the Numenta Anomaly
Benchmark's baseline list, Wang et al. 2011, textbook EWMA / MAD control charts); no
NAB source is copied. Every detector has the same interface NAB uses:

* it is built with the series length and the series' minimum and maximum value, which
  NAB hands every detector up front (some use them to place bins or set epsilons);
* ``update(t_ms, value)`` sees the rows one by one in time order and returns an anomaly
  score in [0, 1] for that row. Scores are causal: a row's score depends only on that
  row, earlier rows, and the constructor arguments. Values must be finite.

``make(name, n_rows, min_value, max_value)`` builds one by its short id; ``BASELINES``
maps id -> class. ``python bench/anomaly/baselines.py`` runs a small self-check on a
synthetic series and prints JSON.
"""

from __future__ import annotations

import bisect
import math
import random
from collections import deque
from typing import ClassVar

SQRT2 = math.sqrt(2.0)


def _q(z: float) -> float:
    """Upper tail of the standard normal, Q(z) = P(Z > z)."""
    return 0.5 * math.erfc(z / SQRT2)


def _two_sided(z: float) -> float:
    """|z| / (1 + |z|): monotone in |z| like the two-sided normal confidence
    erf(|z|/sqrt 2), which NAB's detectors report, but it does not round to exactly 1.0
    beyond |z| ~ 8, so a threshold sweep can still tell large departures apart (ties at
    1.0 made the best threshold "never alert"). This only helps the baselines."""
    return abs(z) / (1.0 + abs(z))


def _epsilon(min_value: float, max_value: float) -> float:
    """A scale floor tiny relative to the series range (absolute 1e-12 for flat series)."""
    span = max_value - min_value
    return 1e-6 * span if span > 0 and math.isfinite(span) else 1e-12


def chi2_ppf_even(q: float, dof: int) -> float:
    """Inverse CDF of the chi-square distribution for an even number of degrees of freedom.

    For dof = 2k the CDF has the closed form 1 - exp(-x/2) * sum_{i<k} (x/2)^i / i!, which
    is monotone, so bisection gives the quantile to machine precision.
    """
    if dof <= 0 or dof % 2:
        raise ValueError(f"dof must be a positive even integer, got {dof}")
    if not 0.0 < q < 1.0:
        raise ValueError(f"q must be in (0, 1), got {q}")
    k = dof // 2

    def cdf(x: float) -> float:
        h = x / 2.0
        term, total = 1.0, 1.0
        for i in range(1, k):
            term *= h / i
            total += term
        return 1.0 - math.exp(-h) * total

    lo, hi = 0.0, 1.0
    while cdf(hi) < q:
        hi *= 2.0
    for _ in range(200):
        mid = 0.5 * (lo + hi)
        if cdf(mid) < q:
            lo = mid
        else:
            hi = mid
        if hi - lo <= 1e-12 * hi:
            break
    return 0.5 * (lo + hi)


class Baseline:
    """Common constructor: the series length and value range NAB gives every detector."""

    name: ClassVar[str] = ""

    def __init__(self, n_rows: int, min_value: float, max_value: float) -> None:
        self.n_rows = int(n_rows)
        self.min_value = float(min_value)
        self.max_value = float(max_value)

    def update(self, t_ms: int, value: float) -> float:
        raise NotImplementedError


class WindowedGaussian(Baseline):
    """NAB "Windowed Gaussian": 1 - Q(|z|) of x under N(mean, std) of the previous W=6400 values (population std; 0 until 2 values; std floor 1e-6*range)."""

    name = "windowed_gaussian"
    WINDOW: ClassVar[int] = 6400

    def __init__(self, n_rows: int, min_value: float, max_value: float) -> None:
        super().__init__(n_rows, min_value, max_value)
        self._eps = _epsilon(self.min_value, self.max_value)
        self._window: deque[float] = deque()
        # Sums of (x - shift) keep the sum-of-squares variance free of cancellation.
        self._shift: float | None = None
        self._sum = 0.0
        self._sumsq = 0.0
        self._since_resum = 0

    def update(self, t_ms: int, value: float) -> float:
        x = float(value)
        n = len(self._window)
        score = 0.0
        if n >= 2:
            mean = self._sum / n
            var = max(self._sumsq / n - mean * mean, 0.0)
            std = max(math.sqrt(var), self._eps)
            shift = self._shift if self._shift is not None else 0.0
            # Q of z above the mean, mirrored below it: 1 - Q(|z|), in [0.5, 1).
            score = 1.0 - _q(abs(x - shift - mean) / std)

        if self._shift is None:
            self._shift = x
        d = x - self._shift
        self._window.append(d)
        self._sum += d
        self._sumsq += d * d
        if len(self._window) > self.WINDOW:
            old = self._window.popleft()
            self._sum -= old
            self._sumsq -= old * old
        # Recompute the sums exactly once per window length, bounding rounding drift.
        self._since_resum += 1
        if self._since_resum >= self.WINDOW:
            self._since_resum = 0
            self._sum = math.fsum(self._window)
            self._sumsq = math.fsum(v * v for v in self._window)
        return score


class RelativeEntropy(Baseline):
    """Wang et al. 2011 relative-entropy detector as NAB runs it: values quantised into
    N_BINS=5 bins over the series' [min, max], W=52-row windows, a window agrees with a
    hypothesis when 2*W*KL(window || hypothesis) is below the 0.99 chi-square quantile with
    N_BINS-1 dof (13.28); a window that agrees with none becomes a new hypothesis and is
    flagged (score 1), so does one whose best hypothesis has been seen at most C_TH=1 times.

    Our first version flagged every window whose hypothesis had a *frequency* below 1 %,
    i.e. most windows of a series that wanders, so its best threshold was "never alert"
    (0.0 on every profile). Flagging only new distributions is what makes it a detector.
    """

    name = "relative_entropy"
    WINDOW: ClassVar[int] = 52
    N_BINS: ClassVar[int] = 5
    CONFIDENCE: ClassVar[float] = 0.99
    # A matched hypothesis seen at most this many times (counting this window) is rare.
    C_TH: ClassVar[int] = 1

    def __init__(self, n_rows: int, min_value: float, max_value: float) -> None:
        super().__init__(n_rows, min_value, max_value)
        self._step = (self.max_value - self.min_value) / self.N_BINS
        self._threshold = chi2_ppf_even(self.CONFIDENCE, self.N_BINS - 1)
        self._bins: deque[int] = deque()
        self._counts = [0] * self.N_BINS
        self._hypotheses: list[list[float]] = []  # bin probabilities
        self._hyp_counts: list[int] = []

    def _bin(self, x: float) -> int:
        # NAB's quantisation: ceil((x - min) / step) histogrammed over [0, N_BINS], so the
        # first bin holds only the minimum and the top bin also holds the maximum.
        b = math.ceil((x - self.min_value) / self._step)
        return min(max(b, 0), self.N_BINS - 1)

    def update(self, t_ms: int, value: float) -> float:
        if self._step <= 0.0:
            return 0.0  # a constant series (NAB declares every point normal)
        b = self._bin(float(value))
        self._bins.append(b)
        self._counts[b] += 1
        if len(self._bins) > self.WINDOW:
            self._counts[self._bins.popleft()] -= 1
        if len(self._bins) < self.WINDOW:
            return 0.0
        w = self.WINDOW
        p = [c / w for c in self._counts]
        if not self._hypotheses:  # the first window is the first hypothesis, normal
            self._hypotheses.append(p)
            self._hyp_counts.append(1)
            return 0.0
        best, best_stat = -1, math.inf
        for j, h in enumerate(self._hypotheses):
            kl = 0.0
            for pi, hi in zip(p, h, strict=True):
                if pi > 0.0:
                    if hi <= 0.0:
                        kl = math.inf  # the window has mass where the hypothesis has none
                        break
                    kl += pi * math.log(pi / hi)
            stat = 2.0 * w * kl
            if stat < self._threshold and stat < best_stat:
                best, best_stat = j, stat
        if best < 0:
            self._hypotheses.append(p)
            self._hyp_counts.append(1)
            return 1.0
        self._hyp_counts[best] += 1
        return 1.0 if self._hyp_counts[best] <= self.C_TH else 0.0


class EwmaZScore(Baseline):
    """EWMA control chart: mean/variance with ALPHA=0.05, score erf(|z|/sqrt 2) of x before it updates them; 0 for the first WARMUP=30 rows."""

    name = "ewma_zscore"
    ALPHA: ClassVar[float] = 0.05
    WARMUP: ClassVar[int] = 30

    def __init__(self, n_rows: int, min_value: float, max_value: float) -> None:
        super().__init__(n_rows, min_value, max_value)
        self._eps = _epsilon(self.min_value, self.max_value)
        self._mean = 0.0
        self._var = 0.0
        self._rows = 0

    def update(self, t_ms: int, value: float) -> float:
        x = float(value)
        if self._rows == 0:
            self._mean = x
            self._rows = 1
            return 0.0
        diff = x - self._mean
        score = 0.0
        if self._rows >= self.WARMUP:
            std = max(math.sqrt(self._var), self._eps)
            score = _two_sided(diff / std)
        incr = self.ALPHA * diff
        self._mean += incr
        self._var = (1.0 - self.ALPHA) * (self._var + diff * incr)
        self._rows += 1
        return score


class RollingMad(Baseline):
    """Rolling median/MAD of the previous W=288 rows: z = 0.6745*(x - median)/MAD, score erf(|z|/sqrt 2); 0 until WARMUP=30 rows; MAD floor 1e-6*range."""

    name = "rolling_mad"
    WINDOW: ClassVar[int] = 288
    WARMUP: ClassVar[int] = 30

    def __init__(self, n_rows: int, min_value: float, max_value: float) -> None:
        super().__init__(n_rows, min_value, max_value)
        self._eps = _epsilon(self.min_value, self.max_value)
        self._window: deque[float] = deque()
        self._sorted: list[float] = []

    @staticmethod
    def _median(values: list[float]) -> float:
        n = len(values)
        mid = n // 2
        return values[mid] if n % 2 else 0.5 * (values[mid - 1] + values[mid])

    def update(self, t_ms: int, value: float) -> float:
        x = float(value)
        score = 0.0
        if len(self._sorted) >= self.WARMUP:
            med = self._median(self._sorted)
            mad = self._median(sorted(abs(v - med) for v in self._sorted))
            score = _two_sided(0.6745 * (x - med) / max(mad, self._eps))
        self._window.append(x)
        bisect.insort(self._sorted, x)
        if len(self._window) > self.WINDOW:
            old = self._window.popleft()
            del self._sorted[bisect.bisect_left(self._sorted, old)]
        return score


class RandomBaseline(Baseline):
    """NAB "Random" baseline: uniform scores from random.Random(42 + n_rows)."""

    name = "random"

    def __init__(self, n_rows: int, min_value: float, max_value: float) -> None:
        super().__init__(n_rows, min_value, max_value)
        self._rng = random.Random(42 + self.n_rows)

    def update(self, t_ms: int, value: float) -> float:
        return self._rng.random()


class NullBaseline(Baseline):
    """NAB "Null" baseline: a constant score of 0.0."""

    name = "null"

    def update(self, t_ms: int, value: float) -> float:
        return 0.0


BASELINES: dict[str, type[Baseline]] = {
    cls.name: cls
    for cls in (
        WindowedGaussian,
        RelativeEntropy,
        EwmaZScore,
        RollingMad,
        RandomBaseline,
        NullBaseline,
    )
}


def make(name: str, n_rows: int, min_value: float, max_value: float) -> Baseline:
    """Build the baseline ``name`` for a series of ``n_rows`` rows in [min_value, max_value]."""
    try:
        cls = BASELINES[name]
    except KeyError:
        raise KeyError(f"unknown baseline {name!r}; known: {sorted(BASELINES)}") from None
    return cls(n_rows, min_value, max_value)


if __name__ == "__main__":
    import json

    import numpy as np

    assert abs(chi2_ppf_even(0.99, 4) - 13.2767) < 1e-3
    assert abs(chi2_ppf_even(0.95, 4) - 9.4877) < 1e-3

    # 1000 rows of 5-minute data: a daily sine plus noise, a spike at row 700 and a
    # level shift from row 850 on.
    n = 1000
    rng = np.random.default_rng(0)
    rows = np.arange(n)
    series = np.sin(2 * np.pi * rows / 288) + rng.normal(0.0, 0.1, n)
    series[700] += 5.0
    series[850:] += 2.0
    times = [1_600_000_000_000 + 300_000 * int(i) for i in rows]
    lo, hi = float(series.min()), float(series.max())

    report: dict[str, dict[str, float]] = {}
    for key in BASELINES:
        det = make(key, n, lo, hi)
        scores = [det.update(t, float(v)) for t, v in zip(times, series, strict=True)]
        assert all(0.0 <= s <= 1.0 for s in scores), key
        report[key] = {
            "max_200_690": round(max(scores[200:691]), 4),
            "at_700": round(scores[700], 4),
            "max_850_900": round(max(scores[850:901]), 4),
        }
    print(json.dumps(report, indent=2))
