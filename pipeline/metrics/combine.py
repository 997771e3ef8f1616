"""Phase 2 of the metric aggregation: partials of every partition, combined and finalised.

``CombineState`` merges the partials from every source partition (sums, counts, set and
HyperLogLog unions) and finalises a window once every partition's watermark has passed it,
computing ratios from their parts. Funnels keep their step events per identifier until
their hour closes, then group identifiers into persons through the identity map and run
``pipeline.metrics.funnel.entries``. Its changes are logged as changelog records
(``take_records``) that rebuild it after a restart (``apply_record``).

The records of one take form a group that is applied whole or not at all, and a group
that closed windows carries their final rows (the outbox): the rows are logged before
they are sent, so a crash between the two re-sends them at the same position after the
restart instead of closing the windows again at another one (stored twice).
"""

from __future__ import annotations

from collections.abc import Callable
from itertools import dropwhile
from typing import Any

from pipeline.metrics.combine_log import SET_KINDS, LoggedState
from pipeline.metrics.definitions import MetricDef, seconds
from pipeline.metrics.funnel import entries
from pipeline.metrics.series import SeriesKey, decode, dims_json, kind_of, merge, result
from pipeline.metrics.windows import NO_WATERMARK, closable, window_end, window_label


class CombineState(LoggedState):
    """Open windows of every source partition, merged; plus what has been applied.

    ``applied[p]`` is the last source offset (events.stitched partition p) merged: a
    partial message at or below it is a replay and is skipped, so a restart never counts
    an event twice. ``closed[size]`` is the end of the last finalised window of that size;
    a partial for a window at or below it arrived after its window closed (late).

    Windows of persons (uv resolved through the map, funnels) wait for One ID as well:
    ``needs`` (window) and ``fneeds`` (funnel, event hour) hold the highest identity.links
    offset their partials carried (``l``), and they close only once the map on this worker
    has reached it (``known``): resolved earlier, an event whose login link is still on its
    way counts as another person, or as the wrong one.
    """

    def __init__(self, defs: dict[str, MetricDef], partitions: int, lateness_s: int) -> None:
        self.defs = defs
        self.partitions = partitions
        self.lateness_s = lateness_s
        self.applied: dict[int, int] = {}
        self.wm: dict[int, int] = {}
        self.closed: dict[int, int] = {}
        self.open: dict[SeriesKey, Any] = {}
        self.late = 0
        self.offset = -1  # last metrics.partials offset read (positions of idle closes)
        # Funnels: step events per identifier of open hours, last entry per identifier,
        # end of the last closed hour; ``resolve`` maps an identifier to its person.
        self.fevents: dict[str, dict[str, list[list[int]]]] = {}
        self.flast: dict[str, dict[str, int]] = {}
        self.fclosed: dict[str, int] = {}
        self.resolve: Any = lambda n: n
        self.needs: dict[tuple[int, int], int] = {}  # (size, start) -> identity.links offset
        self.fneeds: dict[str, dict[int, int]] = {}  # funnel -> event hour -> offset
        self.blocked = -1  # what the first window closable but for One ID needs (-1: none)
        # Quiet partitions (as Flink's idle sources): one that sent no partial for
        # ``idle_ms`` of processing time stops holding windows open if its input is
        # drained (``close_ready``'s ``drained``). Not logged: after a restart every
        # partition counts as active until it has been quiet that long.
        self.idle_ms: int | None = None
        self.heard: dict[int, int] = {}  # partition -> processing time of its last partial
        self.started_ms: int | None = None
        self._fdirty: set[tuple[str, str]] = set()
        self._dirty: set[SeriesKey] = set()
        self._added: dict[SeriesKey, set[Any]] = {}  # set kinds: elements new since a record
        self._deleted: set[SeriesKey] = set()
        self._progress_dirty = False
        # Outbox: final rows logged but maybe not sent, (offset, base, rows); set by
        # recovery from the last group, cleared once the rows were delivered.
        self.unsent: tuple[int, int, list[dict[str, Any]]] | None = None
        self._group: list[dict[str, Any]] = []  # records of a group whose end is unread
        # Snapshots bound a recovery's replay: ``snap_at`` is the changelog offset where
        # the newest complete snapshot group starts (-1: none), logged with the progress;
        # ``logged`` the bytes of delta records since it, ``snap_bytes`` its own size.
        self.snap_at = -1
        self.logged = 0
        self.snap_bytes = 0

    # -- applying partials ----------------------------------------------------------

    def apply(self, message: dict[str, Any], now_ms: int | None = None) -> bool:
        p, offset = int(message["p"]), int(message["o"])
        if now_ms is not None:
            self.heard[p] = now_ms
            self.started_ms = now_ms if self.started_ms is None else self.started_ms
        if offset <= self.applied.get(p, -1):
            return False
        links = int(message.get("l", -1))
        for m, size, start, dims, raw in message["s"]:
            d = self.defs.get(m)
            if d is None:
                continue  # a metric removed since the partial was made
            if window_end(start, size) <= self.closed.get(size, NO_WATERMARK):
                self.late += 1
                continue
            key = (m, int(size), int(start), dims)
            if links >= 0 and d.resolve_persons:
                window = (int(size), int(start))
                self.needs[window] = max(self.needs.get(window, -1), links)
            kind = kind_of(d)
            value = decode(kind, raw)
            if kind in SET_KINDS:  # logged as what was added: a record stays batch-sized
                self._added.setdefault(key, set()).update(value)
                value = set(value)  # merge() updates in place; keep the logged copy apart
            else:
                self._dirty.add(key)
            self.open[key] = merge(kind, self.open.get(key), value)
            self._deleted.discard(key)
        for m, events in (message.get("f") or {}).items():
            if m not in self.defs:
                continue
            store = self.fevents.setdefault(m, {})
            closed = self.fclosed.get(m, NO_WATERMARK)
            needs = self.fneeds.setdefault(m, {})
            for n, t, mask in events:
                if t < closed:
                    self.late += 1
                    continue
                store.setdefault(n, []).append([int(t), int(mask)])
                self._fdirty.add((m, n))
                if links >= 0:
                    hour = int(t) - int(t) % 3_600_000
                    needs[hour] = max(needs.get(hour, -1), links)
        self.applied[p] = offset
        self.wm[p] = max(self.wm.get(p, NO_WATERMARK), int(message["wm"]))
        self._progress_dirty = True
        return True

    # -- finalising -----------------------------------------------------------------

    def _windows(self) -> list[tuple[int, int]]:
        return sorted(
            {(size, start) for (_, size, start, _) in self.open},
            key=lambda w: (w[1] + w[0] * 1000, w[0]),
        )

    def silent(self, now_ms: int) -> list[int]:
        """Source partitions without a partial for ``idle_ms``: quiet if also drained."""
        if self.idle_ms is None:
            return []
        since = self.started_ms if self.started_ms is not None else now_ms
        return [
            p for p in range(self.partitions) if now_ms - self.heard.get(p, since) >= self.idle_ms
        ]

    def _marks(self, now_ms: int | None, drained: Callable[[int], bool] | None) -> list[int]:
        """Watermarks of the partitions that count: all but the silent and drained ones."""
        quiet = set() if now_ms is None else set(self.silent(now_ms))
        if drained is not None:
            quiet = {p for p in quiet if drained(p)}
        return [self.wm.get(p, NO_WATERMARK) for p in range(self.partitions) if p not in quiet]

    def close_ready(
        self,
        funnels: bool = True,
        now_ms: int | None = None,
        drained: Callable[[int], bool] | None = None,
        known: int | None = None,
    ) -> list[dict[str, Any]]:
        """Windows every counted partition's watermark has passed (end + lateness).

        With ``now_ms``, partitions silent for ``idle_ms`` whose input is ``drained`` do
        not count; their later partials for closed windows are late, and counted. Silence
        alone is no proof of quiet: a partition whose upstream owner died is silent with a
        backlog, and its partials would all come late (issue 13's soak). Without
        ``drained`` (the state alone cannot know) every silent partition is taken as quiet.

        With ``known`` (how far into identity.links this worker's map is), a window of
        persons that needs more waits, and every window ending after it with it: finals
        leave in order of their ends.
        """
        marks = self._marks(now_ms, drained)
        ready = [
            w for w in self._windows() if closable(window_end(w[1], w[0]), self.lateness_s, marks)
        ]
        self.blocked = -1
        if known is not None:
            waiting = list(dropwhile(lambda w: self.needs.get(w, -1) <= known, ready))
            ready = ready[: len(ready) - len(waiting)]
            self.blocked = self.needs[waiting[0]] if waiting else -1
        rows = self._finalise(ready)
        if funnels:
            for m, d in self.defs.items():
                if d.type == "funnel" and d.funnel is not None:
                    within = seconds(d.funnel.within)
                    for hour in self._funnel_hours(m):
                        if not closable(hour + 3_600_000, self.lateness_s + within, marks):
                            break
                        if known is not None and (need := self.funnel_need(m, hour)) > known:
                            self.blocked = max(self.blocked, need)
                            break
                        rows.extend(self._close_funnel(m, hour))
        return rows

    def funnel_need(self, m: str, hour: int) -> int:
        """The links ``m``'s ``hour`` needs: of its events and those within ``within`` after."""
        d = self.defs[m]
        assert d.funnel is not None
        until = hour + 3_600_000 + seconds(d.funnel.within) * 1000
        return max((n for h, n in self.fneeds.get(m, {}).items() if h < until), default=-1)

    def waiting_for(self) -> int:
        """The highest identity.links offset an open window or funnel hour needs (-1: none)."""
        needs = [*self.needs.values(), *(n for f in self.fneeds.values() for n in f.values())]
        return max(needs, default=-1)

    def close_all(self) -> list[dict[str, Any]]:
        """Idle input: finalise every open window (the last windows of a replay)."""
        rows = self._finalise(self._windows())
        for m in list(self.fevents):
            for hour in self._funnel_hours(m):
                rows.extend(self._close_funnel(m, hour))
        return rows

    def _funnel_hours(self, m: str) -> list[int]:
        hours = {
            t - t % 3_600_000
            for evs in self.fevents.get(m, {}).values()
            for t, mask in evs
            if mask & 1
        }
        return sorted(hours)

    def _close_funnel(self, m: str, hour: int) -> list[dict[str, Any]]:
        d = self.defs[m]
        assert d.funnel is not None
        steps, within = len(d.funnel.steps), seconds(d.funnel.within) * 1000
        end = hour + 3_600_000
        events, last = self.fevents.get(m, {}), self.flast.setdefault(m, {})
        persons: dict[str, list[str]] = {}
        for n in set(events) | set(last):
            persons.setdefault(self.resolve(n), []).append(n)
        counts = [0] * steps
        for nodes in persons.values():
            merged = sorted((e[0], e[1]) for n in nodes for e in events.get(n, ()))
            prev = max((last[n] for n in nodes if n in last), default=None)
            found = entries(merged, steps, within, prev, since=hour, until=end)
            for _, k in found:
                for s in range(k):
                    counts[s] += 1
            if found:
                for n in nodes:
                    last[n] = found[-1][0]
                    self._fdirty.add((m, n))
        for n in [n for n, t in last.items() if t + within <= end]:
            # Events after ``end`` are at least ``within`` after this entry: it no longer
            # matters, so funnel state lasts as long as the conversion window, not forever.
            del last[n]
            self._fdirty.add((m, n))
        for n in list(events):
            kept = [e for e in events[n] if e[0] >= end]
            if kept != events[n]:
                self._fdirty.add((m, n))
            if kept:
                events[n] = kept
            else:
                del events[n]
        self.fclosed[m] = max(self.fclosed.get(m, NO_WATERMARK), end)
        needs = self.fneeds.get(m, {})
        for h in [h for h in needs if h < end]:
            del needs[h]  # their events are gone with the hour
        self._progress_dirty = True
        if not counts[0]:
            return []
        return [
            _row(m, "1h", hour, end, dims_json({"step": s + 1}), float(counts[s]), None, None)
            for s in range(steps)
        ]

    def _finalise(self, windows: list[tuple[int, int]]) -> list[dict[str, Any]]:
        rows: list[dict[str, Any]] = []
        for size, start in windows:
            rows.extend(self.values(size, start))
            for key in [k for k in self.open if k[1] == size and k[2] == start]:
                del self.open[key]
                self._dirty.discard(key)
                self._added.pop(key, None)
                self._deleted.add(key)
            self.needs.pop((size, start), None)
            end = window_end(start, size)
            self.closed[size] = max(self.closed.get(size, NO_WATERMARK), end)
            self._progress_dirty = True
        return rows

    def values(self, size: int, start: int) -> list[dict[str, Any]]:
        """Rows of one window from its open accumulators (final when the window closes)."""
        label, end = window_label(size), window_end(start, size)
        rows = []
        found: dict[tuple[str, str], float] = {}
        for (m, s, st, dims), acc in sorted(self.open.items(), key=lambda kv: kv[0]):
            if s != size or st != start:
                continue
            value = result(kind_of(self.defs[m]), acc, self.resolve)
            found[(m, dims)] = value
            rows.append(_row(m, label, start, end, dims, value, None, None))
        for d in self.defs.values():
            if d.type != "ratio" or size not in d.window_seconds:
                continue
            n = found.get((str(d.numerator), "{}"))
            q = found.get((str(d.denominator), "{}"))
            if n is None and q is None:
                continue
            num, den = n or 0.0, q or 0.0
            rows.append(_row(d.name, label, start, end, "{}", num / den if den else None, num, den))
        return rows

    def provisional(self) -> list[dict[str, Any]]:
        return [row for size, start in self._windows() for row in self.values(size, start)]

    def reset(self) -> None:
        resolve, idle_ms = self.resolve, self.idle_ms
        self.__init__(self.defs, self.partitions, self.lateness_s)  # type: ignore[misc]
        self.resolve, self.idle_ms = resolve, idle_ms


def _row(
    metric: str,
    label: str,
    start: int,
    end: int,
    dims: str,
    value: float | None,
    num: float | None,
    den: float | None,
) -> dict[str, Any]:
    return {
        "metric": metric,
        "window": label,
        "window_start": start,
        "window_end": end,
        "dimensions": dims,
        "value": value,
        "numerator": num,
        "denominator": den,
    }
