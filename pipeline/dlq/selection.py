"""Which dead letters a ``trackflow dlq`` command works on, read from the lake's views.

Filters are checked before anything is read (an unknown code or an empty time range is a
usage error, not an empty answer), and dead letters are streamed in a fixed order
(received_at, then source position), so a replay of thousands of 256 KiB payloads never
holds them all and two runs see the same order.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import duckdb

from pipeline.contract.errors import ErrorCode
from pipeline.contract.replay import dead_letter_key
from pipeline.names import LAKE_DLQ, LAKE_DLQ_REPLAYS

FETCH_ROWS = 200  # dead letters fetched at a time (payloads are up to 256 KiB each)


class BadFilter(ValueError):
    """A filter the user gave cannot select anything meaningful; the message says why."""


@dataclass(frozen=True)
class Filters:
    code: str | None = None
    event: str | None = None
    since: datetime | None = None  # received_at >= since
    until: datetime | None = None  # received_at < until

    def where(self) -> tuple[str, list[Any]]:
        """SQL condition over the dlq view and its parameters."""
        parts, params = ["true"], []
        for sql, value in (
            ("error_code = ?", self.code),
            ("event_name = ?", self.event),
            ("received_at >= ?", self.since),
            ("received_at < ?", self.until),
        ):
            if value is not None:
                parts.append(sql)
                params.append(value)
        return " AND ".join(parts), params


def parse_time(text: str, flag: str) -> datetime:
    """An ISO 8601 date or time; without an offset it is UTC."""
    try:
        value = datetime.fromisoformat(text.strip())
    except ValueError:
        raise BadFilter(
            f"{flag} {text!r} is not an ISO 8601 time (e.g. 2026-11-23T10:00:00+08:00)"
        ) from None
    return value if value.tzinfo else value.replace(tzinfo=UTC)


def make_filters(
    code: str | None = None,
    event: str | None = None,
    since: str | None = None,
    until: str | None = None,
) -> Filters:
    codes = [c.value for c in ErrorCode]
    if code is not None and code not in codes:
        raise BadFilter(f"--code {code!r} is not an error code; one of: {', '.join(codes)}")
    if event is not None and not event.strip():
        raise BadFilter("--event must not be empty")
    lo = parse_time(since, "--from") if since is not None else None
    hi = parse_time(until, "--to") if until is not None else None
    if lo is not None and hi is not None and lo >= hi:
        raise BadFilter(f"--from ({lo.isoformat()}) must be before --to ({hi.isoformat()})")
    return Filters(code, event, lo, hi)


@dataclass(frozen=True)
class DeadLetter:
    """One row of the dlq view, as replay needs it."""

    key: str  # dead_letter_key
    source_topic: str
    source_partition: int
    error_code: str
    error_detail: str | None
    event_id: str | None
    event_name: str | None
    payload: bytes
    truncated: bool
    received_at: int | None  # epoch ms
    replay_of: str | None
    source: str | None = None  # the collector's source name; re-sent with the replay


_COLUMNS = (
    "source_topic, source_partition, source_offset, source_index, error_code, error_detail, "
    "event_id, event_name, payload, coalesce(payload_truncated, false), "
    "epoch_ms(received_at), replay_of, source"
)


def dead_letters(con: duckdb.DuckDBPyConnection, filters: Filters) -> Iterator[DeadLetter]:
    """The matching dead letters, oldest first, each position once."""
    where, params = filters.where()
    cur = con.execute(
        f"SELECT {_COLUMNS} FROM {LAKE_DLQ} WHERE {where} QUALIFY row_number() OVER (PARTITION BY "
        "source_topic, source_partition, source_offset, source_index ORDER BY received_at) = 1 "
        "ORDER BY received_at, source_partition, source_offset, source_index",
        params,
    )
    while rows := cur.fetchmany(FETCH_ROWS):
        for t, p, o, i, code, detail, eid, name, payload, cut, at, of, src in rows:
            yield DeadLetter(
                dead_letter_key(t, p, o, i),
                t,
                p,
                code,
                detail,
                eid,
                name,
                bytes(payload or b""),
                bool(cut),
                at,
                of,
                src,
            )


STATS_COLUMNS = [
    "error_code",
    "event_name",
    "source",
    "count",
    "truncated",
    "replayed",
    "failed_again",
]


def stats(con: duckdb.DuckDBPyConnection, filters: Filters) -> list[dict[str, Any]]:
    """Dead letters per (error code, event, source), with how many were cut
    (cannot be replayed), replayed (the ledger says sent) and are themselves a failed
    replay (``replay_of`` set). Largest groups first. ``source`` is the collector's
    source name, as in ``events`` (DESIGN 13): null for payloads produced to Kafka."""
    where, params = filters.where()
    key = (
        "d.source_topic || ':' || d.source_partition || ':' || d.source_offset || ':' "
        "|| d.source_index"
    )
    cur = con.execute(
        "SELECT d.error_code, d.event_name, d.source, count(*) AS count, "
        "count(*) FILTER (WHERE d.payload_truncated) AS truncated, "
        "count(*) FILTER (WHERE r.state = 'sent') AS replayed, "
        "count(*) FILTER (WHERE d.replay_of IS NOT NULL) AS failed_again "
        f"FROM (SELECT * FROM {LAKE_DLQ} WHERE {where}) d "
        f"LEFT JOIN {LAKE_DLQ_REPLAYS} r ON r.replay_of = {key} "
        "GROUP BY ALL ORDER BY count DESC, error_code, event_name NULLS LAST, source",
        params,
    )
    return [dict(zip(STATS_COLUMNS, row, strict=True)) for row in cur.fetchall()]
