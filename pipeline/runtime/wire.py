"""Every message format between agents: one documented shape per internal topic.

Producers' messages on ``events.raw`` are the public contract (DESIGN section 5) and are
decoded by ``pipeline.ingest.codecs``. Everything after that is trackflow's own, and lives
here so that a stage and its reader can never disagree about a key.

Between agents a message is one batch for one source partition (DESIGN section 3):

| topic | shape |
|---|---|
| ``events.valid``, ``events.stitched`` | Arrow IPC stream of the lake's event rows |
| ``events.dlq`` | JSON ``{"p": partition, "records": [dead-letter record, ...]}`` |
| ``identity.links`` | JSON ``[[identifier, identifier, event_time_ms], ...]`` |
| ``identity.changes`` | JSON ``IdentityChanges`` |
| ``metrics.partials`` | JSON ``{"p", "o", "wm", "s": [[metric, size, start, dims, v]], "f"}`` |
| ``metrics.rollups``, ``alerts`` | JSON ``PositionedRows`` |

Every encoder splits its output so that no message exceeds ``MAX_BATCH_BYTES``, well under
Kafka's default 1 MB message limit. Events travel as Arrow (columnar, no parsing
downstream), everything else as JSON (small, and readable by any consumer); see
docs/decisions.md for the measurements.
"""

from __future__ import annotations

import base64
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import orjson
import pyarrow as pa

from pipeline.identity.graph import Link
from pipeline.metrics.definitions import MetricDef
from pipeline.metrics.partials import Partials
from pipeline.metrics.series import encode as encode_value
from pipeline.metrics.series import kind_of

MAX_BATCH_BYTES = 512 * 1024


def _split(encode: Callable[[int, int], bytes], lo: int, hi: int, max_bytes: int) -> list[bytes]:
    """``encode(lo, hi)`` of items lo..hi, halved until every part fits in ``max_bytes``
    (a single item is sent as it is). Parts stay in order."""
    value = encode(lo, hi)
    if len(value) <= max_bytes or hi - lo <= 1:
        return [value]
    mid = lo + (hi - lo) // 2
    return _split(encode, lo, mid, max_bytes) + _split(encode, mid, hi, max_bytes)


# -- events.valid, events.stitched ----------------------------------------------------


def encode_events(table: pa.Table, max_bytes: int = MAX_BATCH_BYTES) -> list[bytes]:
    """Arrow IPC messages of ``table``, split by rows so that none exceeds ``max_bytes``."""

    def ipc(lo: int, hi: int) -> bytes:
        sink = pa.BufferOutputStream()
        part = table.slice(lo, hi - lo)
        with pa.ipc.new_stream(sink, part.schema) as writer:
            writer.write_table(part)
        return bytes(sink.getvalue().to_pybytes())

    return _split(ipc, 0, table.num_rows, max_bytes) if table.num_rows else []


def decode_events(value: bytes | None) -> pa.Table:
    with pa.ipc.open_stream(value or b"") as reader:
        return reader.read_all()


# -- events.dlq -----------------------------------------------------------------------


def encode_dead_letters(
    partition: int, records: list[dict[str, Any]], max_bytes: int = MAX_BATCH_BYTES
) -> list[bytes]:
    """``{"p": partition, "records": [...]}`` messages, none over ``max_bytes``.

    Records stay in order, so each message still covers a contiguous run of source offsets.
    A record's ``payload`` is the original bytes in base64.
    """
    if not records:
        return []
    return _split(
        lambda lo, hi: orjson.dumps({"p": partition, "records": records[lo:hi]}),
        0,
        len(records),
        max_bytes,
    )


def decode_dead_letters(value: bytes | None) -> list[dict[str, Any]]:
    """The records of one events.dlq message, ``payload`` back to bytes."""
    records: list[dict[str, Any]] = orjson.loads(value or b"")["records"]
    for row in records:
        row["payload"] = base64.b64decode(row["payload"])
    return records


# -- identity.links -------------------------------------------------------------------


def encode_links(links: list[Link], max_bytes: int = MAX_BATCH_BYTES) -> list[bytes]:
    """Link messages, none over ``max_bytes`` (links are a set: any split is fine)."""
    if not links:
        return []
    return _split(
        lambda lo, hi: orjson.dumps([list(link) for link in links[lo:hi]]), 0, len(links), max_bytes
    )


def decode_forget(value: bytes | None) -> tuple[str, list[str]] | None:
    """A privacy tombstone on identity.links (pipeline/privacy/kafka.py): ("forget" or
    "unforget", identifiers); None for a link message."""
    if not value or value[:1] != b"{":
        return None
    obj = orjson.loads(value)
    for kind in ("forget", "unforget"):
        if isinstance(obj.get(kind), list):
            return kind, [str(n) for n in obj[kind]]
    raise ValueError("an identity.links object that is not a privacy tombstone")


def decode_links(value: bytes | None) -> list[Link]:
    """Raises ValueError or TypeError on a message that is not a list of links."""
    return [(str(a), str(b), int(t)) for a, b, t in orjson.loads(value or b"")]


