"""How an event looks on the wire: the envelope an SDK wraps around a step.

Shared by real sessions and by junk, so that bad traffic differs from good traffic only in
the one way it is meant to be bad.
"""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta, timezone
from random import Random
from typing import Any

from pipeline.tools.simulator.population import Device, device_identities
from pipeline.tools.simulator.session import Session

_CST = timezone(timedelta(hours=8))  # mini-program SDKs report China Standard Time
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
# Order events whose plan forbids extra properties: the drift below must not touch them.
_STRICT = frozenset({"checkout", "pay_request", "pay_success", "pay_fail"})


def iso(ms: int) -> str:
    return (_EPOCH + timedelta(milliseconds=ms)).astimezone(_CST).isoformat(timespec="milliseconds")


def wire_time(dev: Device, ms: int) -> int | str:
    """The device's SDK decides the spelling: epoch ms or RFC 3339 in CST."""
    if dev.epoch_ms_time:
        return ms
    return iso(ms)


def event_id(rng: Random) -> str:
    """A UUID4 drawn from the seeded generator, so ids replay with the seed."""
    return uuid.UUID(int=rng.getrandbits(128), version=4).hex


def envelope(
    rng: Random,
    session: Session,
    name: str,
    props: dict[str, Any],
    identities: dict[str, str] | None,
) -> dict[str, Any]:
    """The full event for one step of ``session`` at ``session.now_ms``."""
    dev = session.device
    event: dict[str, Any] = {
        "event_id": event_id(rng),
        "event_name": name,
        "event_time": wire_time(dev, session.now_ms),
        "anonymous_id": dev.anonymous_id,
    }
    if dev.user_id is not None:
        event["user_id"] = dev.user_id
    ids = identities if identities is not None else device_identities(dev)
    if ids:
        event["identities"] = ids
    event["platform"] = dev.platform
    if dev.app_version is not None:
        event["app_version"] = dev.app_version
    if session.channel is not None:
        event["channel"] = session.channel
    if session.consent is not None:
        event["consent"] = dict(session.consent)
    if name not in _STRICT and rng.random() < 0.01:
        props["ab_bucket"] = rng.choice(("A", "B", "control"))  # drift the plan lacks
    event["properties"] = props
    return event
