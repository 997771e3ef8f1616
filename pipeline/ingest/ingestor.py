"""The validate stage's logic, free of Faust: raw messages of one partition in, outputs out.

Deterministic for a given input and dedup memory, so a message re-read after a crash
yields the same records (and downstream offset checks drop the copies).
"""

from __future__ import annotations

import hashlib
from collections import Counter
from dataclasses import dataclass, field
from typing import Any, Protocol

import orjson

from pipeline import __version__
from pipeline.contract.errors import ErrorCode, Rejected
from pipeline.contract.pii import PiiHasher
from pipeline.contract.plan import TrackingPlan
from pipeline.contract.positions import pack as position
from pipeline.contract.replay import ReplayMarker
from pipeline.ingest.codecs import Item, b64, decode_message, element_bytes
from pipeline.ingest.dedup import SeenIds, Snapshot, fingerprint
from pipeline.ingest.replayed import restore_hashed, split_hashed
from pipeline.ingest.validation import CONSENT_DROPPED, Validator, shown_name
from pipeline.names import PROCESSOR

UNPLANNED_EVENT = "_unplanned"  # DLQ label of items without an event name of the plan
# Dead letters must always fit in one Kafka message (1,000,000 bytes by default) after
# base64; the payload is cut at this size and marked truncated, the detail at MAX_DETAIL.
DEFAULT_MAX_PAYLOAD_BYTES = 256 * 1024
MAX_DETAIL = 1000


class Suppression(Protocol):
    """Privacy suppression (pipeline/privacy/state.py): whose events are dropped."""

    @property
    def any(self) -> bool: ...

    def suppressed(
        self, user_id: str | None, anonymous_id: str | None, identities: Any
    ) -> bool: ...


@dataclass(slots=True)
class RawMessage:
    offset: int
    value: bytes | None
    timestamp_ms: int | None = None
    replay: ReplayMarker | None = None  # a dead letter sent back by ``trackflow dlq replay``
    source: str | None = None  # the HTTP collector's source name (Kafka header), else None


@dataclass
class IngestResult:
    valid: list[dict[str, Any]] = field(default_factory=list)
    dlq: list[dict[str, Any]] = field(default_factory=list)
    seen: list[list[Any]] = field(default_factory=list)  # dedup changelog entries
    generation: int = 0  # dedup generation the entries belong to
    received: int = 0
    duplicates: int = 0
    consent_dropped: int = 0
    suppressed: int = 0  # events of suppressed persons, dropped (DESIGN 15)
    rejected: Counter[str] = field(default_factory=Counter)
    # By event name of the plan, or UNPLANNED_EVENT: bounded labels for DLQ share per event.
    rejected_by_event: Counter[str] = field(default_factory=Counter)
    unknown_properties: list[tuple[str, str]] = field(default_factory=list)
    snapshot: Snapshot | None = None  # the take's dedup decisions, see Ingestor.remember


