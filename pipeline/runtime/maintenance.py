"""The workers' lake maintenance: ``trackflow lake maintain`` once per interval for the
whole deployment, and the file-count gauges the small-files alert reads. A new
deployment's first run comes one interval after its first worker started.

Every worker checks every minute (or every interval, if shorter) whether a run is due,
from the lake's own record (``_maintain/state.json``) read under the maintenance lock, so
several workers run it once per interval between them, never twice at a time, and a
restart does not make it run again. The work runs in a thread: it waits for the lake
writer's lock of each source partition it rewrites, never for the event loop.
"""

from __future__ import annotations

import asyncio
import logging
import time
from datetime import UTC, datetime, timedelta
from typing import Any

from pipeline.lake import maintain
from pipeline.lake.inventory import file_counts
from pipeline.lake.rewrite import recover
from pipeline.privacy.deletion import lake_guard
from pipeline.runtime.context import Context

log = logging.getLogger(__name__)

CHECK_SECONDS = 60.0


def run_if_due(ctx: Context, now: float | None = None) -> maintain.MaintainReport | None:
    """One check: run maintenance if it is due and no one else runs it; never raises."""
    settings, metrics = ctx.settings, ctx.metrics
    lake = settings.lake_dir
    try:
        with maintain.exclusive(lake):
            state = maintain.read_state(lake)
            now = now or time.time()
            if not state:
                maintain.start_clock(lake, now)
                return None
            if not maintain.due(state, settings.lake_maintain_seconds, now):
                try:  # the small files compaction kept for readers, once their time is over
                    recover(lake, orphans=False)
                except Exception:
                    log.exception("lake maintenance: deleting merged small files failed")
                return None
            started = time.monotonic()
            try:
                rules = maintain.load_rules(settings.retention, settings.schemas_dir)
                report = maintain.run_locked(
                    lake,
                    rules,
                    target_rows=settings.lake_compact_target_rows,
                    guard=lake_guard(lake),
                )
            except Exception as exc:  # counted and retried: a worker never dies of it
                log.exception("lake maintenance failed; retried in %s s", maintain.RETRY_SECONDS)
                metrics.maintain_runs.labels("failed").inc()
                maintain.write_state(lake, ok=False, error=f"{type(exc).__name__}: {exc}")
                return None
            metrics.maintain_seconds.set(time.monotonic() - started)
            state = maintain.write_state(lake, ok=True)
    except maintain.MaintainBusy:
        return None  # another worker or a command is running it
    metrics.maintain_runs.labels("ok").inc()
    metrics.maintain_last_success.set(state["last_success"])
    for table, t in report.tables.items():
        if t.files_deleted:
            metrics.retention_files.labels(table).inc(t.files_deleted)
            metrics.retention_rows.labels(table).inc(t.rows_deleted)
        if t.files_compacted:
            metrics.compacted_files.labels(table).inc(t.files_compacted)
    log.info(
        "lake maintenance: %d partitions dropped, %d files merged into %d, in %.1f s",
        sum(t.partitions_expired for t in report.tables.values()),
        sum(t.files_compacted for t in report.tables.values()),
        sum(t.files_written for t in report.tables.values()),
        report.seconds,
    )
    return report


def sample_files(ctx: Context) -> None:
    """Set the file-count gauges and the deployment's last successful maintenance."""
    lake = ctx.settings.lake_dir
    yesterday = datetime.now(UTC).date() - timedelta(days=1)
    for table, (files, most) in file_counts(lake, yesterday).items():
        ctx.metrics.table_files.labels(table).set(files)
        ctx.metrics.partition_files_max.labels(table).set(most)
    last = maintain.read_state(lake).get("last_success")
    if isinstance(last, int | float):
        ctx.metrics.maintain_last_success.set(last)


def register(app: Any, ctx: Context) -> None:
    interval = ctx.settings.lake_maintain_seconds
    for outcome in ("ok", "failed"):  # exported from the start: increase() sees the first
        ctx.metrics.maintain_runs.labels(outcome)

    if interval > 0:

        @app.timer(interval=min(CHECK_SECONDS, interval))
        async def lake_maintenance() -> None:
            await asyncio.to_thread(run_if_due, ctx)

    @app.timer(interval=ctx.settings.lake_stats_seconds)
    async def lake_file_counts() -> None:
        await asyncio.to_thread(sample_files, ctx)
