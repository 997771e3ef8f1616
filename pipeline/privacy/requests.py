"""A privacy request as it travels on ``privacy.requests`` (JSON, key = request id).

Each state change of a request is a new record under the same key, so a compacted topic
keeps the latest state of every request. ``seq`` orders requests (an unsuppress lifts only
earlier suppressions): it is the offset of the request's first record, carried by every
later record, so compaction cannot reorder requests.

``identifiers`` are One ID nodes (``<type>:<value>``) as the lake holds them (phone and
e-mail hashed); ``person_ids`` are the person ids derived from them. They are the
suppression list and stay on the topic; what people see (status, audit) is hashed again
(``shown_identifiers``).
"""

from __future__ import annotations

import hashlib
import hmac
import uuid
from dataclasses import asdict, dataclass, field, replace
from typing import Any

import orjson

SUPPRESS, DELETE, UNSUPPRESS = "suppress", "delete", "unsuppress"
ACTIONS = (SUPPRESS, DELETE, UNSUPPRESS)
# pending: recorded, in force for new events (suppression); running: a deletion is
# rewriting the lake; done: complete.
PENDING, RUNNING, DONE = "pending", "running", "done"
STATUSES = (PENDING, RUNNING, DONE)


class BadRequest(ValueError):
    """A record on the topic that is not a request (logged and skipped by readers)."""


@dataclass(frozen=True)
class Request:
    request_id: str
    action: str
    identifiers: tuple[str, ...]  # One ID nodes, "<type>:<value>" (lake form)
    person_ids: tuple[str, ...] = ()
    actor: str = ""
    reason: str | None = None
    status: str = PENDING
    rows_removed: int = 0
    removed_by_table: dict[str, int] = field(default_factory=dict)
    requested_at: int = 0  # ms
    updated_at: int = 0  # ms
    seq: int | None = None  # offset of the first record; None until it is known

    @staticmethod
    def new_id() -> str:
        return f"pr-{uuid.uuid4().hex[:20]}"

    def with_status(self, status: str, at: int, **changes: Any) -> Request:
        return replace(self, status=status, updated_at=at, **changes)

    def encode(self) -> bytes:
        value = asdict(self)
        value["identifiers"] = list(self.identifiers)
        value["person_ids"] = list(self.person_ids)
        return orjson.dumps(value)

    @classmethod
    def decode(cls, raw: bytes | None, offset: int | None = None) -> Request:
        """A record's request; ``seq`` falls back on the record's ``offset``."""
        try:
            value = orjson.loads(raw or b"")
            req = cls(
                request_id=str(value["request_id"]),
                action=str(value["action"]),
                identifiers=tuple(str(n) for n in value["identifiers"]),
                person_ids=tuple(str(p) for p in value.get("person_ids") or ()),
                actor=str(value.get("actor") or ""),
                reason=value.get("reason"),
                status=str(value.get("status") or PENDING),
                rows_removed=int(value.get("rows_removed") or 0),
                removed_by_table={
                    str(k): int(v) for k, v in (value.get("removed_by_table") or {}).items()
                },
                requested_at=int(value.get("requested_at") or 0),
                updated_at=int(value.get("updated_at") or 0),
                seq=value.get("seq"),
            )
        except (orjson.JSONDecodeError, KeyError, TypeError, ValueError, AttributeError) as exc:
            raise BadRequest(f"not a privacy request: {type(exc).__name__}") from None
        if req.action not in ACTIONS or req.status not in STATUSES:
            raise BadRequest(f"unknown action or status: {req.action!r} {req.status!r}")
        if req.seq is None and offset is not None:
            req = replace(req, seq=offset)
        return req


def shown_identifiers(key: str, nodes: tuple[str, ...] | list[str]) -> list[str]:
    """Identifiers as status and audit show them: ``<type>:<HMAC>``, never a value that
    could be looked up in the lake (the audit must not keep a trace of a deleted person)."""
    out = []
    for n in nodes:
        kind, _, value = n.partition(":")
        digest = hmac.new(key.encode(), f"audit:{n}".encode(), hashlib.sha256).hexdigest()
        out.append(f"{kind}:{digest[:32]}" if value else n)
    return out
