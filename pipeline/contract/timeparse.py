"""Event-time parsing: RFC 3339 with an explicit offset, or integer epoch milliseconds."""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta

from pipeline.contract.errors import ErrorCode, Rejected, json_type

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_MS = timedelta(milliseconds=1)
_RFC3339 = re.compile(
    r"^(\d{4}-\d{2}-\d{2})[Tt ](\d{2}:\d{2}:\d{2})(?:\.(\d{1,9}))?([Zz]|[+-]\d{2}:\d{2})$"
)


def parse_event_time(value: object, field: str = "event_time") -> int:
    """Return epoch milliseconds (UTC) or raise ``Rejected``.

    Naive timestamps are refused: without an offset the instant is ambiguous.
    """
    if isinstance(value, bool):
        raise Rejected(ErrorCode.TYPE_MISMATCH, f"{field} must be a string or integer, got boolean")
    if isinstance(value, int):
        return value
    if isinstance(value, datetime):  # Avro timestamp-millis
        if value.tzinfo is None:
            value = value.replace(tzinfo=UTC)
        return (value - _EPOCH) // _MS
    if not isinstance(value, str):
        raise Rejected(
            ErrorCode.TYPE_MISMATCH,
            f"{field} must be an RFC 3339 string or integer epoch milliseconds, "
            f"got {json_type(value)}",
        )
    m = _RFC3339.fullmatch(value)
    if m is None:
        raise Rejected(
            ErrorCode.INVALID_TIMESTAMP,
            f"{field} is not RFC 3339 with an offset (e.g. 2026-11-23T08:00:00+08:00)",
        )
    date, time, frac, offset = m.groups()
    frac = (frac or "0")[:6].ljust(6, "0")
    offset = "+00:00" if offset in ("Z", "z") else offset
    try:
        parsed = datetime.fromisoformat(f"{date}T{time}.{frac}{offset}")
    except ValueError:
        raise Rejected(
            ErrorCode.INVALID_TIMESTAMP, f"{field} is not a valid date and time"
        ) from None
    return (parsed - _EPOCH) // _MS


def check_time_range(ms: int, now_ms: int, max_past_s: int, max_future_s: int) -> None:
    if ms < now_ms - max_past_s * 1000:
        raise Rejected(
            ErrorCode.INVALID_TIMESTAMP,
            f"event_time is more than {max_past_s // 86400} days in the past",
        )
    if ms > now_ms + max_future_s * 1000:
        raise Rejected(
            ErrorCode.INVALID_TIMESTAMP,
            f"event_time is more than {max_future_s // 60} minutes in the future",
        )


def format_ms(ms: int) -> str:
    try:
        return datetime.fromtimestamp(ms / 1000, UTC).isoformat(timespec="milliseconds")
    except (OverflowError, ValueError, OSError):
        return f"{ms} (epoch ms, out of range)"
