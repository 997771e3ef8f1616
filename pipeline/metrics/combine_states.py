"""The combine state of each combine partition a worker holds (``CombineStates``)."""

from __future__ import annotations

from collections.abc import Callable, Iterator

from pipeline.metrics.combine import CombineState


class CombineStates:
    """The ``CombineState`` of each combine partition (metrics.partials partition) this
    worker holds, made on first use; a partition's state goes when it is revoked.

    A revoked partition is retired until it is assigned again: a take still in flight
    for it must not make a fresh, empty state and log it as the partition's progress.
    """

    def __init__(self, factory: Callable[[], CombineState]) -> None:
        self.factory = factory
        self._states: dict[int, CombineState] = {}
        self._retired: set[int] = set()

    def __getitem__(self, partition: int) -> CombineState:
        state = self._states.get(partition)
        if state is None:
            state = self._states[partition] = self.factory()
        return state

    def get(self, partition: int) -> CombineState | None:
        """The partition's state, or None if it was revoked from this worker."""
        return None if partition in self._retired else self[partition]

    def items(self) -> Iterator[tuple[int, CombineState]]:
        return iter(sorted(self._states.items()))

    def forget(self, partition: int) -> None:
        """Start the partition anew (assigned: its changelog is replayed)."""
        self._states.pop(partition, None)
        self._retired.discard(partition)

    def retire(self, partition: int) -> None:
        self._states.pop(partition, None)
        self._retired.add(partition)
