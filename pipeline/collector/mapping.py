"""Segment Tracking API calls -> event envelopes -> events.raw messages (DESIGN section 13).

The mapping only moves values; it never judges them. A value of the wrong type or out of
range is copied into the envelope as it is, so the worker's validation dead-letters the
event with the same code and detail as an event produced to Kafka directly. The few
Segment fields the envelope has no place for (``context`` beyond traits, consent, app
version and platform; ``integrations``; the write key) are dropped here.

Decisions (docs/collector.md):
- a call without ``messageId`` keeps no ``event_id`` and is dead-lettered
  (``missing_required_field``): an id made up here would differ on an SDK retry and store
  the event twice, and every Segment and RudderStack SDK sets one;
- a ``messageId`` string the envelope's id rule refuses (the classic Node SDKs' 74
  characters, a ``:`` or ``.``) becomes a digest of itself: the same on every retry, so
  dedup still holds, and the event is not dead-lettered for an SDK's id format;
- ``identify``'s traits are its ``traits``, else its ``context.traits`` (RudderStack's
  SDKs put them only there);
- ``group``'s own traits describe the group, not the person: they are stored as the
  event's properties but never become the person's identities;
- a batch item of an unknown ``type`` keeps that type as its event name, so the dead
  letter says ``unknown_event`` (or ``missing_required_field`` without a type).
"""

from __future__ import annotations

import hashlib
import re
import zlib
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import orjson

from pipeline.contract.errors import Rejected
from pipeline.contract.timeparse import parse_event_time
from pipeline.tools.produce import content_key

# URL path segment -> call type; the browser SDK posts to the short forms. ``import`` is
# Segment's older name of batch, where its Java, Ruby and classic Android SDKs post.
ENDPOINTS = {
    "track": "track", "t": "track",
    "page": "page", "p": "page",
    "screen": "screen", "s": "screen",
    "identify": "identify", "i": "identify",
    "alias": "alias", "a": "alias",
    "group": "group", "g": "group",
    "batch": "batch", "b": "batch", "import": "batch",
}  # fmt: skip
CALL_TYPES = frozenset({"track", "page", "screen", "identify", "alias", "group"})
EVENT_NAMES = {"page": "page_view", "screen": "page_view", "identify": "identify"}
EVENT_NAMES.update(alias="alias", group="group")
# Traits that are identifiers of the person: they go to the envelope's identities (phone
# and email are then hashed by validation). openid/unionid: the mini-program identifiers.
IDENTITY_TRAITS = ("phone", "email", "openid", "unionid")
# One Kafka message holds at most this many bytes of events (Kafka's default limit is 1 MB;
# a request is at most 500 KiB, but its envelopes may be larger than its calls).
MAX_MESSAGE_BYTES = 512 * 1024
MAX_MERGE_DEPTH = 4  # the mapping reads context at most 3 levels deep
# The envelope's event_id rule (schemas/envelope); the server passes the plan's own.
EVENT_ID_RULE = re.compile(r"^[A-Za-z0-9_-]{1,64}$")
DIGEST_ID_PREFIX = "mid-"  # an event_id made from a messageId the rule refuses
# What an event becomes when it cannot be re-encoded (nested deeper than orjson writes):
# not an object, so validation dead-letters it as malformed_payload.
NOT_ENCODABLE = orjson.dumps("an event the collector could not re-encode: nested too deeply")


@dataclass(frozen=True, slots=True)
class RequestInfo:
    """What every call of one request shares."""

    received_ms: int  # when the request arrived (Segment's receivedAt)
    platform: str | None = None  # the source's platform
    sent_at: Any = None  # batch-level sentAt
    context: dict[str, Any] | None = None  # batch-level context, merged into each call
    event_id_rule: re.Pattern[str] = EVENT_ID_RULE  # the envelope's (tracking plan's)


@dataclass(slots=True)
class Outgoing:
    """The Kafka messages of one request: (partition, key, value), and what they hold."""

    messages: list[tuple[int, bytes, bytes]] = field(default_factory=list)
    events: int = 0
    oversized: int = 0  # calls over the event size limit, sent as they came


