"""detect: metrics.rollups -> alerts (topic, lake table, /metrics).

The detection itself is ``pipeline.alerting.detection``. At start-up the detectors replay
the ``rollups`` already in the lake, so a restarted worker neither forgets its baselines nor
fires twice: an incident is identified by rule, series and the window it started in, and
the ``alerts`` view keeps one row per incident.
"""

from __future__ import annotations

import asyncio
from typing import Any

import faust

from pipeline.alerting.detection import Detection, alert_rows
from pipeline.alerting.rules import Incident
from pipeline.names import AGENT_DETECT
from pipeline.runtime import wire
from pipeline.runtime.context import Context
from pipeline.runtime.ordered_input import OrderedInput, admit
from pipeline.runtime.streams import take_batches

WARMUP_INDEX_BASE = 1 << 19

_STORED_ROLLUPS = (
    'SELECT metric, "window", epoch_ms(window_start), epoch_ms(window_end), '
    "dimensions, value, numerator, denominator FROM rollups ORDER BY window_start"
)
_ROLLUP_COLUMNS = [
    "metric",
    "window",
    "window_start",
    "window_end",
    "dimensions",
    "value",
    "numerator",
    "denominator",
]
_STORED_ALERT_EVENTS = (
    "SELECT alert_id, 'fire' FROM alerts UNION ALL "
    "SELECT alert_id, 'resolve' FROM alerts WHERE resolved_at IS NOT NULL"
)


def alerts_message(events: list[tuple[str, Incident]], offset: int, base: int) -> bytes:
    """One alerts message; its rows are positioned by the rollups message behind them."""
    return wire.PositionedRows(0, offset, base, alert_rows(events)).encode()


def register(app: faust.App, ctx: Context) -> Any:
    stage = Detect(ctx)
    ordered_input = OrderedInput(app, AGENT_DETECT, ctx.metrics, ctx.start_offsets)

    @app.on_partitions_assigned.connect  # type: ignore[arg-type]
    async def follow_detection(sender: Any, assigned: set[Any], **kwargs: Any) -> None:
        stage.assigned(assigned)

    @app.agent(ctx.topics.rollups, name=AGENT_DETECT)
    async def detect(stream: faust.StreamT) -> None:
        settings = ctx.settings
        async for events in take_batches(stream, settings.take_max, settings.take_within):
            ordered = await admit(ordered_input, events)
            stage.forget_if_moved()
            if not stage.warmed and ordered:
                missing = await stage.warm_up()
                if missing:
                    value = alerts_message(missing, ordered[0].message.offset, WARMUP_INDEX_BASE)
                    await ctx.topics.alerts.send(value=value, partition=0)
            for event in ordered:
                m = event.message
                found = stage.feed(wire.PositionedRows.decode(m.value).rows)
                if found:
                    await ctx.topics.alerts.send(
                        value=alerts_message(found, m.offset, 0), partition=0
                    )

    return detect


class Detect:
    """The detection state of this worker and the alert gauges and counters it drives."""

    def __init__(self, ctx: Context) -> None:
        self.ctx = ctx
        self.metrics = ctx.metrics
        self.detection = Detection(ctx.domain.alert_rules)
        self.warmed = False
        self.inputs = set(ctx.topics.rollups.topics)
        self.holds = False  # detect's input is assigned to this worker
        self.moved = False  # it went to another worker since this state was built

    def assigned(self, assignment: set[Any]) -> None:
        """A rebalance's new assignment. When detection moves to another worker, this
        worker's incident gauges go at once: they would stay 1 after the new detector
        resolved the incident, and an alert would never resolve. Its detection state is
        stale from then on, so if detection comes back it is rebuilt from the lake."""
        holds = any(tp.topic in self.inputs for tp in assignment)
        if self.holds and not holds:
            self.metrics.alert_active.clear()
            self.moved = True
        self.holds = holds

    def forget_if_moved(self) -> None:
        """Between takes (never during one): drop the state of a detection that moved."""
        if self.moved:
            self.moved = False
            self.detection = Detection(self.ctx.domain.alert_rules)
            self.warmed = False

    def feed(self, rows: list[dict[str, Any]]) -> list[tuple[str, Incident]]:
        found = self.detection.feed(rows)
        for kind, inc in found:
            self.observe(kind, inc)
        return found

    async def warm_up(self) -> list[tuple[str, Incident]]:
        """Feed the rollups already in the lake so baselines survive restarts.

        Returns the incidents that replay finds but the lake's alerts table lacks (a crash
        between storing a window's rollups and storing its alert), to be sent now. The lake
        is read in a thread: on the event loop it blocked the worker for seconds at every
        takeover of detect, its other agents and its group heartbeat with it.
        """
        rows, stored = await asyncio.to_thread(stored_history, self.ctx)
        found = self.detection.feed(rows)
        self.warmed = True
        missing = [(event, inc) for event, inc in found if (inc.alert_id, event) not in stored]
        # Counters count what this process sends; replayed history only restores the
        # gauge of incidents still open.
        for event, inc in missing:
            self.observe(event, inc)
        for state in self.detection.series.values():
            if state.active is not None and self.holds:
                self.active_gauge(state.active).set(1)
        return missing

    def active_gauge(self, inc: Incident) -> Any:
        return self.metrics.alert_active.labels(inc.rule, inc.metric, inc.severity, inc.dimensions)

    def observe(self, event: str, inc: Incident) -> None:
        if event == "fire":
            self.metrics.alerts_fired.labels(inc.rule, inc.severity).inc()
        else:
            self.metrics.alerts_resolved.labels(inc.rule).inc()
        if self.holds:  # not from a take still in flight after detection moved
            self.active_gauge(inc).set(1 if event == "fire" else 0)


def stored_history(ctx: Context) -> tuple[list[dict[str, Any]], set[tuple[str, str]]]:
    """The lake's rollups, oldest first, and the (alert_id, fire|resolve) events stored.

    Only the two views it reads are created: binding the events view reads every event
    file's footer (``pipeline.lake.views.connect``).
    """
    from pipeline.lake.views import connect

    con = connect(ctx.settings.data_dir, ctx.domain.plan, only=("rollups", "alerts"))
    try:
        cur = con.execute(_STORED_ROLLUPS)
        rows = [dict(zip(_ROLLUP_COLUMNS, row, strict=True)) for row in cur.fetchall()]
        stored = {(str(a), str(e)) for a, e in con.execute(_STORED_ALERT_EVENTS).fetchall()}
    finally:
        con.close()
    return rows, stored
