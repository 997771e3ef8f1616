"""Consumer lag: only the agents' input partitions this worker owns, against the group's
committed offset, and the series of partitions it no longer owns removed."""

from __future__ import annotations

import asyncio
from types import SimpleNamespace
from typing import Any

from faust.types import TP
from prometheus_client import CollectorRegistry

from pipeline.runtime.observability import show_lag
from pipeline.runtime.streams import InputLag, agent_input_topics
from pipeline.runtime.telemetry import PipelineMetrics

RAW0 = TP("x.events.raw", 0)
RAW1 = TP("x.events.raw", 1)
ROLLUPS = TP("x.metrics.rollups", 0)
CHANGELOG = TP("x-dedup-changelog", 0)
LEADER = TP("x-__assignor-__leader", 0)


class Signal:
    def __init__(self) -> None:
        self.receivers: list[Any] = []

    def connect(self, fn: Any) -> Any:
        self.receivers.append(fn)
        return fn

    async def send(self, **kwargs: Any) -> None:
        for fn in self.receivers:
            await fn(None, **kwargs)


class Offsets:
    """The broker's view: the group's committed offset, else the log start."""

    def __init__(self, start: dict[Any, int]) -> None:
        self.start_of = start
        self.asked: list[Any] = []
        self.down = False

    async def start(self, tp: Any) -> int | None:
        self.asked.append(tp)
        if self.down:
            raise ConnectionError("coordinator not available")
        return self.start_of.get(tp)


class FakeApp:
    def __init__(self) -> None:
        self.assigned = {RAW0, RAW1, ROLLUPS, CHANGELOG, LEADER}
        self.end = {RAW0: 100, RAW1: 50, ROLLUPS: 7, CHANGELOG: 5_000, LEADER: 3}
        self.committed: dict[Any, int | None] = {}  # Faust's record of its own commits
        self.agents = {
            "validate": SimpleNamespace(channel=SimpleNamespace(topics=("x.events.raw",))),
            "detect": SimpleNamespace(channel=SimpleNamespace(topics=("x.metrics.rollups",))),
        }
        self.on_partitions_revoked = Signal()

        async def highwaters(*tps: Any) -> dict[Any, int]:
            return {tp: self.end[tp] for tp in tps}

        self.consumer = SimpleNamespace(
            assignment=lambda: set(self.assigned),
            highwaters=highwaters,
            highwater=lambda tp: self.end[tp],
            _committed_offset=self.committed,
        )


def sample(lag: InputLag) -> dict[Any, int] | None:
    return asyncio.run(lag.sample())


def test_only_the_agents_input_partitions_count() -> None:
    app = FakeApp()
    lag = InputLag(app, Offsets({RAW0: 90, RAW1: 50, ROLLUPS: 7}))
    assert agent_input_topics(app) == {"x.events.raw", "x.metrics.rollups"}
    # The changelog is never committed by the group: as a "lag" it was its whole log.
    assert sample(lag) == {RAW0: 10, RAW1: 0, ROLLUPS: 0}


def test_a_partition_taken_over_counts_from_the_groups_commit_not_from_zero() -> None:
    app = FakeApp()
    offsets = Offsets({RAW0: 95, RAW1: 48, ROLLUPS: 7})
    lag = InputLag(app, offsets)
    # Faust has no record of commits it did not make: the broker's offset is used.
    assert sample(lag) == {RAW0: 5, RAW1: 2, ROLLUPS: 0}
    # This worker commits; its own record is newer than what it read at assignment.
    app.committed[RAW0] = 99
    app.end[RAW0] = 120
    assert sample(lag)[RAW0] == 21  # type: ignore[index]
    assert offsets.asked.count(RAW0) == 1, "the broker is asked once per assignment"


def test_nothing_committed_counts_from_where_the_consumer_starts() -> None:
    app = FakeApp()
    # No commit: the start offsets say the log start, where the consumer is sought to.
    lag = InputLag(app, Offsets({RAW0: 40, RAW1: 0, ROLLUPS: 0}))
    assert sample(lag) == {RAW0: 60, RAW1: 50, ROLLUPS: 7}


def test_an_under_reported_log_end_is_no_negative_lag() -> None:
    app = FakeApp()
    app.end[RAW0] = 91  # Tansu: the last batch's base offset + 1, behind the commit
    lag = InputLag(app, Offsets({RAW0: 100, RAW1: 50, ROLLUPS: 7}))
    assert sample(lag)[RAW0] == 0  # type: ignore[index]


def test_revoked_partitions_leave_and_are_asked_again_when_assigned_again() -> None:
    app = FakeApp()
    offsets = Offsets({RAW0: 90, RAW1: 50, ROLLUPS: 7})
    lag = InputLag(app, offsets)
    sample(lag)
    app.assigned -= {RAW1}
    asyncio.run(app.on_partitions_revoked.send(revoked={RAW1}))
    assert set(sample(lag) or {}) == {RAW0, ROLLUPS}
    offsets.start_of[RAW1] = 49  # another worker committed meanwhile
    app.assigned |= {RAW1}
    assert sample(lag)[RAW1] == 1  # type: ignore[index]
    assert offsets.asked.count(RAW1) == 2


def test_a_partition_whose_start_the_broker_cannot_say_is_left_out_until_it_can() -> None:
    app = FakeApp()
    offsets = Offsets({RAW0: 90, RAW1: 50, ROLLUPS: 7})
    offsets.down = True
    lag = InputLag(app, offsets)
    assert sample(lag) == {}
    offsets.down = False
    assert sample(lag) == {RAW0: 10, RAW1: 0, ROLLUPS: 0}


def test_no_assignment_yet_is_unknown_not_zero() -> None:
    app = FakeApp()

    def not_started() -> set[Any]:
        raise RuntimeError("consumer not started")

    app.consumer.assignment = not_started
    assert sample(InputLag(app, Offsets({}))) is None


def test_the_gauge_drops_the_series_of_partitions_no_longer_owned() -> None:
    metrics = PipelineMetrics(CollectorRegistry())
    shown: set[tuple[str, str]] = set()

    def value(tp: TP) -> float | None:
        return metrics.registry.get_sample_value(
            "trackflow_consumer_lag_messages", {"topic": tp.topic, "partition": str(tp.partition)}
        )

    show_lag(metrics.consumer_lag, {RAW0: 10, RAW1: 3}, shown)
    assert (value(RAW0), value(RAW1)) == (10, 3)
    show_lag(metrics.consumer_lag, {RAW0: 4}, shown)  # RAW1 moved to another worker
    assert (value(RAW0), value(RAW1)) == (4, None)
    show_lag(metrics.consumer_lag, {}, shown)
    assert value(RAW0) is None