class Ingestor:
    def __init__(
        self,
        plan: TrackingPlan,
        validator: Validator,
        hasher: PiiHasher,
        seen: SeenIds,
        source_topic: str,
        max_payload_bytes: int = DEFAULT_MAX_PAYLOAD_BYTES,
        suppression: Suppression | None = None,
    ) -> None:
        self.plan = plan
        self.suppression = suppression
        self.max_payload_bytes = max_payload_bytes
        self.validator = validator
        self.hasher = hasher
        self.seen = seen
        self.source_topic = source_topic
        self._id_check = validator._event_id
        self._pii_names = set(plan.envelope.pii_property_names) | set(
            plan.envelope.pii_identity_keys
        )
        self._pii_keys = frozenset(plan.envelope.pii_identity_keys)

    def process(
        self, partition: int, messages: list[RawMessage], now_ms: int, remember: bool = True
    ) -> IngestResult:
        """The outputs of ``messages``. With ``remember`` False the dedup memory is left as
        it was until ``remember(result)``: the caller does that once it has every output
        of the take, so a take that fails later and is redone in parts judges the same."""
        gen = self.seen.generation(now_ms)
        result = IngestResult(generation=gen)
        # Judge every event first, then look all their keys up in the dedup memory at once
        # (one vectorised search per run), then decide each in order.
        judged: list[tuple[RawMessage, Item, Any, str | None]] = []
        for msg in messages:
            for item in decode_message(msg.value, self.plan):
                result.received += 1
                try:
                    judged.append(self._judge(msg, item, now_ms))
                except Exception as exc:  # a trackflow bug must not lose the event
                    self._reject(partition, msg, item, _processing_error(exc), now_ms, result)
        fps = [None if key is None else fingerprint(key) for _, _, _, key in judged]
        snapshot = self.seen.snapshot(partition, [fp for fp in fps if fp is not None], now_ms)
        for (msg, item, outcome, key), fp in zip(judged, fps, strict=True):
            try:
                self._decide(partition, msg, item, outcome, key, fp, snapshot, now_ms, result)
            except Exception as exc:
                self._reject(partition, msg, item, _processing_error(exc), now_ms, result)
        in_log_order(result.dlq)
        result.snapshot = snapshot
        if remember:
            snapshot.apply()
        return result

    @staticmethod
    def remember(result: IngestResult) -> None:
        if result.snapshot is not None:
            result.snapshot.apply()

    def _judge(
        self, msg: RawMessage, item: Item, now_ms: int
    ) -> tuple[RawMessage, Item, Any, str | None]:
        """(message, item, record or Rejected or CONSENT_DROPPED, dedup key or None)."""
        try:
            if item.error is not None:
                raise item.error
            record = self._validate(msg.replay, item, now_ms)
        except Rejected as rejected:
            # A retry of a rejected event (same id) or message (same bytes, no usable id)
            # is dropped like any duplicate: one DLQ record per bad event, not per send.
            # A replay that fails again is keyed by the dead letter it replays, not by its
            # id: the original's rejected sighting must not swallow it, a second copy of
            # the same replay must ("^" starts no event id and no content key).
            if msg.replay is not None:
                return msg, item, rejected, "^" + msg.replay.of
            retry_key = self._valid_id(item.obj) or self._content_key(item, msg)
            if not msg.value and retry_key.startswith("~"):
                # No bytes to tell a retry from another empty message or tombstone: each
                # is dead-lettered.
                return msg, item, rejected, None
            return msg, item, rejected, retry_key
        if record is CONSENT_DROPPED:
            return msg, item, record, None
        assert isinstance(record, dict)
        return msg, item, record, record["event_id"]

    def _validate(self, replay: ReplayMarker | None, item: Item, now_ms: int) -> Any:
        if replay is None:
            return self.validator.validate(item.obj, now_ms, item.version)
        # Judged as when the original was received: a replay days later must not fail
        # the event-time range check the original passed (or pass one it failed).
        clock = min(replay.received_at or now_ms, now_ms)
        if not replay.hashed_pii:
            return self.validator.validate(item.obj, clock, item.version)
        obj, hashed = split_hashed(item.obj, self._pii_keys)
        record = self.validator.validate(obj, clock, item.version)
        if isinstance(record, dict):
            restore_hashed(record, item.obj, hashed)
        return record

    def _decide(
        self,
        partition: int,
        msg: RawMessage,
        item: Item,
        outcome: Any,
        key: str | None,
        fp: int | None,
        snapshot: Snapshot,
        now_ms: int,
        result: IngestResult,
    ) -> None:
        pos = position(msg.offset, item.index)
        suppression = self.suppression
        if suppression is not None and suppression.any and self._suppressed(item, outcome):
            # Before storage and before the DLQ: nothing of the person is kept, not even
            # in the dedup memory (an unsuppressed person's retry is then stored).
            result.suppressed += 1
            return
        if isinstance(outcome, Rejected):
            if fp is not None:
                first = snapshot.first(fp)
                if first is not None and first[0] != pos:
                    result.duplicates += 1
                    return
                if first is None:
                    snapshot.put(fp, pos, True)
                    result.seen.append([fp, (pos << 1) | 1])
            self._reject(partition, msg, item, outcome, now_ms, result)
            return
        if outcome is CONSENT_DROPPED:
            result.consent_dropped += 1
            return
        record: dict[str, Any] = outcome
        assert fp is not None
        first = snapshot.first(fp)
        if first is not None and first[0] != pos and not first[1]:
            result.duplicates += 1
            return
        if first is None or first[0] != pos:
            snapshot.put(fp, pos, False)
            result.seen.append([fp, pos << 1])
        unknown = record.pop("unknown_properties", None)
        if unknown:
            result.unknown_properties.extend((record["event_name"], k) for k in unknown)
        record["received_at"] = now_ms
        record["person_id"] = None
        record["source_partition"] = partition
        record["source_offset"] = msg.offset
        record["source_index"] = item.index
        record["source"] = msg.source
        result.valid.append(record)

    def _suppressed(self, item: Item, outcome: Any) -> bool:
        assert self.suppression is not None
        if isinstance(outcome, dict):
            return self.suppression.suppressed(
                outcome.get("user_id"), outcome.get("anonymous_id"), outcome.get("identities")
            )
        if outcome is CONSENT_DROPPED or not isinstance(item.obj, dict):
            return False
        # A rejected event: its identifiers as far as they read, PII hashed as stored.
        obj = item.obj
        ids = obj.get("identities")
        hashed = None
        if isinstance(ids, dict):
            hashed = {
                k: self.hasher.hash_loose(k, v) if k in self._pii_keys else v
                for k, v in ids.items()
                if isinstance(k, str) and isinstance(v, str)
            }
        user_id, anon = obj.get("user_id"), obj.get("anonymous_id")
        return self.suppression.suppressed(
            user_id if isinstance(user_id, str) else None,
            anon if isinstance(anon, str) else None,
            hashed,
        )

    @staticmethod
    def _content_key(item: Item, msg: RawMessage) -> str:
        """Dedup key of a bad item without a usable event id: a digest of its bytes.

        "~" cannot start a valid event id, so the two key spaces never collide.
        """
        data = element_bytes(item, msg.value or b"")
        return "~" + hashlib.blake2b(data, digest_size=12).hexdigest()

    def _valid_id(self, obj: Any) -> str | None:
        if not isinstance(obj, dict):
            return None
        try:
            event_id = self._id_check(obj.get("event_id"))
        except Rejected:
            return None
        return event_id if isinstance(event_id, str) else None

    def _reject(
        self,
        partition: int,
        msg: RawMessage,
        item: Item,
        rejected: Rejected,
        now_ms: int,
        result: IngestResult,
    ) -> None:
        obj = item.obj if isinstance(item.obj, dict) else {}
        event_id = self._valid_id(obj)
        event_name = obj.get("event_name")
        if isinstance(event_name, str) and shown_name(event_name) != event_name:
            event_name = None  # not a name: maybe a value in the wrong place; the payload has it
        result.rejected[rejected.code.value] += 1
        label = UNPLANNED_EVENT
        if isinstance(event_name, str) and self.plan.event(event_name) is not None:
            label = event_name
        result.rejected_by_event[label] += 1
        payload = self._masked_payload(item, msg.value or b"")
        truncated = len(payload) > self.max_payload_bytes
        detail = rejected.detail
        if len(detail) > MAX_DETAIL:
            detail = detail[: MAX_DETAIL - 1] + "…"
        result.dlq.append(
            {
                "error_code": rejected.code.value,
                "error_detail": detail,
                "payload": b64(payload[: self.max_payload_bytes]),
                "payload_truncated": truncated,
                "payload_size": len(payload),
                "source_topic": self.source_topic,
                "source_partition": partition,
                "source_offset": msg.offset,
                "source_index": item.index,
                "event_id": event_id,
                "event_name": event_name if isinstance(event_name, str) else None,
                "received_at": now_ms,
                "failed_at": now_ms,
                "processor_name": PROCESSOR,
                "processor_version": __version__,
                "replay_of": msg.replay.of if msg.replay is not None else None,
                "source": msg.source,
            }
        )

    def reject_later(
        self,
        partition: int,
        msg: RawMessage,
        index: int | None,
        rejected: Rejected,
        now_ms: int,
        result: IngestResult,
    ) -> None:
        """Dead-letter item ``index`` of ``msg`` after it was accepted, or the whole message
        (``index`` None): for failures found after validation, e.g. building the stored
        row. The event leaves ``result.valid``."""
        item = Item(0)  # no decoded object: the payload is the whole message
        if index is not None:
            items = [i for i in decode_message(msg.value, self.plan) if i.index == index]
            item = items[0] if items else Item(index)
        result.valid = [
            r
            for r in result.valid
            if r["source_offset"] != msg.offset or index not in (None, r["source_index"])
        ]
        self._reject(partition, msg, item, rejected, now_ms, result)

    def _masked_payload(self, item: Item, message: bytes) -> bytes:
        """The original bytes, unless they hold PII: then a masked re-encoding."""
        original = element_bytes(item, message)
        if item.obj is not None:
            try:
                masked = self.hasher.mask_value(item.obj, self._pii_names)
                return original if masked == item.obj else orjson.dumps(masked, default=str)
            except (RecursionError, orjson.JSONEncodeError):
                pass  # pathological nesting: mask the bytes as text instead
        text = original.decode("utf-8", errors="surrogateescape")
        masked_text = self.hasher.mask_text(text)
        if masked_text == text:
            return original
        return masked_text.encode("utf-8", errors="surrogateescape")


def in_log_order(dlq: list[dict[str, Any]]) -> None:
    """Sort dead letters by position: the lake's sink keeps one record per position, in
    order, and drops a record positioned below one it already kept for the message."""
    dlq.sort(
        key=lambda r: (r["source_offset"], -1 if r["source_index"] is None else r["source_index"])
    )


def _processing_error(exc: Exception) -> Rejected:
    return Rejected(ErrorCode.PROCESSING_ERROR, f"{type(exc).__name__}: {exc}")
