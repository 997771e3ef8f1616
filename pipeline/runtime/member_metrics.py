"""Member imports on /metrics (DESIGN 14): how their data quality reaches Prometheus.

An import is a short CLI run: nothing scrapes it while it runs, and a pushgateway would be
one more service to run. Every import writes its outcome to the lake (``member_imports``,
``member_quality``), which the workers share, so every worker reads the latest run of each
source from there every 30 seconds, off the event loop, and shows it as gauges. Every worker
shows the same values: the alert rules take ``max by (source, ...)``.
"""

from __future__ import annotations

import asyncio
import logging
from pathlib import Path

from prometheus_client import CollectorRegistry, Gauge

from pipeline.members.quality import SourceMetrics, latest_metrics

INTERVAL_SECONDS = 30.0
log = logging.getLogger(__name__)


class MemberGauges:
    def __init__(self, registry: CollectorRegistry) -> None:
        r = registry
        self.last_success = Gauge(
            "trackflow_member_import_last_success_timestamp_seconds",
            "When the latest import of the member source finished (epoch seconds).",
            ["source"],
            registry=r,
        )
        self.sla = Gauge(
            "trackflow_member_import_sla_seconds",
            "The member source must import again within this (mapping sla_hours).",
            ["source"],
            registry=r,
        )
        self.rows = Gauge(
            "trackflow_member_import_rows",
            "Rows of the latest import of the source that read rows, by outcome.",
            ["source", "outcome"],
            registry=r,
        )
        self.rejected = Gauge(
            "trackflow_member_import_rejected_ratio",
            "Share of the rows read that were rejected, latest import with rows.",
            ["source"],
            registry=r,
        )
        self.null_ratio = Gauge(
            "trackflow_member_field_null_ratio",
            "Share of the rows read without a value for the profile field.",
            ["source", "field", "required"],
            registry=r,
        )
        self.violations = Gauge(
            "trackflow_member_field_violations",
            "Rules the profile field broke in the rejected rows of the latest import.",
            ["source", "field"],
            registry=r,
        )
        self.value_share = Gauge(
            "trackflow_member_field_value_ratio",
            "Share of the accepted rows with this value of an enum profile field.",
            ["source", "field", "value"],
            registry=r,
        )

    def show(self, sources: list[SourceMetrics]) -> None:
        """Replace every series with the lake's current picture."""
        for gauge in (
            self.last_success,
            self.sla,
            self.rows,
            self.rejected,
            self.null_ratio,
            self.violations,
            self.value_share,
        ):
            gauge.clear()
        for s in sources:
            self.last_success.labels(s.source).set(s.last_success)
            self.sla.labels(s.source).set(s.sla_seconds)
            if not s.rows["read"]:
                continue
            for outcome, n in s.rows.items():
                self.rows.labels(s.source, outcome).set(n)
            self.rejected.labels(s.source).set(s.rejected_ratio)
            for name, required, rate, violations in s.fields:
                self.null_ratio.labels(s.source, name, str(required).lower()).set(rate)
                self.violations.labels(s.source, name).set(violations)
            for name, value, share in s.values:
                self.value_share.labels(s.source, name, value).set(share)

    async def refresh(self, lake_dir: Path, default_sla: float) -> None:
        try:
            sources = await asyncio.to_thread(latest_metrics, lake_dir, default_sla)
        except Exception:  # an unreadable file must not stop the worker's timers
            log.exception("member import metrics: cannot read the lake's member_imports")
            return
        self.show(sources)
