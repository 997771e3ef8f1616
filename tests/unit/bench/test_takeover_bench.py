"""bench/takeover.py's reading of RSS samples and of /proc/PID/smaps."""

from __future__ import annotations

from bench.takeover import resident_by_kind, summary

SMAPS = """\
55d0c0000000-55d0c4000000 rw-p 00000000 00:00 0                          [heap]
Rss:               20480 kB
7f0000000000-7f0002000000 rw-p 00000000 00:00 0
Rss:               30720 kB
7f0010000000-7f0010100000 r-xp 00000000 fe:00 42                         /usr/lib/libduckdb.so
Rss:                2048 kB
7ffd00000000-7ffd00021000 rw-p 00000000 00:00 0                          [stack]
Rss:                1024 kB
"""


def test_resident_memory_is_summed_by_kind_of_mapping() -> None:
    assert resident_by_kind(SMAPS) == {
        "heap": 20,
        "anonymous": 30,
        "files": 2,
        "stack_and_other": 1,
    }


def test_the_survivor_step_is_measured_from_its_last_sample_before_the_kill() -> None:
    samples = [
        {"t": 0.0, "survivor": 200, "replacement": None},
        {"t": 9.5, "survivor": 210, "replacement": None},
        {"t": 10.0, "survivor": 212, "replacement": 150},  # the kill's own sample
        {"t": 30.0, "survivor": 400, "replacement": 230},
        {"t": 60.0, "survivor": 252, "replacement": 220},
    ]
    got = summary(samples, "survivor", killed_at=10.0)
    assert got == {
        "peak_after_kill_mb": 400,
        "peak_seconds_after_kill": 20.0,
        "end_mb": 252,
        "before_kill_mb": 210,
        "step": 0.2,
    }
    replacement = summary(samples, "replacement", killed_at=10.0)
    assert "step" not in replacement  # started at the kill: nothing before it
    assert replacement["peak_after_kill_mb"] == 230
