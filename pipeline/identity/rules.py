"""The One ID rules (DESIGN section 9), loaded from ``schemas/identity/rules.v*.json``.

Priorities, the per-person limits and the link order are data: changing them is a new
rules file, not code.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson

from pipeline.contract.plan import default_schemas_dir

Node = str  # "<type>:<identifier>"


def node(kind: str, value: str) -> Node:
    return f"{kind}:{value}"


def split(n: Node) -> tuple[str, str]:
    kind, _, value = n.partition(":")
    return kind, value


@dataclass(frozen=True)
class IdentityRules:
    version: int
    types: tuple[str, ...]  # highest priority first
    sources: Mapping[str, str]  # type -> "user_id" | "identities.<key>"
    limits: Mapping[str, int]  # type -> max identifiers of that type per person
    first: str  # links involving this type are applied first
    prefix: str
    digest_bytes: int

    def rank(self, kind: str) -> int:
        return self.types.index(kind)

    def order(self, n: Node) -> tuple[int, str]:
        """Sort key: priority, then value, so the 'highest' identifier is well defined."""
        kind, value = split(n)
        return self.rank(kind), value

    def person_id(self, top: Node) -> str:
        digest = hashlib.blake2b(top.encode(), digest_size=self.digest_bytes).hexdigest()
        return f"{self.prefix}{digest}"

    def identifiers(
        self, user_id: str | None, anonymous_id: str | None, identities: Mapping[str, Any] | None
    ) -> list[Node]:
        """The event's identifiers, highest priority first."""
        out: list[Node] = []
        for kind in self.types:
            source = self.sources[kind]
            if source == "user_id":
                value = user_id
            elif source == "anonymous_id":
                value = anonymous_id
            else:
                value = (identities or {}).get(source.split(".", 1)[1])
            if isinstance(value, str) and value:
                out.append(node(kind, value))
        return out

    def links(self, identifiers: Iterable[Node]) -> list[tuple[Node, Node]]:
        """Links of one event: a star from its top identifier (a lone identifier links to
        itself, a sighting). A star, not a clique: a device and a profile id seen on a
        member's event must not be joined to each other past a refused member link."""
        ids = list(identifiers)
        if not ids:
            return []
        top = ids[0]
        if len(ids) == 1:
            return [(top, top)]
        return [(top, other) for other in ids[1:]]


def default_rules_path() -> Path:
    return default_schemas_dir() / "identity" / "rules.v1.json"


def load_identity_rules(path: Path | None = None) -> IdentityRules:
    """Load and check a rules file; the latest version when given a directory."""
    path = path or default_rules_path()
    if path.is_dir():
        files = sorted(path.glob("rules.v*.json"), key=lambda p: int(p.stem.split(".v")[1]))
        if not files:
            raise ValueError(f"no rules.v*.json in {path}")
        path = files[-1]
    data = orjson.loads(path.read_bytes())
    types = data.get("identifier_types") or []
    kinds = tuple(t["type"] for t in types)
    if len(set(kinds)) != len(kinds) or not kinds:
        raise ValueError(f"{path}: identifier types must be unique and non-empty")
    for t in types:
        if not t.get("description"):
            raise ValueError(f"{path}: identifier type {t['type']} has no description")
        source = t.get("source", "")
        if source not in ("user_id", "anonymous_id") and not source.startswith("identities."):
            raise ValueError(f"{path}: {t['type']}: unknown source {source!r}")
    first = data.get("link_order", {}).get("first", kinds[0])
    if first not in kinds:
        raise ValueError(f"{path}: link_order.first {first!r} is not an identifier type")
    pid = data.get("person_id", {})
    return IdentityRules(
        version=int(data["version"]),
        types=kinds,
        sources={t["type"]: t["source"] for t in types},
        limits={t["type"]: int(t["max_per_person"]) for t in types if "max_per_person" in t},
        first=first,
        prefix=pid.get("prefix", "p_"),
        digest_bytes=int(pid.get("digest_bytes", 10)),
    )
