"""The published baselines bench/anomaly/nab.py compares trackflow with."""

from __future__ import annotations

import random

from bench.anomaly.baselines import RelativeEntropy

T0 = 1_700_000_000_000


def flags(values: list[float]) -> list[int]:
    det = RelativeEntropy(len(values), min(values), max(values))
    return [i for i, v in enumerate(values) if det.update(T0 + i * 300_000, v) >= 1.0]


def test_relative_entropy_flags_a_new_distribution_not_a_known_one() -> None:
    """A level never seen before is a new hypothesis (flagged); once known, a return to
    it later is not flagged again, and the old level it left is not flagged either."""
    rng = random.Random(1)
    low = [10 + rng.gauss(0, 1) for _ in range(600)]
    high = [30 + rng.gauss(0, 1) for _ in range(300)]
    got = flags(low + high + low[:300] + high)
    assert len([i for i in got if i < 600]) <= 2  # noise rarely looks new
    assert [i for i in got if 600 <= i < 652][:1] == [600]  # the change, at once
    assert [i for i in got if i >= 1300] == []  # both levels known by then


def test_relative_entropy_is_quiet_on_stationary_noise() -> None:
    """Windows of the same noise agree with the first hypothesis: hardly any flags (the
    old frequency rule flagged most windows of every series that wanders)."""
    rng = random.Random(2)
    values = [rng.gauss(0, 1) for _ in range(3000)]
    assert len(flags(values)) <= 10


def test_relative_entropy_never_flags_a_constant_series() -> None:
    assert flags([5.0] * 500) == []
