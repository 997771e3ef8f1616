"""Seen event ids per source partition, for dropping SDK retries across restarts.

Ids are kept in generations of ``horizon`` length (processing time): a lookup checks the
current and the previous generation, so every id is remembered for at least one horizon
and at most two, and expiry drops a whole dict instead of scanning entries.

A position is ``offset << 20 | index`` of the first sighting, shifted once more with a flag
for "rejected". Seeing the same id again at the *same* position is a replay of that message
after a restart (not a duplicate), so the replay reproduces the same output.
``tables.dedup.DedupTable`` persists it through a Faust changelog.
"""

from __future__ import annotations


class SeenIds:
    """Plain data structure; the Faust table below persists it."""

    def __init__(self, horizon_ms: int) -> None:
        self.horizon_ms = horizon_ms
        self._parts: dict[int, dict[int, dict[str, int]]] = {}

    def generation(self, now_ms: int) -> int:
        return now_ms // self.horizon_ms

    def lookup(self, partition: int, event_id: str, now_ms: int) -> tuple[int, bool] | None:
        """(position, rejected) of the first sighting, or None."""
        gens = self._parts.get(partition)
        if not gens:
            return None
        g = self.generation(now_ms)
        for gen in (g, g - 1):
            ids = gens.get(gen)
            if ids is not None:
                packed = ids.get(event_id)
                if packed is not None:
                    return packed >> 1, bool(packed & 1)
        return None

    def add(self, partition: int, gen: int, event_id: str, pos: int, rejected: bool) -> None:
        gens = self._parts.setdefault(partition, {})
        ids = gens.get(gen)
        if ids is None:
            ids = gens[gen] = {}
            for old in [k for k in gens if k < gen - 1]:
                del gens[old]
        packed = (pos << 1) | rejected
        current = ids.get(event_id)
        # First sighting wins, except that an accepted event supersedes a rejected one.
        if current is None or (current & 1 and not rejected):
            ids[event_id] = packed

    def forget(self, partition: int) -> None:
        self._parts.pop(partition, None)

    def size(self) -> int:
        return sum(len(ids) for gens in self._parts.values() for ids in gens.values())
