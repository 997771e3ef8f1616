"""Writes grafana/dashboards/*.json (fixed uids): edit here, then run this file.

Dashboards are generated so that every panel is a PromQL expression the tests can check
against the rules and the metrics a worker exports.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

OUT = Path(__file__).resolve().parent / "dashboards"
DS = {"type": "prometheus", "uid": "trackflow-prometheus"}


def panel(
    pid: int,
    title: str,
    exprs: list[tuple[str, str]],
    unit: str = "short",
    x: int = 0,
    y: int = 0,
    kind: str = "timeseries",
) -> dict[str, Any]:
    return {
        "id": pid,
        "type": kind,
        "title": title,
        "datasource": DS,
        "gridPos": {"h": 8, "w": 12, "x": x, "y": y},
        "fieldConfig": {"defaults": {"unit": unit}, "overrides": []},
        "targets": [
            {"refId": chr(65 + i), "datasource": DS, "expr": expr, "legendFormat": legend}
            for i, (expr, legend) in enumerate(exprs)
        ],
    }


def dashboard(uid: str, title: str, panels: list[dict[str, Any]]) -> dict[str, Any]:
    for i, p in enumerate(panels):
        p["gridPos"]["x"] = (i % 2) * 12
        p["gridPos"]["y"] = (i // 2) * 8
    return {
        "uid": uid,
        "title": title,
        "tags": ["trackflow"],
        "timezone": "utc",
        "schemaVersion": 39,
        "version": 1,
        "refresh": "30s",
        "time": {"from": "now-6h", "to": "now"},
        "panels": panels,
    }


def metric(name: str, window: str = "1m") -> str:
    return f'max by (dimensions) (trackflow_metric_value{{metric="{name}",window="{window}"}})'


PIPELINE = dashboard(
    "trackflow-pipeline",
    "trackflow / pipeline health",
    [
        panel(
            1,
            "Events per second by stage (in)",
            [("sum by (stage) (rate(trackflow_stage_events_in_total[5m]))", "{{stage}}")],
            "ops",
        ),
        panel(
            2,
            "Received vs stored",
            [
                ("job:trackflow_events_received:rate5m", "received"),
                ("job:trackflow_events_stored:rate5m", "stored"),
            ],
            "ops",
        ),
        panel(
            3,
            "Consumer lag by topic",
            [("sum by (topic) (trackflow_consumer_lag_messages)", "{{topic}}")],
        ),
        panel(
            4,
            "Processing latency p95 by stage",
            [("stage:trackflow_processing_latency_seconds:p95_5m", "{{stage}}")],
            "s",
        ),
        panel(
            5,
            "Dead letters by error code",
            [("error_code:trackflow_dlq_events:rate5m", "{{error_code}}")],
            "ops",
        ),
        panel(
            6,
            "Identity merges",
            [
                (
                    "sum by (accepted, reason) (rate(trackflow_identity_merges_total[5m]))",
                    "{{accepted}} {{reason}}",
                ),
                ("sum(trackflow_identity_writer_lag_seconds)", "writer lag (s)"),
            ],
        ),
        panel(
            7,
            "Lake writes",
            [
                (
                    "sum by (table) (rate(trackflow_lake_bytes_written_total[5m]))",
                    "{{table}} bytes/s",
                )
            ],
            "Bps",
        ),
        panel(8, "Workers up", [('sum(up{job="trackflow"})', "workers")], kind="stat"),
    ],
)

BUSINESS = dashboard(
    "trackflow-business",
    "trackflow / business KPIs",
    [
        panel(1, "PV per minute by page", [(metric("pv"), "{{dimensions}}")]),
        panel(2, "UV per minute", [(metric("uv"), "uv")]),
        panel(3, "Orders per minute", [(metric("orders"), "orders")]),
        panel(4, "GMV per hour", [(metric("gmv", "1h"), "gmv")], "currencyCNY"),
        panel(5, "AOV per hour", [(metric("aov", "1h"), "aov")], "currencyCNY"),
        panel(
            6,
            "Payment success rate (1m)",
            [(metric("payment_success_rate"), "rate")],
            "percentunit",
        ),
        panel(
            7,
            "Purchase funnel (last hour) by step",
            [(metric("purchase_funnel", "1h"), "{{dimensions}}")],
            kind="bargauge",
        ),
        panel(
            8,
            "Open anomaly incidents",
            [("sum by (rule) (trackflow_alert_active)", "{{rule}}")],
            kind="stat",
        ),
    ],
)

QUALITY = dashboard(
    "trackflow-quality",
    "trackflow / data quality",
    [
        panel(
            1,
            "DLQ share of input",
            [("job:trackflow_dlq_share:ratio_rate5m", "dlq share")],
            "percentunit",
        ),
        panel(
            2,
            "Dead letters by code",
            [("error_code:trackflow_dlq_events:rate5m", "{{error_code}}")],
            "ops",
        ),
        panel(
            3,
            "Unknown properties (drift)",
            [
                (
                    "sum by (event_name, property) (rate(trackflow_unknown_properties_total[15m]))",
                    "{{event_name}}.{{property}}",
                )
            ],
            "ops",
        ),
        panel(
            4,
            "Late events by window",
            [("sum by (window) (rate(trackflow_late_events_total[5m]))", "{{window}}")],
            "ops",
        ),
        panel(
            5,
            "Duplicates and consent drops",
            [
                ("sum(rate(trackflow_duplicates_total[5m]))", "duplicates"),
                ("sum(rate(trackflow_consent_dropped_total[5m]))", "consent drops"),
            ],
            "ops",
        ),
        panel(
            6,
            "Active alerts",
            [
                ("sum by (rule, severity) (trackflow_alert_active)", "{{rule}} ({{severity}})"),
                ("sum by (rule) (increase(trackflow_alerts_fired_total[1h]))", "{{rule}} fired/h"),
            ],
        ),
        panel(
            7,
            "DLQ share by event",
            [
                (
                    "max by (event_name) (event_name:trackflow_dlq_share:ratio_rate5m)",
                    "{{event_name}}",
                )
            ],
            "percentunit",
        ),
        panel(
            8,
            "Missing or null property rate",
            [
                (
                    "max by (event_name, property) "
                    "(event_name_property:trackflow_property_missing:ratio_rate15m)",
                    "{{event_name}}.{{property}}",
                )
            ],
            "percentunit",
        ),
    ],
)


def main() -> None:
    OUT.mkdir(parents=True, exist_ok=True)
    for board in (PIPELINE, BUSINESS, QUALITY):
        path = OUT / f"{board['uid']}.json"
        path.write_text(json.dumps(board, indent=2, ensure_ascii=False) + "\n")
        print(path)


if __name__ == "__main__":
    main()
