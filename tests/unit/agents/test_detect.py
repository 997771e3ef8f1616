"""The detect agent's wiring: it reads final rollups and writes the alerts topic."""

from __future__ import annotations

import asyncio
from pathlib import Path

from agents.detect import alerts_message
from pipeline import names
from pipeline.alerting.detection import Detection
from pipeline.alerting.rules import load_alert_rules
from pipeline.app import create_app
from pipeline.runtime import wire
from pipeline.settings import Settings


def test_detect_reads_rollups_and_writes_alerts(tmp_path: Path) -> None:
    app, ctx = create_app(Settings(data_dir=tmp_path, topic_prefix="x."), ensure_topics=False)
    agent = app.agents[names.AGENT_DETECT]
    assert set(agent.channel.topics) == {"x.metrics.rollups"}
    assert set(ctx.topics.alerts.topics) == {"x.alerts"}
    assert set(app.agents[names.AGENT_SINK_ALERTS].channel.topics) == {"x.alerts"}


def test_alerts_message_positions_incident_rows_by_the_rollups_message() -> None:
    from tests.unit.alerting.test_detection import window

    rules = load_alert_rules()
    d = Detection({"payment_success_rate_drop": rules["payment_success_rate_drop"]})
    found = []
    for i in range(60):
        found += d.feed(window(i, 0.3 if i >= 40 else 0.9, 60))
    assert found
    assert found[0][0] == "fire"
    msg = wire.PositionedRows.decode(alerts_message(found[:1], offset=17, base=3))
    assert (msg.partition, msg.offset, msg.base) == (0, 17, 3)
    (row,) = msg.rows
    assert row["kind"] == "fire"
    assert row["rule"] == "payment_success_rate_drop"
    assert row["alert_id"] == found[0][1].alert_id


def test_incident_gauges_go_when_detection_moves_and_come_back_from_the_lake(
    tmp_path: Path,
) -> None:
    """The worker that detected keeps no gauge once detect's input is another worker's
    (stale 1s never resolved); getting it back, it shows what the lake says, not its
    stale state."""
    from faust.types import TP

    from agents.detect import Detect
    from tests.unit.alerting.test_detection import window

    _, ctx = create_app(Settings(data_dir=tmp_path, topic_prefix="x."), ensure_topics=False)
    stage = Detect(ctx)
    rollups = TP("x.metrics.rollups", 0)
    labels = {
        "rule": "payment_success_rate_drop",
        "metric": "payment_success_rate",
        "severity": "critical",
        "dimensions": "{}",
    }

    def active() -> float | None:
        return ctx.metrics.registry.get_sample_value("trackflow_alert_active", labels)

    stage.assigned({rollups, TP("x.events.raw", 0)})
    stage.warmed = True  # an empty lake: nothing to replay
    for i in range(60):
        stage.feed(window(i, 0.3 if i >= 40 else 0.9, 60))
    assert active() == 1
    stage.assigned({TP("x.events.raw", 0)})  # a rebalance gave detect to another worker
    assert active() is None
    stage.feed(window(60, 0.3, 60))  # the rest of a take in flight sets nothing
    assert active() is None
    stage.forget_if_moved()
    assert not stage.warmed, "a stale detection state must be rebuilt from the lake"
    assert stage.detection.series == {}
    stage.assigned({rollups})
    asyncio.run(stage.warm_up())  # the lake holds no rollups here: no incident open
    assert active() is None
