"""The privacy check of replay: "Suppressed persons are never replayed" (DESIGN 15, 17).

trackflow has no privacy suppression yet (``trackflow privacy suppress`` of DESIGN section
15 is not built), so nobody is suppressed and ``load_suppressions`` returns
``NoSuppressions``. This module is the one place replay asks: when suppression exists,
``load_suppressions`` returns an object that answers from its request list and the
identity map (``identities`` view of ``con``) whether any identifier of a dead letter
belongs to a suppressed person, and ``pipeline.dlq.replay`` keeps those dead letters out
(counted as ``suppressed``). The validate stage will drop a suppressed person's events
before storage anyway; this check also keeps their payloads from being sent again at all.
"""

from __future__ import annotations

from typing import Any, Protocol

import duckdb
import orjson

IDENTIFIER_FIELDS = ("user_id", "anonymous_id")


class Suppressions(Protocol):
    def suppressed(self, identifiers: dict[str, str]) -> bool:
        """Whether any of ``identifiers`` (type -> value, PII hashed) belongs to a
        suppressed person."""
        ...


class NoSuppressions:
    """Nobody is suppressed (the state while DESIGN section 15 is not built)."""

    def suppressed(self, identifiers: dict[str, str]) -> bool:
        return False


def load_suppressions(con: duckdb.DuckDBPyConnection) -> Suppressions:
    """The suppression list in force now: replace this body when privacy exists."""
    return NoSuppressions()


def identifiers(payload: bytes) -> dict[str, str]:
    """Identifier type -> value of a dead letter's payload, as far as it decodes: the
    envelope's ``user_id`` and ``anonymous_id`` and every ``identities`` entry (phone and
    e-mail are already hashed in dead letters)."""
    try:
        obj: Any = orjson.loads(payload)
    except orjson.JSONDecodeError:
        return {}
    if not isinstance(obj, dict):
        return {}
    found = {k: obj[k] for k in IDENTIFIER_FIELDS if isinstance(obj.get(k), str)}
    extra = obj.get("identities")
    if isinstance(extra, dict):
        found.update({k: v for k, v in extra.items() if isinstance(v, str)})
    return found
