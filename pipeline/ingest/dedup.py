"""Seen event ids per source partition, for dropping SDK retries across restarts.

Ids are kept in generations of ``horizon`` length (processing time): a lookup checks the
current and the previous generation, so every id is remembered for at least one horizon
and at most two, and expiry drops a whole generation instead of scanning entries.

A position is ``offset << 20 | index`` of the first sighting, shifted once more with a flag
for "rejected". Seeing the same id again at the *same* position is a replay of that message
after a restart (not a duplicate), so the replay reproduces the same output.
``tables.dedup.DedupTable`` persists it through a Faust changelog.

Memory is bounded per id: an id is kept as a 64-bit fingerprint and its packed position,
16 bytes in sorted numpy runs (a dict of Python strings cost about 200 bytes an id, so a
day of a busy shop did not fit in a worker). New ids go to a small dict first and are
frozen into a run when it is full; runs of similar size are merged, so a lookup searches a
few runs. The price is a false "duplicate" when two ids share a fingerprint: with ``n``
ids remembered a new id hits one with probability n / 2**64 (1e-12 at 20 million), see
docs/decisions.md.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field

import numpy as np

RUN_IDS = 1 << 16  # ids in the dict before it is frozen into a sorted run
MERGE_RATIO = 4  # a run is merged into the one before it once it is at least 1/4 its size

Run = tuple[np.ndarray, np.ndarray]  # sorted uint64 fingerprints, int64 packed positions


def fingerprint(event_id: str) -> int:
    return int.from_bytes(hashlib.blake2b(event_id.encode(), digest_size=8).digest(), "little")


def _wins(new: int, current: int | None) -> bool:
    """First sighting wins, except that an accepted event supersedes a rejected one."""
    return current is None or bool(current & 1 and not new & 1)


@dataclass
class _Generation:
    recent: dict[int, int] = field(default_factory=dict)
    runs: list[Run] = field(default_factory=list)  # oldest first

    def get(self, fp: int) -> int | None:
        packed = self.recent.get(fp)
        if packed is not None:
            return packed
        key = np.uint64(fp)
        for keys, values in reversed(self.runs):
            i = int(np.searchsorted(keys, key))
            if i < len(keys) and keys[i] == key:
                return int(values[i])
        return None

    def put(self, fp: int, packed: int) -> None:
        if _wins(packed, self.get(fp)):
            self.recent[fp] = packed
            if len(self.recent) >= RUN_IDS:
                self.freeze()

    def freeze(self) -> None:
        if self.recent:
            keys = np.fromiter(self.recent.keys(), np.uint64, len(self.recent))
            values = np.fromiter(self.recent.values(), np.int64, len(self.recent))
            self.recent = {}
            self.append(keys, values)

    def append(self, keys: np.ndarray, values: np.ndarray) -> None:
        """Add a run (any order; keys may repeat keys of older runs)."""
        self.runs.append(_sorted_unique(keys, values))
        while len(self.runs) > 1 and MERGE_RATIO * len(self.runs[-1][0]) >= len(self.runs[-2][0]):
            newer = self.runs.pop()
            self.runs[-1] = _merge(self.runs[-1], newer)

    def size(self) -> int:
        return len(self.recent) + sum(len(keys) for keys, _ in self.runs)

    def nbytes(self) -> int:
        return sum(keys.nbytes + values.nbytes for keys, values in self.runs)


def _sorted_unique(keys: np.ndarray, values: np.ndarray) -> Run:
    """A run of entries in the order they were added; per fingerprint the entry ``_wins``
    keeps: an accepted one before a rejected one, then the oldest."""
    order = np.lexsort((np.arange(len(keys)), values & 1, keys))
    keys, values = keys[order], values[order]
    first = np.ones(len(keys), bool)
    first[1:] = keys[1:] != keys[:-1]
    return keys[first], values[first]


def _merge(older: Run, newer: Run) -> Run:
    """Two runs as one, linear time: a stable sort of two sorted runs is a merge (timsort),
    and a fingerprint in both keeps the older entry unless only the newer was accepted."""
    keys = np.concatenate([older[0], newer[0]])
    values = np.concatenate([older[1], newer[1]])
    order = np.argsort(keys, kind="stable")
    keys, values = keys[order], values[order]
    twin = keys[1:] == keys[:-1]  # (i, i + 1): older at i, newer at i + 1
    rejected = (values & 1).astype(bool)
    take_newer = twin & rejected[:-1] & ~rejected[1:]
    keep = np.ones(len(keys), bool)
    keep[:-1] &= ~take_newer
    keep[1:] &= ~(twin & ~take_newer)
    return keys[keep], values[keep]


def _find(ids: _Generation | None, fps: list[int]) -> dict[int, int]:
    """Packed positions of the fingerprints ``ids`` holds, as ``_Generation.get`` finds them."""
    if ids is None or not fps:
        return {}
    out: dict[int, int] = {}
    recent = ids.recent
    for fp in fps:
        packed = recent.get(fp)
        if packed is not None:
            out[fp] = packed
    if ids.runs:
        wanted = np.fromiter(fps, np.uint64, len(fps))
        for keys, values in reversed(ids.runs):  # newest run first, as ``get``
            i = np.searchsorted(keys, wanted)
            i[i == len(keys)] = 0
            for k in np.flatnonzero(keys[i] == wanted).tolist():
                out.setdefault(fps[k], int(values[i[k]]))
    return out


class Snapshot:
    """The dedup memory of one partition as seen by one take, plus what the take adds.

    ``first`` answers as ``SeenIds.lookup`` would have at that point of the take; ``put``
    keeps the first-sighting rule of ``_Generation.put``; ``apply`` writes the take's
    entries to the memory.
    """

    __slots__ = ("_current", "_found", "gen", "partition", "pending", "seen")

    def __init__(
        self,
        seen: SeenIds,
        partition: int,
        gen: int,
        found: dict[int, int],
        current: dict[int, int],
    ) -> None:
        self.seen, self.partition, self.gen = seen, partition, gen
        self._found, self._current = found, current
        # Entries decided but not yet in the memory: ``apply`` writes them once the take's
        # outputs exist, so a take that fails half way leaves the memory as it was.
        self.pending: list[tuple[int, int]] = []

    def first(self, fp: int) -> tuple[int, bool] | None:
        """(position, rejected) of the first sighting, or None."""
        packed = self._found.get(fp)
        return None if packed is None else (packed >> 1, bool(packed & 1))

    def put(self, fp: int, pos: int, rejected: bool) -> None:
        packed = (pos << 1) | rejected
        if _wins(packed, self._current.get(fp)):
            self._current[fp] = self._found[fp] = packed
            self.pending.append((fp, packed))

    def apply(self) -> None:
        """Write what the take decided into the memory (idempotent)."""
        pending, self.pending = self.pending, []
        for fp, packed in pending:
            self.seen.put_packed(self.partition, self.gen, fp, packed)


class SeenIds:
    """Plain data structure; the Faust table ``tables.dedup.DedupTable`` persists it."""

    def __init__(self, horizon_ms: int) -> None:
        self.horizon_ms = horizon_ms
        self._parts: dict[int, dict[int, _Generation]] = {}

    def generation(self, now_ms: int) -> int:
        return now_ms // self.horizon_ms

    def lookup(self, partition: int, event_id: str, now_ms: int) -> tuple[int, bool] | None:
        """(position, rejected) of the first sighting, or None."""
        gens = self._parts.get(partition)
        if not gens:
            return None
        g = self.generation(now_ms)
        fp = fingerprint(event_id)
        for gen in (g, g - 1):
            ids = gens.get(gen)
            if ids is not None:
                packed = ids.get(fp)
                if packed is not None:
                    return packed >> 1, bool(packed & 1)
        return None

    def add(self, partition: int, gen: int, event_id: str, pos: int, rejected: bool) -> None:
        self._generation(partition, gen).put(fingerprint(event_id), (pos << 1) | rejected)

    def snapshot(self, partition: int, fps: list[int], now_ms: int) -> Snapshot:
        """What ``lookup`` would answer for each fingerprint, found for all at once.

        One vectorised search per run instead of a Python-level search per id and run: the
        validate stage looks up every event of a take before it decides any of them, and
        keeps what it adds meanwhile in the snapshot (``Snapshot.put``).
        """
        g = self.generation(now_ms)
        gens = self._parts.get(partition) or {}
        current = _find(gens.get(g), fps)
        found = dict(current)
        for fp, packed in _find(gens.get(g - 1), fps).items():
            found.setdefault(fp, packed)
        return Snapshot(self, partition, g, found, current)

    def put_packed(self, partition: int, gen: int, fp: int, packed: int) -> None:
        """Store an entry already decided by a ``Snapshot`` (no search)."""
        ids = self._generation(partition, gen)
        ids.recent[fp] = packed
        if len(ids.recent) >= RUN_IDS:
            ids.freeze()

    def add_run(self, partition: int, gen: int, keys: np.ndarray, values: np.ndarray) -> None:
        """Fingerprints and packed positions as logged (recovery: no per-id Python work)."""
        ids = self._generation(partition, gen)
        ids.freeze()  # keep runs in the order the ids were added
        ids.append(keys, values)

    def _generation(self, partition: int, gen: int) -> _Generation:
        gens = self._parts.setdefault(partition, {})
        ids = gens.get(gen)
        if ids is None:
            ids = gens[gen] = _Generation()
            for old in [k for k in gens if k < gen - 1]:
                del gens[old]
        return ids

    def forget(self, partition: int) -> None:
        self._parts.pop(partition, None)

    def size(self) -> int:
        """Entries held: ids, plus superseded entries whose runs are not merged yet."""
        return sum(ids.size() for gens in self._parts.values() for ids in gens.values())
