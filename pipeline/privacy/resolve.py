"""Who a request is about: the whole person One ID knows for one identifier (DESIGN 15).

Read from the lake (``identities``: the map as the identity writer stored it), with the
events as a fallback for an identifier the map has not stored yet (or a lake written with
``stages=ingest``), and the earlier requests for a person already deleted from the lake.
A person's rows are found by its identifiers and by every person id derived from one of
them (``events.person_id`` keeps the id known when the event was stitched).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field

import duckdb

from pipeline.contract.pii import PiiHasher
from pipeline.identity.rules import IdentityRules

MAX_ROUNDS = 8


@dataclass
class Person:
    nodes: set[str] = field(default_factory=set)
    pids: set[str] = field(default_factory=set)

    def __bool__(self) -> bool:
        return bool(self.nodes)


def identifier_node(kind: str, raw: str, hasher: PiiHasher) -> str:
    """The One ID node of an identifier given on the command line: a phone or e-mail in
    clear is normalised and hashed first (raises ``Rejected`` when it is not one)."""
    value = raw.strip() if kind in ("phone", "email") else raw
    return f"{kind}:{hasher.hash_identifier(kind, value)}"


def _exists(con: duckdb.DuckDBPyConnection, view: str) -> bool:
    try:
        con.execute(f"SELECT 1 FROM {view} LIMIT 0")
    except duckdb.Error:
        return False
    return True


def _identities_of(con: duckdb.DuckDBPyConnection, nodes: Iterable[str]) -> list[tuple[str, str]]:
    rows = con.execute(
        "SELECT identifier_type || ':' || identifier, person_id FROM identities "
        "WHERE list_contains(?, identifier_type || ':' || identifier)",
        [sorted(nodes)],
    ).fetchall()
    return [(str(n), str(p)) for n, p in rows]


def _nodes_of_pids(con: duckdb.DuckDBPyConnection, pids: Iterable[str]) -> list[str]:
    rows = con.execute(
        "SELECT identifier_type || ':' || identifier FROM identities "
        "WHERE list_contains(?, person_id)",
        [sorted(pids)],
    ).fetchall()
    return [str(r[0]) for r in rows]


def _from_events(con: duckdb.DuckDBPyConnection, node: str) -> Person:
    kind, _, value = node.partition(":")
    if kind in ("user_id", "anonymous_id"):
        where, params = f"{kind} = ?", [value]
    else:
        where, params = f"json_extract_string(identities, '$.{kind}') = ?", [value]
    rows = con.execute(
        f"SELECT DISTINCT user_id, anonymous_id, person_id FROM events WHERE {where} LIMIT 1000",
        params,
    ).fetchall()
    person = Person({node} if rows else set())
    for user_id, anon, pid in rows:
        if kind != "user_id" and user_id:
            continue  # another member's event carrying this identifier: not this person
        if kind == "user_id" and anon:
            person.nodes.add(f"anonymous_id:{anon}")
        if pid:
            person.pids.add(str(pid))
    return person


def resolve(
    con: duckdb.DuckDBPyConnection,
    rules: IdentityRules,
    node: str,
    known: Iterable[Iterable[str]] = (),
) -> Person:
    """The person of ``node`` (empty when nobody has it): its identifiers and ids.

    ``known`` are identifier sets of earlier requests; one holding ``node`` is the same
    person (after a deletion the lake no longer knows them)."""
    person = Person()
    has_map = _exists(con, "identities")
    found = _identities_of(con, [node]) if has_map else []
    if found:
        person.nodes.add(node)
        person.pids.update(p for _, p in found)
    elif _exists(con, "events"):
        person = _from_events(con, node)
    for nodes in known:
        group = set(nodes)
        if node in group:
            person.nodes |= group
    if not person:
        return person
    return expand(con, rules, person) if has_map else _own_ids(rules, person)


def expand(con: duckdb.DuckDBPyConnection, rules: IdentityRules, person: Person) -> Person:
    """Add every identifier the map puts in one of the person's ids, and their ids, until
    nothing new comes (a link stored since the last look)."""
    for _ in range(MAX_ROUNDS):
        before = (len(person.nodes), len(person.pids))
        person.pids.update(p for _, p in _identities_of(con, person.nodes))
        person.nodes.update(_nodes_of_pids(con, person.pids))
        _own_ids(rules, person)
        if (len(person.nodes), len(person.pids)) == before:
            break
    return person


def _own_ids(rules: IdentityRules, person: Person) -> Person:
    person.pids.update(rules.person_id(n) for n in person.nodes)
    return person
