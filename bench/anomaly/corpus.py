"""A seeded, labelled corpus that imitates the Numenta Anomaly Benchmark (NAB).

This is **not** NAB's data. NAB's real series cannot be downloaded on the machines
this benchmark runs on, so this module synthesises series that imitate the *kinds* of
series NAB holds, under the same category names, file layout and label convention, so
that a streaming detector can be scored the NAB way (labels are single timestamps; the
scorer puts a window of 10% of the series length / number of labels around each one,
and the first 15% of each series is probationary). Numbers obtained on this corpus are
not comparable with published NAB scores; they only compare detectors with each other.
`read_nab_layout` reads a real NAB checkout as well, when one is available.

Every series is deterministic for a given ``seed`` and does not depend on ``scale``
(variant *i* of a family is drawn from its own generator seeded by seed, family, i).
Labels (0–4 per series) lie after the probationary 15% and are spaced so that their
NAB windows do not overlap. Each effect either ends inside its own label window or
persists (a new normal). Anomaly sizes are drawn from subtle / moderate / obvious.
Deliberately *unlabelled* behaviour that makes detectors raise false positives is
part of every real-like family, as it is in NAB.

Families (category: what is modelled)

* realAWSCloudwatch — EC2/RDS CPU utilisation (%), EC2 network-in bytes and disk
  write bytes per 5 minutes, 1,500–4,730 rows. Flat noisy baselines with slow wander,
  CloudWatch-like quantisation at low CPU, benign cron-like periodic spikes, frequent
  small unlabelled spikes (heavy-tailed for bytes) and periodic write flushes.
  Anomalies: sustained level shifts up/down (some permanent), isolated big spikes,
  a change of variance, a stretch stuck at a constant (last value, or zero writes).
* realTraffic — road speed (mph), travel time (s) and occupancy (%) from loop
  sensors: rush-hour dips on weekdays, mild weekends, day-to-day congestion changes,
  heavy-tailed measurement noise that grows at night, single-sample sensor glitches,
  irregular sampling (timestamps not on 5-minute marks, ±1 minute jitter, clustered
  missing rows and multi-hour gaps). Anomalies: incidents — sharp speed drops
  (travel time up, occupancy up) lasting 15–90 minutes.
* realKnownCause — (a) machine temperature: slow wander, a slow drift up before a
  failure, then an abrupt drop, a cold shutdown and a restart (labels at the drift
  start and at the failure); (b) NYC-taxi passengers per 30 minutes with daily and
  weekly seasonality, weekend nightlife, seasonal drift, weather-like day factors and
  unlabelled minor holidays; anomalies on real calendar days (Independence Day, Labor
  Day, Thanksgiving, Christmas, New Year, a marathon-like Sunday, a blizzard);
  (c) EC2 request latency with heavy-tailed noise and incidents; (d) hourly ambient
  (office) temperature with daily and yearly seasonality, weekend HVAC set-back, and
  unusual days (too hot, too cold, flat, inverted).
* realTweets — Twitter mentions of a company per 5 minutes, 9,000–15,902 rows:
  over-dispersed Poisson counts with a US-daytime cycle, quieter weekends, slow
  popularity drift, many unlabelled heavy-tailed (Pareto) short bursts, and rare
  unlabelled collection outages (zeros). Anomalies: very large sustained bursts.
* realAdExchange — hourly CPC / CPM of an ad exchange, ~1,350–1,650 rows with a few
  missing hours: weekly and daily pattern, noise that grows when traffic is low,
  isolated unlabelled outliers. Anomalies: level changes up or down.
* artificialNoAnomaly — 4,032 rows: an exact flatline, a flatline with small noise,
  a pure daily sine, a daily sine with noise, a perfect daily square wave, i.i.d.
  noise. No labels: every alert is a false positive.
* artificialWithAnomaly — 4,032 rows, one label: a daily on/off shape whose day jumps
  up, jumps down, does not jump, or is replaced by a flat middle level; a sine whose
  frequency doubles; a square wave whose high level jumps; a spike density increase;
  a load-balancer-like stretch of spikes on a raised level.
"""

from __future__ import annotations

import csv
import itertools
import json
import math
import sys
import tempfile
import time
import zlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any, TypeVar

import numpy as np
import numpy.typing as npt

FloatArray = npt.NDArray[np.float64]
IntArray = npt.NDArray[np.int64]
T = TypeVar("T")

MINUTE_MS = 60_000
FIVE_MIN_MS = 5 * MINUTE_MS
HALF_HOUR_MS = 30 * MINUTE_MS
HOUR_MS = 60 * MINUTE_MS
DAY_MS = 24 * HOUR_MS
ROWS_PER_DAY = DAY_MS // FIVE_MIN_MS  # 288 at 5-minute sampling

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_START_LO = datetime(2013, 1, 1, tzinfo=UTC)
_START_HI = datetime(2015, 10, 1, tzinfo=UTC)
_TS_FORMAT = "%Y-%m-%d %H:%M:%S"


@dataclass(frozen=True)
class Series:
    category: str  # e.g. "realTraffic"
    name: str  # e.g. "speed_7578" (file stem)
    timestamps_ms: list[int]
    values: list[float]
    anomalies_ms: list[int]  # label timestamps (empty for series with no anomaly)

    @property
    def key(self) -> str:
        """NAB's key for the series: ``<category>/<name>.csv``."""
        return f"{self.category}/{self.name}.csv"


# ---------------------------------------------------------------------------------------
# small helpers


def _ms(dt: datetime) -> int:
    return (dt - _EPOCH) // timedelta(milliseconds=1)


def _u(rng: np.random.Generator, lo: float, hi: float) -> float:
    return float(rng.uniform(lo, hi))


def _i(rng: np.random.Generator, lo: int, hi: int) -> int:
    """Integer in [lo, hi] (inclusive)."""
    return int(rng.integers(lo, max(lo, hi) + 1))


def _pick(
    rng: np.random.Generator, options: Sequence[T], weights: Sequence[float] | None = None
) -> T:
    p = None if weights is None else np.asarray(weights, dtype=float) / float(sum(weights))
    return options[int(rng.choice(len(options), p=p))]


def _lerp(lo: float, hi: float, t: float) -> float:
    return lo + (hi - lo) * t


def _sev(rng: np.random.Generator) -> float:
    """Severity in [0, 1]: subtle (~0.1), moderate (~0.5) or obvious (~0.9)."""
    base = _pick(rng, [0.1, 0.5, 0.9])
    return min(1.0, max(0.0, base + _u(rng, -0.1, 0.1)))


def _hex(rng: np.random.Generator) -> str:
    return f"{int(rng.integers(0, 16**6)):06x}"


def _variant(base: str, i: int) -> str:
    return base if i == 0 else f"{base}_{i + 1}"


