"""The purchase funnel state machine (DESIGN section 10), shared by the stream and the lake.

A person enters at an event matching step 1 that is not within ``within`` after their
previous entry; the entry reaches step k when steps 2..k occur in order, each strictly
after the previous one, all within ``within`` of the entry. The entry counts for steps
1..k and belongs to the 1-hour window of the entry. The same function runs in the
combine stage (over persons from the identity map) and in ``trackflow report funnel``
(over ``events_resolved``), so the two can only differ in their inputs.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

from pipeline.metrics.definitions import MetricDef

StepEvent = tuple[int, int]  # (event time ms, bitmask of the steps the event matches)


def step_mask(d: MetricDef, event_name: str, props: dict[str, object]) -> int:
    """Which steps of funnel ``d`` an event matches (bit i = step i+1)."""
    assert d.funnel is not None
    mask = 0
    for i, step in enumerate(d.funnel.steps):
        if step.event == event_name and all(f.matches(props.get(f.property)) for f in step.filters):
            mask |= 1 << i
    return mask


def entries(
    events: Sequence[StepEvent],
    steps: int,
    within_ms: int,
    last_entry: int | None = None,
    since: int | None = None,
    until: int | None = None,
) -> list[tuple[int, int]]:
    """(entry time, furthest step reached) of each entry in [since, until).

    ``events`` must be sorted by time; ``last_entry`` is the previous entry before them.
    """
    out: list[tuple[int, int]] = []
    n = len(events)
    for i, (t, mask) in enumerate(events):
        if not mask & 1:
            continue
        if last_entry is not None and t - last_entry < within_ms:
            continue
        if until is not None and t >= until:
            break
        last_entry = t
        if since is not None and t < since:
            continue
        reached, at, j = 1, t, i + 1
        while reached < steps and j < n:
            tj, mj = events[j]
            if tj - t > within_ms:
                break
            if tj > at and mj & (1 << reached):
                reached += 1
                at = tj
            j += 1
        out.append((t, reached))
    return out


def counts_by_hour(found: Iterable[tuple[int, int]], steps: int) -> dict[int, list[int]]:
    """hour start -> [entries reaching step 1, ..., step n]."""
    out: dict[int, list[int]] = {}
    for t, k in found:
        hour = t - t % 3_600_000
        row = out.setdefault(hour, [0] * steps)
        for s in range(k):
            row[s] += 1
    return out
