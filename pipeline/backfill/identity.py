"""One ID for a backfill: the identity graph the stream's writer would hold, rebuilt from the
lake, plus the backfill's links, applied by the same code (``IdentityGraph``).

The lake keeps each identifier's person and seen range, not the links themselves, so the
seed links each identifier to its person's top identifier (first seen) plus a sighting
(last seen), and re-adds every refused link of ``identity_merges`` (refused again). That
gives every seeded identifier the person the lake shows; the backfill's links then merge,
refuse and move exactly as the writer's rules say. The rows that changed are written to
``identities`` and ``identity_merges`` as the sink writes the writer's.
"""

from __future__ import annotations

from typing import Any

import duckdb

from pipeline.identity.graph import IdentityGraph, Link
from pipeline.identity.rules import IdentityRules, node


def seed_links(con: duckdb.DuckDBPyConnection, rules: IdentityRules) -> list[Link]:
    """Links that rebuild the lake's current persons (and its refusals)."""
    rows = con.execute(
        "SELECT identifier_type, identifier, person_id, epoch_ms(first_seen), "
        "epoch_ms(last_seen) FROM identities WHERE person_id IS NOT NULL"
    ).fetchall()
    by_person: dict[str, list[tuple[str, int, int]]] = {}
    for kind, value, person, first, last in rows:
        if kind in rules.types:
            by_person.setdefault(person, []).append((node(kind, value), first or 0, last or 0))
    links: list[Link] = []
    for members in by_person.values():
        top = min((n for n, _, _ in members), key=rules.order)
        for n, first, last in members:
            links.append((top, n, first) if n != top else (n, n, first))
            if last != first:
                links.append((n, n, last))
    refused = con.execute(
        'SELECT link_from, link_to, epoch_ms("at") FROM identity_merges '
        "WHERE NOT accepted AND link_from IS NOT NULL AND link_to IS NOT NULL"
    ).fetchall()
    links += [(a, b, int(t or 0)) for a, b, t in refused]
    return links


class BackfillIdentity:
    """The graph plus what the backfill changed in it (latest row per identifier)."""

    def __init__(self, rules: IdentityRules, con: duckdb.DuckDBPyConnection) -> None:
        self.graph = IdentityGraph(rules)
        self.graph.add(seed_links(con, rules), emit=False)
        self.rows: dict[tuple[str, str], dict[str, Any]] = {}
        self.merges: list[dict[str, Any]] = []

    def apply(self, links: list[Link]) -> None:
        changes = self.graph.add(links)
        for row in changes.identities:
            self.rows[(row["identifier_type"], row["identifier"])] = row
        self.merges += changes.merges
