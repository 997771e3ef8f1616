"""Event-time window maths (DESIGN section 10): tumbling windows, lateness, watermarks.

A partition's watermark is the highest event time it has seen. A window [start, end) of
a partition is closed once the watermark *before* a message is at least end + lateness:
that message's events for it are late (stored in the lake, not counted in the stream).
The combine stage finalises a window when every source partition's watermark has passed
end + lateness, so no partial for it can arrive afterwards, or when input has been idle.
"""

from __future__ import annotations

NO_WATERMARK = -(2**62)


def window_start(t_ms: int, size_s: int) -> int:
    size = size_s * 1000
    return t_ms - t_ms % size


def window_end(start_ms: int, size_s: int) -> int:
    return start_ms + size_s * 1000


def is_late(t_ms: int, size_s: int, lateness_s: int, watermark_ms: int) -> bool:
    """True when ``t_ms``'s window was already closed at ``watermark_ms``."""
    return window_end(window_start(t_ms, size_s), size_s) + lateness_s * 1000 <= watermark_ms


def closable(end_ms: int, lateness_s: int, watermarks: list[int]) -> bool:
    """Every source partition's watermark has passed the window's end plus the lateness."""
    return bool(watermarks) and min(watermarks) >= end_ms + lateness_s * 1000


def window_label(size_s: int) -> str:
    for unit, n in (("d", 86400), ("h", 3600), ("m", 60)):
        if size_s % n == 0:
            return f"{size_s // n}{unit}"
    return f"{size_s}s"
