"""The worker's /metrics page and the gauges sampled rather than counted."""

from __future__ import annotations

from typing import Any

import faust
from prometheus_client import CONTENT_TYPE_LATEST, Gauge

from pipeline.runtime import analytics_finals, member_links, member_metrics, stall_watch
from pipeline.runtime.context import Context
from pipeline.runtime.member_metrics import MemberGauges
from pipeline.runtime.readiness import register_probes
from pipeline.runtime.streams import InputLag


def register_observability(app: faust.App, ctx: Context) -> None:
    metrics = ctx.metrics
    domain = ctx.domain
    stalls = stall_watch.StallWatch(ctx.settings.stall_seconds)
    lag = InputLag(app, ctx.start_offsets)
    shown: set[tuple[str, str]] = set()

    register_probes(app)  # /health and /ready for orchestrators (pipeline/runtime/readiness.py)

    @app.page("/metrics")
    async def prometheus_metrics(web: Any, request: Any) -> Any:
        return web.bytes(metrics.render(), content_type=CONTENT_TYPE_LATEST.split(";")[0])

    @app.timer(interval=2.0)
    async def sample_gauges() -> None:
        metrics.dedup_ids.set(domain.seen.size())
        metrics.persons.set(domain.graph.person_count())
        metrics.identifiers.set(len(domain.graph.person))
        sampled = await lag.sample()
        if sampled is not None:
            show_lag(metrics.consumer_lag, sampled, shown)

    @app.timer(interval=5.0)
    async def watch_stalls() -> None:
        stall_watch.report(stalls.check(app), metrics)

    exported: set[analytics_finals.Series] = set()

    @app.timer(interval=analytics_finals.INTERVAL_SECONDS)
    async def show_exported_analytics() -> None:
        await analytics_finals.refresh(metrics.metric_final, ctx.settings.lake_dir, exported)

    members = MemberGauges(metrics.registry)
    sla = ctx.settings.members_sla_hours * 3600

    @app.timer(interval=member_metrics.INTERVAL_SECONDS)
    async def show_member_imports() -> None:
        await members.refresh(ctx.settings.lake_dir, sla)

    @app.timer(interval=member_links.INTERVAL_SECONDS)
    async def send_member_links() -> None:
        await member_links.drain(ctx.settings)


def show_lag(gauge: Gauge, lag: dict[Any, int], shown: set[tuple[str, str]]) -> None:
    """Set the lag of each owned input partition; drop the series of partitions no longer
    owned, which would otherwise keep their last value (another worker reports them now,
    and a sum over workers would count them twice, forever)."""
    now = {(tp.topic, str(tp.partition)): n for tp, n in lag.items()}
    for labels in shown - set(now):
        gauge.remove(*labels)
    for labels, n in now.items():
        gauge.labels(*labels).set(n)
    shown.clear()
    shown.update(now)
