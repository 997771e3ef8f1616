"""What every worker derives from the privacy requests: who is suppressed, who is deleted.

Requests are applied in ``seq`` order whatever order their records arrive in: an
unsuppress lifts the earlier suppress and delete requests that share an identifier with it
(the CLI puts the person's every identifier in it). A delete suppresses too.

An event belongs to a suppressed person when its ``user_id`` does (an event carrying a
member id is that member's, DESIGN 9), else when its ``anonymous_id`` or one of its
``identities`` does. "Belongs" is an identifier of a request, or an identifier the
identity map puts in a person of a request (``lookup``): identifiers linked to the person
after the request count too. The check is a few set and dict lookups per event and costs
nothing while nobody is suppressed.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import replace
from typing import Any

from pipeline.privacy.requests import DELETE, DONE, UNSUPPRESS, Request

Lookup = Callable[[str], str | None]  # identifier node -> person id in the identity map
# Persons' ids are re-read from the map at most this often (a request's own identifiers
# and ids count at once): a link is seconds old when it reaches the map anyway, and
# re-reading 10,000 persons' ids costs ~5 ms (bench/privacy_delete.py).
REFRESH_SECONDS = 1.0


def _no_lookup(node: str) -> str | None:
    return None


class PrivacyState:
    def __init__(self, lookup: Lookup = _no_lookup) -> None:
        self.lookup = lookup
        self.requests: dict[str, Request] = {}
        self.active: dict[str, Request] = {}  # suppress and delete requests in force
        self.nodes: frozenset[str] = frozenset()  # identifiers of suppressed persons
        self.recorded_pids: frozenset[str] = frozenset()
        self.pids: frozenset[str] = frozenset()  # their person ids (maybe_refresh)
        self.position = 0  # next offset of privacy.requests to read
        self._refreshed = 0.0

    # -- applying records ------------------------------------------------------------

    def apply(self, records: Iterable[Request]) -> None:
        changed = False
        for req in records:
            old = self.requests.get(req.request_id)
            if old is not None and old.seq is not None:
                seq = old.seq if req.seq is None else min(old.seq, req.seq)
                req = replace(req, seq=seq)
            self.requests[req.request_id] = req
            changed = True
        if changed:
            self._derive()

    def _derive(self) -> None:
        active: dict[str, Request] = {}
        for req in sorted(self.requests.values(), key=lambda r: (r.seq or 0, r.request_id)):
            if req.action == UNSUPPRESS:
                lifted = set(req.identifiers)
                for rid in [rid for rid, a in active.items() if lifted & set(a.identifiers)]:
                    del active[rid]
            else:
                active[req.request_id] = req
        self.active = active
        self.nodes = frozenset(n for r in active.values() for n in r.identifiers)
        self.recorded_pids = frozenset(p for r in active.values() for p in r.person_ids)
        self.refresh()

    def maybe_refresh(self, now: float | None = None) -> None:
        """``refresh`` if the last one is over ``REFRESH_SECONDS`` old (once per take)."""
        now = time.monotonic() if now is None else now
        if self.nodes and now - self._refreshed >= REFRESH_SECONDS:
            self.refresh(now)

    def refresh(self, now: float | None = None) -> None:
        """Re-read the suppressed persons' ids from the identity map (merges move them)."""
        self._refreshed = time.monotonic() if now is None else now
        if not self.nodes:
            self.pids = frozenset()
            return
        lookup = self.lookup
        found = {lookup(n) for n in self.nodes}
        found.discard(None)
        self.pids = self.recorded_pids | frozenset(p for p in found if p is not None)

    # -- the per-event check -----------------------------------------------------------

    @property
    def any(self) -> bool:
        return bool(self.nodes)

    def _of_person(self, node: str) -> bool:
        return node in self.nodes or self.lookup(node) in self.pids

    def suppressed(
        self,
        user_id: str | None,
        anonymous_id: str | None,
        identities: Mapping[str, Any] | None,
    ) -> bool:
        """Whether an event with these identifiers (lake form: phone, e-mail hashed)
        belongs to a suppressed person."""
        if not self.nodes:
            return False
        if user_id:
            return self._of_person(f"user_id:{user_id}")
        if anonymous_id and self._of_person(f"anonymous_id:{anonymous_id}"):
            return True
        if identities:
            for kind, value in identities.items():
                if isinstance(value, str) and self._of_person(f"{kind}:{value}"):
                    return True
        return False

    # -- what the lake side needs ------------------------------------------------------

    def deletions(self) -> list[Request]:
        """Delete requests in force, in request order."""
        return sorted(
            (r for r in self.active.values() if r.action == DELETE), key=lambda r: r.seq or 0
        )

    def unfinished(self) -> list[Request]:
        """Delete requests not done yet (to resume), in request order."""
        return [r for r in self.deletions() if r.status != DONE]

    def oldest_unfinished(self) -> int | None:
        """``requested_at`` (ms) of the oldest request not done, any action."""
        times = [r.requested_at for r in self.requests.values() if r.status != DONE]
        return min(times) if times else None

    def by_status(self) -> dict[tuple[str, str], int]:
        counts: dict[tuple[str, str], int] = {}
        for r in self.requests.values():
            counts[(r.action, r.status)] = counts.get((r.action, r.status), 0) + 1
        return counts

    def person_requests(self, nodes: Iterable[str]) -> list[Request]:
        """Requests in force that share an identifier with ``nodes``."""
        wanted = set(nodes)
        return [r for r in self.active.values() if wanted & set(r.identifiers)]
