"""Writes grafana/dashboards/*.json (fixed uids): edit here, then run this file.

Dashboards are generated so that every panel is a PromQL expression the tests can check
against the rules and the metrics a worker exports, and so that every panel states its unit.

Conventions that make the dashboards readable (tests/unit/deploy/test_dashboards.py checks them):

- Template variables ``$job`` (not hard-coded: operators scrape under their own job name),
  ``$instance`` (one worker), ``$metric``/``$window`` (business series) and ``$event``
  (event name) filter the panels' queries; all are ``label_values(...)`` queries.
- Rates use ``$__rate_interval``, so they follow the zoom instead of a fixed ``[5m]``. Ratio
  panels of the quality board read the recording rules the alerts evaluate, so on-call sees
  the value that paged.
- Business panels read ``trackflow_metric_final`` (the latest closed window of each series);
  the open window's running value (``trackflow_metric_value``) is only shown as a separate,
  dashed series titled "provisional", never in its place (it restarts at every window: a
  sawtooth).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

OUT = Path(__file__).resolve().parent / "dashboards"
DS = {"type": "prometheus", "uid": "trackflow-prometheus"}
RATE = "$__rate_interval"
JOB = 'job=~"$job"'
WORKER = 'job=~"$job", instance=~"$instance"'
FULL = 24  # panel width of a full row (Grafana's grid is 24 wide)


def variable(
    name: str, label: str, query: str, default: str | None = None, *, all_value: str | None = ".*"
) -> dict[str, Any]:
    """A ``label_values`` template variable, several values or "All" selectable.

    "All" is ``.*`` by default, so a panel also shows series that appeared after the
    variable was last refreshed; ``all_value=None`` makes "All" the listed values instead.
    """
    current = (
        {"selected": True, "text": [default], "value": [default]}
        if default
        else {"selected": True, "text": ["All"], "value": ["$__all"]}
    )
    return {
        "name": name,
        "label": label,
        "type": "query",
        "datasource": DS,
        "query": query,
        "definition": query,
        "refresh": 2,  # on time range change: workers and events come and go
        "includeAll": True,
        "allValue": all_value,
        "multi": True,
        "current": current,
        "options": [],
        "regex": "",
        "sort": 1,
        "hide": 0,
    }


# "All" jobs means the jobs that scrape trackflow workers, not ".*": `up` has every job.
JOB_VAR = variable("job", "Job", "label_values(trackflow_build_info, job)", all_value=None)
INSTANCE_VAR = variable(
    "instance", "Worker", f"label_values(trackflow_build_info{{{JOB}}}, instance)"
)
METRIC_VAR = variable(
    "metric", "Metric", f"label_values(trackflow_metric_final{{{JOB}}}, metric)", "orders"
)
WINDOW_VAR = variable(
    "window",
    "Window",
    f'label_values(trackflow_metric_final{{{JOB}, metric=~"$metric"}}, window)',
)
EVENT_VAR = variable(
    "event", "Event", f"label_values(trackflow_events_valid_by_event_total{{{JOB}}}, event_name)"
)


def panel(
    title: str,
    exprs: list[tuple[str, str]],
    unit: str,
    kind: str = "timeseries",
    width: int = 12,
    description: str = "",
) -> dict[str, Any]:
    """One panel; series whose legend says "provisional" are drawn dashed."""
    provisional = [
        {
            "matcher": {"id": "byFrameRefID", "options": chr(65 + i)},
            "properties": [{"id": "custom.lineStyle", "value": {"fill": "dash", "dash": [10, 10]}}],
        }
        for i, (_, legend) in enumerate(exprs)
        if "provisional" in legend
    ]
    return {
        "type": kind,
        "title": title,
        "description": description,
        "datasource": DS,
        "gridPos": {"h": 8, "w": width, "x": 0, "y": 0},
        "fieldConfig": {"defaults": {"unit": unit}, "overrides": provisional},
        "targets": [
            {"refId": chr(65 + i), "datasource": DS, "expr": expr, "legendFormat": legend}
            for i, (expr, legend) in enumerate(exprs)
        ],
    }


def dashboard(
    uid: str, title: str, variables: list[dict[str, Any]], panels: list[dict[str, Any]]
) -> dict[str, Any]:
    """Numbers the panels and lays them out left to right, top to bottom."""
    x = y = 0
    for pid, p in enumerate(panels, start=1):
        pos = p["gridPos"]
        if x + pos["w"] > FULL:
            x, y = 0, y + 8
        p["id"] = pid
        pos["x"], pos["y"] = x, y
        x += pos["w"]
    return {
        "uid": uid,
        "title": title,
        "tags": ["trackflow"],
        "timezone": "utc",
        "schemaVersion": 39,
        "version": 2,
        "refresh": "30s",
        "graphTooltip": 1,  # shared crosshair: compare panels at the same instant
        "time": {"from": "now-6h", "to": "now"},
        "templating": {"list": variables},
        "panels": panels,
    }


def final(name: str, window: str) -> str:
    """The latest final value of a business metric, one series per dimensions value (the max
    only drops the instance label: one worker at a time combines a series)."""
    series = f'{JOB}, metric="{name}", window="{window}"'
    return f"max by (dimensions) (trackflow_metric_final{{{series}}})"


def provisional(name: str, window: str) -> str:
    """The open window's running value: rises through the window, restarts at the next."""
    return f'max(trackflow_metric_value{{{JOB}, metric="{name}", window="{window}"}})'


