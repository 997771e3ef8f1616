"""The identity map: which person each identifier belongs to, from the links seen so far.

Order independence is the point. Links reach the single writer in arrival order, which is
not event-time order (they come from many raw partitions and workers). So the map is not
built greedily; it is a function of the *set* of links and their first event times:

* identifiers joined by any link, accepted or not, form a cluster (plain union-find);
* within a cluster, links are applied in the rules' order (links with a member id first,
  then the rest; each group by first event time, then by name), refusing any link that
  would give a person two identifiers of a limited type (two ``user_id``);
* a person's id derives from its highest-priority identifier.

A new link recomputes only its cluster. Clusters are small in practice (a person's devices
and profile ids, plus any person it was refused against); a device shared by very many
members makes one large cluster that is recomputed on each of its new links.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from pipeline.identity.rules import IdentityRules, Node, split

Link = tuple[Node, Node, int]  # (identifier, identifier, event time in ms); a == b: a sighting
Edge = tuple[Node, Node]

REASON_LINKED = "linked"
_NONE: frozenset[str] = frozenset()


def refusal_reason(kind: str) -> str:
    return f"would_join_two_{kind}s"


def _root(parent: dict[Node, Node], n: Node) -> Node:
    """Union-find root of ``n``, compressing the path on the way."""
    root = n
    while parent[root] != root:
        root = parent[root]
    while parent[n] != root:
        parent[n], n = root, parent[n]
    return root


@dataclass
class Changes:
    identities: list[dict[str, Any]] = field(default_factory=list)
    merges: list[dict[str, Any]] = field(default_factory=list)
    applied: int = 0  # links that changed the graph (new, earlier or later than known)

    def __bool__(self) -> bool:
        return bool(self.applied)


class IdentityGraph:
    def __init__(self, rules: IdentityRules) -> None:
        self.rules = rules
        self.seen: dict[Node, list[int]] = {}  # identifier -> [first, last] event time
        self.edges: dict[Edge, int] = {}  # link -> first event time
        self.person: dict[Node, str] = {}
        self.persons: Counter[str] = Counter()  # person_id -> identifiers
        self.refused: set[Edge] = set()
        # Identifiers of deleted persons (DESIGN 15): links touching them are ignored.
        self.forgotten: set[Node] = set()
        self._cparent: dict[Node, Node] = {}
        self._cnodes: dict[Node, list[Node]] = {}
        self._cedges: dict[Node, list[Edge]] = {}

    # -- reads (the stitch hot path) --------------------------------------------------

    def lookup(self, n: Node) -> str | None:
        return self.person.get(n)

    def person_count(self) -> int:
        return len(self.persons)

    def knows(self, a: Node, b: Node, t: int) -> bool:
        """True when applying the link would change nothing (so it need not be sent)."""
        if a == b:
            s = self.seen.get(a)
            return s is not None and s[0] <= t
        if self.rules.order(b) < self.rules.order(a):
            a, b = b, a
        return self.knows_oriented(a, b, t)

    def knows_oriented(self, a: Node, b: Node, t: int) -> bool:
        """``knows`` for a link already oriented (``a`` the higher-priority identifier),
        as ``IdentityRules.links`` makes them; skips the ordering on the hot path."""
        if a == b:
            s = self.seen.get(a)
            return s is not None and s[0] <= t
        first = self.edges.get((a, b))
        return first is not None and first <= t

    # -- writes (the identity writer, and every replica replaying its changelog) ------

    def add(self, links: Iterable[Link], emit: bool = True) -> Changes:
        changes = Changes()
        dirty: set[Node] = set()
        touched: set[Node] = set()
        order = self.rules.order
        forgotten = self.forgotten
        for a, b, t in links:
            if forgotten and (a in forgotten or b in forgotten):
                continue
            if a != b and order(b) < order(a):
                a, b = b, a
            changed = False
            for n in (a, b) if a != b else (a,):
                s = self.seen.get(n)
                if s is None:
                    self.seen[n] = [t, t]
                    self._cparent[n] = n
                    self._cnodes[n] = [n]
                    self._cedges[n] = []
                    dirty.add(n)
                    touched.add(n)
                    changed = True
                elif t < s[0] or t > s[1]:
                    s[0], s[1] = min(s[0], t), max(s[1], t)
                    touched.add(n)
                    changed = True
            if a != b:
                key = (a, b)
                old = self.edges.get(key)
                if old is None or t < old:
                    self.edges[key] = t
                    root = self._union(self._find(a), self._find(b))
                    if old is None:
                        self._cedges[root].append(key)
                    dirty.add(root)
                    changed = True
            changes.applied += changed
        for root in {self._find(r) for r in dirty}:
            self._recompute(root, changes, touched, emit)
        if emit:
            for n in sorted(touched):
                changes.identities.append(self._identity_row(n))
        return changes

    # -- deletion (DESIGN 15) ----------------------------------------------------------

    def person_nodes(self, nodes: Iterable[Node]) -> set[Node]:
        """``nodes`` the map knows, with every identifier of their persons."""
        known = [n for n in nodes if n in self.seen]
        pids = {self.person[n] for n in known}
        out = set(known)
        for root in {self._find(n) for n in known}:
            out.update(m for m in self._cnodes[root] if self.person.get(m) in pids)
        return out

    def forget(self, nodes: Iterable[Node], emit: bool = True) -> Changes:
        """Remove identifiers, their links and sightings, as if never seen; later links
        touching them are ignored. Persons they shared a cluster with (through a refused
        link) are recomputed: their changes are returned."""
        given = set(nodes)
        gone = {n for n in given if n in self.seen}
        self.forgotten |= given
        changes = Changes()
        touched: set[Node] = set()
        for root in {self._find(n) for n in gone}:
            keep = self._drop_from_cluster(root, gone)
            for new_root in {self._find(n) for n in keep}:
                self._recompute(new_root, changes, touched, emit)
        changes.applied = len(gone)
        if emit:
            for n in sorted(touched - gone):
                changes.identities.append(self._identity_row(n))
        return changes

    def unforget(self, nodes: Iterable[Node]) -> None:
        """Links touching ``nodes`` count again (a deleted person unsuppressed)."""
        self.forgotten.difference_update(nodes)

    def _drop_from_cluster(self, root: Node, gone: set[Node]) -> list[Node]:
        """Take the cluster apart, drop ``gone`` and its links, re-union the rest."""
        nodes = self._cnodes.pop(root)
        edges = self._cedges.pop(root)
        for n in nodes:
            del self._cparent[n]
        keep = [n for n in nodes if n not in gone]
        for n in nodes:
            if n in gone:
                del self.seen[n]
                pid = self.person.pop(n, None)
                if pid is not None:
                    self.persons[pid] -= 1
                    if self.persons[pid] <= 0:
                        del self.persons[pid]
        for n in keep:
            self._cparent[n], self._cnodes[n], self._cedges[n] = n, [n], []
        for e in edges:
            if e[0] in gone or e[1] in gone:
                del self.edges[e]
                self.refused.discard(e)
                continue
            r = self._union(self._find(e[0]), self._find(e[1]))
            self._cedges[r].append(e)
        return keep

    def _find(self, n: Node) -> Node:
        return _root(self._cparent, n)

    def _union(self, ra: Node, rb: Node) -> Node:
        if ra == rb:
            return ra
        if len(self._cnodes[ra]) < len(self._cnodes[rb]):
            ra, rb = rb, ra
        self._cparent[rb] = ra
        self._cnodes[ra].extend(self._cnodes.pop(rb))
        self._cedges[ra].extend(self._cedges.pop(rb))
        return ra

    def _sort_key(self, e: Edge) -> tuple[int, int, str, str]:
        first = self.rules.first
        group = 0 if split(e[0])[0] == first or split(e[1])[0] == first else 1
        return group, self.edges[e], e[0], e[1]

    def _recompute(self, root: Node, changes: Changes, touched: set[Node], emit: bool) -> None:
        """Re-derive the persons of the cluster at ``root`` from its links, from scratch."""
        nodes = self._cnodes[root]
        parent, refused_now = self._apply_links(root)
        new_pid = self._person_ids(nodes, parent)
        pairs = self._assign(nodes, new_pid, touched)
        newly = self._record_refusals(root, refused_now)
        if emit:
            changes.merges += self._merge_rows(pairs, newly, new_pid)

    def _apply_links(self, root: Node) -> tuple[dict[Node, Node], list[tuple[Edge, str]]]:
        """Union-find of the cluster's identifiers over the links it accepts, in rule order,
        and the links refused with the limited kind they would have doubled."""
        limits = self.rules.limits
        nodes = self._cnodes[root]
        parent = {n: n for n in nodes}
        limited: dict[Node, dict[str, set[Node]]] = {}
        for n in nodes:
            kind = split(n)[0]
            limited[n] = {kind: {n}} if kind in limits else {}
        refused_now: list[tuple[Edge, str]] = []
        for e in sorted(self._cedges[root], key=self._sort_key):
            ra, rb = _root(parent, e[0]), _root(parent, e[1])
            if ra == rb:
                continue
            la, lb = limited[ra], limited[rb]
            over = [
                k for k, cap in limits.items() if len(la.get(k, set()) | lb.get(k, set())) > cap
            ]
            if over:
                refused_now.append((e, over[0]))
                continue
            parent[rb] = ra
            for k, ids in lb.items():
                la.setdefault(k, set()).update(ids)
            del limited[rb]
        return parent, refused_now

    def _person_ids(self, nodes: list[Node], parent: dict[Node, Node]) -> dict[Node, str]:
        """Identifier -> person id, from each group's highest-priority identifier."""
        rules = self.rules
        members: dict[Node, list[Node]] = {}
        for n in nodes:
            members.setdefault(_root(parent, n), []).append(n)
        new_pid: dict[Node, str] = {}
        for group in members.values():
            pid = rules.person_id(min(group, key=rules.order))
            for n in group:
                new_pid[n] = pid
        return new_pid

    def _assign(
        self, nodes: list[Node], new_pid: dict[Node, str], touched: set[Node]
    ) -> dict[tuple[str, str], int]:
        """Moves every identifier whose person changed; (old, new) person -> the latest
        first sighting among the identifiers that moved between them."""
        pairs: dict[tuple[str, str], int] = {}
        for n in nodes:
            old, new = self.person.get(n), new_pid[n]
            if old == new:
                continue
            if old is not None:
                self.persons[old] -= 1
                if self.persons[old] <= 0:
                    del self.persons[old]
                at = self.seen[n][0]
                pairs[(old, new)] = max(pairs.get((old, new), at), at)
            self.persons[new] += 1
            self.person[n] = new
            touched.add(n)
        return pairs

    def _record_refusals(
        self, root: Node, refused_now: list[tuple[Edge, str]]
    ) -> list[tuple[Edge, str]]:
        """Replaces the cluster's refused links; returns those not refused before."""
        cluster_edges = set(self._cedges[root])
        now_refused = {e for e, _ in refused_now}
        newly = [(e, kind) for e, kind in refused_now if e not in self.refused]
        self.refused = (self.refused - cluster_edges) | now_refused
        return newly

    def _merge_rows(
        self,
        pairs: dict[tuple[str, str], int],
        newly: list[tuple[Edge, str]],
        new_pid: dict[Node, str],
    ) -> list[dict[str, Any]]:
        """Merge rows: accepted person changes, then newly refused links."""
        rows = [
            {
                "from_person_id": old,
                "to_person_id": new,
                "reason": REASON_LINKED,
                "accepted": True,
                "at": at,
                "link_from": None,
                "link_to": None,
            }
            for (old, new), at in sorted(pairs.items())
        ]
        rows += [
            {
                "from_person_id": new_pid[a],
                "to_person_id": new_pid[b],
                "reason": refusal_reason(kind),
                "accepted": False,
                "at": self.edges[(a, b)],
                "link_from": a,
                "link_to": b,
            }
            for (a, b), kind in newly
        ]
        return rows

    def _identity_row(self, n: Node) -> dict[str, Any]:
        kind, value = split(n)
        first, last = self.seen[n]
        return {
            "identifier_type": kind,
            "identifier": value,
            "person_id": self.person[n],
            "first_seen": first,
            "last_seen": last,
        }
