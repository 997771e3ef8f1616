"""Which lake rows belong to deleted persons, decided by a table's columns, not its name.

So the tables of other concerns (``profiles``, ``profile_changes``, ``member_rejects``)
are handled as soon as they exist, by their person and identifier columns:

* events-like rows (``user_id`` and ``anonymous_id``): the member's when ``user_id`` is
  set (DESIGN 9: an event carrying a member id is that member's, so another member's
  events on a shared device are kept), else the device's; or a ``person_id`` of theirs;
* identifier rows (``identifier_type`` + ``identifier``) and ``person_id``;
* merges: ``from_person_id``, ``to_person_id``, ``link_from``, ``link_to``;
* dead letters (``payload``): the envelope's identifiers as far as the payload decodes,
  or a hashed phone or e-mail of theirs masked into undecodable text;
* any other table: ``person_id``, ``user_id``, and columns named like an identifier type.

The same rules exist twice, as a vectorised Arrow mask (exact, used on every row written
or rewritten) and as a DuckDB predicate (to find the files worth rewriting).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import orjson
import pyarrow as pa
import pyarrow.compute as pc

KINDS = ("user_id", "phone", "unionid", "openid", "email", "anonymous_id")
_MASKED = ("phone", "email")  # masked into dead-letter text as [phone:<hash>]


@dataclass(frozen=True)
class MatchSet:
    """Identifiers (One ID nodes) and person ids whose rows go."""

    nodes: frozenset[str] = frozenset()
    pids: frozenset[str] = frozenset()
    by_kind: dict[str, frozenset[str]] = field(default_factory=dict)

    @classmethod
    def of(cls, nodes: Any, pids: Any) -> MatchSet:
        nodes, pids = frozenset(nodes), frozenset(pids)
        kinds: dict[str, set[str]] = {}
        for n in nodes:
            kind, _, value = n.partition(":")
            kinds.setdefault(kind, set()).add(value)
        return cls(nodes, pids, {k: frozenset(v) for k, v in kinds.items()})

    def __bool__(self) -> bool:
        return bool(self.nodes or self.pids)

    def values(self, kind: str) -> frozenset[str]:
        return self.by_kind.get(kind, frozenset())

    # -- Arrow -------------------------------------------------------------------------

    def mask(self, table: pa.Table) -> pa.Array:
        """True for the rows that belong to the set's persons."""
        n = table.num_rows
        out = pa.array([False] * n, pa.bool_())
        if not self or n == 0:
            return out
        cols = set(table.column_names)
        for part in self._masks(table, cols):
            out = pc.or_(out, pc.fill_null(part, False))
        return out

    def _is_in(self, column: Any, values: frozenset[str]) -> pa.Array:
        if not values:
            return pa.array([False] * len(column), pa.bool_())
        return pc.is_in(pc.cast(column, pa.string()), value_set=pa.array(sorted(values)))

    def _masks(self, table: pa.Table, cols: set[str]) -> list[pa.Array]:
        parts = []
        if {"user_id", "anonymous_id"} <= cols:
            users = table["user_id"]
            parts.append(self._is_in(users, self.values("user_id")))
            anon = self._is_in(table["anonymous_id"], self.values("anonymous_id"))
            parts.append(pc.and_(pc.is_null(users), anon))
        elif "user_id" in cols:
            parts.append(self._is_in(table["user_id"], self.values("user_id")))
        if {"identifier_type", "identifier"} <= cols:
            nodes = pc.binary_join_element_wise(table["identifier_type"], table["identifier"], ":")
            parts.append(self._is_in(nodes, self.nodes))
        for col in ("person_id", "from_person_id", "to_person_id"):
            if col in cols:
                parts.append(self._is_in(table[col], self.pids))
        for col in ("link_from", "link_to"):
            if col in cols:
                parts.append(self._is_in(table[col], self.nodes))
        for kind in ("phone", "email", "openid", "unionid"):
            if kind in cols:
                parts.append(self._is_in(table[kind], self.values(kind)))
        if "payload" in cols:
            parts.append(pa.array([self.payload_matches(p) for p in table["payload"].to_pylist()]))
        return parts

    def payload_matches(self, payload: bytes | None) -> bool:
        """A dead letter's payload names one of the persons (same rule as events)."""
        if not payload:
            return False
        try:
            obj = orjson.loads(payload)
        except orjson.JSONDecodeError:
            obj = None
        if isinstance(obj, dict):
            return self._envelope_matches(obj)
        text = payload.decode("utf-8", errors="replace")
        return any(f"[{kind}:{value}]" in text for kind in _MASKED for value in self.values(kind))

    def _envelope_matches(self, obj: dict[str, Any]) -> bool:
        user_id = obj.get("user_id")
        if isinstance(user_id, str) and user_id:
            return user_id in self.values("user_id")
        anon = obj.get("anonymous_id")
        if isinstance(anon, str) and anon in self.values("anonymous_id"):
            return True
        ids = obj.get("identities")
        if isinstance(ids, dict):
            return any(isinstance(v, str) and f"{k}:{v}" in self.nodes for k, v in ids.items())
        return False

    # -- DuckDB ------------------------------------------------------------------------

    def sql(self, cols: set[str]) -> tuple[str, list[Any]] | None:
        """A predicate over a table with columns ``cols`` that holds for at least the
        matching rows (None: no cheap predicate, every file is read)."""
        if "payload" in cols:
            return None
        terms: list[str] = []
        params: list[Any] = []

        def term(sql: str, values: frozenset[str]) -> None:
            terms.append(sql)
            params.append(sorted(values))

        if {"user_id", "anonymous_id"} <= cols:
            term("list_contains(?, user_id)", self.values("user_id"))
            term(
                "(user_id IS NULL AND list_contains(?, anonymous_id))", self.values("anonymous_id")
            )
        elif "user_id" in cols:
            term("list_contains(?, CAST(user_id AS VARCHAR))", self.values("user_id"))
        if {"identifier_type", "identifier"} <= cols:
            term("list_contains(?, identifier_type || ':' || identifier)", self.nodes)
        for col in ("person_id", "from_person_id", "to_person_id"):
            if col in cols:
                term(f"list_contains(?, {col})", self.pids)
        for col in ("link_from", "link_to"):
            if col in cols:
                term(f"list_contains(?, {col})", self.nodes)
        for kind in ("phone", "email", "openid", "unionid"):
            if kind in cols:
                term(f"list_contains(?, CAST({kind} AS VARCHAR))", self.values(kind))
        if not terms:
            return "false", []
        return " OR ".join(terms), params