PIPELINE = dashboard(
    "trackflow-pipeline",
    "trackflow / pipeline health",
    [JOB_VAR, INSTANCE_VAR],
    [
        panel(
            "Events per second by stage (in)",
            [
                (
                    f"sum by (stage) (rate(trackflow_stage_events_in_total{{{WORKER}}}[{RATE}]))",
                    "{{stage}}",
                )
            ],
            "ops",
        ),
        panel(
            "Received vs stored events",
            [
                (f"sum(rate(trackflow_events_received_total{{{WORKER}}}[{RATE}]))", "received"),
                (f"sum(rate(trackflow_events_stored_total{{{WORKER}}}[{RATE}]))", "stored"),
            ],
            "ops",
        ),
        panel(
            "Consumer lag of input partitions by topic",
            [(f"sum by (topic) (trackflow_consumer_lag_messages{{{WORKER}}})", "{{topic}}")],
            "short",
            description="Messages between the log end and the consumer group's position, "
            "input partitions only (changelogs are not consumed by the group).",
        ),
        panel(
            "Processing latency p95 by stage",
            [
                (
                    "histogram_quantile(0.95, sum by (stage, le) "
                    f"(rate(trackflow_processing_latency_seconds_bucket{{{WORKER}}}[{RATE}])))",
                    "{{stage}}",
                )
            ],
            "s",
            description="From a message's Kafka timestamp to the end of the stage's work.",
        ),
        panel(
            "Dead letters by error code",
            [
                (
                    f"sum by (error_code) (rate(trackflow_dlq_events_total{{{WORKER}}}[{RATE}]))",
                    "{{error_code}}",
                )
            ],
            "ops",
        ),
        panel(
            "Identity merges",
            [
                (
                    "sum by (accepted, reason) "
                    f"(rate(trackflow_identity_merges_total{{{WORKER}}}[{RATE}]))",
                    "accepted={{accepted}} {{reason}}",
                )
            ],
            "ops",
        ),
        panel(
            "Identity writer lag",
            [
                (
                    f"max by (instance) (trackflow_identity_writer_lag_seconds{{{WORKER}}})",
                    "{{instance}}",
                )
            ],
            "s",
            description="Age of the last link batch the identity writer applied.",
        ),
        panel(
            "uv and funnel windows waiting for identity links",
            [
                (
                    f"max by (instance) (trackflow_identity_wait_offsets{{{WORKER}}})",
                    "{{instance}}",
                )
            ],
            "short",
            description="identity.links offsets a worker's map lacks that windows of persons "
            "wait for; ten minutes above 0 warns (TrackflowPersonWindowsWaiting).",
        ),
        panel(
            "Lake write throughput by table",
            [
                (
                    "sum by (table) "
                    f"(rate(trackflow_lake_bytes_written_total{{{WORKER}}}[{RATE}]))",
                    "{{table}}",
                )
            ],
            "Bps",
        ),
        panel(
            "Time since the last lake file by table",
            [
                (
                    "time() - max by (table) "
                    f"(trackflow_lake_last_write_timestamp_seconds{{{WORKER}}})",
                    "{{table}}",
                )
            ],
            "s",
        ),
        panel(
            "Lake files: most in one settled partition, by table",
            [
                (
                    f"max by (table) (trackflow_lake_partition_files_max{{{WORKER}}})",
                    "{{table}}",
                )
            ],
            "short",
            description="Compaction merges a day's small files after the day; over 1000 "
            "pages (TrackflowLakeTooManyFiles).",
        ),
        panel(
            "Time since the last lake maintenance",
            [
                (
                    "time() - max "
                    f"(trackflow_lake_maintenance_last_success_timestamp_seconds{{{WORKER}}} > 0)",
                    "last success",
                )
            ],
            "s",
            description="Retention deletes and compaction (trackflow lake maintain), daily.",
        ),
        panel(
            "Privacy: events of suppressed persons dropped",
            [
                (
                    f"sum(rate(trackflow_privacy_suppressed_events_total{{{WORKER}}}"
                    "[$__rate_interval]))",
                    "suppressed",
                )
            ],
            "ops",
            description="Dropped before storage and before the DLQ (docs/privacy.md).",
        ),
        panel(
            "Privacy: oldest request not done",
            [(f"max(trackflow_privacy_oldest_pending_age_seconds{{{WORKER}}})", "age")],
            "s",
            description="A deletion waiting; over 30 minutes: TrackflowPrivacyRequestPending.",
        ),
        panel(
            "Workers up",
            [(f"sum(up{{{WORKER}}})", "workers")],
            "short",
            kind="stat",
        ),
        panel(
            "Offset holes given up on (time range)",
            [
                (
                    "sum by (stage, topic) "
                    f"(increase(trackflow_offset_gaps_total{{{WORKER}}}[$__range]))",
                    "{{stage}} {{topic}}",
                )
            ],
            "short",
            kind="stat",
            description="Input offsets that never arrived: should stay 0 (runbook offset-hole).",
        ),
        panel(
            "Input stalls (time range)",
            [
                (
                    "sum by (topic) "
                    f"(increase(trackflow_input_stalls_total{{{WORKER}}}[$__range]))",
                    "{{topic}}",
                )
            ],
            "short",
            kind="stat",
            description="Owned input partitions left unread with messages waiting: should "
            "stay 0 (runbook input-stall).",
        ),
    ],
)

