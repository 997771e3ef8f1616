"""Window assignment, lateness and closing."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from pipeline.metrics.windows import closable, is_late, window_end, window_label, window_start

T = 1_795_420_000_000  # 2026-11-23T05:06:40Z


def test_tumbling_windows_are_aligned_to_the_epoch() -> None:
    assert window_start(T, 60) == T - T % 60_000
    assert window_start(T, 3600) % 3_600_000 == 0
    assert window_end(window_start(T, 60), 60) - window_start(T, 60) == 60_000


@given(st.integers(0, 2**45), st.sampled_from([60, 3600]))
def test_every_time_falls_in_exactly_its_window(t: int, size: int) -> None:
    start = window_start(t, size)
    assert start <= t < window_end(start, size)


def test_late_means_the_window_closed_before_this_message() -> None:
    start = window_start(T, 60)
    end = window_end(start, 60)
    assert not is_late(T, 60, 60, end + 59_999)
    assert is_late(T, 60, 60, end + 60_000)
    # The hour window of the same event is still open.
    assert not is_late(T, 3600, 60, end + 60_000)


def test_a_window_closes_when_every_partition_has_passed_it() -> None:
    end = window_end(window_start(T, 60), 60)
    assert closable(end, 60, [end + 60_000, end + 90_000])
    assert not closable(end, 60, [end + 60_000, end + 59_999])
    assert not closable(end, 60, [])


def test_labels() -> None:
    assert [window_label(s) for s in (60, 3600, 86400, 90)] == ["1m", "1h", "1d", "90s"]
