"""The stall watch: an owned partition with messages waiting that nothing reads."""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

from faust.types import TP

from pipeline.runtime.stall_watch import StallWatch, report
from pipeline.runtime.telemetry import PipelineMetrics

RAW = TP("x.events.raw", 0)
CHANGELOG = TP("x-dedup-changelog", 0)
LEADER = TP("x-__assignor-__leader", 0)  # assigned, read by no agent: never a stall


class FakeApp:
    def __init__(self) -> None:
        self.rebalancing = False
        self.agents = {
            "validate": SimpleNamespace(channel=SimpleNamespace(topics=("x.events.raw",)))
        }
        self.consumer = SimpleNamespace(
            assignment=lambda: {RAW, CHANGELOG, LEADER},
            highwater=lambda tp: self.end[tp],
            _read_offset={},
            _active_partitions={CHANGELOG},
            _paused_partitions={RAW},
            _buffered_partitions=set(),
            _committed_offset={RAW: 4},
        )
        self.end: dict[Any, int] = {RAW: 10, CHANGELOG: 50, LEADER: 3}


def test_a_partition_with_waiting_messages_and_no_reads_is_reported_once() -> None:
    now = [0.0]
    app = FakeApp()
    watch = StallWatch(30, clock=lambda: now[0])
    app.consumer._read_offset[RAW] = 4
    assert watch.check(app) == []
    now[0] = 29
    assert watch.check(app) == []
    now[0] = 31
    (stall,) = watch.check(app)
    assert (stall.tp, stall.read, stall.end) == (RAW, 4, 10)
    assert stall.state["paused"] is True
    assert stall.state["active"] is False
    assert stall.state["committed"] == 4
    now[0] = 90
    assert watch.check(app) == [], "reported again in the same episode"
    app.consumer._read_offset[RAW] = 9  # reading again: a new episode may be reported
    assert watch.check(app) == []
    now[0] = 200
    assert watch.check(app) == [], "nothing waits any more (read 9, end 10)"


def test_a_busy_partition_or_a_rebalance_is_not_a_stall() -> None:
    now = [0.0]
    app = FakeApp()
    watch = StallWatch(30, clock=lambda: now[0])
    app.end[RAW] = 1000
    for t in range(0, 120, 5):
        now[0] = t
        app.consumer._read_offset[RAW] = t  # reading along
        assert watch.check(app) == []
    app.rebalancing = True
    now[0] = 500
    assert watch.check(app) == []
    app.rebalancing = False
    assert watch.check(app) == []  # the clock starts again after the rebalance
    now[0] = 520
    assert watch.check(app) == []
    now[0] = 531
    assert len(watch.check(app)) == 1


def test_a_report_is_counted_and_logged(caplog: Any) -> None:
    now = [0.0]
    app = FakeApp()
    watch = StallWatch(1, clock=lambda: now[0])
    watch.check(app)
    now[0] = 2
    stalls = watch.check(app)
    metrics = PipelineMetrics()
    report(stalls, metrics)
    assert (
        metrics.registry.get_sample_value("trackflow_input_stalls_total", {"topic": "x.events.raw"})
        == 1
    )
    assert "x.events.raw[0]: 10 messages waiting" in caplog.text
