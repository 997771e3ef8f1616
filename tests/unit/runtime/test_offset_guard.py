"""The validate stage's guard against holes in the input offsets."""

from __future__ import annotations

from dataclasses import dataclass

from pipeline.runtime.offset_guard import OffsetGuard


@dataclass
class Msg:
    offset: int


def msgs(*offsets: int) -> list[Msg]:
    return [Msg(o) for o in offsets]


def test_contiguous_input_is_processed() -> None:
    g = OffsetGuard()
    a = g.admit(0, msgs(5, 6, 7))
    assert (a.process, a.hold, a.seek_to) == ([0, 1, 2], [], None)
    assert g.admit(0, msgs(8)).process == [0]


def test_a_hole_holds_what_follows_and_asks_for_a_seek_back() -> None:
    g = OffsetGuard()
    g.admit(3, msgs(98, 99))
    a = g.admit(3, msgs(101, 102))  # 100 never arrived
    assert (a.process, a.hold, a.seek_to) == ([], [0, 1], 100)
    # After the seek the hole is filled; copies of 101.. still queued come again.
    a = g.admit(3, msgs(100, 101, 102))
    assert (a.process, a.hold, a.seek_to) == ([0, 1, 2], [], None)
    a = g.admit(3, msgs(101, 102, 103))
    assert (a.already, a.process) == ([0, 1], [2])


def test_a_hole_that_never_fills_is_accepted_after_patience_and_counted() -> None:
    now = [0.0]
    g = OffsetGuard(patience=10.0, clock=lambda: now[0])
    g.admit(1, msgs(9))
    for t in (0.0, 4.0, 9.9):
        now[0] = t
        assert g.admit(1, msgs(12, 13)).seek_to == 10
    now[0] = 10.0
    a = g.admit(1, msgs(12, 13))
    assert (a.process, a.accepted_gap, a.seek_to) == ([0, 1], 2, None)


def test_a_hole_is_not_accepted_on_time_alone_while_re_reads_are_slow() -> None:
    """On a loaded machine a seek's re-read can take longer than the patience: the hole
    is accepted only once several reads came back without it."""
    now = [0.0]
    g = OffsetGuard(patience=10.0, clock=lambda: now[0], reads=4)
    g.admit(1, msgs(9))
    assert g.admit(1, msgs(12, 13)).seek_to == 10  # the first read past the hole
    for t in (60.0, 120.0):  # each re-read after the seek came back a minute later
        now[0] = t
        a = g.admit(1, msgs(12, 13))
        assert (a.process, a.accepted_gap, a.seek_to) == ([], 0, 10)
    now[0] = 180.0
    assert g.admit(1, msgs(12, 13)).accepted_gap == 2  # the fourth read without it


def test_a_filled_hole_leaves_nothing_behind() -> None:
    g = OffsetGuard()
    g.admit(0, msgs(1))
    g.admit(0, msgs(3))
    g.admit(0, msgs(2, 3))
    assert (g.since, g.seen) == ({}, {})


def test_partitions_are_independent_and_forget_resets() -> None:
    g = OffsetGuard()
    g.admit(0, msgs(1))
    assert g.admit(1, msgs(50)).process == [0]  # first sight of a partition sets its start
    g.forget()
    assert g.admit(0, msgs(40)).process == [0]  # after a rebalance: committed offsets
