"""State of the aggregate and combine stages, logged as one changelog record per batch."""

from __future__ import annotations

import logging
from typing import Any

from faust.types import TP

from pipeline.metrics.combine_states import CombineStates
from pipeline.metrics.windows import NO_WATERMARK
from tables.batchlog import BatchLogTable
from tables.snapshots import newest_snapshots

log = logging.getLogger(__name__)


class AggregateProgress(BatchLogTable):
    """Per partition: the highest events.raw position counted, and the watermark.

    Upstream stages re-send events after a crash (at least once); rows at or below the
    position were already sent as partials (before this record was written), so they are
    skipped and nothing is counted twice. Partition p of events.stitched holds only rows
    of events.raw partition p, in position order.
    """

    progress: dict[int, tuple[int, int]]

    def attach(self) -> None:
        self.progress = {}

    def get_progress(self, partition: int) -> tuple[int, int]:
        return self.progress.get(partition, (-1, NO_WATERMARK))

    def apply_record(self, partition: int, key: Any, value: Any) -> None:
        self.progress[partition] = (int(value["pos"]), int(value["wm"]))

    def forget_partition(self, partition: int) -> None:
        self.progress.pop(partition, None)

    async def record(self, partition: int, position: int, watermark: int) -> None:
        self.progress[partition] = (position, watermark)
        # One key per partition: compaction keeps only the latest progress.
        await self.append(partition, str(partition), {"pos": position, "wm": watermark})


class CombineWindows(BatchLogTable):
    """The combine stage's open windows and progress, per combine partition; records are
    ``CombineState`` deltas, and now and then a snapshot of the whole state.

    A partition newly assigned is read from its newest snapshot (``snap_at`` in the last
    group's progress), not from the start: the changelog keeps seven days of deltas, and
    replaying them all made a takeover's recovery grow with the deployment's age (75 s for
    one partition after an hour of the soak).
    """

    windows: CombineStates

    def attach(self, windows: CombineStates) -> None:
        self.windows = windows
        self.starts: dict[int, int] = {}  # partition -> offset its recovery starts at

    def persisted_offset(self, tp: TP) -> int | None:
        """The offset before the one Faust's recovery must apply first (None: read from the
        beginning): Faust seeks to this offset but applies only records past it."""
        start = self.starts.get(tp.partition)
        return None if start is None else start - 1

    async def on_rebalance(
        self,
        assigned: set[TP],
        revoked: set[TP],
        newly_assigned: set[TP],
        generation_id: int = 0,
    ) -> None:
        await super().on_rebalance(assigned, revoked, newly_assigned, generation_id)
        changelog = self.changelog_topic.get_topic_name()
        fresh = sorted(tp.partition for tp in newly_assigned if tp.topic == changelog)
        self.starts = {}
        if self.kafka is None or not fresh:
            return
        try:
            found = await newest_snapshots(self.kafka, changelog, fresh)
        except Exception as exc:  # read from the beginning: slower, as correct
            log.warning(
                "%s: newest snapshots not found (%s: %s)", self.name, type(exc).__name__, exc
            )
            return
        applied = self.applied_offsets
        for partition, start in found.items():
            self.starts[partition] = start
            applied[partition] = start - 1  # the catch-up after recovery reads on from there
        if found:
            log.info("%s: recovery starts at the newest snapshots %s", self.name, found)

    def apply_record(self, partition: int, key: Any, value: Any) -> None:
        self.windows[partition].apply_record(value)

    def forget_partition(self, partition: int) -> None:
        self.windows.forget(partition)

    def revoke_partition(self, partition: int) -> None:
        self.windows.retire(partition)
