"""The worker's /metrics page and the gauges sampled rather than counted."""

from __future__ import annotations

from typing import Any

import faust
from prometheus_client import CONTENT_TYPE_LATEST

from pipeline.runtime import stall_watch
from pipeline.runtime.context import Context
from pipeline.runtime.readiness import register_probes
from pipeline.runtime.streams import consumer_lag


def register_observability(app: faust.App, ctx: Context) -> None:
    metrics = ctx.metrics
    domain = ctx.domain
    stalls = stall_watch.StallWatch(ctx.settings.stall_seconds)

    register_probes(app)  # /health and /ready for orchestrators

    @app.page("/metrics")
    async def prometheus_metrics(web: Any, request: Any) -> Any:
        return web.bytes(metrics.render(), content_type=CONTENT_TYPE_LATEST.split(";")[0])

    @app.timer(interval=2.0)
    async def sample_gauges() -> None:
        metrics.dedup_ids.set(domain.seen.size())
        metrics.persons.set(domain.graph.person_count())
        metrics.identifiers.set(len(domain.graph.person))
        for tp, lag in (consumer_lag(app) or {}).items():
            metrics.consumer_lag.labels(tp.topic, str(tp.partition)).set(lag)

    @app.timer(interval=5.0)
    async def watch_stalls() -> None:
        stall_watch.report(stalls.check(app), metrics)
