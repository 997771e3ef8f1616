"""PipelineMetrics: the attribute, name, type and labels of every worker metric, and drift folding.

The ``trackflow_`` names and their labels are a contract with the Prometheus rules and the
Grafana dashboards (tests/unit/deploy checks the names those use); the attributes are what
agents call (``metrics.dlq.labels(...)``), with labels passed by position.
"""

from __future__ import annotations

import pytest
from prometheus_client import CollectorRegistry

from pipeline import __version__
from pipeline.runtime import telemetry
from pipeline.runtime.telemetry import PipelineMetrics

# attribute -> (family name as exposed, type, label names in positional order)
EXPECTED: dict[str, tuple[str, str, tuple[str, ...]]] = {
    "build_info": ("trackflow_build_info", "gauge", ("version",)),
    "messages_received": ("trackflow_messages_received", "counter", ("topic",)),
    "stage_in": ("trackflow_stage_events_in", "counter", ("stage",)),
    "stage_out": ("trackflow_stage_events_out", "counter", ("stage",)),
    "events_received": ("trackflow_events_received", "counter", ()),
    "events_valid": ("trackflow_events_valid", "counter", ()),
    "events_stored": ("trackflow_events_stored", "counter", ()),
    "dlq": ("trackflow_dlq_events", "counter", ("error_code",)),
    "duplicates": ("trackflow_duplicates", "counter", ()),
    "consent_dropped": ("trackflow_consent_dropped", "counter", ()),
    "unknown_properties": ("trackflow_unknown_properties", "counter", ("event_name", "property")),
    "lake_files": ("trackflow_lake_files_written", "counter", ("table",)),
    "lake_bytes": ("trackflow_lake_bytes_written", "counter", ("table",)),
    "lake_rows": ("trackflow_lake_rows_written", "counter", ("table",)),
    "lake_last_write": ("trackflow_lake_last_write_timestamp_seconds", "gauge", ("table",)),
    "latency": ("trackflow_processing_latency_seconds", "histogram", ("stage",)),
    "consumer_lag": ("trackflow_consumer_lag_messages", "gauge", ("topic", "partition")),
    "dedup_ids": ("trackflow_dedup_ids", "gauge", ()),
    "links_sent": ("trackflow_identity_links_sent", "counter", ()),
    "links_applied": ("trackflow_identity_links_applied", "counter", ()),
    "merges": ("trackflow_identity_merges", "counter", ("accepted", "reason")),
    "persons": ("trackflow_identity_persons", "gauge", ()),
    "identifiers": ("trackflow_identity_identifiers", "gauge", ()),
    "writer_lag": ("trackflow_identity_writer_lag_seconds", "gauge", ()),
    "identity_wait": ("trackflow_identity_wait_offsets", "gauge", ()),
    "late_events": ("trackflow_late_events", "counter", ("window", "stage")),
    "metric_value": ("trackflow_metric_value", "gauge", ("metric", "window", "dimensions")),
    "metric_final": ("trackflow_metric_final", "gauge", ("metric", "window", "dimensions")),
    "windows_closed": ("trackflow_metric_windows_closed", "counter", ("window", "reason")),
    "open_windows": ("trackflow_metric_open_windows", "gauge", ()),
    "alert_active": (
        "trackflow_alert_active",
        "gauge",
        ("rule", "metric", "severity", "dimensions"),
    ),
    "alerts_fired": ("trackflow_alerts_fired", "counter", ("rule", "severity")),
    "alerts_resolved": ("trackflow_alerts_resolved", "counter", ("rule",)),
    "events_by_name": ("trackflow_events_valid_by_event", "counter", ("event_name",)),
    "dlq_by_event": ("trackflow_dlq_events_by_event", "counter", ("event_name",)),
    "property_missing": ("trackflow_property_missing", "counter", ("event_name", "property")),
    "lake_fenced": ("trackflow_lake_fenced_flushes", "counter", ("table",)),
    "offset_gaps": ("trackflow_offset_gaps", "counter", ("stage", "topic", "partition")),
    "input_stalls": ("trackflow_input_stalls", "counter", ("topic",)),
    "maintain_runs": ("trackflow_lake_maintenance_runs", "counter", ("outcome",)),
    "maintain_last_success": (
        "trackflow_lake_maintenance_last_success_timestamp_seconds",
        "gauge",
        (),
    ),
    "maintain_seconds": ("trackflow_lake_maintenance_duration_seconds", "gauge", ()),
    "retention_files": ("trackflow_lake_retention_deleted_files", "counter", ("table",)),
    "retention_rows": ("trackflow_lake_retention_deleted_rows", "counter", ("table",)),
    "compacted_files": ("trackflow_lake_compacted_files", "counter", ("table",)),
    "partition_files_max": ("trackflow_lake_partition_files_max", "gauge", ("table",)),
    "table_files": ("trackflow_lake_table_files", "gauge", ("table",)),
    "privacy_suppressed": ("trackflow_privacy_suppressed_events", "counter", ()),
    "privacy_purged": ("trackflow_privacy_purged_rows", "counter", ("table",)),
    "identities_forgotten": ("trackflow_identity_forgotten", "counter", ()),
    "privacy_requests": ("trackflow_privacy_requests", "gauge", ("action", "status")),
    "privacy_oldest_pending": ("trackflow_privacy_oldest_pending_age_seconds", "gauge", ()),
    "privacy_sync": ("trackflow_privacy_sync_seconds", "histogram", ()),
    "privacy_deletions": ("trackflow_privacy_deletions", "counter", ("outcome",)),
}


