"""The marker a dead-letter replay puts on what it sends back to events.raw (DESIGN 17).

``trackflow dlq replay`` re-sends a dead letter's payload to the partition of events.raw
it first came from, with one Kafka header, so that the validate stage judges it like any
producer message plus three things only a replay needs: which dead letter it replays
(``replay_of`` of a new dead letter, and the dedup key that makes a second copy of the
same replay a duplicate), when the original was received (the clock of the event-time
range check, so a replay a week later is judged as the original was), and whether the
payload's PII values are already the pipeline's HMAC hashes (dead-letter masking).

Both sides import this module: the replay command writes the header, the validate agent
reads it. A header that does not parse is ignored (the message is judged as a plain one).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

import orjson

HEADER = "trackflow-replay"


@dataclass(frozen=True, slots=True)
class ReplayMarker:
    of: str  # dead_letter_key of the dead letter replayed
    received_at: int | None = None  # epoch ms the original was received
    hashed_pii: bool = False  # PII identity values in the payload are HMAC hashes already

    def encode(self) -> bytes:
        return orjson.dumps(
            {"of": self.of, "received_at": self.received_at, "pii": self.hashed_pii}
        )


def dead_letter_key(topic: str, partition: int, offset: int, index: int) -> str:
    """A dead letter's identity: the source position of the event it holds.

    Kafka topic names cannot contain ":", so the key splits back unambiguously.
    """
    return f"{topic}:{partition}:{offset}:{index}"


def decode(value: bytes | None) -> ReplayMarker | None:
    """The marker in a header value, or None when it is not one (never raises)."""
    try:
        obj = orjson.loads(value or b"")
    except orjson.JSONDecodeError:
        return None
    if not isinstance(obj, dict):
        return None
    of, received_at, pii = obj.get("of"), obj.get("received_at"), obj.get("pii")
    if not isinstance(of, str) or not of or len(of) > 512:
        return None
    if not (received_at is None or (type(received_at) is int and received_at >= 0)):
        return None
    return ReplayMarker(of, received_at, pii is True)


def from_headers(headers: Iterable[tuple[Any, Any]] | Any) -> ReplayMarker | None:
    """The marker among a Kafka message's headers (aiokafka: a sequence of (str, bytes)
    pairs; Faust may hand a mapping), or None."""
    if not headers:
        return None
    pairs = headers.items() if hasattr(headers, "items") else headers
    for key, value in pairs:
        if key == HEADER or key == HEADER.encode():
            return decode(value if isinstance(value, bytes) else None)
    return None