def envelope(call: dict[str, Any], kind: Any, info: RequestInfo) -> dict[str, Any]:
    """The envelope of one call of type ``kind`` (the endpoint's, or the batch item's)."""
    context = call.get("context")
    if info.context is not None:
        context = merge(info.context, context if isinstance(context, dict) else None)
    if not isinstance(context, dict):
        context = {}
    env: dict[str, Any] = {}
    message_id = call.get("messageId")
    if message_id is not None:
        env["event_id"] = event_id(message_id, info.event_id_rule)
    name = call.get("event") if kind == "track" else EVENT_NAMES.get(kind, kind)
    if name is not None:
        env["event_name"] = name
    env["event_time"] = event_time(call, info)
    anonymous = call.get("previousId") if kind == "alias" else call.get("anonymousId")
    if anonymous is not None:
        env["anonymous_id"] = anonymous
    if call.get("userId") is not None:
        env["user_id"] = call["userId"]
    traits = call.get("traits")
    if kind == "identify" and traits is None:
        traits = context.get("traits")  # RudderStack's SDKs send identify's traits only there
    identities = _identities(context.get("traits"), traits if kind == "identify" else None)
    if identities:
        env["identities"] = identities
    platform = _first(call.get("platform"), context.get("platform"), info.platform)
    if platform is not None:
        env["platform"] = platform
    app = context.get("app")
    if isinstance(app, dict) and isinstance(app.get("version"), str):
        env["app_version"] = app["version"]
    consent = _consent(context.get("consent"))
    if consent is not None:
        env["consent"] = consent
    properties = _properties(call, kind, traits, identities)
    if properties is not None:
        env["properties"] = properties
    return env


def event_id(message_id: Any, rule: re.Pattern[str]) -> Any:
    """``messageId`` as it is, or a digest of a non-empty string the envelope refuses.

    Deterministic, so an SDK's retry gets the same id and is dropped as a duplicate; other
    types are left for validation to refuse (``type_mismatch``).
    """
    if not isinstance(message_id, str) or not message_id or rule.fullmatch(message_id):
        return message_id
    digest = hashlib.blake2b(message_id.encode("utf-8", "surrogatepass"), digest_size=16)
    return DIGEST_ID_PREFIX + digest.hexdigest()


def event_time(call: dict[str, Any], info: RequestInfo) -> Any:
    """``timestamp``; else ``receivedAt - (sentAt - originalTimestamp)``; else ``receivedAt``.

    The correction removes the device's clock error: sentAt and originalTimestamp come from
    the same clock. When one of them cannot be read, originalTimestamp is kept as it is
    for validation to judge (an unreadable time is dead-lettered, not replaced).
    """
    timestamp = call.get("timestamp")
    if timestamp is not None:
        return timestamp
    original = call.get("originalTimestamp")
    sent = _first(call.get("sentAt"), info.sent_at)
    if original is None or sent is None:
        return info.received_ms
    try:
        original_ms = parse_event_time(original, "originalTimestamp")
        sent_ms = parse_event_time(sent, "sentAt")
    except Rejected:
        return original
    return info.received_ms - (sent_ms - original_ms)


def merge(base: dict[str, Any], over: dict[str, Any] | None, depth: int = 0) -> dict[str, Any]:
    """``base`` (batch-level context) with ``over`` (the call's) on top, objects merged."""
    if not over:
        return base
    out = dict(base)
    for key, value in over.items():
        below = out.get(key)
        if isinstance(below, dict) and isinstance(value, dict) and depth < MAX_MERGE_DEPTH:
            out[key] = merge(below, value, depth + 1)
        else:
            out[key] = value
    return out


def _first(*values: Any) -> Any:
    for value in values:
        if value is not None:
            return value
    return None


def _identities(*sources: Any) -> dict[str, Any]:
    """Identity traits of ``context.traits`` and (identify) ``traits``; the latter wins."""
    out: dict[str, Any] = {}
    for traits in sources:
        if isinstance(traits, dict):
            for key in IDENTITY_TRAITS:
                value = traits.get(key)
                if value is not None and value != "":
                    out[key] = value
    return out


def _consent(consent: Any) -> Any:
    """``context.consent.categoryPreferences`` -> ``{analytics, marketing}``.

    Preferences that are not an object are passed on, so validation dead-letters the event
    (``type_mismatch``) rather than store one whose consent cannot be read.
    """
    if not isinstance(consent, dict):
        return None
    prefs = consent.get("categoryPreferences")
    if prefs is None:
        return None
    if not isinstance(prefs, dict):
        return prefs
    out = {k: prefs[k] for k in ("analytics", "marketing") if prefs.get(k) is not None}
    return out or None