# The identity.links offset up to which the map must hold links before the windows of an
# events.stitched message's persons close (docs/decisions.md, "Persons resolved only once
# their links are applied"). A header, so the Arrow batch stays the lake's rows alone.
LINKS_HEADER = "trackflow-links-through"


def links_header(through: int) -> list[tuple[str, bytes]]:
    return [(LINKS_HEADER, str(through).encode())] if through >= 0 else []


def links_through(headers: Any) -> int:
    """The header's offset; -1 when absent or unreadable (a message from elsewhere: its
    windows do not wait)."""
    items = headers.items() if isinstance(headers, dict) else (headers or ())
    for key, value in items:
        if key == LINKS_HEADER:
            try:
                return int(value)
            except (TypeError, ValueError):
                return -1
    return -1


# -- identity.changes -----------------------------------------------------------------


@dataclass
class IdentityChanges:
    """What one identity.links message changed, positioned by that message."""

    partition: int
    offset: int
    decided_at: int  # epoch ms
    identities: list[dict[str, Any]]
    merges: list[dict[str, Any]]
    base: int = 0  # rows are positioned (offset, base + i): the parts of a split message

    def encode(self) -> bytes:
        return orjson.dumps(self.__dict__)

    def encode_all(self, max_bytes: int = MAX_BATCH_BYTES) -> list[bytes]:
        """This message, split into parts of at most ``max_bytes`` whose row positions
        stay those of the whole (identity rows first, then merges)."""
        n_ids = len(self.identities)

        def part(lo: int, hi: int) -> bytes:  # rows lo..hi of identities, then merges
            return IdentityChanges(
                self.partition,
                self.offset,
                self.decided_at,
                self.identities[lo:hi],
                self.merges[max(0, lo - n_ids) : max(0, hi - n_ids)],
                self.base + lo,
            ).encode()

        return _split(part, 0, n_ids + len(self.merges), max_bytes)

    @classmethod
    def decode(cls, value: bytes | None) -> IdentityChanges:
        msg = orjson.loads(value or b"")
        return cls(
            int(msg["partition"]),
            int(msg["offset"]),
            int(msg["decided_at"]),
            msg["identities"],
            msg["merges"],
            int(msg.get("base", 0)),
        )


# -- metrics.partials -----------------------------------------------------------------


def encode_partials(
    partition: int,
    offset: int,
    watermark: int,
    p: Partials,
    defs: dict[str, MetricDef],
    links: int = -1,
) -> bytes:
    """One events.stitched message's partials; ``CombineState.apply`` reads the decoded dict.
    ``l``: the message's ``links_through`` (omitted when -1)."""
    value: dict[str, Any] = {
        "p": partition,
        "o": offset,
        "wm": watermark,
        "s": [
            [m, size, start, dims, encode_value(kind_of(defs[m]), v)]
            for (m, size, start, dims), v in p.series.items()
        ],
        "f": p.funnel,
    }
    if links >= 0:
        value["l"] = links
    return orjson.dumps(value)


def split_partials(
    partition: int,
    offset: int,
    watermark: int,
    p: Partials,
    defs: dict[str, MetricDef],
    place: dict[str, int],
    count: int,
    links: int = -1,
) -> list[bytes]:
    """The partials of one events.stitched message for each of ``count`` combine
    partitions (``place``: metric -> partition). Every partition gets a message, empty or
    not: each needs every source partition's watermark to close its windows."""
    parts = [Partials() for _ in range(count)]
    for key, value in p.series.items():
        parts[place[key[0]]].series[key] = value
    for m, events in p.funnel.items():
        parts[place[m]].funnel[m] = events
    return [encode_partials(partition, offset, watermark, part, defs, links) for part in parts]


def decode_partials(value: bytes | None) -> dict[str, Any]:
    out: dict[str, Any] = orjson.loads(value or b"{}")
    return out


# -- metrics.rollups, alerts ----------------------------------------------------------


@dataclass
class PositionedRows:
    """Rows for a lake table, positioned by the input message that produced them.

    ``base`` separates rows that one input offset produced in different ways (a window
    closed by the watermark vs by the idle timer), so positions never collide.
    """

    partition: int
    offset: int
    base: int
    rows: list[dict[str, Any]]

    def encode(self) -> bytes:
        return orjson.dumps(
            {"p": self.partition, "o": self.offset, "base": self.base, "rows": self.rows}
        )

    def encode_all(self, max_bytes: int = MAX_BATCH_BYTES) -> list[bytes]:
        """This message, split into parts of at most ``max_bytes``; a part starts at
        ``base`` + its first row's index, so every row keeps its position."""

        def part(lo: int, hi: int) -> bytes:
            return PositionedRows(
                self.partition, self.offset, self.base + lo, self.rows[lo:hi]
            ).encode()

        return _split(part, 0, len(self.rows), max_bytes)

    @classmethod
    def decode(cls, value: bytes | None) -> PositionedRows:
        msg = orjson.loads(value or b"{}")
        return cls(
            int(msg.get("p", 0)),
            int(msg.get("o", -1)),
            int(msg.get("base", 0)),
            msg.get("rows", []),
        )
