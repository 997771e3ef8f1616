"""Input in log order without holes, per partition: the pure rule behind ``OrderedInput``.

Faust acks offsets it never received as a "gap" (meant for compacted topics and
transaction markers). The embedded broker has been seen to hand a worker restarted after a
SIGKILL the records after an offset before the offset itself (``offsets 100..100 of
partition 3 never arrived``, then that event missing from the lake). Everything
downstream relies on positions arriving in order (the sink skips positions below its
high water), so a skipped offset would be lost for good. The guard holds back what
follows a hole and asks for a seek back to it; only a hole still open after ``patience``
seconds AND ``reads`` reads that came back without it is accepted as real, counted and
logged. Time alone is not evidence: on a loaded machine a seek's re-read can take longer
than the patience, and a hole accepted too early is an event lost.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Hashable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Protocol


class HasOffset(Protocol):
    offset: int


@dataclass
class Admission:
    process: list[int] = field(default_factory=list)  # indexes to process now, in order
    already: list[int] = field(default_factory=list)  # seen before: ack, do not process
    hold: list[int] = field(default_factory=list)  # after a hole: neither process nor ack
    seek_to: int | None = None  # re-read the partition from here
    accepted_gap: int = 0  # offsets given up on after ``patience`` seconds


class OffsetGuard:
    """Per key (a partition): the next offset expected, and holes waiting to be filled."""

    def __init__(
        self,
        patience: float = 10.0,
        clock: Callable[[], float] = time.monotonic,
        reads: int = 4,
    ) -> None:
        self.patience = patience
        self.clock = clock
        self.reads = reads  # reads past a hole, each after a seek back, before accepting it
        self.expected: dict[Hashable, int] = {}
        self.since: dict[tuple[Hashable, int], float] = {}  # hole -> when first seen
        self.seen: dict[tuple[Hashable, int], int] = {}  # hole -> reads that skipped it

    def forget(self, keys: Iterable[Hashable] | None = None) -> None:
        """After a rebalance the stream restarts from committed offsets."""
        if keys is None:
            self.expected.clear()
            self.since.clear()
            self.seen.clear()
            return
        for key in keys:
            self.expected.pop(key, None)
        for hole in [h for h in self.since if h[0] not in self.expected]:
            del self.since[hole]
            self.seen.pop(hole, None)

    def knows(self, key: Hashable) -> bool:
        return key in self.expected

    def start(self, key: Hashable, offset: int) -> None:
        """The first offset to expect after an assignment: the committed one. Without it a
        hole right at the committed offset would pass unseen (Faust commits past it)."""
        self.expected[key] = offset

    def admit(self, key: Hashable, messages: Sequence[HasOffset]) -> Admission:
        """``messages`` sorted by offset, each once."""
        out = Admission()
        exp = self.expected.get(key)
        for i, m in enumerate(messages):
            if exp is not None and m.offset < exp:
                out.already.append(i)
                continue
            if exp is not None and m.offset > exp:
                hole = (key, exp)
                first = self.since.setdefault(hole, self.clock())
                self.seen[hole] = self.seen.get(hole, 0) + 1
                if self.clock() - first < self.patience or self.seen[hole] < self.reads:
                    out.hold = list(range(i, len(messages)))
                    out.seek_to = exp
                    break
                del self.since[hole], self.seen[hole]
                out.accepted_gap += m.offset - exp
            elif exp is not None and (key, exp) in self.since:  # the hole filled
                del self.since[(key, exp)]
                self.seen.pop((key, exp), None)
            out.process.append(i)
            exp = m.offset + 1
        if exp is not None:
            self.expected[key] = exp
        return out