def _start(rng: np.random.Generator, step_ms: int, *, midnight: bool = False) -> int:
    """A start timestamp between 2013-01-01 and 2015-10-01, aligned to ``step_ms``."""
    day = int(rng.integers(0, (_START_HI - _START_LO).days))
    base = _ms(_START_LO) + day * DAY_MS
    if midnight:
        return base
    return base + int(rng.integers(0, max(1, DAY_MS // step_ms))) * step_ms


def _grid(start: int, step_ms: int, n: int) -> IntArray:
    return start + np.arange(n, dtype=np.int64) * step_ms


def _hours(ts: IntArray) -> FloatArray:
    return (ts % DAY_MS).astype(np.float64) / HOUR_MS


def _dow(ts: IntArray) -> IntArray:
    """Day of week, Monday = 0 (1970-01-01 was a Thursday)."""
    return (ts // DAY_MS + 3) % 7


def _bump(h: FloatArray, centre: float, width: float) -> FloatArray:
    """Gaussian bump over the hour of day, wrapping at midnight."""
    d = np.mod(h - centre + 12.0, 24.0) - 12.0
    return np.exp(-0.5 * (d / width) ** 2)


def _ar1(rng: np.random.Generator, n: int, phi: float, sd: float) -> FloatArray:
    """Stationary AR(1) noise with marginal standard deviation ``sd``."""
    innov = rng.normal(0.0, sd * math.sqrt(max(1e-12, 1.0 - phi * phi)), n).tolist()
    out = [0.0] * n
    acc = float(rng.normal(0.0, sd))
    for j, e in enumerate(innov):
        acc = phi * acc + e
        out[j] = acc
    return np.asarray(out, dtype=np.float64)


def _wander(rng: np.random.Generator, n: int, every: int, sd: float) -> FloatArray:
    """Slow, smooth, mean-reverting drift: cosine-interpolated AR(1) knots ``every`` rows apart."""
    knots = _ar1(rng, n // max(1, every) + 3, 0.6, sd)
    pos = np.arange(n, dtype=np.float64) / max(1, every)
    i0 = np.floor(pos).astype(np.int64)
    w = (1.0 - np.cos(np.pi * (pos - i0))) / 2.0
    return np.asarray(knots[i0] * (1.0 - w) + knots[i0 + 1] * w, dtype=np.float64)


def _sparse(rng: np.random.Generator, n: int, rate: float) -> IntArray:
    return np.flatnonzero(rng.random(n) < rate).astype(np.int64)


def _place(
    rng: np.random.Generator, n: int, k: int, *, min_gap: int = 0, tail: int = 0
) -> tuple[list[int], int]:
    """``k`` label rows after the probationary 15%, with non-overlapping NAB windows.

    Returns (rows, window), window = NAB's window length for this many labels. If the
    series is too short for ``k`` labels with ``min_gap`` between them, fewer are placed.
    """
    while k > 0:
        window = math.ceil(0.1 * n / k)
        lo = math.ceil(0.15 * n) + window // 2 + 1
        hi = n - 1 - max(tail, window // 2 + 1)
        gap = max(min_gap, window + 1)
        slack = hi - lo - (k - 1) * gap
        if slack >= 0:
            offsets = np.sort(rng.integers(0, slack + 1, size=k))
            return [lo + int(o) + j * gap for j, o in enumerate(offsets)], window
        k -= 1
    return [], n


def _shift(x: FloatArray, start: int, end: int, delta: float, ramp: int) -> None:
    end = min(end, len(x))
    ramp = max(1, min(ramp, end - start))
    x[start : start + ramp] += delta * np.arange(1, ramp + 1) / ramp
    x[start + ramp : end] += delta


def _apply_stuck(y: FloatArray, stuck: list[tuple[int, int, float | None]]) -> None:
    for s, e, value in stuck:
        y[s:e] = y[s - 1] if value is None else value


def _finish(
    category: str,
    name: str,
    ts: IntArray,
    values: FloatArray,
    label_rows: Sequence[int],
    decimals: int | None,
) -> Series:
    """Round (``decimals`` None = integer counts) and package a series."""
    v = np.asarray(values, dtype=np.float64)
    if not np.all(np.isfinite(v)):
        raise ValueError(f"non-finite value generated in {category}/{name}")
    v = (np.rint(v) if decimals is None else np.round(v, decimals)) + 0.0  # no -0.0
    labels = sorted({int(ts[r]) for r in label_rows})
    return Series(category, name, [int(t) for t in ts.tolist()], v.tolist(), labels)


# ---------------------------------------------------------------------------------------
# realAWSCloudwatch


def _aws_length(rng: np.random.Generator) -> int:
    return _pick(rng, [4032, 4730, 4621, 2500, 1500], [5, 1.5, 1, 1, 1])


def _aws_anomalies(
    rng: np.random.Generator,
    x: FloatArray,
    sd: float,
    *,
    up: tuple[float, float],
    down: tuple[float, float] | None,
    spike: tuple[float, float],
    stuck_value: Callable[[], float | None],
) -> tuple[list[int], list[tuple[int, int, float | None]]]:
    """Labelled CloudWatch-style anomalies applied in place to ``x`` (linear or log scale)."""
    n = len(x)
    k = _pick(rng, [0, 1, 2, 3], [1, 4, 3, 1.5])
    rows, window = _place(rng, n, k, min_gap=144, tail=12)
    half = max(13, window // 2)
    stuck: list[tuple[int, int, float | None]] = []
    kinds = ["shift_up", "shift_down", "spike", "variance", "stuck"]
    weights = [3.0, 2.0 if down else 0.0, 3.0, 1.5, 1.5]
    for r in rows:
        sev = _sev(rng)
        kind = _pick(rng, kinds, weights)
        if kind in ("shift_up", "shift_down"):
            lo, hi = up if kind == "shift_up" or down is None else down
            delta = _lerp(lo, hi, sev) * (1 if kind == "shift_up" else -1)
            end = n if rng.random() < 0.55 else r + _i(rng, 12, half)
            _shift(x, r, end, delta, _i(rng, 1, 5))
        elif kind == "spike":
            width = _i(rng, 1, 3)
            shape = np.array([1.0, _u(rng, 0.4, 0.9), _u(rng, 0.1, 0.5)])[:width]
            x[r : r + width] += _lerp(*spike, sev) * shape[: len(x[r : r + width])]
        elif kind == "variance":
            end = min(n, r + _i(rng, 24, max(24, half)))
            x[r:end] += rng.normal(0.0, sd * _lerp(2.5, 6.0, sev), end - r)
        else:
            stuck.append((r, min(n, r + _i(rng, 12, max(12, min(half, 96)))), stuck_value()))
    return rows, stuck


def _aws_cpu(rng: np.random.Generator, i: int) -> Series:
    rds = i % 3 == 2
    name = f"{'rds' if rds else 'ec2'}_cpu_utilization_{_hex(rng)}"
    n = _aws_length(rng)
    ts = _grid(_start(rng, FIVE_MIN_MS), FIVE_MIN_MS, n)
    h = _hours(ts)
    regime = _pick(rng, ["low", "mid", "high"], [1, 2, 1.2])
    if regime == "low":
        level, sd = _u(rng, 0.8, 3.0), _u(rng, 0.05, 0.25)
    elif regime == "mid":
        level, sd = _u(rng, 5.0, 30.0), _u(rng, 0.4, 2.0)
    else:
        level, sd = _u(rng, 30.0, 65.0), _u(rng, 1.0, 4.0)
    x = level + _ar1(rng, n, _u(rng, 0.3, 0.85), sd)
    x += _wander(rng, n, ROWS_PER_DAY // 2, sd * _u(rng, 0.3, 1.5))
    if rds or rng.random() < 0.3:  # load follows the working day
        x += _u(rng, 0.1, 0.35) * level * (_bump(h, _u(rng, 13.0, 17.0), _u(rng, 3.0, 5.0)) - 0.3)
    if rng.random() < 0.4:  # cron jobs: benign periodic spikes
        period = _pick(rng, [6, 12, 24, 72])
        x[_i(rng, 0, period - 1) :: period] += sd * _u(rng, 2.0, 6.0)
    if rng.random() < 0.55:  # frequent benign small spikes (unlabelled)
        idx = _sparse(rng, n, _u(rng, 0.004, 0.03))
        x[idx] += sd * np.minimum(2.0 + rng.exponential(1.5, len(idx)), 8.0)
    rows, stuck = _aws_anomalies(
        rng,
        x,
        sd,
        up=(max(4 * sd, 0.15 * level + sd), max(10 * sd, 0.8 * level + 5.0)),
        down=(max(4 * sd, 0.15 * level), 0.75 * level) if level > 8.0 else None,
        spike=(max(8 * sd, 2.0), max(12 * sd, 95.0 - level)),
        stuck_value=lambda: None,
    )
    x = np.clip(x, 0.0, 100.0)
    _apply_stuck(x, stuck)
    if regime == "low" and rng.random() < 0.6:  # CloudWatch reports low CPU in coarse steps
        step = _pick(rng, [0.066, 0.067, 0.134])
        x = np.round(x / step) * step
    return _finish("realAWSCloudwatch", name, ts, x, rows, 3)


def _aws_network_in(rng: np.random.Generator, i: int) -> Series:
    name = f"ec2_network_in_{_hex(rng)}"
    n = _aws_length(rng)
    ts = _grid(_start(rng, FIVE_MIN_MS), FIVE_MIN_MS, n)
    h = _hours(ts)
    sd = _u(rng, 0.1, 0.4)  # log scale
    lx = math.log(10 ** _u(rng, 5.0, 7.5)) + _ar1(rng, n, _u(rng, 0.3, 0.8), sd)
    lx += _wander(rng, n, ROWS_PER_DAY // 2, _u(rng, 0.05, 0.25))
    if rng.random() < 0.5:
        lx += _u(rng, 0.1, 0.5) * (_bump(h, _u(rng, 12.0, 18.0), _u(rng, 3.0, 5.0)) - 0.3)
    idx = _sparse(rng, n, _u(rng, 0.005, 0.05))  # benign heavy-tailed transfer bursts
    lx[idx] += np.log1p(np.minimum(rng.pareto(1.6, len(idx)) * _u(rng, 0.5, 1.5), 4.0))
    rows, stuck = _aws_anomalies(
        rng,
        lx,
        sd,
        up=(math.log(1.4), math.log(4.0)),
        down=(math.log(1.4), math.log(5.0)),
        spike=(math.log(4.0), math.log(30.0)),
        stuck_value=lambda: None,
    )
    y = np.exp(lx)
    _apply_stuck(y, stuck)
    return _finish("realAWSCloudwatch", name, ts, y, rows, None)


def _aws_disk_write(rng: np.random.Generator, i: int) -> Series:
    name = f"ec2_disk_write_bytes_{_hex(rng)}"
    n = _aws_length(rng)
    ts = _grid(_start(rng, FIVE_MIN_MS), FIVE_MIN_MS, n)
    sd = _u(rng, 0.15, 0.5)
    lx = math.log(10 ** _u(rng, 4.5, 6.5)) + _ar1(rng, n, _u(rng, 0.2, 0.7), sd)
    lx += _wander(rng, n, ROWS_PER_DAY, _u(rng, 0.05, 0.2))
    period = _pick(rng, [6, 12, 24, 72])  # periodic flushes / backups: benign
    lx[_i(rng, 0, period - 1) :: period] += math.log(_u(rng, 3.0, 15.0))
    idx = _sparse(rng, n, _u(rng, 0.003, 0.02))
    lx[idx] += np.log(_u(rng, 2.0, 3.0) + rng.exponential(2.0, len(idx)))
    rows, stuck = _aws_anomalies(
        rng,
        lx,
        sd,
        up=(math.log(2.0), math.log(8.0)),
        down=(math.log(2.0), math.log(12.0)),
        spike=(math.log(10.0), math.log(50.0)),
        stuck_value=lambda: 0.0 if rng.random() < 0.5 else None,
    )
    y = np.exp(lx)
    _apply_stuck(y, stuck)
    return _finish("realAWSCloudwatch", name, ts, y, rows, None)


# ---------------------------------------------------------------------------------------
# realTraffic


def _traffic(rng: np.random.Generator, i: int, metric: str) -> Series:
    sensor = f"t{_i(rng, 1000, 9999)}" if rng.random() < 0.35 else str(_i(rng, 1000, 9999))
    if metric == "speed":
        name = f"speed_{sensor}"
    elif metric == "occupancy":
        name = f"occupancy_{sensor}"
    else:
        name = f"TravelTime_{_i(rng, 100, 999)}"
    n_grid = int(_u(rng, 11.0, 19.0) * ROWS_PER_DAY)
    ts_grid = _grid(_start(rng, MINUTE_MS), FIVE_MIN_MS, n_grid)  # not on 5-minute marks
    h = _hours(ts_grid)
    weekday = (_dow(ts_grid) < 5).astype(np.float64)
    day = ((ts_grid - ts_grid[0]) // DAY_MS).astype(np.int64)

    # presence: clustered missing rows plus a few long outages
    p_keep, p_back = _u(rng, 0.75, 0.92), _u(rng, 0.2, 0.5)
    draws = rng.random(n_grid).tolist()
    present = np.empty(n_grid, dtype=bool)
    on = True
    for j, d in enumerate(draws):
        on = d < (p_keep if on else p_back)
        present[j] = on
    for _ in range(_i(rng, 1, 3)):
        g = _i(rng, 0, n_grid - 1)
        present[g : g + _i(rng, 24, ROWS_PER_DAY)] = False
    present[0] = True

    # clean speed: free flow minus rush-hour congestion, which varies from day to day
    v0 = _u(rng, 55.0, 72.0)
    am = _u(rng, 8.0, 30.0) if rng.random() < 0.7 else _u(rng, 0.0, 6.0)
    pm = _u(rng, 8.0, 35.0)
    day_factor = rng.lognormal(0.0, 0.3, int(day[-1]) + 1)[day]
    rush = am * _bump(h, _u(rng, 7.3, 8.5), _u(rng, 0.7, 1.2))
    rush += pm * _bump(h, _u(rng, 16.5, 18.0), _u(rng, 0.8, 1.4))
    speed = v0 - rush * (weekday + (1 - weekday) * _u(rng, 0.1, 0.3)) * day_factor
    speed += 3.0 * _bump(h, 3.0, 2.5)

    # incidents, placed on the rows that are kept
    k = _pick(rng, [1, 2, 3, 4], [3, 3, 2, 1])
    rows_kept = np.flatnonzero(present)
    # generous gap: rows forced back during incidents lengthen the series a little
    label_rows, _ = _place(rng, len(rows_kept), k, min_gap=36 + len(rows_kept) // 30, tail=20)
    label_grid = [int(rows_kept[r]) for r in label_rows]
    for g in label_grid:
        dur = _i(rng, 3, 18)  # 15–90 minutes
        drop = _lerp(0.25, 0.75, _sev(rng))
        rec = _i(rng, 1, 4)
        shape = np.concatenate([np.ones(dur), np.linspace(1.0, 0.0, rec + 2)[1:-1]])
        seg = slice(g, min(n_grid, g + len(shape)))
        speed[seg] *= 1.0 - drop * shape[: seg.stop - seg.start]
        present[g : g + dur] |= (
            rng.random(len(present[g : g + dur])) < 0.8
        )  # sensor keeps reporting

    # heavy-tailed measurement noise, worse at night, and single-sample glitches
    noise_sd = _u(rng, 2.0, 4.0) * (1.0 + 0.8 * _bump(h, 3.0, 3.0))
    noisy = speed + noise_sd * 0.7 * rng.standard_t(4, n_grid)
    glitch = _sparse(rng, n_grid, _u(rng, 0.002, 0.008))
    noisy[glitch] -= rng.uniform(15.0, 40.0, len(glitch))
    noisy = np.clip(noisy, 3.0, 85.0)

    keep = np.flatnonzero(present)
    ts = ts_grid[keep].copy()
    jitter = _sparse(rng, len(ts), 0.03)
    ts[jitter] += rng.choice(np.array([-MINUTE_MS, MINUTE_MS], dtype=np.int64), len(jitter))
    rows = [int(np.searchsorted(keep, g)) for g in label_grid]

    if metric == "speed":
        return _finish("realTraffic", name, ts, noisy[keep], rows, 0)
    if metric == "TravelTime":
        length = _u(rng, 0.6, 2.5)  # miles
        tt = length * 3600.0 / np.maximum(noisy, 5.0) * rng.lognormal(0.0, 0.05, n_grid)
        return _finish("realTraffic", name, ts, tt[keep], rows, None)
    congestion = np.clip((v0 - speed) / v0, 0.0, 1.0)
    occ = _u(rng, 1.0, 3.0) + _u(rng, 4.0, 10.0) * (_bump(h, 13.0, 5.0))
    occ += _u(rng, 20.0, 40.0) * congestion
    occ *= rng.lognormal(0.0, _u(rng, 0.1, 0.2), n_grid)
    occ[glitch] *= rng.uniform(0.1, 3.0, len(glitch))
    return _finish("realTraffic", name, ts, np.clip(occ[keep], 0.0, 100.0), rows, 2)


# ---------------------------------------------------------------------------------------
# realKnownCause


def _machine_temperature(rng: np.random.Generator, i: int) -> Series:
    name = _variant("machine_temperature_system_failure", i)
    n = _i(rng, 9000, 14000)
    ts = _grid(_start(rng, FIVE_MIN_MS), FIVE_MIN_MS, n)
    h = _hours(ts)
    base = _u(rng, 78.0, 92.0) + _wander(rng, n, ROWS_PER_DAY, _u(rng, 1.0, 3.0))
    base += _u(rng, 0.0, 1.5) * (_bump(h, 15.0, 4.0) - 0.3)
    x = base + _ar1(rng, n, 0.8, _u(rng, 0.6, 1.4))
    events = _pick(rng, [1, 2], [1, 1.5])
    window = math.ceil(0.1 * n / (2 * events))
    drift_max, down_max, restart_max = 4 * ROWS_PER_DAY, 30 * 12, 6 * 12
    span = drift_max + down_max + restart_max
    starts, _ = _place(rng, n, events, min_gap=span + window + 1, tail=span)
    rows: list[int] = []
    for s in starts:
        sev = _sev(rng)
        drift = max(window + 2, int(_u(rng, 1.2, 3.5) * ROWS_PER_DAY))
        f = s + drift
        t = np.arange(drift) / drift
        x[s:f] += _lerp(3.0, 14.0, sev) * t ** _u(rng, 1.3, 2.5)
        x[s:f] += rng.normal(0.0, 0.4, drift) * t  # gets less stable before failing
        low, tau = _u(rng, 2.0, 35.0), _u(rng, 1.0, 3.0)
        down = _i(rng, 6 * 12, down_max)
        td = np.arange(down)
        x[f : f + down] = low + (x[f - 1] - low) * np.exp(-td / tau) + rng.normal(0.0, 0.5, down)
        restart = _i(rng, 2 * 12, restart_max)
        ramp = np.linspace(0.0, 1.0, restart)
        seg = slice(f + down, f + down + restart)
        x[seg] = low + (x[seg] - low) * ramp
        rows += [s, f]
    return _finish("realKnownCause", name, ts, x, rows, 6)


def _nth_weekday(year: int, month: int, weekday: int, nth: int) -> date:
    """nth (1-based; -1 = last) given weekday (Monday = 0) of a month."""
    if nth > 0:
        first = date(year, month, 1)
        return first + timedelta(days=(weekday - first.weekday()) % 7 + 7 * (nth - 1))
    last = date(year + month // 12, month % 12 + 1, 1) - timedelta(days=1)
    return last - timedelta(days=(last.weekday() - weekday) % 7)


def _taxi_profile(h: FloatArray, dow: IntArray) -> FloatArray:
    """Relative NYC taxi demand per half hour (1.0 ~ the evening peak of a weekday)."""
    wk = (dow < 5).astype(np.float64)
    we = 1.0 - wk
    p = 0.12 + 0.40 * _bump(h, 8.5, 1.3) * wk + 0.50 * _bump(h, 13.5, 3.5)
    p += 0.75 * _bump(h, 19.5, 2.2) + 0.30 * _bump(h, 23.0, 1.8)
    p += 0.45 * _bump(h, 1.0, 1.6) * we  # Friday and Saturday nights
    p *= 1.0 - 0.35 * _bump(h, 7.0, 2.0) * we
    p *= np.where((dow == 6) & (h > 17.0), 0.85, 1.0)  # quiet Sunday evening
    p *= np.where((dow == 4) | (dow == 5), 1.06, 1.0)
    p -= 0.10 * _bump(h, 4.5, 1.2)
    return np.asarray(np.maximum(p, 0.05), dtype=np.float64)


def _nyc_taxi(rng: np.random.Generator, i: int) -> Series:
    name = _variant("nyc_taxi", i)
    n = 10320 if i == 0 else _i(rng, 7000, 10320)  # 215 days at 30 minutes, like NAB's
    per_day = DAY_MS // HALF_HOUR_MS
    day0 = date(2013, 3, 1) + timedelta(days=_i(rng, 0, 730))
    start = _ms(datetime(day0.year, day0.month, day0.day, tzinfo=UTC))
    ts = _grid(start, HALF_HOUR_MS, n)
    h, dow = _hours(ts), _dow(ts)
    day = ((ts - start) // DAY_MS).astype(np.int64)
    n_days = int(day[-1]) + 1
    doy = np.array([(day0 + timedelta(days=int(d))).timetuple().tm_yday for d in range(n_days)])
    season = 1.0 + 0.06 * np.sin(2 * np.pi * doy / 365.0 + _u(rng, 0.0, 2 * np.pi))
    weather = rng.lognormal(0.0, 0.04, n_days) * np.where(rng.random(n_days) < 0.08, 1.1, 1.0)
    scale_ = _u(rng, 24000.0, 30000.0)
    prof = _taxi_profile(h, dow)
    normal = prof.copy()

    def rows_of(d: date) -> IntArray:
        return np.flatnonzero(day == (d - day0).days)

    # unlabelled minor holidays: a bit lower, with a weekend-like morning
    years = range(day0.year, day0.year + 2)
    minor = [_nth_weekday(yr, m, 0, nth) for yr in years for m, nth in ((1, 3), (2, 3), (10, 2))]
    minor += [_nth_weekday(yr, 5, 0, -1) for yr in years]
    for d in minor:
        r = rows_of(d)
        if len(r):
            prof[r] = 0.5 * prof[r] + 0.5 * 0.92 * _taxi_profile(h[r], np.full(len(r), 6))

    # labelled days: real calendar days where possible
    cands: list[tuple[date, str]] = []
    for yr in years:
        cands += [(date(yr, 7, 4), "holiday"), (_nth_weekday(yr, 9, 0, 1), "holiday")]
        cands += [(_nth_weekday(yr, 11, 3, 4), "holiday"), (date(yr, 12, 25), "christmas")]
        cands += [(date(yr, 1, 1), "new_year"), (_nth_weekday(yr, 11, 6, 1), "marathon")]
        cands.append((date(yr, 1, 15) + timedelta(days=_i(rng, 0, 31)), "blizzard"))
    k = _pick(rng, [2, 3, 4], [1, 2, 2])
    window = math.ceil(0.1 * n / k)
    lo, hi = math.ceil(0.15 * n) + window // 2 + 1, n - 2 * per_day - window // 2
    gap = window + 2 * per_day + 1  # a blizzard runs into the next day
    chosen: list[tuple[int, str]] = []
    order = [cands[j] for j in rng.permutation(len(cands))]
    order += [
        (day0 + timedelta(days=_i(rng, 0, n_days - 1)), _pick(rng, ["holiday", "blizzard"]))
        for _ in range(40)
    ]
    for d, kind in order:
        first = (d - day0).days * per_day
        if len(chosen) < k and lo <= first <= hi and all(abs(first - c) >= gap for c, _ in chosen):
            chosen.append((first, kind))
    rows: list[int] = []
    for first, kind in sorted(chosen):
        r = np.arange(first, first + per_day)
        sunday = _taxi_profile(h[r], np.full(per_day, 6))
        if kind == "holiday":
            prof[r] = sunday * _u(rng, 0.7, 0.88)
        elif kind == "christmas":
            prof[r] = sunday * _u(rng, 0.45, 0.6)
        elif kind == "new_year":
            prof[r] = sunday * 0.75 * np.where(h[r] < 4.0, _u(rng, 1.8, 2.6), 1.0)
        elif kind == "marathon":
            f = np.where((h[r] >= 9) & (h[r] < 14), _u(rng, 0.55, 0.75), 1.0)
            prof[r] *= np.where((h[r] >= 15) & (h[r] < 20), _u(rng, 1.35, 1.7), f)
        else:  # blizzard: from the evening, for about a day
            r = np.arange(first + 36, first + 36 + per_day)
            depth = _u(rng, 0.75, 0.92)
            ramp = np.minimum(1.0, np.minimum(np.arange(per_day), np.arange(per_day)[::-1]) / 6.0)
            prof[r] *= 1.0 - depth * ramp
        dev = np.abs(prof[r] - normal[r])
        rows.append(int(r[int(np.argmax(dev))]))
    y = scale_ * prof * (season * weather)[day] * rng.normal(1.0, 0.025, n)
    return _finish("realKnownCause", name, ts, np.maximum(y, 0.0), rows, None)


def _ec2_request_latency(rng: np.random.Generator, i: int) -> Series:
    name = _variant("ec2_request_latency_system_failure", i)
    n = 4032 if i == 0 else _i(rng, 3000, 4032)
    ts = _grid(_start(rng, FIVE_MIN_MS), FIVE_MIN_MS, n)
    h = _hours(ts)
    base = _u(rng, 35.0, 60.0)
    x = base * (1.0 + _u(rng, 0.0, 0.15) * (_bump(h, 15.0, 4.0) - 0.3))
    x += _ar1(rng, n, 0.5, base * _u(rng, 0.015, 0.04))
    x *= rng.lognormal(0.0, _u(rng, 0.01, 0.04), n)
    tail = _sparse(rng, n, _u(rng, 0.01, 0.04))  # heavy tail: benign slow requests
    x[tail] += base * np.minimum(0.15 * (rng.pareto(1.5, len(tail)) + 1.0), 1.0)
    k = _pick(rng, [1, 2, 3], [2, 2, 1])
    rows, _ = _place(rng, n, k, min_gap=72, tail=12)
    for r in rows:
        sev = _sev(rng)
        if rng.random() < 0.6:  # incident: elevated, noisy latency for 10–60 minutes
            dur = _i(rng, 2, 12)
            lvl = _lerp(1.4, 4.0, sev)
            x[r : r + dur] = x[r : r + dur] * lvl * rng.lognormal(0.0, 0.15, len(x[r : r + dur]))
        else:
            width = _i(rng, 1, 2)
            x[r : r + width] *= _lerp(2.5, 8.0, sev)
    return _finish("realKnownCause", name, ts, x, rows, 3)


def _ambient_temperature(rng: np.random.Generator, i: int) -> Series:
    name = _variant("ambient_temperature_system_failure", i)
    n = 7267 if i == 0 else _i(rng, 4500, 7267)
    ts = _grid(_start(rng, HOUR_MS), HOUR_MS, n)
    h = _hours(ts)
    weekend = (_dow(ts) >= 5).astype(np.float64)
    doy = (ts % (365 * DAY_MS)) / DAY_MS  # close enough for a seasonal phase
    x = _u(rng, 68.0, 72.0) + _u(rng, 1.5, 3.5) * np.sin(2 * np.pi * (doy - 110.0) / 365.0)
    amp = _u(rng, 0.8, 2.5)
    daily = amp * (_bump(h, 15.0, 4.0) - 0.35)
    # HVAC set-back at weekends: drift towards a week-specific outdoor-ish offset
    week = (ts // (7 * DAY_MS)).astype(np.int64)
    week_off = rng.normal(0.0, 2.0, int(week[-1] - week[0]) + 1)[week - week[0]]
    x += weekend * week_off * np.clip(_wander(rng, n, 24, 0.5) + 0.8, 0.0, 1.5)
    x += _wander(rng, n, 72, 0.6) + _ar1(rng, n, 0.85, _u(rng, 0.3, 0.7))
    k = _pick(rng, [1, 2, 3], [2, 2, 1])
    rows, window = _place(rng, n, k, min_gap=96, tail=72)
    half = max(30, window // 2)
    for r in rows:
        sev = _sev(rng)
        kind = _pick(rng, ["hot", "cold", "flat", "inverted"], [3, 2, 1.5, 1])
        dur = _i(rng, 12, min(half, 48))
        seg = slice(r, r + dur)
        if kind in ("hot", "cold"):
            mag = _lerp(3.0, 12.0, sev) * (1 if kind == "hot" else -1)
            ramp = _i(rng, 3, 8)
            t = np.arange(dur)
            prof = np.minimum(1.0, (t + 1) / ramp) * np.where(t > dur - 4, (dur - t) / 4.0, 1.0)
            x[seg] += mag * prof
        elif kind == "flat":  # thermostat stuck: no daily cycle, almost no noise
            x[seg] = float(x[r - 1]) - daily[seg] + rng.normal(0.0, 0.05, dur)
        else:
            daily[seg] *= -_lerp(0.6, 2.0, sev)
    return _finish("realKnownCause", name, ts, x + daily, rows, 6)


def _asg_misconfiguration(rng: np.random.Generator, i: int) -> Series:
    """CPU of an autoscaling group: a long series whose load wanders and whose level steps
    (unlabelled) as instances are added or removed; anomalies are a misconfiguration that
    pins the CPU high for hours, or a sudden stretch of much noisier load."""
    name = _variant("cpu_utilization_asg_misconfiguration", i)
    n = _i(rng, 12000, 16000)
    ts = _grid(_start(rng, FIVE_MIN_MS), FIVE_MIN_MS, n)
    h = _hours(ts)
    level = _u(rng, 25.0, 45.0)
    x = level + _wander(rng, n, ROWS_PER_DAY // 3, _u(rng, 3.0, 8.0))
    x += _u(rng, 3.0, 10.0) * (_bump(h, _u(rng, 13.0, 17.0), 4.0) - 0.3)
    x += _ar1(rng, n, _u(rng, 0.2, 0.6), _u(rng, 2.0, 5.0))
    for s in _sparse(rng, n, 3.0 / ROWS_PER_DAY).tolist():  # scaling steps, benign
        _shift(x, s, min(n, s + _i(rng, 12, 72)), _u(rng, -8.0, 8.0), _i(rng, 1, 3))
    k = _pick(rng, [1, 2], [2, 1])
    rows, window = _place(rng, n, k, min_gap=ROWS_PER_DAY, tail=24)
    for r in rows:
        sev = _sev(rng)
        dur = _i(rng, 36, max(36, min(window // 2, 288)))
        if rng.random() < 0.65:
            target = min(98.0, float(np.mean(x[r - 12 : r])) + _lerp(15.0, 50.0, sev))
            ramp = np.minimum(1.0, np.arange(1, dur + 1) / _i(rng, 1, 6))
            x[r : r + dur] = x[r : r + dur] * (1 - ramp) + (target + rng.normal(0, 1.0, dur)) * ramp
        else:
            x[r : r + dur] += rng.normal(0.0, _lerp(8.0, 20.0, sev), dur)
    return _finish("realKnownCause", name, ts, np.clip(x, 0.0, 100.0), rows, 3)


def _rogue_agent_key(rng: np.random.Generator, i: int) -> Series:
    """Keystroke-like activity sampled irregularly: mostly near zero with short bursts of
    typing; anomalies are a key held down (a long flat high plateau) or a fast up/down
    pattern never seen before."""
    hold = i % 2 == 0
    name = _variant("rogue_agent_key_hold" if hold else "rogue_agent_key_updown", i // 2)
    n = _i(rng, 1800, 5400)
    gaps = np.where(rng.random(n) < 0.9, FIVE_MIN_MS, rng.integers(2, 60, n) * FIVE_MIN_MS)
    ts = _start(rng, FIVE_MIN_MS) + np.concatenate([[0], np.cumsum(gaps[1:])]).astype(np.int64)
    x = np.abs(rng.normal(0.0, 0.05, n))
    for s in _sparse(rng, n, 0.02).tolist():  # typing bursts: benign
        d = _i(rng, 1, 4)
        x[s : s + d] += rng.uniform(0.3, 1.0, len(x[s : s + d]))
    k = _pick(rng, [1, 2], [1, 2])
    rows, window = _place(rng, n, k, min_gap=100, tail=24)
    for r in rows:
        dur = _i(rng, 12, max(12, min(window // 2, 60)))
        if hold:
            x[r : r + dur] = _u(rng, 0.6, 1.0) + rng.normal(0.0, 0.01, len(x[r : r + dur]))
        else:
            x[r : r + dur] = np.where(np.arange(len(x[r : r + dur])) % 2 == 0, 1.0, 0.0)
            x[r : r + dur] += np.abs(rng.normal(0.0, 0.05, len(x[r : r + dur])))
    return _finish("realKnownCause", name, ts, x, rows, 4)


def _elb_request_count(rng: np.random.Generator, i: int) -> Series:
    """Load-balancer request counts per 5 minutes: over-dispersed counts with a daily
    cycle and benign spikes; anomalies are large spikes or a stretch with almost no
    requests (the service behind it down)."""
    name = f"elb_request_count_{_hex(rng)}"
    n = _aws_length(rng)
    ts = _grid(_start(rng, FIVE_MIN_MS), FIVE_MIN_MS, n)
    h = _hours(ts)
    rate = math.exp(_u(rng, math.log(5.0), math.log(400.0)))
    lam = rate * (0.5 + _bump(h, _u(rng, 12.0, 18.0), _u(rng, 3.0, 6.0)))
    lam = lam * np.exp(_wander(rng, n, ROWS_PER_DAY, _u(rng, 0.05, 0.25)))
    idx = _sparse(rng, n, _u(rng, 0.003, 0.02))
    lam[idx] *= 1.0 + np.minimum(rng.pareto(1.8, len(idx)), 6.0)
    k = _pick(rng, [1, 2, 3], [2, 3, 1])
    rows, _ = _place(rng, n, k, min_gap=144, tail=12)
    for r in rows:
        sev = _sev(rng)
        if rng.random() < 0.6:
            d = _i(rng, 1, 4)
            lam[r : r + d] *= _lerp(6.0, 20.0, sev)
        else:
            d = _i(rng, 6, 36)
            lam[r : r + d] *= _lerp(0.4, 0.02, sev)
    counts = rng.poisson(lam * rng.gamma(10.0, 0.1, n)).astype(np.float64)
    return _finish("realAWSCloudwatch", name, ts, counts, rows, None)


# ---------------------------------------------------------------------------------------
# realTweets

_TICKERS = [
    *("AAPL", "AMZN", "CRM", "CVS", "FB", "GOOG", "IBM", "KO", "PFE", "UPS"),
    *("MSFT", "NFLX", "TSLA", "WMT", "NKE", "INTC", "ORCL", "PEP", "DIS", "GE"),
]


def _tweets(rng: np.random.Generator, i: int, spiky: bool = False) -> Series:
    """``spiky``: labelled news are short spikes (15 minutes to 2 hours) of 3-20 times the
    usual volume among bigger routine bursts, so they stand out less."""
    name = f"Twitter_volume_{_TICKERS[i] if i < len(_TICKERS) else f'T{i}'}"
    n = 15902 if i == 0 else _i(rng, 9000, 15900)
    ts = _grid(_start(rng, FIVE_MIN_MS), FIVE_MIN_MS, n)
    h = _hours(ts)
    weekend = (_dow(ts) >= 5).astype(np.float64)
    base = math.exp(_u(rng, math.log(3.0), math.log(80.0)))
    daily = 0.35 + 0.65 * _bump(h, _u(rng, 15.0, 18.0), _u(rng, 3.5, 5.0))
    lam = base * daily * (1.0 - weekend * _u(rng, 0.2, 0.45))
    lam *= np.exp(_wander(rng, n, ROWS_PER_DAY, _u(rng, 0.1, 0.3)))

    # unlabelled natural bursts: many, short, Pareto-sized (the main false-positive source)
    burst = np.zeros(n)
    alpha, cap = _u(rng, 1.2, 1.7), _u(rng, 5.0, 12.0) * (1.5 if spiky else 1.0)
    m = int(rng.poisson(_u(rng, 3.0, 10.0) * n / ROWS_PER_DAY))
    for s, a, tau in zip(
        rng.integers(0, n, m).tolist(),
        np.minimum(0.3 * (rng.pareto(alpha, m) + 1.0), cap).tolist(),
        rng.uniform(2.0, 12.0, m).tolist(),
        strict=True,
    ):
        length = min(n - s, int(6 * tau) + 2)
        burst[s : s + length] += a * np.exp(-np.arange(length) / tau)

    k = _pick(rng, [1, 2, 3, 4], [1, 3, 3, 2])
    rows, _ = _place(rng, n, k, min_gap=ROWS_PER_DAY, tail=48)
    for r in rows:  # news: very large, sustained
        sev = _sev(rng)
        amp, plateau = _lerp(6.0, 40.0, sev), _i(rng, 24, 144)
        rise, tau = _u(rng, 0.5, 4.0), _u(rng, 12.0, 48.0)
        if spiky:
            amp, plateau, tau = _lerp(3.0, 20.0, sev), _i(rng, 3, 24), tau / 4.0
        t = np.arange(min(n - r, plateau + int(5 * tau)))
        shape = np.where(t < plateau, 1.0 - np.exp(-(t + 1) / rise), np.exp(-(t - plateau) / tau))
        burst[r : r + len(t)] += amp * shape * np.exp(_wander(rng, len(t), 12, 0.25))
    lam = lam * (1.0 + burst)
    r_disp = _u(rng, 5.0, 20.0)
    counts = rng.poisson(lam * rng.gamma(r_disp, 1.0 / r_disp, n)).astype(np.float64)
    if rng.random() < 0.25:  # unlabelled collection outage
        s = _i(rng, 0, n - 13)
        counts[s : s + _i(rng, 3, 12)] = 0.0
    return _finish("realTweets", name, ts, counts, rows, None)


# ---------------------------------------------------------------------------------------
# realAdExchange


def _ad_exchange(rng: np.random.Generator, i: int) -> Series:
    metric = "cpc" if i % 2 == 0 else "cpm"
    name = f"exchange-{2 + i // 2}_{metric}_results"
    n_grid = _i(rng, 1380, 1700)
    ts_grid = _grid(_start(rng, HOUR_MS), HOUR_MS, n_grid)
    present = rng.random(n_grid) >= 0.015
    if rng.random() < 0.5:
        g = _i(rng, 0, n_grid - 30)
        present[g : g + _i(rng, 6, 30)] = False
    present[0] = True
    keep = np.flatnonzero(present)
    ts = ts_grid[keep]
    n = len(ts)
    h = _hours(ts)
    dow = _dow(ts)
    level = _u(rng, 0.05, 0.3) if metric == "cpc" else _u(rng, 0.2, 1.5)
    traffic = 0.25 + _bump(h, _u(rng, 15.0, 20.0), _u(rng, 3.0, 5.0))
    weekly = np.where(dow >= 5, _u(rng, 0.8, 1.1), 1.0) * (1.0 + 0.05 * np.sin(2 * np.pi * dow / 7))
    x = level * (1.0 + _u(rng, 0.1, 0.4) * (traffic - 0.6)) * weekly
    x *= np.exp(_wander(rng, n, 48, _u(rng, 0.04, 0.1)))
    x *= 1.0 + rng.normal(0.0, 1.0, n) * _u(rng, 0.03, 0.08) / np.sqrt(traffic)
    out = _sparse(rng, n, 0.01)  # isolated unlabelled outliers
    x[out] *= np.where(
        rng.random(len(out)) < 0.5, rng.uniform(1.5, 2.5, len(out)), rng.uniform(0.3, 0.6, len(out))
    )
    k = _pick(rng, [1, 2, 3], [3, 2, 1])
    rows, window = _place(rng, n, k, min_gap=48, tail=12)
    half = max(13, window // 2)
    for r in rows:
        factor = _lerp(1.2, 2.5, _sev(rng))
        if rng.random() < 0.45:
            factor = 1.0 / factor
        end = n if rng.random() < 0.5 else r + _i(rng, 12, half)
        x[r:end] *= factor
    return _finish("realAdExchange", name, ts, np.maximum(x, 0.001), rows, 6)


# ---------------------------------------------------------------------------------------
# artificial

_ART_N = 4032


def _art_base(rng: np.random.Generator) -> tuple[IntArray, FloatArray]:
    ts = _grid(_start(rng, DAY_MS, midnight=True), FIVE_MIN_MS, _ART_N)
    return ts, _hours(ts)


def _art_none(kind: str) -> Callable[[np.random.Generator, int], Series]:
    def gen(rng: np.random.Generator, i: int) -> Series:
        ts, h = _art_base(rng)
        level, amp = _u(rng, 10.0, 80.0), _u(rng, 10.0, 40.0)
        phase = _u(rng, 0.0, 24.0)
        sine = np.sin(2 * np.pi * (h - phase) / 24.0)
        if kind == "art_flatline":
            x = np.full(_ART_N, float(round(level)))
        elif kind == "art_flat_small_noise":
            x = level + rng.normal(0.0, _u(rng, 0.1, 0.5), _ART_N)
        elif kind == "art_daily_no_noise":
            x = level + amp * sine
        elif kind == "art_daily_small_noise":
            x = level + amp * sine + rng.normal(0.0, amp * _u(rng, 0.03, 0.08), _ART_N)
        elif kind == "art_daily_perfect_square_wave":
            x = np.where(sine >= 0.0, level + amp, level)
        else:  # art_noisy: i.i.d. noise, no drift
            x = level + rng.normal(0.0, amp * _u(rng, 0.2, 0.5), _ART_N)
        return _finish("artificialNoAnomaly", _variant(kind, i), ts, x, [], 6)

    return gen


def _art_with(kind: str) -> Callable[[np.random.Generator, int], Series]:
    def gen(rng: np.random.Generator, i: int) -> Series:
        ts, h = _art_base(rng)
        n = _ART_N
        sev = _sev(rng)
        (r0,), _ = _place(rng, n, 1, tail=2 * ROWS_PER_DAY)
        low, high = _u(rng, 10.0, 30.0), _u(rng, 60.0, 90.0)
        rise, fall, sharp = _u(rng, 6.5, 9.0), _u(rng, 16.5, 19.0), _u(rng, 1.5, 4.0)
        on = 1.0 / (1.0 + np.exp(-(h - rise) * sharp)) / (1.0 + np.exp(-(fall - h) * sharp))
        noise = rng.normal(0.0, _u(rng, 1.0, 4.0), n)
        # day-shaped anomalies start at the rising edge of the day after r0
        day_start = (r0 // ROWS_PER_DAY + 1) * ROWS_PER_DAY
        edge = day_start + math.ceil(rise * 12)
        day = slice(day_start, day_start + ROWS_PER_DAY)
        label = r0
        if kind in ("art_daily_jumpsup", "art_daily_jumpsdown", "art_daily_nojump"):
            top = np.full(n, high)
            if kind == "art_daily_jumpsup":
                top[day] = high + (high - low) * _lerp(0.2, 0.6, sev)
            elif kind == "art_daily_jumpsdown":
                top[day] = low + (high - low) * _lerp(0.75, 0.35, sev)
            else:
                top[day] = low
            x = low + (top - low) * on + noise
            label = edge
        elif kind == "art_daily_flatmiddle":
            x = low + (high - low) * on + noise
            dur = _i(rng, 20 * 12, 30 * 12)
            x[r0 : r0 + dur] = (low + high) / 2.0 + rng.normal(0.0, 0.3, dur)
        elif kind == "art_sine_frequency_change":
            freq = np.where(np.arange(n) < r0, 1.0, _lerp(1.5, 3.0, sev)) / ROWS_PER_DAY
            x = (
                (low + high) / 2.0
                + (high - low) / 2.0 * np.sin(2 * np.pi * np.cumsum(freq))
                + noise
            )
        elif kind == "art_square_wave_jump":
            square = (on > 0.5).astype(np.float64)
            top = np.where(np.arange(n) >= edge, high + (high - low) * _lerp(0.15, 0.6, sev), high)
            x = low + (top - low) * square + 0.3 * noise
            label = edge
        elif kind == "art_increase_spike_density":
            x = low + 0.5 * noise
            spikes = _sparse(rng, n, 1.0 / ROWS_PER_DAY)
            dense_end = r0 + _i(rng, 6 * 12, 18 * 12)
            dense = r0 + _sparse(rng, dense_end - r0, _lerp(0.05, 0.25, sev))
            for idx in (spikes, np.append(dense, r0)):
                x[idx] += rng.uniform(30.0, 60.0, len(idx))
        else:  # art_load_balancer_spikes: a raised, spiky stretch
            x = low / 4.0 + 0.2 * np.abs(noise)
            spikes = _sparse(rng, n, 1.0 / 150.0)
            x[spikes] += rng.uniform(5.0, 20.0, len(spikes))
            dur = _i(rng, 2 * 12, 6 * 12)
            x[r0 : r0 + dur] += _lerp(3.0, 10.0, sev) + rng.exponential(_lerp(5.0, 20.0, sev), dur)
        return _finish("artificialWithAnomaly", _variant(kind, i), ts, x, [label], 6)

    return gen


# ---------------------------------------------------------------------------------------
# the corpus

Generator = Callable[[np.random.Generator, int], Series]

# (family id, series at scale 1, generator); family ids seed the generators: keep them stable
FAMILIES: list[tuple[str, int, Generator]] = [
    ("aws_cpu", 6, _aws_cpu),
    ("aws_network_in", 4, _aws_network_in),
    ("aws_disk_write", 3, _aws_disk_write),
    ("traffic_speed", 3, lambda rng, i: _traffic(rng, i, "speed")),
    ("traffic_travel_time", 2, lambda rng, i: _traffic(rng, i, "TravelTime")),
    ("traffic_occupancy", 2, lambda rng, i: _traffic(rng, i, "occupancy")),
    ("machine_temperature", 2, _machine_temperature),
    ("nyc_taxi", 2, _nyc_taxi),
    ("ec2_request_latency", 2, _ec2_request_latency),
    ("ambient_temperature", 2, _ambient_temperature),
    ("asg_misconfiguration", 1, _asg_misconfiguration),
    ("rogue_agent_key", 2, _rogue_agent_key),
    ("elb_request_count", 2, _elb_request_count),
    ("tweets", 8, _tweets),
    ("tweets_spiky", 4, lambda rng, i: _tweets(rng, i + 8, spiky=True)),
    ("ad_exchange", 6, _ad_exchange),
    *(
        (kind, 1, _art_none(kind))
        for kind in (
            "art_flatline",
            "art_flat_small_noise",
            "art_daily_no_noise",
            "art_daily_small_noise",
            "art_daily_perfect_square_wave",
            "art_noisy",
        )
    ),
    *(
        (kind, 1, _art_with(kind))
        for kind in (
            "art_daily_jumpsup",
            "art_daily_jumpsdown",
            "art_daily_flatmiddle",
            "art_daily_nojump",
            "art_sine_frequency_change",
            "art_square_wave_jump",
            "art_increase_spike_density",
            "art_load_balancer_spikes",
        )
    ),
]


def make_corpus(seed: int = 7, scale: float = 1.0) -> list[Series]:
    """The generated corpus, sorted by NAB key. ``scale`` multiplies series per family."""
    out: list[Series] = []
    keys: set[str] = set()
    for family, count, gen in FAMILIES:
        for i in range(max(1, round(count * scale))):
            rng = np.random.default_rng([seed & 0xFFFFFFFFFFFFFFFF, zlib.crc32(family.encode()), i])
            s = gen(rng, i)
            name, extra = s.name, 1
            while f"{s.category}/{name}.csv" in keys:  # random sensor ids may collide
                extra += 1
                name = f"{s.name}_{extra}"
            if name != s.name:
                s = Series(s.category, name, s.timestamps_ms, s.values, s.anomalies_ms)
            keys.add(s.key)
            out.append(s)
    return sorted(out, key=lambda s: s.key)


# ---------------------------------------------------------------------------------------
# NAB on-disk layout


def _fmt_ts(ms: int) -> str:
    return (_EPOCH + timedelta(milliseconds=ms)).strftime(_TS_FORMAT)


def _parse_ts(text: str) -> int:
    dt = datetime.fromisoformat(text.strip())
    dt = dt.replace(tzinfo=UTC) if dt.tzinfo is None else dt.astimezone(UTC)
    return _ms(dt)


def _fmt_value(v: float) -> str:
    return str(int(v)) if v.is_integer() and abs(v) < 1e15 else repr(v)


def write_nab_layout(corpus: list[Series], root: Path) -> None:
    """Write ``root/data/<category>/<name>.csv`` and ``root/labels/combined_labels.json``."""
    root = Path(root)
    labels: dict[str, list[str]] = {}
    for s in corpus:
        folder = root / "data" / s.category
        folder.mkdir(parents=True, exist_ok=True)
        lines = ["timestamp,value"]
        lines += [
            f"{_fmt_ts(t)},{_fmt_value(v)}" for t, v in zip(s.timestamps_ms, s.values, strict=True)
        ]
        (folder / f"{s.name}.csv").write_text("\n".join(lines) + "\n", encoding="utf-8")
        labels[s.key] = [_fmt_ts(t) + ".000000" for t in s.anomalies_ms]
    (root / "labels").mkdir(parents=True, exist_ok=True)
    text = json.dumps(dict(sorted(labels.items())), indent=4)
    (root / "labels" / "combined_labels.json").write_text(text + "\n", encoding="utf-8")


def read_nab_layout(root: Path) -> list[Series]:
    """Read NAB's layout (a real NAB checkout or `write_nab_layout`'s), sorted by key."""
    root = Path(root)
    label_file = root / "labels" / "combined_labels.json"
    labels: dict[str, list[str]] = {}
    if label_file.exists():
        labels = json.loads(label_file.read_text(encoding="utf-8"))
    out: list[Series] = []
    for path in sorted((root / "data").glob("*/*.csv")):
        category, name = path.parent.name, path.stem
        ts: list[int] = []
        values: list[float] = []
        with path.open(newline="", encoding="utf-8-sig") as fh:
            reader = csv.reader(fh)
            header = [c.strip().lower() for c in next(reader)]
            ti, vi = header.index("timestamp"), header.index("value")
            for row in reader:
                if not row:
                    continue
                ts.append(_parse_ts(row[ti]))
                values.append(float(row[vi]))
        marks = sorted(_parse_ts(t) for t in labels.get(f"{category}/{name}.csv", []))
        out.append(Series(category, name, ts, values, marks))
    return sorted(out, key=lambda s: s.key)


# ---------------------------------------------------------------------------------------


def _check(corpus: list[Series]) -> None:
    """Invariants every generated series must satisfy."""
    for s in corpus:
        n = len(s.values)
        assert 1000 <= n <= 16000, (s.key, n)
        assert len(s.timestamps_ms) == n, s.key
        assert all(b > a for a, b in itertools.pairwise(s.timestamps_ms)), s.key
        assert all(math.isfinite(v) for v in s.values), s.key
        assert len(s.anomalies_ms) <= 4, s.key
        where = {t: j for j, t in enumerate(s.timestamps_ms)}
        rows = [where[t] for t in s.anomalies_ms]  # every label is a row
        assert all(r >= 0.15 * n for r in rows), (s.key, rows)
        if rows:
            half = int(0.1 * n / len(rows)) // 2
            assert all(b - a > 2 * half for a, b in itertools.pairwise(rows)), (
                s.key,
                rows,
            )
        first = datetime.fromtimestamp(s.timestamps_ms[0] / 1000, UTC)
        assert 2013 <= first.year <= 2015, (s.key, first)


def _summary(corpus: list[Series]) -> dict[str, Any]:
    out: dict[str, dict[str, int]] = {}
    for s in corpus:
        c = out.setdefault(
            s.category, {"series": 0, "rows": 0, "labels": 0, "series_without_labels": 0}
        )
        c["series"] += 1
        c["rows"] += len(s.values)
        c["labels"] += len(s.anomalies_ms)
        c["series_without_labels"] += not s.anomalies_ms
    total = {
        k: sum(c[k] for c in out.values())
        for k in ("series", "rows", "labels", "series_without_labels")
    }
    return {**out, "total": total}


if __name__ == "__main__":
    t0 = time.perf_counter()
    corpus = make_corpus()
    elapsed = time.perf_counter() - t0
    _check(corpus)
    assert corpus == make_corpus(), "make_corpus is not deterministic"
    print(json.dumps({**_summary(corpus), "make_corpus_seconds": round(elapsed, 3)}, indent=2))
    with tempfile.TemporaryDirectory() as tmp:
        write_nab_layout(corpus, Path(tmp))
        back = read_nab_layout(Path(tmp))
    assert [s.key for s in back] == [s.key for s in corpus]
    for a, b in zip(corpus, back, strict=True):
        assert a.timestamps_ms == b.timestamps_ms, a.key  # whole seconds: exact
        assert a.values == b.values, a.key
        assert a.anomalies_ms == b.anomalies_ms, a.key
    assert back == corpus
    print(f"round trip through NAB layout: OK ({len(back)} series)", file=sys.stderr)