BUSINESS = dashboard(
    "trackflow-business",
    "trackflow / business KPIs",
    [JOB_VAR, METRIC_VAR, WINDOW_VAR],
    [
        panel("PV per minute by page (final)", [(final("pv", "1m"), "{{dimensions}}")], "short"),
        panel("UV per minute (final)", [(final("uv", "1m"), "uv")], "short"),
        panel("Orders per minute (final)", [(final("orders", "1m"), "orders")], "short"),
        panel(
            "GMV per hour (final)",
            [
                (final("gmv", "1h"), "gmv (last closed hour)"),
                (provisional("gmv", "1h"), "gmv (current hour so far, provisional)"),
            ],
            "currencyCNY",
        ),
        panel(
            "AOV per hour (final)",
            [(final("aov", "1h"), "aov (last closed hour)")],
            "currencyCNY",
        ),
        panel(
            "Payment success rate per minute (final)",
            [(final("payment_success_rate", "1m"), "success rate")],
            "percentunit",
        ),
        panel(
            "Purchase funnel, last closed hour, by step (final)",
            [(final("purchase_funnel", "1h"), "{{dimensions}}")],
            "short",
            kind="bargauge",
        ),
        panel(
            "Stored events per minute by event (final)",
            [(final("events", "1m"), "{{dimensions}}")],
            "short",
        ),
        panel(
            "Retention D1 and D7, newest complete daily cohort (final)",
            [
                (
                    f'max by (dimensions) (trackflow_metric_final{{{JOB}, metric="retention", '
                    r'window="1d", dimensions=~".*\"k\":\"(1|7)\".*"})',
                    "{{dimensions}}",
                )
            ],
            "percentunit",
            description="Share of a day's cohort back 1 and 7 days later, as exported by "
            "`trackflow report retention --export` (complete cells only; docs/analytics.md).",
        ),
        panel(
            "Lifecycle, newest complete day, by stage (final)",
            [(final("lifecycle", "1d"), "{{dimensions}}")],
            "short",
            description="New, returning, resurrecting and dormant persons of the last "
            "complete day, as exported by `trackflow report lifecycle --export`.",
        ),
        panel(
            "Open anomaly incidents by rule and severity",
            [
                (
                    f"sum by (rule, severity) (trackflow_alert_active{{{JOB}}})",
                    "{{rule}} ({{severity}})",
                )
            ],
            "short",
            kind="stat",
            width=FULL,
        ),
        panel(
            "$metric ($window): final and provisional (open window)",
            [
                (
                    "max by (metric, window, dimensions) (trackflow_metric_final"
                    f'{{{JOB}, metric=~"$metric", window=~"$window"}})',
                    "{{metric}} {{window}} {{dimensions}} final",
                ),
                (
                    "max by (metric, window, dimensions) (trackflow_metric_value"
                    f'{{{JOB}, metric=~"$metric", window=~"$window"}})',
                    "{{metric}} {{window}} {{dimensions}} provisional (open window)",
                ),
            ],
            "short",
            width=FULL,
            description="Solid: the last closed window's value. Dashed: the open window's "
            "running value, which restarts when the next window opens.",
        ),
    ],
)

