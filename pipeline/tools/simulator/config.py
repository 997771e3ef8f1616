"""What a caller asks of the simulator and what it gets back: the two public types."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class SimConfig:
    rate: float = 50.0  # target events per second of event time
    duration: float = 60.0  # seconds of event time to generate
    seed: int = 1
    start_ms: int | None = None  # event-time start (epoch ms); None = now
    members: int = 200  # population of members (user_id "u%05d")
    anonymous_visitors: int = 300  # visitors who never log in
    outage_start: float | None = None  # seconds after start when a payment outage begins
    outage_minutes: float = 0.0  # outage length
    outage_success_rate: float = 0.3  # pay success probability during the outage
    malformed_share: float = 0.0  # share of messages that are bad
    duplicate_share: float = 0.0  # share of events re-sent as an SDK retry
    batch_share: float = 0.5  # share of messages that are JSON-array batches of one device
    consent_withdrawn_share: float = 0.0  # share of events with analytics consent withdrawn
    phone_share: float = 0.1  # share of login/signup events carrying identities.phone


@dataclass
class SimMessage:
    """One Kafka message.

    ``event_time_ms`` is the message's place on the event-time axis, for pacing: the time
    of its (first) event, except that a duplicate carries the time it is re-sent and junk
    carries the time it is sent (its own ``event_time`` may be absent or absurd). So the
    stream is non-decreasing in ``event_time_ms``.

    ``kind`` "consent_withdrawn" wins over "batch": such a message may be a JSON array.
    A malformed "array with a non-object" holds one good page-level event besides the bad
    element, so its ``events`` is 2.
    """

    key: bytes | None  # anonymous_id (or user_id) of the event(s), utf-8; None for junk
    value: bytes  # exactly what goes on the wire
    events: int  # number of events inside (1 for single, n for a batch, 1 for junk)
    event_time_ms: int  # event time of the (first) event, for pacing
    kind: str  # "event" | "batch" | "duplicate" | "malformed" | "consent_withdrawn"
