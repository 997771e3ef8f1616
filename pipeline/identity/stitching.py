"""The stitch stage's work on one batch: a person_id per event, and the links worth sending.

Reads only the local copy of the identity map (in memory). An event's person is that of its
``user_id`` when it has one (events carrying a member id always belong to that member),
else that of its ``anonymous_id``; an identifier the map does not know yet stands for
itself, which is the id the writer will give it unless a link joins it to a person. The
``events_resolved`` view re-resolves through the latest map, so the lake catches up.
"""

from __future__ import annotations

from collections.abc import Hashable

import orjson
import pyarrow as pa

from pipeline.identity.graph import Edge, IdentityGraph, Link
from pipeline.identity.rules import IdentityRules, node


class Stitcher:
    def __init__(
        self, rules: IdentityRules, graph: IdentityGraph, refresh_ms: int, cache_size: int = 200_000
    ) -> None:
        self.rules = rules
        self.graph = graph
        self.refresh_ms = refresh_ms
        self.cache_size = cache_size
        # Links sent but maybe not yet applied, so a burst of one device's events sends its
        # links once, not once per batch until the writer catches up.
        self._sent: dict[Hashable, int] = {}
        self._pids: dict[str, str] = {}
        self._links: dict[tuple[str | None, str | None, str | None], list[Edge]] = {}
        self.resolve_kinds = ("user_id", "anonymous_id")

    def _own_pid(self, n: str) -> str:
        pid = self._pids.get(n)
        if pid is None:
            if len(self._pids) >= self.cache_size:
                self._pids.clear()
            pid = self._pids[n] = self.rules.person_id(n)
        return pid

    def resolve(self, user_id: str | None, anonymous_id: str | None) -> str | None:
        person = self.graph.person
        for kind, value in zip(self.resolve_kinds, (user_id, anonymous_id), strict=True):
            if value:
                n = node(kind, value)
                return person.get(n) or self._own_pid(n)
        return None

    def _links_of(self, user_id: str | None, anon: str | None, ids: str | None) -> list[Edge]:
        key = (user_id, anon, ids)
        links = self._links.get(key)
        if links is None:
            if len(self._links) >= self.cache_size:
                self._links.clear()
            extra = orjson.loads(ids) if ids else None
            rules = self.rules
            links = self._links[key] = rules.links(rules.identifiers(user_id, anon, extra))
        return links

    def _worth_sending(self, a: str, b: str, t: int) -> bool:
        g = self.graph
        if g.knows_oriented(a, b, t):
            seen_a, seen_b = g.seen[a], g.seen[b]
            if seen_a[1] + self.refresh_ms >= t and seen_b[1] + self.refresh_ms >= t:
                return False
        key = (a, b)
        sent = self._sent.get(key)
        if sent is not None and sent <= t < sent + self.refresh_ms:
            return False
        if len(self._sent) >= self.cache_size:
            self._sent.clear()
        self._sent[key] = t if sent is None else min(sent, t)
        return True

    def stitch(self, table: pa.Table) -> tuple[pa.Table, list[Link]]:
        users = table.column("user_id").to_pylist()
        anons = table.column("anonymous_id").to_pylist()
        idents = table.column("identities").to_pylist()
        times = table.column("event_time").cast(pa.int64()).to_pylist()
        # A batch holds many events of few people: work once per distinct identifier set,
        # with the earliest and latest event time of the set (for first/last seen).
        spans: dict[tuple[str | None, str | None, str | None], list[int]] = {}
        for key, t in zip(zip(users, anons, idents, strict=True), times, strict=True):
            span = spans.get(key)
            if span is None:
                spans[key] = [t, t]
            elif t < span[0]:
                span[0] = t
            elif t > span[1]:
                span[1] = t
        pid_of: dict[tuple[str | None, str | None, str | None], str | None] = {}
        links: list[Link] = []
        for key, (first, last) in spans.items():
            user_id, anon, ids = key
            pid_of[key] = self.resolve(user_id, anon)
            for a, b in self._links_of(user_id, anon, ids):
                if self._worth_sending(a, b, first):
                    links.append((a, b, first))
                if last != first and self._worth_sending(a, b, last):
                    links.append((a, b, last))
        pids = [pid_of[key] for key in zip(users, anons, idents, strict=True)]
        i = table.schema.get_field_index("person_id")
        out = table.set_column(i, "person_id", pa.array(pids, type=pa.string()))
        return out, links
