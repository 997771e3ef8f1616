"""Update times of member rows: the ``incremental`` column (e.g. ``updated_at``) read as an
instant, in epoch milliseconds.

Member systems write times many ways; accepted are ISO 8601 with ``T`` or a space, ``-`` or
``/`` between date parts, optional seconds, fraction and offset (``Z``, ``+08:00``), a date
alone, epoch seconds (10 digits) or milliseconds (13 digits), and the formats of the
mapping's date steps on the same column. A time without an offset is in the project time
zone (``TRACKFLOW_TIMEZONE``).
"""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

_ISO = re.compile(
    r"^(\d{4})[-/](\d{1,2})[-/](\d{1,2})"
    r"(?:[T ](\d{1,2}):(\d{2})(?::(\d{2})(?:\.(\d{1,9}))?)?)?"
    r"\s*(Z|z|[+-]\d{2}:?\d{2})?$"
)
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


class BadTime(ValueError):
    pass


def _offset(text: str) -> timedelta:
    sign = -1 if text[0] == "-" else 1
    digits = text[1:].replace(":", "")
    return sign * timedelta(hours=int(digits[:2]), minutes=int(digits[2:]))


def parse_time(value: Any, zone: ZoneInfo, formats: tuple[str, ...] = ()) -> int:
    """Epoch milliseconds of ``value``; raises ``BadTime``."""
    if isinstance(value, bool) or value is None:
        raise BadTime("not a time")
    if isinstance(value, datetime):
        moment = value if value.tzinfo else value.replace(tzinfo=zone)
        return int((moment - _EPOCH) / timedelta(milliseconds=1))
    if isinstance(value, int | float):
        return _epoch(int(value))
    text = str(value).strip()
    if text.isdigit() and len(text) in (10, 13):
        return _epoch(int(text))
    if len(text) == 19 and text[4] == "-" and text[10] in " T":  # the common case, fast
        try:
            moment = datetime.fromisoformat(text).replace(tzinfo=zone)
            return int((moment - _EPOCH) / timedelta(milliseconds=1))
        except ValueError:
            pass
    m = _ISO.match(text)
    if m:
        y, mo, d, h, mi, s, frac, off = m.groups()
        try:
            moment = datetime(
                int(y),
                int(mo),
                int(d),
                int(h or 0),
                int(mi or 0),
                int(s or 0),
                int((frac or "0")[:6].ljust(6, "0")),
            )
        except ValueError:
            raise BadTime(f"{text[:40]!r} is not a valid date and time") from None
        if off in ("Z", "z"):
            aware = moment.replace(tzinfo=UTC)
        elif off:
            aware = moment.replace(tzinfo=UTC) - _offset(off)
        else:
            aware = moment.replace(tzinfo=zone)
        return int((aware - _EPOCH) / timedelta(milliseconds=1))
    for fmt in formats:
        try:
            parsed = datetime.strptime(text, fmt)
        except ValueError:
            continue
        aware = parsed if parsed.tzinfo else parsed.replace(tzinfo=zone)
        return int((aware - _EPOCH) / timedelta(milliseconds=1))
    raise BadTime(f"{text[:40]!r} is not a time (ISO 8601, epoch seconds or milliseconds)")


def _epoch(number: int) -> int:
    return number * 1000 if number < 100_000_000_000 else number


def iso(ms: int) -> str:
    """ISO 8601 UTC text of epoch milliseconds (the watermark's stored form)."""
    return (_EPOCH + timedelta(milliseconds=ms)).isoformat().replace("+00:00", "Z")