def _properties(call: dict[str, Any], kind: Any, traits: Any, identities: dict[str, Any]) -> Any:
    if kind in ("page", "screen"):
        properties = call.get("properties")
        name = call.get("name")
        if name is not None and (properties is None or isinstance(properties, dict)):
            properties = {**(properties or {}), "page": name}
        return properties
    if kind == "identify":
        if not isinstance(traits, dict):
            return traits
        return {k: v for k, v in traits.items() if k not in identities}
    if kind == "group":
        if traits is not None and not isinstance(traits, dict):
            return traits
        properties = dict(traits or {})
        if call.get("groupId") is not None:
            properties["group_id"] = call["groupId"]
        return properties
    if kind == "alias":
        return None
    return call.get("properties")


def event_key(env: dict[str, Any]) -> bytes | None:
    """anonymous_id, else user_id (DESIGN section 5), as ``trackflow produce`` keys."""
    for name in ("anonymous_id", "user_id"):
        value = env.get(name)
        if isinstance(value, str) and value:
            return value.encode("utf-8", errors="surrogatepass")
    return None


def _dumps(value: Any) -> bytes:
    try:
        return orjson.dumps(value)
    except orjson.JSONEncodeError:
        return NOT_ENCODABLE


def partition_of(key: bytes, partitions: int) -> int:
    """The partition librdkafka's default partitioner gives ``key`` (CRC-32 of the key
    modulo the partition count; checked against librdkafka in the integration tests), so
    an event lands where ``trackflow produce`` would put it, and an SDK retry where its
    first copy went: on the same dedup memory."""
    return zlib.crc32(key) % partitions


def build(
    calls: list[Any],
    kind: str | None,
    info: RequestInfo,
    check_size: bool,
    max_bytes: int,
    partitions: int,
) -> Outgoing:
    """The Kafka messages of a request's calls: one per partition of events.raw, a JSON
    array when it holds several events (DESIGN 3: the worker's cost is per message, and
    so is the producer's), split to stay under ``MAX_MESSAGE_BYTES``; each event goes to
    the partition of its key. A message's Kafka key is its first event's. ``kind`` is the
    endpoint's call type, None for a batch.

    ``check_size``: the body was larger than ``max_bytes``, so a call may be too. Such a
    call is sent as it came (without its write key): validation dead-letters it alone as
    ``payload_too_large``, and the request's other events go on.
    """
    out = Outgoing(events=len(calls))
    groups: dict[int, tuple[bytes, list[bytes]]] = {}
    for call in calls:
        key, element = _element(call, kind, info, check_size, max_bytes, out)
        partition = partition_of(key, partitions)
        group = groups.get(partition)
        if group is None:
            groups[partition] = (key, [element])
        else:
            group[1].append(element)
    for partition, (key, elements) in groups.items():
        out.messages.extend((partition, key, value) for value in _pack(elements))
    return out


def _element(
    call: Any, kind: str | None, info: RequestInfo, check_size: bool, max_bytes: int, out: Outgoing
) -> tuple[bytes, bytes]:
    if not isinstance(call, dict):  # dead-lettered as malformed_payload by validation
        element = _dumps(call)
        return content_key(element), element
    env = envelope(call, kind if kind is not None else call.get("type"), info)
    element = _dumps(env)
    if check_size:
        original = _dumps({k: v for k, v in call.items() if k != "writeKey"})
        if len(original) > max_bytes:
            out.oversized += 1
            element = original
    return event_key(env) or content_key(element), element


def _pack(elements: list[bytes]) -> Iterator[bytes]:
    chunk: list[bytes] = []
    size = 0
    for element in elements:
        if chunk and size + len(element) + 1 > MAX_MESSAGE_BYTES:
            yield _join(chunk)
            chunk, size = [], 0
        chunk.append(element)
        size += len(element) + 1
    if chunk:
        yield _join(chunk)


def _join(chunk: list[bytes]) -> bytes:
    return chunk[0] if len(chunk) == 1 else b"[" + b",".join(chunk) + b"]"
