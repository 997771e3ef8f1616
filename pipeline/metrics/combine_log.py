"""The combine state's changelog: records bounded by the input, snapshots bounding replay.

Split from ``pipeline.metrics.combine`` (the window logic) as a mixin of ``CombineState``:
what a take changed goes to the changelog as a group of records, recovery applies whole
groups only, and every so often a snapshot group carries the whole state so that a
takeover reads the changelog from there, not from the deployment's first day.
"""

from __future__ import annotations

from typing import Any

import orjson

from pipeline.metrics.definitions import MetricDef
from pipeline.metrics.series import SeriesKey, decode, encode, kind_of

SET_KINDS = ("set", "persons")
MAX_RECORD_BYTES = 256 * 1024  # a changelog record must fit in one Kafka message (1 MB)
ADD_CHUNK = 2000  # set elements per "add" entry (identifiers are at most a few 100 bytes)
SNAPSHOT_MIN_BYTES = 256 * 1024  # deltas logged before a snapshot (the default setting)

Outbox = tuple[int, int, list[dict[str, Any]]]


class LoggedState:
    """The changelog side of ``CombineState`` (whose ``__init__`` sets these)."""

    defs: dict[str, MetricDef]
    applied: dict[int, int]
    wm: dict[int, int]
    closed: dict[int, int]
    open: dict[SeriesKey, Any]
    late: int
    offset: int
    fevents: dict[str, dict[str, list[list[int]]]]
    flast: dict[str, dict[str, int]]
    fclosed: dict[str, int]
    needs: dict[tuple[int, int], int]
    fneeds: dict[str, dict[int, int]]
    unsent: Outbox | None
    snap_at: int
    logged: int
    snap_bytes: int
    _group: list[dict[str, Any]]
    _fdirty: set[tuple[str, str]]
    _dirty: set[SeriesKey]
    _added: dict[SeriesKey, set[Any]]
    _deleted: set[SeriesKey]
    _progress_dirty: bool

    def reset(self) -> None:
        raise NotImplementedError

    def wants_snapshot(self, min_bytes: int = SNAPSHOT_MIN_BYTES) -> bool:
        """Whether the deltas logged since the last snapshot outweigh a new one: at least
        ``min_bytes`` and twice the last snapshot's size. A replay from the newest
        snapshot then reads at most about three snapshots' worth, however long the
        deployment has run, and snapshots cost at most as much as the deltas."""
        return self.logged >= max(min_bytes, 2 * self.snap_bytes)

    def take_records(
        self,
        max_bytes: int = MAX_RECORD_BYTES,
        outbox: Outbox | None = None,
        snapshot: bool = False,
    ) -> list[dict[str, Any]]:
        """What changed since the last records, as changelog records of at most about
        ``max_bytes`` each (none when nothing changed), plus the ``outbox``: final rows
        about to be sent at position (offset, base).

        Bounded by the input since the last call, never by the state: counts, sums and
        sketches are logged whole (a sketch has a fixed size), exact sets as the elements
        added. The last record carries the progress (applied offsets, watermarks, closed
        windows) and ends the group: recovery applies a group only once its last record
        is read, so a crash between records leaves the state as it was before the take.

        ``snapshot``: the whole state instead of the changes, in records of the same
        bound; its first record says ``reset``, so recovery starts the state anew there and
        can begin reading at that record (``snap_at``).
        """
        if snapshot:
            parts = self._snapshot_parts(outbox)
        elif not (
            self._dirty
            or self._added
            or self._deleted
            or self._fdirty
            or self._progress_dirty
            or outbox
        ):
            return []
        else:
            parts = [("out", row) for row in (outbox[2] if outbox else [])]
            parts += [
                ("set", [*k, encode(kind_of(self.defs[k[0]]), self.open[k])])
                for k in sorted(self._dirty)
            ]
            parts += self._add_parts({k: self._added[k] for k in sorted(self._added)})
            parts += [("del", list(k)) for k in sorted(self._deleted)]
            parts += self._funnel_parts(sorted(self._fdirty))
        records = _pack(parts, max_bytes)
        for i, record in enumerate(records):
            record["part"] = [i, len(records)]  # a group's records, numbered
        if snapshot:
            records[0]["reset"] = True
        records[-1].update(
            applied=self.applied,
            wm=self.wm,
            closed=self.closed,
            late=self.late,
            offset=self.offset,
            fclosed=self.fclosed,
            needs=[[size, start, n] for (size, start), n in sorted(self.needs.items())],
            fneeds={m: sorted(hours.items()) for m, hours in self.fneeds.items() if hours},
            out_at=[outbox[0], outbox[1]] if outbox else None,
            snap_at=self.snap_at,
        )
        self._dirty.clear()
        self._added.clear()
        self._deleted.clear()
        self._fdirty.clear()
        self._progress_dirty = False
        dumped = [orjson.dumps(r, option=orjson.OPT_NON_STR_KEYS) for r in records]
        size = sum(len(d) for d in dumped)
        if snapshot:
            self.logged, self.snap_bytes = 0, size
        else:
            self.logged += size
        return [orjson.loads(d) for d in dumped]

    def _snapshot_parts(self, outbox: Outbox | None) -> list[tuple[str, Any]]:
        parts: list[tuple[str, Any]] = [("out", row) for row in (outbox[2] if outbox else [])]
        sets = {}
        for k in sorted(self.open):
            kind = kind_of(self.defs[k[0]])
            if kind in SET_KINDS:
                sets[k] = self.open[k]
            else:
                parts.append(("set", [*k, encode(kind, self.open[k])]))
        parts += self._add_parts(sets)
        keys = {(m, n) for m, by in self.fevents.items() for n in by}
        keys |= {(m, n) for m, by in self.flast.items() for n in by}
        return parts + self._funnel_parts(sorted(keys))

    @staticmethod
    def _add_parts(sets: dict[SeriesKey, set[Any]]) -> list[tuple[str, Any]]:
        """Set elements in chunks (an empty set still makes its window: one empty add)."""
        parts: list[tuple[str, Any]] = []
        for k, values in sets.items():
            elements = sorted(values)
            for i in range(0, max(len(elements), 1), ADD_CHUNK):
                parts.append(("add", [*k, elements[i : i + ADD_CHUNK]]))
        return parts

    def _funnel_parts(self, keys: list[tuple[str, str]]) -> list[tuple[str, Any]]:
        return [
            ("funnel", [m, n, self.fevents.get(m, {}).get(n), self.flast.get(m, {}).get(n)])
            for m, n in keys
        ]

    def apply_record(self, record: dict[str, Any]) -> None:
        """Recovery: buffer the records of a group until its last one, then apply them.

        A group cut short by a crash is dropped when the next group starts, never glued
        to it (records before 2026-11-30 carry no ``part``: each group ends at progress).
        """
        part = record.get("part")
        if part is not None and (part[0] == 0 or part[0] != len(self._group)):
            self._group = []  # a new group; or the tail of one whose start is missing
            if part[0] != 0:
                return
        self._group.append(record)
        if "applied" not in record:
            return
        group, self._group = self._group, []
        if part is not None and len(group) != part[1]:
            return
        if group[0].get("reset"):  # a snapshot: the whole state, nothing before it counts
            self.reset()
        for r in group:
            self._apply(r)
        at = record.get("out_at")
        rows = [row for r in group for row in r.get("out", [])]
        self.unsent = (int(at[0]), int(at[1]), rows) if at else None

    def _apply(self, record: dict[str, Any]) -> None:
        if "applied" in record:
            self.applied = {int(k): int(v) for k, v in record["applied"].items()}
            self.wm = {int(k): int(v) for k, v in record["wm"].items()}
            self.closed = {int(k): int(v) for k, v in record["closed"].items()}
            self.late = int(record.get("late", 0))
            self.offset = int(record.get("offset", -1))
            self.fclosed = {k: int(v) for k, v in record.get("fclosed", {}).items()}
            self.needs = {(int(z), int(t)): int(n) for z, t, n in record.get("needs", [])}
            self.fneeds = {
                m: {int(h): int(n) for h, n in hours}
                for m, hours in record.get("fneeds", {}).items()
            }
            self.snap_at = int(record.get("snap_at", -1))
        for m, n, evs, last in record.get("funnel", []):
            if evs:
                self.fevents.setdefault(m, {})[n] = evs
            else:
                self.fevents.get(m, {}).pop(n, None)
            if last is not None:
                self.flast.setdefault(m, {})[n] = int(last)
            else:
                self.flast.get(m, {}).pop(n, None)
        for m, size, start, dims in record.get("del", []):
            self.open.pop((m, int(size), int(start), dims), None)
        for m, size, start, dims, raw in record.get("set", []):
            d = self.defs.get(m)
            if d is not None:
                self.open[(m, int(size), int(start), dims)] = decode(kind_of(d), raw)
        for m, size, start, dims, elements in record.get("add", []):
            if m in self.defs:
                key = (m, int(size), int(start), dims)
                self.open.setdefault(key, set()).update(elements)


def _pack(parts: list[tuple[str, Any]], max_bytes: int) -> list[dict[str, Any]]:
    """Group record parts into records of at most about ``max_bytes`` (at least one)."""
    records: list[dict[str, Any]] = [{}]
    size = 0
    for kind, part in parts:
        n = len(orjson.dumps(part, option=orjson.OPT_NON_STR_KEYS))
        if size and size + n > max_bytes:
            records.append({})
            size = 0
        records[-1].setdefault(kind, []).append(part)
        size += n
    return records
