"""Quiet source partitions: silence is not enough, the partition's input must be drained.

Issue 13's soak: after a SIGKILL, a source partition whose aggregate owner died sent no
partial for over 60 s while its events.raw had a backlog; the combine took it as quiet,
closed the minute, and its partials then came late (finals 15-20 % short). The agent asks
the broker; here a ``drained`` predicate stands for its answer.
"""

from __future__ import annotations

from typing import Any

import orjson

from pipeline.contract.plan import load_plan
from pipeline.metrics.combine import CombineState
from pipeline.metrics.definitions import load_metrics

DEFS = load_metrics(load_plan())
T0 = 1_795_420_000_000 - 1_795_420_000_000 % 3_600_000  # an hour boundary, epoch ms
MIN = 60_000
IDLE_MS = 60_000
PAGE_VIEW = orjson.dumps({"event_name": "page_view"}).decode()


def partial(p: int, offset: int, wm: int, n: int = 0) -> dict[str, Any]:
    """A partial of source partition ``p``: ``n`` page views in the minute T0."""
    series = [["events", 60, T0, PAGE_VIEW, n]] if n else []
    return {"p": p, "o": offset, "wm": wm, "s": series, "f": {}}


def minute_closed(rows: list[dict[str, Any]]) -> float | None:
    found = [r["value"] for r in rows if r["metric"] == "events" and r["window"] == "1m"]
    return found[0] if found else None


def state() -> CombineState:
    """Two source partitions: 0 flows on, 1 sent 2 events of the minute then went silent
    with its watermark still inside it."""
    s = CombineState(DEFS, 2, lateness_s=10)
    s.idle_ms = IDLE_MS
    s.apply(partial(0, 1, T0 + 5 * MIN, n=3), now_ms=0)
    s.apply(partial(1, 1, T0 + 20_000, n=2), now_ms=0)
    return s


def test_a_silent_partition_with_a_backlog_holds_the_window_however_long() -> None:
    s = state()
    asked: list[int] = []

    def backlog(p: int) -> bool:
        asked.append(p)
        return False

    for k in range(1, 61):  # an hour of partition 0 flowing, partition 1 silent
        now = k * MIN
        s.apply(partial(0, 1 + k, T0 + (5 + k) * MIN), now_ms=now)
        assert s.close_ready(now_ms=now, drained=backlog) == []
    assert set(asked) == {1}  # only a silent partition is a question
    # Its owner is back: the backlog's partial for the minute is counted, not late.
    s.apply(partial(1, 2, T0 + 66 * MIN, n=4), now_ms=61 * MIN)
    assert s.late == 0
    assert minute_closed(s.close_ready(now_ms=61 * MIN, drained=backlog)) == 9.0


def test_a_silent_drained_partition_stops_holding_the_window() -> None:
    s = state()
    s.apply(partial(0, 2, T0 + 6 * MIN), now_ms=IDLE_MS - 1)
    assert s.close_ready(now_ms=IDLE_MS - 1, drained=lambda p: True) == []  # not silent yet
    s.apply(partial(0, 3, T0 + 7 * MIN), now_ms=IDLE_MS)
    assert minute_closed(s.close_ready(now_ms=IDLE_MS, drained=lambda p: p == 1)) == 5.0
    # It wakes up with another event of the closed minute: late, counted.
    s.apply(partial(1, 2, T0 + 8 * MIN, n=1), now_ms=IDLE_MS + 1)
    assert s.late == 1


def test_silent_lists_the_partitions_quiet_for_the_idle_time() -> None:
    s = state()
    s.apply(partial(0, 2, T0 + 6 * MIN), now_ms=IDLE_MS - 1)
    assert s.silent(IDLE_MS - 1) == []
    assert s.silent(IDLE_MS) == [1]
    s.idle_ms = None
    assert s.silent(10 * IDLE_MS) == []
