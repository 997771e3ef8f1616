"""detect: metrics.rollups -> alerts (topic, lake table, /metrics).

Final windows arrive in event-time order per window size; every alert rule
(``schemas/alerts``) feeds each matching series to its own detector and incident
lifecycle. At start-up the detectors replay the ``rollups`` already in the lake, so a
restarted worker neither forgets its baselines nor fires twice: an incident is identified
by rule, series and the window it started in, and the ``alerts`` view keeps one row per
incident.
"""

from __future__ import annotations

import time
from collections import defaultdict, deque
from typing import Any

import faust
import orjson

from pipeline.alerting.rules import AlertRule, Incident, SeriesState
from pipeline.names import AGENT_DETECT
from pipeline.runtime.context import Context
from pipeline.runtime.streams import in_offset_order, take_batches

WARMUP_INDEX_BASE = 1 << 19


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


def alerts_message(events: list[tuple[str, Incident]], offset: int, base: int) -> bytes:
    """One alerts message; its rows are positioned by the rollups message behind them."""
    return orjson.dumps({"p": 0, "o": offset, "base": base, "rows": alert_rows(events)})


def register(app: faust.App, ctx: Context) -> Any:
    settings = ctx.settings
    metrics = ctx.metrics
    detection = Detection(ctx.alert_rules)
    warmed = [False]

    def warm_up() -> list[tuple[str, Incident]]:
        """Feed the rollups already in the lake so baselines survive restarts.

        Returns the incidents that replay finds but the lake's alerts table lacks (a crash
        between storing a window's rollups and storing its alert), to be sent now.
        """
        from pipeline.lake.views import connect

        con = connect(settings.data_dir, ctx.plan)
        try:
            cur = con.execute(
                'SELECT metric, "window", epoch_ms(window_start), epoch_ms(window_end), '
                "dimensions, value, numerator, denominator FROM rollups ORDER BY window_start"
            )
            cols = ["metric", "window", "window_start", "window_end", "dimensions", "value"]
            cols += ["numerator", "denominator"]
            rows = [dict(zip(cols, row, strict=True)) for row in cur.fetchall()]
            stored = set(
                con.execute(
                    "SELECT alert_id, 'fire' FROM alerts UNION ALL "
                    "SELECT alert_id, 'resolve' FROM alerts WHERE resolved_at IS NOT NULL"
                ).fetchall()
            )
        finally:
            con.close()
        found = detection.feed(rows)
        warmed[0] = True
        missing = [(event, inc) for event, inc in found if (inc.alert_id, event) not in stored]
        # Counters count what this process sends; replayed history only restores the
        # gauge of incidents still open.
        for event, inc in missing:
            observe(event, inc)
        for state in detection.series.values():
            if state.active is not None:
                active_gauge(state.active).set(1)
        return missing

    def active_gauge(inc: Incident) -> Any:
        return metrics.alert_active.labels(inc.rule, inc.metric, inc.severity, inc.dimensions)

    def observe(event: str, inc: Incident) -> None:
        if event == "fire":
            active_gauge(inc).set(1)
            metrics.alerts_fired.labels(inc.rule, inc.severity).inc()
        else:
            active_gauge(inc).set(0)
            metrics.alerts_resolved.labels(inc.rule).inc()

    @app.agent(ctx.topics.rollups, name=AGENT_DETECT)
    async def detect(stream: faust.StreamT) -> None:
        async for events in take_batches(stream, settings.take_max, settings.take_within):
            ordered = in_offset_order(events)
            if not warmed[0] and ordered:
                missing = warm_up()
                if missing:
                    value = alerts_message(missing, ordered[0].message.offset, WARMUP_INDEX_BASE)
                    await ctx.topics.alerts.send(value=value, partition=0)
            for event in ordered:
                m = event.message
                msg = orjson.loads(m.value or b"{}")
                found = detection.feed(msg.get("rows", []))
                for kind, inc in found:
                    observe(kind, inc)
                if found:
                    await ctx.topics.alerts.send(
                        value=alerts_message(found, m.offset, 0), partition=0
                    )

    return detect
