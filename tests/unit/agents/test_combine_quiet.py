"""The combine stage asks the broker before taking silence for quiet (issue 13's soak).

A source partition whose aggregate owner was SIGKILLed sends nothing while its input has a
backlog; nor does this worker's own consumer lag see partitions other workers own. So a
silent source partition stops holding windows, and the idle close closes everything, only
once the consumer group has read the input to the end, and never when the broker cannot
say. ``FakeGroup`` stands for the broker.
"""

from __future__ import annotations

import time
from pathlib import Path

import pytest

import agents.combine
from agents.combine import IDLE_INDEX_BASE, QUIET_RECHECK_MS
from tests.unit.agents.test_combine import (
    MIN,
    PAGE_VIEW,
    T0,
    Harness,
    partial,
    pv_events,
    values,
)

IDLE_MS = 60_000  # TRACKFLOW_PARTITION_IDLE_SECONDS' default, which the harness keeps
STITCHED_1 = ("x.events.stitched", 1)
PARTIALS_0 = ("x.metrics.partials", 0)


class Clock:
    """The processing time the stage reads (``_monotonic_ms``), moved by the test."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.now = 1_000_000
        monkeypatch.setattr(agents.combine, "_monotonic_ms", lambda: self.now)


def idle_ready(h: Harness) -> None:
    """Open windows, the first rebalance done, no input for longer than the idle time."""
    h.process(
        (7, partial(0, 1, T0 + 30_000, pv_events(60, T0, 2))),
        (8, partial(1, 1, T0 + 20_000, pv_events(60, T0, 1))),
    )
    h.stage.ready = True
    h.stage.last_input = time.monotonic() - 1.0


def test_no_idle_close_while_the_broker_cannot_say_what_the_group_read(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    h = Harness(tmp_path, monkeypatch)
    idle_ready(h)
    h.group.down = True
    h.close_if_idle()
    assert h.published == [], "closed without knowing whether input is left"
    assert h.stage.last_input > time.monotonic() - 1.0  # asks again after another idle time
    h.group.down = False
    h.stage.last_input = time.monotonic() - 1.0
    h.close_if_idle()
    (msg,) = h.published
    assert (msg.offset, msg.base) == (8, IDLE_INDEX_BASE)


def test_no_idle_close_while_a_partition_this_worker_does_not_own_has_input(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    h = Harness(tmp_path, monkeypatch)
    idle_ready(h)  # this worker's own lag (h.lag) says nothing is pending
    h.group.unread[("x.events.raw", 1)] = 5  # owned by nobody since a SIGKILL
    h.close_if_idle()
    assert h.published == []
    # Every upstream partition of the whole group was asked about, not only this worker's.
    (asked,) = h.group.asked
    for topic in ("x.events.raw", "x.events.valid", "x.events.stitched"):
        assert {(topic, 0), (topic, 1)} <= set(asked)
    assert ("x.identity.links", 0) in asked
    assert {("x.metrics.partials", c) for c in range(4)} <= set(asked)
    h.group.unread.clear()
    h.stage.last_input = time.monotonic() - 1.0
    h.close_if_idle()
    assert len(h.published) == 1


def test_no_broker_question_while_the_pipeline_is_not_idle(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    h = Harness(tmp_path, monkeypatch)
    h.stage.ready = True
    h.stage.last_input = time.monotonic() - 1.0
    h.close_if_idle()  # nothing open: nothing to close, nothing to ask
    h.process((7, partial(0, 1, T0 + 30_000, pv_events(60, T0, 2))))
    h.close_if_idle()  # input just came
    assert h.group.asked == []


def test_a_silent_source_partition_with_a_backlog_holds_the_window(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    h = Harness(tmp_path, monkeypatch)
    clock = Clock(monkeypatch)
    h.process(
        (1, partial(0, 1, T0 + 30_000, pv_events(60, T0, 3))),
        (2, partial(1, 1, T0 + 20_000, pv_events(60, T0, 2))),
    )
    # Partition 1's aggregate owner died: events.stitched[1] has input nobody reads.
    h.group.unread[STITCHED_1] = 40
    offset = 2
    for _ in range(30):  # five minutes of partition 0 flowing on, partition 1 silent
        clock.now += 10_000
        offset += 1
        h.process((offset, partial(0, offset, T0 + 5 * MIN)))
        assert h.published == [], "closed while partition 1 had a backlog"
    # Asked only once partition 1 was silent for the idle time, then at most every recheck.
    assert 1 <= len(h.group.asked) <= (5 * MIN - IDLE_MS) // QUIET_RECHECK_MS + 1
    assert all(STITCHED_1 in asked for asked in h.group.asked)
    # Its new owner catches up: the backlog's partial counts, the minute closes whole.
    h.group.unread.clear()
    clock.now += 1_000
    h.process((offset + 1, partial(1, 2, T0 + 5 * MIN, pv_events(60, T0, 4))))
    (msg,) = h.published
    assert values(msg)[("events", "1m", T0, PAGE_VIEW)] == 9.0
    assert h.state.late == 0


def test_a_drained_silent_partition_stops_holding_once_its_partials_are_read(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    h = Harness(tmp_path, monkeypatch)
    clock = Clock(monkeypatch)
    h.process(
        (1, partial(0, 1, T0 + 30_000, pv_events(60, T0, 3))),
        (2, partial(1, 1, T0 + 20_000, pv_events(60, T0, 2))),
    )
    # Partition 1's input is read to the end, but metrics.partials[0] ends at 5: its last
    # partials may still wait there, unread by this worker.
    h.group.ends[PARTIALS_0] = 5
    clock.now += IDLE_MS
    h.process((3, partial(0, 2, T0 + 5 * MIN)))
    assert h.published == []
    assert len(h.group.asked) == 1
    clock.now += 1_000
    h.process((4, partial(0, 3, T0 + 5 * MIN)))  # metrics.partials[0] read to its end
    (msg,) = h.published
    assert msg.offset == 4
    assert len(h.group.asked) == 1  # the answer still held: not asked again


def test_a_silent_partition_holds_the_window_while_the_broker_cannot_say(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    h = Harness(tmp_path, monkeypatch)
    clock = Clock(monkeypatch)
    h.process(
        (1, partial(0, 1, T0 + 30_000, pv_events(60, T0, 3))),
        (2, partial(1, 1, T0 + 20_000, pv_events(60, T0, 2))),
    )
    h.group.down = True
    clock.now += IDLE_MS
    h.process((3, partial(0, 2, T0 + 5 * MIN)))
    assert h.published == []
    h.group.down = False
    clock.now += QUIET_RECHECK_MS
    h.process((4, partial(0, 3, T0 + 5 * MIN)))
    assert len(h.published) == 1