def test_every_metric_keeps_its_attribute_name_type_and_labels() -> None:
    metrics = PipelineMetrics(CollectorRegistry())
    for attr, (name, kind, labels) in EXPECTED.items():
        metric = getattr(metrics, attr)
        values = tuple(f"{attr}-{i}" for i in range(len(labels)))
        if labels:
            metric.labels(*values)  # by position, as the agents call it
        [family] = [f for f in metrics.registry.collect() if f.name == name]
        assert family.type == kind, attr
        wanted = dict(zip(labels, values, strict=True))
        assert any(
            {k: v for k, v in s.labels.items() if k != "le"} == wanted for s in family.samples
        ), f"{attr}: no sample labelled {wanted}"
    assert sorted(f.name for f in metrics.registry.collect()) == sorted(
        [name for name, _, _ in EXPECTED.values()] + PROCESS
    )


# prometheus_client's process collector: CPU, memory and start time of each worker.
PROCESS = [
    "process_cpu_seconds",
    "process_max_fds",
    "process_open_fds",
    "process_resident_memory_bytes",
    "process_start_time_seconds",
    "process_virtual_memory_bytes",
]


def test_process_cpu_memory_and_start_time_are_exported() -> None:
    samples = telemetry.parse_text(PipelineMetrics(CollectorRegistry()).render().decode())
    assert samples["process_cpu_seconds_total"] >= 0
    assert samples["process_resident_memory_bytes"] > 0
    assert samples["process_start_time_seconds"] > 1_600_000_000


def test_build_info_is_set_for_the_running_version() -> None:
    samples = telemetry.parse_text(PipelineMetrics(CollectorRegistry()).render().decode())
    assert samples[f'trackflow_build_info{{version="{__version__}"}}'] == 1.0


def test_unknown_properties_fold_into_other_past_the_series_cap(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(telemetry, "MAX_DRIFT_SERIES", 2)
    metrics = PipelineMetrics(CollectorRegistry())
    for prop in ("a", "b", "c", "d", "a"):
        metrics.count_unknown_property("page_view", prop)
    samples = telemetry.parse_text(metrics.render().decode())
    counts = {
        prop: samples.get(
            f'trackflow_unknown_properties_total{{event_name="page_view",property="{prop}"}}'
        )
        for prop in ("a", "b", "c", "d", "_other")
    }
    assert counts == {"a": 2.0, "b": 1.0, "c": None, "d": None, "_other": 2.0}


def test_unknown_property_labels_never_carry_values() -> None:
    from pipeline.runtime.telemetry import PipelineMetrics

    m = PipelineMetrics()
    for name in ("13812345678", "alice@example.com", "has space", "ok_name"):
        m.count_unknown_property("page_view", name)
    labels = {
        s.labels["property"]
        for metric in m.unknown_properties.collect()
        for s in metric.samples
        if s.name.endswith("_total")
    }
    assert labels == {"_invalid_name", "ok_name"}
