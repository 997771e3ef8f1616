"""The collector's ``identify`` calls as profile updates (DESIGN 14, item 5 of issue 17).

An ``identify`` event's traits are its properties (free-form); the traits named like a
dictionary field (or one of its ``traits`` aliases) set that field, a ``null`` trait
removes it. Identifier traits (phone, e-mail, openid, unionid) were moved to the
envelope's ``identities`` by the collector, phone and e-mail already hashed by validation:
they set the fields of that identity type. The update's time is the event time, so it is
ordered against imports by the same rule (``pipeline.lake.profiles``).

Values are checked against the dictionary like imported rows; a call that breaks a rule is
rejected whole, one ``member_rejects`` row (the first rule broken, the others named in
the detail), so every reject has its event's position.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import date
from typing import Any

import orjson
import pyarrow as pa
import pyarrow.compute as pc

from pipeline.contract.pii import PiiHasher
from pipeline.contract.positions import pack
from pipeline.contract.profiles import ProfileDictionary
from pipeline.members.importer import canonical
from pipeline.members.mapping import IDENTIFY_SOURCE
from pipeline.members.rules import check

EVENT = "identify"
PROCESSOR = "trackflow worker (identify traits)"
_COLUMNS = (
    "event_id",
    "event_time",
    "received_at",
    "user_id",
    "anonymous_id",
    "person_id",
    "identities",
    "properties",
    "source_partition",
    "source_offset",
    "source_index",
)


class IdentifyProfiles:
    """Turns the identify events of one stitched batch into update and reject rows."""

    def __init__(
        self,
        dictionary: ProfileDictionary,
        hasher: PiiHasher,
        today: Callable[[], date],
        version: str,
        person_of: Callable[[str, str], str],
    ) -> None:
        """``person_of(kind, value)``: the person id One ID derives from an identifier, for
        events stored without one (``TRACKFLOW_STAGES=ingest``)."""
        self.person_of = person_of
        self.dictionary = dictionary
        self.hasher = hasher
        self.today = today
        self.version = version
        self.traits = dictionary.trait_names()
        self.by_identity = {kind: name for name, kind in dictionary.identity_fields().items()}

    def rows(self, table: pa.Table) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
        """(profile update rows, reject rows) of the batch's identify events."""
        if not table.num_rows or "event_name" not in table.column_names:
            return [], []
        mask = pc.equal(table["event_name"], EVENT)
        if not pc.any(mask).as_py():
            return [], []
        picked = table.filter(mask).select([c for c in _COLUMNS if c in table.column_names])
        updates: list[dict[str, Any]] = []
        rejects: list[dict[str, Any]] = []
        today = self.today()
        for event in picked.to_pylist():
            self._one(event, today, updates, rejects)
        return updates, rejects

    def _values(self, event: dict[str, Any]) -> dict[str, Any]:
        values: dict[str, Any] = {}
        props = _object(event.get("properties"))
        for trait, value in props.items():
            name = self.traits.get(trait)
            if name is not None:
                values[name] = value
        for kind, value in _object(event.get("identities")).items():
            name = self.by_identity.get(kind)
            if name is not None and isinstance(value, str) and value:
                values[name] = value
        return values

    def _one(
        self,
        event: dict[str, Any],
        today: date,
        updates: list[dict[str, Any]],
        rejects: list[dict[str, Any]],
    ) -> None:
        values = self._values(event)
        if not values:
            return
        typed, violations = check(self.dictionary, values, today)
        position = {
            "source_partition": event.get("source_partition"),
            "source_offset": event.get("source_offset"),
            "source_index": event.get("source_index"),
        }
        user_id = event.get("user_id")
        person = event.get("person_id")
        if person is None:
            kind = "user_id" if user_id else "anonymous_id"
            person = self.person_of(kind, user_id or event.get("anonymous_id") or "")
        keys = {
            "person_id": person,
            "user_id": user_id,
            "event_id": event.get("event_id"),
        }
        if violations:
            first = violations[0]
            detail = "; ".join(v.detail for v in violations)
            rejects.append(
                {
                    **keys,
                    **position,
                    "source": IDENTIFY_SOURCE,
                    "row": None,
                    "field": first.field,
                    "error_code": str(first.code),
                    "detail": self.hasher.mask_text(detail),
                    "rule": first.rule,
                    "original": self.hasher.mask_text(
                        orjson.dumps({k: values[k] for k in sorted(values)}, default=str).decode()
                    ),
                    "run_id": None,
                    "at": event.get("received_at"),
                    "processor_name": PROCESSOR,
                    "processor_version": self.version,
                }
            )
            return
        offset, index = int(position["source_offset"] or 0), int(position["source_index"] or 0)
        updates.append(
            {
                **keys,
                **position,
                "anonymous_id": None if user_id else event.get("anonymous_id"),
                "field_values": [(k, canonical(v)) for k, v in sorted(typed.items())],
                "at": event.get("event_time"),
                "arrival": event.get("received_at"),
                "seq": pack(offset, index),
                "source": IDENTIFY_SOURCE,
                "run_id": None,
                "recorded_at": event.get("received_at"),
            }
        )


def _object(text: Any) -> dict[str, Any]:
    if isinstance(text, dict):
        return text
    if not text:
        return {}
    try:
        value = orjson.loads(text)
    except orjson.JSONDecodeError:
        return {}
    return value if isinstance(value, dict) else {}
