"""Local days and weeks: the periods every report counts in, as SQL and as Python dates.

Day and week boundaries follow the project time zone (``TRACKFLOW_TIMEZONE``), so a
purchase at 23:30 in Shanghai belongs to that Shanghai day although it is 15:30 UTC.
Weeks start on Monday and are labelled by it. Date bounds are local dates, inclusive.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from functools import cache
from typing import Literal
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from pipeline.contract.sql import literal

Period = Literal["day", "week"]
DAY_MS = 86_400_000
_SCAN_FROM, _SCAN_TO = datetime(1970, 1, 1, tzinfo=UTC), datetime(2100, 1, 1, tzinfo=UTC)
PERIODS: tuple[Period, ...] = ("day", "week")


class BadInput(ValueError):
    """A report asked for something that cannot be answered: a one-line message, exit 2."""


def parse_date(value: str, flag: str) -> date:
    try:
        return date.fromisoformat(value)
    except ValueError:
        raise BadInput(f"{flag} must be a date YYYY-MM-DD, not {value!r}") from None


def zone(name: str) -> ZoneInfo:
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        raise BadInput(f"unknown time zone {name!r} (an IANA name, e.g. Asia/Shanghai)") from None


@dataclass(frozen=True)
class Calendar:
    """Periods of one kind in one time zone."""

    tz: str
    period: Period = "day"

    def __post_init__(self) -> None:
        zone(self.tz)
        if self.period not in PERIODS:
            raise BadInput(f"--period must be day or week, not {self.period!r}")

    @property
    def step(self) -> int:
        """Days per period."""
        return 7 if self.period == "week" else 1

    def local_day(self, column: str = "event_time") -> str:
        """SQL: the local date of a TIMESTAMPTZ column.

        Where the zone's offset has been fixed since some instant (Asia/Shanghai: since
        1991), days after it are epoch arithmetic, about twice as cheap as DuckDB's ICU
        conversion, which still converts anything earlier (and every time in a zone
        with daylight saving)."""
        icu = f"CAST(timezone({literal(self.tz)}, {column}) AS DATE)"
        fixed = _fixed_since(self.tz)
        if fixed is None:
            return icu
        since_ms, offset_ms = fixed
        day = (
            f"(DATE '1970-01-01' + CAST((epoch_ms({column}) + {offset_ms}) // {DAY_MS} AS INTEGER))"
        )
        return f"CASE WHEN epoch_ms({column}) >= {since_ms} THEN {day} ELSE {icu} END"

    def bucket(self, column: str = "event_time") -> str:
        """SQL: the first local day of the period holding a TIMESTAMPTZ column."""
        day = self.local_day(column)
        return f"CAST(date_trunc('week', {day}) AS DATE)" if self.period == "week" else day

    def start(self, day: date) -> date:
        """The first day of the period holding ``day`` (a Monday for weeks)."""
        return day - timedelta(days=day.weekday()) if self.period == "week" else day

    def periods(self, lo: date, hi: date) -> list[date]:
        """Every period from the one holding ``lo`` to the one holding ``hi``."""
        out, p = [], self.start(lo)
        while p <= hi:
            out.append(p)
            p += timedelta(days=self.step)
        return out

    def midnight(self, day: date) -> datetime:
        """The instant a local day starts (aware; DST-safe through zoneinfo)."""
        return datetime(day.year, day.month, day.day, tzinfo=zone(self.tz))

    def today(self, now: datetime | None = None) -> date:
        return (now or datetime.now(zone(self.tz))).astimezone(zone(self.tz)).date()


def check_range(lo: date, hi: date) -> None:
    if lo > hi:
        raise BadInput(f"--from {lo.isoformat()} is after --to {hi.isoformat()}")


def utc_dates(lo: date, hi: date) -> tuple[date, date]:
    """UTC dates that hold every instant of the local days ``lo`` .. ``hi``: the lake's
    ``event_date`` partitions (UTC) to read, so DuckDB skips the other files."""
    return lo - timedelta(days=1), hi + timedelta(days=1)


@cache
def _fixed_since(name: str) -> tuple[int, int] | None:
    """(epoch ms from which the zone's UTC offset never changes again up to 2100, that
    offset in ms), or None when it keeps changing (daylight saving). Scanned back from
    2100 a day at a time: no offset lasts less than a day."""
    tz = zone(name)
    at = _SCAN_TO
    offset = at.astimezone(tz).utcoffset()
    while at > _SCAN_FROM:
        earlier = at - timedelta(days=1)
        if earlier.astimezone(tz).utcoffset() != offset:
            break
        at = earlier
    if at > _SCAN_TO - timedelta(days=400) or offset is None:
        return None  # changed within the last year scanned: not a fixed zone
    offset_ms = int(offset.total_seconds() * 1000)
    # Epoch arithmetic only where the shifted time is not negative (integer division).
    return max(int(at.timestamp() * 1000), -offset_ms), offset_ms
