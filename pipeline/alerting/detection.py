"""Every alert rule over every final rollup series: the detection logic of the detect stage.

Pure enough to test without Kafka: rows in, ("fire" | "resolve", incident) out. Final
windows arrive in event-time order per metric and window size (the combine partitions'
finals interleave, a metric's never do); each rule feeds each matching series to
its own detector and incident lifecycle.
"""

from __future__ import annotations

import time
from collections import defaultdict, deque
from typing import Any

import orjson

from pipeline.alerting.rules import AlertRule, Incident, SeriesState


class Detection:
    """All rules over all series; pure enough to test without Kafka."""

    def __init__(self, rules: dict[str, AlertRule]) -> None:
        self.rules = rules
        self.series: dict[tuple[str, str], SeriesState] = {}
        # (rule, series) -> recent windows: (start, value, numerator, denominator, volume)
        self.recent: dict[tuple[str, str], deque[tuple[int, Any, Any, Any, float]]] = {}
        self.seen: dict[tuple[str, str], int] = {}  # (window, metric) -> last start fed

    def feed(self, rows: list[dict[str, Any]]) -> list[tuple[str, Incident]]:
        """Final rollup rows (any order) -> ("fire" | "resolve", incident) in time order."""
        by_window: dict[tuple[str, int], list[dict[str, Any]]] = defaultdict(list)
        for r in rows:
            by_window[(r["window"], int(r["window_start"]))].append(r)
        out: list[tuple[str, Incident]] = []
        for (label, start), all_rows in sorted(by_window.items(), key=lambda kv: kv[0][1]):
            # Rows already fed (replayed from the lake at start-up) are skipped.
            window_rows = [r for r in all_rows if start > self.seen.get((label, r["metric"]), -1)]
            for r in window_rows:
                self.seen[(label, r["metric"])] = start
            values = {(r["metric"], r["dimensions"]): r for r in window_rows}
            for rule in self.rules.values():
                if rule.window != label:
                    continue
                for (metric, dims), r in sorted(self._with_vanished(rule, values).items()):
                    if not rule.matches(metric, label, orjson.loads(dims)):
                        continue
                    volume = 0.0
                    if rule.volume is not None:
                        v = values.get((rule.volume.metric, "{}"))
                        volume = float(v["value"] or 0.0) if v else 0.0
                    key = (rule.name, dims)
                    value, volume = self._smoothed(rule, key, start, r, volume)
                    if rule.volume is not None and volume < rule.volume.min:
                        continue  # too quiet to judge: not fed at all
                    state = self.series.get(key)
                    if state is None:
                        state = self.series[key] = SeriesState(rule, dims, rule.new_detector())
                    event, _ = state.update(start, int(r["window_end"]), value, volume)
                    if event == "fire" and state.active is not None:
                        out.append(("fire", state.active))
                    elif event == "resolve":
                        done = state.closed()
                        if done is not None:
                            out.append(("resolve", done))
        return out

    def _with_vanished(
        self, rule: AlertRule, values: dict[tuple[str, str], dict[str, Any]]
    ) -> dict[tuple[str, str], dict[str, Any]]:
        """A series this rule watched that has no row in a window its metric closed is a
        zero (an event that stopped arriving has no rollup row at all), for counts and
        sums; a ratio without rows is undefined, so it is left out."""
        rows = [r for (m, _), r in values.items() if m == rule.metric]
        if not rows or any(r.get("denominator") is not None for r in rows):
            return values
        sample = rows[0]
        filled = dict(values)
        for name, dims in self.series:
            if name == rule.name and (rule.metric, dims) not in values:
                filled[(rule.metric, dims)] = {
                    **sample,
                    "dimensions": dims,
                    "value": 0.0,
                    "numerator": None,
                    "denominator": None,
                }
        return filled

    def _smoothed(
        self, rule: AlertRule, key: tuple[str, str], start: int, row: dict[str, Any], volume: float
    ) -> tuple[Any, float]:
        if rule.smooth == 1:
            return row["value"], volume
        size = int(row["window_end"]) - start
        recent = self.recent.setdefault(key, deque())
        recent.append((start, row["value"], row.get("numerator"), row.get("denominator"), volume))
        while recent and recent[0][0] <= start - rule.smooth * size:
            recent.popleft()
        total_volume = sum(v for *_, v in recent)
        if all(num is not None and den is not None for _, _, num, den, _ in recent):
            den_sum = sum(den for _, _, _, den, _ in recent)
            value = sum(num for _, _, num, _, _ in recent) / den_sum if den_sum else None
        else:
            value = sum(v or 0.0 for _, v, _, _, _ in recent)
        return value, total_volume


def alert_rows(events: list[tuple[str, Incident]]) -> list[dict[str, Any]]:
    now = int(time.time() * 1000)
    rows = []
    for kind, inc in events:
        row = inc.row()
        end = row.pop("resolved_window_end")
        rows.append(
            {
                **row,
                "kind": kind,
                "window_end": end if kind == "resolve" else row["window_end"],
                "at": now,
            }
        )
    return rows
