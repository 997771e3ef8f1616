"""Producer payloads on events.raw: JSON objects, JSON array batches, Avro single objects.

The formats between agents are ``pipeline.runtime.wire``'s.
"""

from __future__ import annotations

import base64
import io
import re
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

import fastavro
import orjson

from pipeline.contract.errors import ErrorCode, Rejected, json_type
from pipeline.contract.plan import TrackingPlan
from pipeline.names import HEADER_SOURCE

AVRO_MAGIC = b"\xc3\x01"  # Avro single-object encoding marker
# A source name (the collector's sources file): short, printable, safe as a metric label.
SOURCE_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,63}")


@dataclass(slots=True)
class Item:
    """One event of a producer message: its position in the batch and the decoded object."""

    index: int
    obj: Any = None
    raw: bytes | None = None  # the element's own bytes (batches); see ``element_bytes``
    version: int | None = None  # schema version pinned by Avro input
    error: Rejected | None = None


def decode_message(value: bytes | None, plan: TrackingPlan) -> list[Item]:
    """Split a producer message into items; never raises."""
    if value is None:
        return [Item(0, error=Rejected(ErrorCode.MALFORMED_PAYLOAD, "null message (a tombstone)"))]
    if not value:
        return [Item(0, error=Rejected(ErrorCode.MALFORMED_PAYLOAD, "empty message"))]
    if value[:2] == AVRO_MAGIC:
        return [_decode_avro(value, plan)]
    try:
        decoded = orjson.loads(value)
    except orjson.JSONDecodeError as exc:
        return [Item(0, error=Rejected(ErrorCode.MALFORMED_PAYLOAD, f"not valid JSON: {exc}"))]
    limit = plan.envelope.max_event_bytes
    if isinstance(decoded, dict):
        if len(value) > limit:
            item = _too_large(0, len(value), limit)
            item.obj = decoded  # kept for the DLQ record's event id and retry detection
            return [item]
        return [Item(0, decoded)]
    if isinstance(decoded, list):
        if not decoded:
            return [
                Item(0, error=Rejected(ErrorCode.MALFORMED_PAYLOAD, "empty batch (JSON array)"))
            ]
        items = []
        check_size = len(value) > limit  # no element can be over the limit otherwise
        for i, element in enumerate(decoded):
            try:
                raw = orjson.dumps(element) if check_size else None
            except orjson.JSONEncodeError:  # nested deeper than orjson writes (254 levels)
                items.append(
                    Item(
                        i,
                        error=Rejected(
                            ErrorCode.MALFORMED_PAYLOAD, f"batch element {i} is nested too deeply"
                        ),
                    )
                )
                continue
            if not isinstance(element, dict):
                items.append(
                    Item(
                        i,
                        raw=raw if raw is not None else _dumps_or_none(element),
                        error=Rejected(
                            ErrorCode.MALFORMED_PAYLOAD,
                            f"batch element {i} must be an event object, got {json_type(element)}",
                        ),
                    )
                )
            elif raw is not None and len(raw) > limit:
                item = _too_large(i, len(raw), limit)
                item.obj, item.raw = element, raw
                items.append(item)
            else:
                items.append(Item(i, element, raw=raw))
        return items
    return [
        Item(
            0,
            error=Rejected(
                ErrorCode.MALFORMED_PAYLOAD,
                f"a message must be an event object or an array of them, got {json_type(decoded)}",
            ),
        )
    ]


def element_bytes(item: Item, message: bytes) -> bytes:
    """The bytes a DLQ record keeps: the whole message, or the element re-encoded."""
    if item.raw is not None:
        return item.raw
    if item.obj is not None and message[:2] != AVRO_MAGIC and message.lstrip()[:1] == b"[":
        return _dumps_or_none(item.obj) or message
    return message


def _dumps_or_none(value: Any) -> bytes | None:
    try:
        return orjson.dumps(value)
    except orjson.JSONEncodeError:
        return None


def _too_large(index: int, size: int, limit: int) -> Item:
    return Item(
        index,
        error=Rejected(
            ErrorCode.PAYLOAD_TOO_LARGE, f"event is {size} bytes, over the limit of {limit} bytes"
        ),
    )


def _decode_avro(value: bytes, plan: TrackingPlan) -> Item:
    if len(value) < 10:
        return Item(0, error=Rejected(ErrorCode.MALFORMED_PAYLOAD, "truncated Avro header"))
    fp = int.from_bytes(value[2:10], "little")
    found = plan.avro_by_fingerprint.get(fp)
    if found is None:
        return Item(
            0,
            error=Rejected(
                ErrorCode.MALFORMED_PAYLOAD,
                f"Avro schema fingerprint {fp:016x} is not a schema of the tracking plan",
            ),
        )
    parsed, schema = found
    if len(value) > plan.envelope.max_event_bytes:
        return _too_large(0, len(value), plan.envelope.max_event_bytes)
    try:
        buf = io.BytesIO(value[10:])
        record = fastavro.schemaless_reader(buf, parsed, None)
        if buf.tell() != len(value) - 10:
            raise ValueError(f"{len(value) - 10 - buf.tell()} trailing bytes")
    except Exception as exc:  # fastavro raises many types on corrupt input
        return Item(0, error=Rejected(ErrorCode.MALFORMED_PAYLOAD, f"bad Avro body: {exc}"))
    assert isinstance(record, dict)
    props = record.get("properties") or {}
    record["properties"] = {k: v for k, v in props.items() if v is not None}
    return Item(0, record, version=schema.version)


def encode_avro(event: dict[str, Any], plan: TrackingPlan, version: int | None = None) -> bytes:
    """Single-object encoding of one event, for producers and tests."""
    from fastavro.schema import fingerprint, to_parsing_canonical_form

    schema = fastavro.parse_schema(plan.composed_avro(event["event_name"], version))
    fp = int(fingerprint(to_parsing_canonical_form(schema), "CRC-64-AVRO"), 16)
    buf = io.BytesIO()
    buf.write(AVRO_MAGIC + fp.to_bytes(8, "little"))
    fastavro.schemaless_writer(buf, schema, event)
    return buf.getvalue()


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def unb64(text: str) -> bytes:
    return base64.b64decode(text)


def source_from_headers(headers: Iterable[tuple[Any, Any]] | Any) -> str | None:
    """The collector's source name among a Kafka message's headers, or None.

    aiokafka gives a sequence of (str, bytes) pairs, Faust may hand a mapping. A value that
    is not a source name is ignored: the column holds names, never arbitrary bytes.
    """
    if not headers:
        return None
    pairs = headers.items() if hasattr(headers, "items") else headers
    for key, value in pairs:
        if key == HEADER_SOURCE or key == HEADER_SOURCE.encode():
            if not isinstance(value, bytes):
                return None
            name = value.decode("utf-8", errors="replace")
            return name if SOURCE_NAME.fullmatch(name) else None
    return None
