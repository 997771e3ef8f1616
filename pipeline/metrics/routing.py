"""Which combine partition merges and finalises each metric.

The combine stage is spread over ``TRACKFLOW_COMBINE_PARTITIONS`` partitions of
metrics.partials, so adding workers adds combine capacity. A metric's series all go to
one partition, and a ratio goes with its numerator and denominator (it is computed from
their final values when the window closes): metrics are grouped through the ratios that
join them and each group is placed by a stable hash of its first name, so the placement
never depends on the order definitions are read in.
"""

from __future__ import annotations

import zlib
from collections.abc import Iterable

from pipeline.metrics.definitions import MetricDef


def groups(defs: dict[str, MetricDef], together: Iterable[tuple[str, str]] = ()) -> dict[str, str]:
    """metric -> the name that stands for its group (the group's smallest name).

    ``together``: more pairs that must share a partition (an alert rule's metric and its
    volume guard, which the detector reads from the same window's rollups message)."""
    parent = {name: name for name in defs}

    def root(name: str) -> str:
        while parent[name] != name:
            parent[name] = parent[parent[name]]
            name = parent[name]
        return name

    pairs = [
        (d.name, str(part))
        for d in defs.values()
        if d.type == "ratio"
        for part in (d.numerator, d.denominator)
    ]
    for x, y in [*pairs, *together]:
        if x in parent and y in parent:
            a, b = sorted((root(x), root(y)))
            parent[b] = a
    return {name: root(name) for name in defs}


def partitions(
    defs: dict[str, MetricDef], count: int, together: Iterable[tuple[str, str]] = ()
) -> dict[str, int]:
    """metric -> its combine partition, of ``count``."""
    return {m: zlib.crc32(g.encode()) % count for m, g in groups(defs, together).items()}