QUALITY = dashboard(
    "trackflow-quality",
    "trackflow / data quality",
    [JOB_VAR, EVENT_VAR],
    [
        panel(
            "DLQ share of input (5m, as alerted)",
            [(f"job:trackflow_dlq_share:ratio_rate5m{{{JOB}}}", "{{job}}")],
            "percentunit",
        ),
        panel(
            "DLQ share by event (5m, as alerted)",
            [
                (
                    "max by (event_name) (event_name:trackflow_dlq_share:ratio_rate5m"
                    f'{{{JOB}, event_name=~"$event"}})',
                    "{{event_name}}",
                )
            ],
            "percentunit",
        ),
        panel(
            "Dead letters by code",
            [
                (
                    f"sum by (error_code) (rate(trackflow_dlq_events_total{{{JOB}}}[{RATE}]))",
                    "{{error_code}}",
                )
            ],
            "ops",
        ),
        panel(
            "Valid events by event",
            [
                (
                    "sum by (event_name) (rate(trackflow_events_valid_by_event_total"
                    f'{{{JOB}, event_name=~"$event"}}[{RATE}]))',
                    "{{event_name}}",
                )
            ],
            "ops",
        ),
        panel(
            "Unknown properties (drift)",
            [
                (
                    "sum by (event_name, property) (rate(trackflow_unknown_properties_total"
                    f'{{{JOB}, event_name=~"$event"}}[{RATE}]))',
                    "{{event_name}}.{{property}}",
                )
            ],
            "ops",
        ),
        panel(
            "Missing or null property rate (15m)",
            [
                (
                    "max by (event_name, property) "
                    "(event_name_property:trackflow_property_missing:ratio_rate15m"
                    f'{{{JOB}, event_name=~"$event"}})',
                    "{{event_name}}.{{property}}",
                )
            ],
            "percentunit",
            description="Share of valid events lacking the property (absent or null); "
            "optional properties are often absent by design.",
        ),
        panel(
            "Late events by window",
            [
                (
                    f"sum by (window) (rate(trackflow_late_events_total{{{JOB}}}[{RATE}]))",
                    "{{window}}",
                )
            ],
            "ops",
        ),
        panel(
            "Duplicates and consent drops",
            [
                (f"sum(rate(trackflow_duplicates_total{{{JOB}}}[{RATE}]))", "duplicates"),
                (f"sum(rate(trackflow_consent_dropped_total{{{JOB}}}[{RATE}]))", "consent drops"),
            ],
            "ops",
        ),
        panel(
            "Anomaly incidents: open, and opened in the last hour",
            [
                (
                    f"sum by (rule, severity) (trackflow_alert_active{{{JOB}}})",
                    "{{rule}} ({{severity}}) open",
                ),
                (
                    "sum by (rule, severity) "
                    f"(increase(trackflow_alerts_fired_total{{{JOB}}}[1h]))",
                    "{{rule}} ({{severity}}) opened in last hour",
                ),
            ],
            "short",
            width=FULL,
        ),
        # Member data (DESIGN 14): the latest import of each source, as the workers read it
        # from the lake (pipeline/runtime/member_metrics.py); the alerts of members.yml.
        panel(
            "Members: required fields without a value (latest import)",
            [
                (
                    "max by (source, field) "
                    f'(trackflow_member_field_null_ratio{{{JOB}, required="true"}})',
                    "{{source}}.{{field}}",
                )
            ],
            "percentunit",
            width=8,
            description="Share of the rows read without a value; those rows are rejected. "
            "Alert over 5% (TrackflowMemberRequiredFieldNulls).",
        ),
        panel(
            "Members: rows rejected (latest import)",
            [
                (
                    f"max by (source) (trackflow_member_import_rejected_ratio{{{JOB}}})",
                    "{{source}}",
                )
            ],
            "percentunit",
            width=8,
            description="Rejected rows are in member_rejects with the rule each broke. "
            "Alert over 10% (TrackflowMemberRejectionShareHigh).",
        ),
        panel(
            "Members: time since the last import",
            [
                (
                    "time() - max by (source) "
                    f"(trackflow_member_import_last_success_timestamp_seconds{{{JOB}}})",
                    "{{source}}",
                )
            ],
            "s",
            width=8,
            description="Alert past the source's SLA (TrackflowMemberImportOverdue).",
        ),
        panel(
            "Members: null rate of every field (latest import)",
            [
                (
                    f"max by (source, field) (trackflow_member_field_null_ratio{{{JOB}}})",
                    "{{source}}.{{field}}",
                )
            ],
            "percentunit",
        ),
        panel(
            "Members: values of enum fields (latest import)",
            [
                (
                    f"max by (source, field, value) (trackflow_member_field_value_ratio{{{JOB}}})",
                    "{{source}}.{{field}} = {{value}}",
                )
            ],
            "percentunit",
            description="Share of the accepted rows with each value; a shift between "
            "imports is drift (trackflow members report shows it per import).",
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
