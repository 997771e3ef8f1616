"""State of the aggregate and combine stages, logged as one changelog record per batch."""

from __future__ import annotations

from typing import Any

from pipeline.metrics.combine_states import CombineStates
from pipeline.metrics.windows import NO_WATERMARK
from tables.batchlog import BatchLogTable


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
    ``CombineState`` deltas."""

    windows: CombineStates

    def attach(self, windows: CombineStates) -> None:
        self.windows = windows

    def apply_record(self, partition: int, key: Any, value: Any) -> None:
        self.windows[partition].apply_record(value)

    def forget_partition(self, partition: int) -> None:
        self.windows.forget(partition)

    def revoke_partition(self, partition: int) -> None:
        self.windows.retire(partition)
