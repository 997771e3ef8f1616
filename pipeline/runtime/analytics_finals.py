"""Exported analytics (retention, lifecycle) on /metrics, for the business dashboard.

``trackflow report retention|lifecycle --export`` stores complete cells in ``rollups``
(``pipeline/analytics/export.py``); every worker shows each such series' newest value as
``trackflow_metric_final`` (the dashboard takes the max over workers), reading only the
export's own files once a minute, off the event loop.
"""

from __future__ import annotations

import asyncio
from pathlib import Path

from prometheus_client import Gauge

from pipeline.analytics.export import latest_finals

INTERVAL_SECONDS = 60.0

Series = tuple[str, str, str]


def show(gauge: Gauge, values: list[tuple[str, str, str, float]], shown: set[Series]) -> None:
    """Set each series; drop those no longer exported (their files were removed)."""
    now = {(m, w, d): v for m, w, d, v in values}
    for key in shown - set(now):
        gauge.remove(*key)
    for key, value in now.items():
        gauge.labels(*key).set(value)
    shown.clear()
    shown.update(now)


async def refresh(gauge: Gauge, lake_dir: Path, shown: set[Series]) -> None:
    show(gauge, await asyncio.to_thread(latest_finals, lake_dir), shown)
