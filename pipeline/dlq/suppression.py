"""The privacy check of replay: "Suppressed persons are never replayed" (DESIGN 15, 17).

This module is the one place replay asks. ``load_suppressions`` answers from the privacy
requests (read from ``privacy.requests`` by the CLI) and the identity map as the lake
holds it (``identities`` view of ``con``) whether a dead letter belongs to a suppressed
person, by the rule validate applies (pipeline/privacy/state.py), and
``pipeline.dlq.replay`` keeps those dead letters out (counted as ``suppressed``). The
validate stage would drop a suppressed person's events before storage anyway; this check
also keeps their payloads from being sent again at all.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any, Protocol

import duckdb
import orjson

from pipeline.privacy.requests import Request
from pipeline.privacy.state import PrivacyState

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


class RequestSuppressions:
    """The persons the requests suppress, with their identifiers as the lake's map has
    them (identifiers linked after a request count too)."""

    def __init__(self, state: PrivacyState) -> None:
        self.state = state

    def suppressed(self, identifiers: dict[str, str]) -> bool:
        rest = {k: v for k, v in identifiers.items() if k not in IDENTIFIER_FIELDS}
        return self.state.suppressed(
            identifiers.get("user_id"), identifiers.get("anonymous_id"), rest
        )


def load_suppressions(
    con: duckdb.DuckDBPyConnection, requests: Iterable[Request] = ()
) -> Suppressions:
    """The suppression list in force now, from every privacy request recorded."""
    state = PrivacyState()
    state.apply(requests)
    if not state.any:
        return NoSuppressions()
    person: dict[str, str] = {}
    try:
        rows = con.execute(
            "WITH p AS (SELECT DISTINCT person_id FROM identities "
            "WHERE list_contains(?, identifier_type || ':' || identifier)) "
            "SELECT identifier_type || ':' || identifier, person_id FROM identities "
            "WHERE person_id IN (SELECT person_id FROM p)",
            [sorted(state.nodes)],
        ).fetchall()
        person = {str(n): str(p) for n, p in rows}
    except duckdb.Error:
        pass  # no identity map in this lake: the requests' identifiers alone
    state.lookup = person.get
    state.refresh()
    return RequestSuppressions(state)


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
