"""OrderedInput: every stage's input in log order, starting at the committed offset."""

from __future__ import annotations

import asyncio
from types import SimpleNamespace
from typing import Any

from faust.types import TP

from pipeline.runtime.ordered_input import OrderedInput
from pipeline.runtime.read_offsets import ReadOffsets
from pipeline.runtime.telemetry import PipelineMetrics

T = TP("events.stitched", 3)


class FakeSignal:
    def __init__(self) -> None:
        self.receivers: list[Any] = []

    def connect(self, fun: Any) -> Any:
        self.receivers.append(fun)
        return fun

    async def send(self, *args: Any) -> None:
        for fun in self.receivers:
            await fun(None, *args)


class FakeBroker:
    """The group's committed offsets and the log starts, as the broker would answer."""

    def __init__(self, committed: dict[TP, int | None], earliest: dict[TP, int]) -> None:
        self.committed = committed
        self.earliest = earliest

    async def start(self, tp: TP) -> int | None:
        committed = self.committed.get(tp)
        return committed if committed is not None else self.earliest.get(tp)


class FakeConsumer:
    def __init__(self, broker: FakeBroker) -> None:
        self.broker = broker
        self.seeks: list[tuple[TP, int]] = []
        self._read_offset = ReadOffsets()
        self.gaps: list[tuple[TP, int, int]] = []

    async def _add_gap(self, tp: TP, first: int, last: int) -> None:
        self.gaps.append((tp, first, last))

    def assignment(self) -> set[TP]:
        return set(self.broker.committed) | set(self.broker.earliest)

    async def seek(self, tp: TP, offset: int) -> None:
        self.seeks.append((tp, offset))
        self._read_offset[tp] = offset


def make(committed: int | None = None, earliest: int = 0, patience: float = 10.0) -> Any:
    now = [0.0]
    broker = FakeBroker({T: committed}, {T: earliest})
    app = SimpleNamespace(consumer=FakeConsumer(broker), on_partitions_revoked=FakeSignal())
    metrics = PipelineMetrics()
    ordered = OrderedInput(app, "stitch", metrics, broker, patience=patience, clock=lambda: now[0])
    return ordered, app, metrics, now


def events(*offsets: int, tp: TP = T) -> list[Any]:
    return [
        SimpleNamespace(message=SimpleNamespace(tp=tp, partition=tp.partition, offset=o))
        for o in offsets
    ]


def offsets(evs: list[Any]) -> list[int]:
    return [e.message.offset for e in evs]


def admit(ordered: OrderedInput, evs: list[Any]) -> Any:
    return asyncio.run(ordered.admit(evs))


def test_a_hole_at_the_committed_offset_is_seen() -> None:
    """The restart case: committed 100, the broker hands over 101 first."""
    ordered, app, _, _ = make(committed=100)
    got = admit(ordered, events(101, 102))
    assert (offsets(got.process), offsets(got.held)) == ([], [101, 102])
    assert app.consumer.seeks == [(T, 100)]
    got = admit(ordered, events(100, 101, 102))
    assert offsets(got.process) == [100, 101, 102]


def test_without_a_commit_reading_starts_at_the_log_start() -> None:
    ordered, app, _, _ = make(committed=None, earliest=40)
    got = admit(ordered, events(41))
    assert offsets(got.held) == [41]
    assert app.consumer.seeks == [(T, 40)]


def test_in_order_and_once_whatever_the_take_order() -> None:
    ordered, _, _, _ = make(committed=5)
    got = admit(ordered, events(7, 5, 6, 6))
    assert offsets(got.process) == [5, 6, 7]
    got = admit(ordered, events(6, 7, 8))  # copies after a seek back
    assert (offsets(got.already), offsets(got.process)) == ([6, 7], [8])


def test_a_hole_that_never_fills_is_given_up_counted_and_labelled() -> None:
    ordered, _, metrics, now = make(committed=10, patience=10.0)
    for t in (0.0, 4.0, 8.0):  # three reads, each after a seek back, without offset 11
        now[0] = t
        assert offsets(admit(ordered, events(12)).held) == [12]
    now[0] = 11.0
    got = admit(ordered, events(12, 13))
    assert offsets(got.process) == [12, 13]
    value = metrics.registry.get_sample_value(
        "trackflow_offset_gaps_total",
        {"stage": "stitch", "topic": "events.stitched", "partition": "3"},
    )
    assert value == 2


def test_partitions_are_independent_and_a_revoke_restarts_from_the_commit() -> None:
    other = TP("events.stitched", 4)
    ordered, app, _, _ = make(committed=10)
    app.consumer.broker.committed[other] = 0
    got = admit(ordered, events(10, 11) + events(0, tp=other))
    assert offsets(got.process) == [10, 11, 0]
    asyncio.run(app.on_partitions_revoked.send({T}))
    app.consumer.broker.committed[T] = 11  # the new owner's committed offset
    got = admit(ordered, events(11, 12))
    assert offsets(got.process) == [11, 12]
    got = admit(ordered, events(2, tp=other))  # not revoked: still expects 1
    assert offsets(got.held) == [2]


def test_events_read_outside_the_group_start_at_the_first_offset_seen() -> None:
    ordered, app, _, _ = make(committed=3)
    app.consumer.assignment = lambda: set()
    got = admit(ordered, events(50, 51))
    assert offsets(got.process) == [50, 51]


def test_the_read_offset_stays_pinned_at_a_hole_until_it_fills() -> None:
    ordered, app, _, _ = make(committed=100)
    read = app.consumer._read_offset
    admit(ordered, events(101, 102))
    read[T] = 2999  # Faust's fetcher hands out the rest of its batch
    assert (read[T], read.pins) == (100, {T: {"stitch": 100}})
    admit(ordered, events(100, 101))
    read[T] = 2999
    assert (read[T], read.pins) == (2999, {})


def test_a_hole_given_up_is_marked_done_for_the_commit_and_unpinned() -> None:
    ordered, app, _, now = make(committed=10, patience=10.0)
    for t in (0.0, 4.0, 8.0, 11.0):  # four reads, each back without 10 and 11
        now[0] = t
        got = admit(ordered, events(12, 13))
    assert offsets(got.process) == [12, 13]
    assert (app.consumer.gaps, app.consumer._read_offset.pins) == ([(T, 10, 11)], {})


def test_a_revoke_releases_the_pin() -> None:
    ordered, app, _, _ = make(committed=100)
    admit(ordered, events(101))
    asyncio.run(app.on_partitions_revoked.send({T}))
    assert app.consumer._read_offset.pins == {}
