"""The one way every stage reads its input: in log order, each offset once, no holes.

Every stage relies on positions arriving in order (the sinks and the windows skip what is
at or below their high water), so an offset skipped is lost for good. Faust acks offsets
it never received as a "gap", and its commit passes a message missing right at the
committed offset (``min(acked) - committed > 1`` lets ``committed + 1`` through). This
guard starts each partition at its committed offset, holds back what follows a hole (not
processed, not acked, so the commit cannot pass it) and seeks back to the hole; a hole
still open after ``patience`` seconds and several re-reads is given up on, counted
(``trackflow_offset_gaps_total``), logged as an error and alerted on
(``TrackflowOffsetHoleAccepted``), and marked done for the commit. While a hole is open the
partition's read offset is pinned at it, or Faust's fetcher drops the re-read
(``read_offsets``).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from faust.types import EventT

from pipeline.runtime import read_offsets
from pipeline.runtime.offset_guard import OffsetGuard
from pipeline.runtime.start_offsets import StartOffsets
from pipeline.runtime.streams import Take, in_offset_order
from pipeline.runtime.telemetry import PipelineMetrics

log = logging.getLogger(__name__)

PATIENCE_SECONDS = 10.0


@dataclass
class Admitted:
    process: list[EventT] = field(default_factory=list)  # in log order
    already: list[EventT] = field(default_factory=list)  # read before: ack, do not process
    held: list[EventT] = field(default_factory=list)  # past a hole: neither process nor ack


class OrderedInput:
    def __init__(
        self,
        app: Any,
        stage: str,
        metrics: PipelineMetrics,
        offsets: StartOffsets,
        patience: float = PATIENCE_SECONDS,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.app = app
        self.stage = stage
        self.metrics = metrics
        self.offsets = offsets
        self.guard = OffsetGuard(patience, clock)
        app.on_partitions_revoked.connect(self._revoked)

    async def _revoked(self, sender: Any, revoked: set[Any], **kwargs: Any) -> None:
        self.guard.forget(revoked)
        for tp in revoked:
            read_offsets.release(self.app.consumer, self.stage, tp)

    async def admit(self, events: Sequence[EventT]) -> Admitted:
        out = Admitted()
        by_tp: dict[Any, list[EventT]] = {}
        for event in in_offset_order(list(events)):
            by_tp.setdefault(event.message.tp, []).append(event)
        for tp, tp_events in by_tp.items():
            if not self.guard.knows(tp):
                start = await self._start_offset(tp)
                if start is not None:
                    self.guard.start(tp, start)
            admission = self.guard.admit(tp, [e.message for e in tp_events])
            out.process += [tp_events[i] for i in admission.process]
            out.already += [tp_events[i] for i in admission.already]
            out.held += [tp_events[i] for i in admission.hold]
            if admission.seek_to is not None:
                log.warning(
                    "%s: offset %s of %s[%s] has not arrived before later ones; reading "
                    "again from there",
                    self.stage,
                    admission.seek_to,
                    tp.topic,
                    tp.partition,
                )
                read_offsets.pin(self.app.consumer, self.stage, tp, admission.seek_to)
                await self.app.consumer.seek(tp, admission.seek_to)
            elif not self.guard.waiting(tp):
                read_offsets.release(self.app.consumer, self.stage, tp)
            for first, last in admission.accepted:
                await read_offsets.skip(self.app.consumer, tp, first, last)
            if admission.accepted_gap:
                self.metrics.offset_gaps.labels(self.stage, tp.topic, str(tp.partition)).inc(
                    admission.accepted_gap
                )
                log.error(
                    "%s: %s offsets of %s[%s] never arrived after repeated reads; given up",
                    self.stage,
                    admission.accepted_gap,
                    tp.topic,
                    tp.partition,
                )
        return out

    async def _start_offset(self, tp: Any) -> int | None:
        """Where reading starts after an assignment: the group's committed offset on the
        broker, else the log start. None (the first offset read is taken) for events not
        read through the group, or when the broker cannot say."""
        try:
            assigned = tp in self.app.consumer.assignment()
        except Exception:  # no assignment yet
            assigned = False
        if not assigned:
            return None
        try:
            return await self.offsets.start(tp)
        except Exception as exc:
            log.warning(
                "%s: no start offset for %s (%s); the first one read is taken", self.stage, tp, exc
            )
            return None


async def admit(ordered: OrderedInput, take: Take) -> list[EventT]:
    """The events of a take to process now; held ones stay unacked (see ``Take.hold``)."""
    admitted = await ordered.admit(take)
    for event in admitted.held:
        take.hold(event)
    return admitted.process
