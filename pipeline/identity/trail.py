"""``trackflow report trail``: who is this person, and what did they do, across identifiers.

Reads the lake only (identities, identity_merges, events_resolved), so it works on a lake
copied away from the pipeline. A phone or e-mail given in clear is normalised and hashed
with the pipeline's key before the lookup, exactly as validate hashed it.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass, field
from typing import Any

import duckdb

from pipeline.contract.errors import Rejected
from pipeline.contract.pii import PiiHasher
from pipeline.identity.rules import IdentityRules

HEX64 = 64


class PersonNotFound(LookupError):
    pass


@dataclass
class Trail:
    person_id: str
    identifiers: list[dict[str, Any]] = field(default_factory=list)
    first_seen: Any = None
    last_seen: Any = None
    merges: list[dict[str, Any]] = field(default_factory=list)
    events: list[dict[str, Any]] = field(default_factory=list)


def _rows(con: duckdb.DuckDBPyConnection, sql: str, params: list[Any]) -> list[dict[str, Any]]:
    cur = con.execute(sql, params)
    cols = [d[0] for d in cur.description]
    return [dict(zip(cols, row, strict=True)) for row in cur.fetchall()]


def lookup_values(kind: str, value: str, hasher: PiiHasher | None) -> list[str]:
    """The stored form(s) of ``value``: hashed when the type is hashed (when the key is
    known); as given if already a hash."""
    if kind not in ("phone", "email"):
        return [value]
    out = []
    if hasher is not None:
        with contextlib.suppress(Rejected):
            out.append(hasher.hash_identifier(kind, value))
    if len(value) == HEX64 and all(c in "0123456789abcdef" for c in value):
        out.append(value)  # already the stored hash
    return out


def find_person(
    con: duckdb.DuckDBPyConnection,
    rules: IdentityRules,
    hasher: PiiHasher | None,
    identifier: str,
    kind: str | None,
) -> str:
    kinds = [kind] if kind else list(rules.types)
    for k in kinds:
        for value in lookup_values(k, identifier, hasher):
            found = _rows(
                con,
                "SELECT person_id FROM identities WHERE identifier_type = ? AND identifier = ?",
                [k, value],
            )
            if found:
                return str(found[0]["person_id"])
    # Not (yet) in the map: an identifier the writer has not applied still has events.
    for k in [k for k in kinds if k in ("user_id", "anonymous_id")]:
        found = _rows(
            con, f"SELECT person_id FROM events_resolved WHERE {k} = ? LIMIT 1", [identifier]
        )
        if found:
            return str(found[0]["person_id"])
    what = f"{kind} {identifier!r}" if kind else repr(identifier)
    raise PersonNotFound(f"no person found for {what}")


def build_trail(
    con: duckdb.DuckDBPyConnection,
    rules: IdentityRules,
    hasher: PiiHasher | None,
    identifier: str,
    kind: str | None = None,
    limit: int = 1000,
) -> Trail:
    person = find_person(con, rules, hasher, identifier, kind)
    trail = Trail(person_id=person)
    trail.identifiers = _rows(
        con,
        "SELECT identifier_type, identifier, first_seen, last_seen FROM identities "
        "WHERE person_id = ? ORDER BY first_seen, identifier_type, identifier",
        [person],
    )
    trail.merges = _rows(
        con,
        'SELECT "at", accepted, reason, from_person_id, to_person_id, link_from, link_to '
        "FROM identity_merges WHERE ? IN (from_person_id, to_person_id) "
        'ORDER BY "at", decided_at',
        [person],
    )
    trail.events = _rows(
        con,
        "SELECT event_time, event_name, event_id, user_id, anonymous_id, platform, "
        "properties::VARCHAR AS properties FROM events_resolved WHERE person_id = ? "
        "ORDER BY event_time, event_id LIMIT ?",
        [person, limit],
    )
    span = _rows(
        con,
        "SELECT min(event_time) AS first_seen, max(event_time) AS last_seen "
        "FROM events_resolved WHERE person_id = ?",
        [person],
    )[0]
    seen = [i["first_seen"] for i in trail.identifiers] + [span["first_seen"]]
    last = [i["last_seen"] for i in trail.identifiers] + [span["last_seen"]]
    trail.first_seen = min((s for s in seen if s is not None), default=None)
    trail.last_seen = max((s for s in last if s is not None), default=None)
    return trail
