"""Prometheus metrics of one worker, on a registry built at start-up (no import-time state)."""

from __future__ import annotations

import urllib.request

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    ProcessCollector,
    generate_latest,
)

from pipeline import __version__
from pipeline.ingest.validation import shown_name

LATENCY_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1, 2, 5, 10, 30, 60, 300)
MAX_DRIFT_SERIES = 200  # (event, property) pairs exported before folding into "_other"


def parse_text(text: str) -> dict[str, float]:
    """Prometheus text format -> {"name{labels}": value} (enough for tests and the demo)."""
    out: dict[str, float] = {}
    for line in text.splitlines():
        if line and not line.startswith("#"):
            name, _, value = line.rpartition(" ")
            out[name] = float(value)
    return out


def scrape(port: int, host: str = "127.0.0.1", timeout: float = 2.0) -> dict[str, float]:
    """A worker's /metrics, parsed; empty while the worker is not (yet) serving."""
    try:
        with urllib.request.urlopen(f"http://{host}:{port}/metrics", timeout=timeout) as resp:
            return parse_text(resp.read().decode())
    except OSError:
        return {}


class PipelineMetrics:
    """Every Prometheus metric of one worker, as attributes (``metrics.dlq``, ...).

    Declared in groups by concern; the groups run in this order, which is the order of
    the families on /metrics.
    """

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        r = self.registry = registry or CollectorRegistry()
        self._declare_build(r)
        self._declare_event_flow(r)
        self._declare_drops(r)
        self._declare_lake(r)
        self._declare_lake_lifecycle(r)
        self._declare_progress(r)
        self._declare_identity(r)
        self._declare_rollups_and_alerts(r)
        self._declare_data_quality(r)
        self._declare_privacy(r)
        self._drift_seen: set[tuple[str, str]] = set()

    def _declare_build(self, r: CollectorRegistry) -> None:
        """Process: the running version (every worker exports it: the rules find trackflow
        targets by it, whatever their job is called), CPU, memory, start time."""
        self.build_info = Gauge(
            "trackflow_build_info", "Running trackflow version.", ["version"], registry=r
        )
        self.build_info.labels(__version__).set(1)
        # process_cpu_seconds_total, process_resident_memory_bytes,
        # process_start_time_seconds, open fds: a registry of our own has none by default.
        ProcessCollector(registry=r)

    def _declare_event_flow(self, r: CollectorRegistry) -> None:
        """Ingest: messages and events through the stages."""
        self.messages_received = Counter(
            "trackflow_messages_received_total",
            "Kafka messages consumed from producers' topic.",
            ["topic"],
            registry=r,
        )
        self.stage_in = Counter(
            "trackflow_stage_events_in_total", "Events entering a stage.", ["stage"], registry=r
        )
        self.stage_out = Counter(
            "trackflow_stage_events_out_total", "Events leaving a stage.", ["stage"], registry=r
        )
        self.events_received = Counter(
            "trackflow_events_received_total", "Events decoded from producer messages.", registry=r
        )
        self.events_valid = Counter(
            "trackflow_events_valid_total", "Events that passed validation.", registry=r
        )
        self.events_stored = Counter(
            "trackflow_events_stored_total", "Events written to the lake events table.", registry=r
        )

    def _declare_drops(self, r: CollectorRegistry) -> None:
        """Ingest: events dead-lettered, deduplicated, dropped for consent; drift."""
        self.dlq = Counter(
            "trackflow_dlq_events_total",
            "Events or messages sent to the dead-letter topic.",
            ["error_code"],
            registry=r,
        )
        self.duplicates = Counter(
            "trackflow_duplicates_total", "Events dropped as repeated event_id.", registry=r
        )
        self.consent_dropped = Counter(
            "trackflow_consent_dropped_total",
            "Events dropped because consent.analytics was false.",
            registry=r,
        )
        self.unknown_properties = Counter(
            "trackflow_unknown_properties_total",
            "Properties not in the tracking plan, on non-strict events (drift).",
            ["event_name", "property"],
            registry=r,
        )

    def _declare_lake(self, r: CollectorRegistry) -> None:
        """Lake: files, bytes and rows written."""
        self.lake_files = Counter(
            "trackflow_lake_files_written_total", "Parquet files written.", ["table"], registry=r
        )
        self.lake_bytes = Counter(
            "trackflow_lake_bytes_written_total", "Parquet bytes written.", ["table"], registry=r
        )
        self.lake_rows = Counter(
            "trackflow_lake_rows_written_total", "Rows written to the lake.", ["table"], registry=r
        )
        self.lake_last_write = Gauge(
            "trackflow_lake_last_write_timestamp_seconds",
            "Unix time of the last lake file written.",
            ["table"],
            registry=r,
        )
        self.lake_fenced = Counter(
            "trackflow_lake_fenced_flushes_total",
            "Flushes refused because another worker took the partition over (this worker "
            "was a zombie: paused past its session timeout); its rows are re-read there.",
            ["table"],
            registry=r,
        )

    def _declare_lake_lifecycle(self, r: CollectorRegistry) -> None:
        """Lake maintenance (retention, compaction; docs/lake-lifecycle.md) and file counts."""
        self.maintain_runs = Counter(
            "trackflow_lake_maintenance_runs_total",
            "Lake maintenance runs by this worker, by outcome (ok, failed).",
            ["outcome"],
            registry=r,
        )
        self.maintain_last_success = Gauge(
            "trackflow_lake_maintenance_last_success_timestamp_seconds",
            "Unix time of the deployment's last successful lake maintenance (any worker or "
            "trackflow lake maintain), read from the lake; 0 before the first.",
            registry=r,
        )
        self.maintain_seconds = Gauge(
            "trackflow_lake_maintenance_duration_seconds",
            "Seconds the last lake maintenance run of this worker took.",
            registry=r,
        )
        self.retention_files = Counter(
            "trackflow_lake_retention_deleted_files_total",
            "Parquet files deleted as past retention.",
            ["table"],
            registry=r,
        )
        self.retention_rows = Counter(
            "trackflow_lake_retention_deleted_rows_total",
            "Rows deleted as past retention.",
            ["table"],
            registry=r,
        )
        self.compacted_files = Counter(
            "trackflow_lake_compacted_files_total",
            "Small Parquet files merged away by compaction.",
            ["table"],
            registry=r,
        )
        self.partition_files_max = Gauge(
            "trackflow_lake_partition_files_max",
            "Most Parquet files in one partition directory of the table (small files slow "
            "every query; compaction merges them).",
            ["table"],
            registry=r,
        )
        self.table_files = Gauge(
            "trackflow_lake_table_files", "Parquet files of the table.", ["table"], registry=r
        )

    def _declare_progress(self, r: CollectorRegistry) -> None:
        """Process: latency per stage, consumer lag, dedup memory."""
        self.latency = Histogram(
            "trackflow_processing_latency_seconds",
            "Seconds from a message's Kafka timestamp to the end of a stage's work on it.",
            ["stage"],
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.consumer_lag = Gauge(
            "trackflow_consumer_lag_messages",
            "Messages between the log end and this worker's position.",
            ["topic", "partition"],
            registry=r,
        )
        self.dedup_ids = Gauge(
            "trackflow_dedup_ids", "Event ids held in the dedup memory.", registry=r
        )

    def _declare_identity(self, r: CollectorRegistry) -> None:
        """Identity: links sent and applied, merges, map size."""
        self.links_sent = Counter(
            "trackflow_identity_links_sent_total",
            "Identifier links sent to the identity writer (not already known locally).",
            registry=r,
        )
        self.links_applied = Counter(
            "trackflow_identity_links_applied_total",
            "Links that changed the identity map, applied by the single writer.",
            registry=r,
        )
        self.merges = Counter(
            "trackflow_identity_merges_total",
            "Person merges decided by the identity writer; accepted or refused, by reason.",
            ["accepted", "reason"],
            registry=r,
        )
        self.persons = Gauge(
            "trackflow_identity_persons", "Persons in this worker's copy of the map.", registry=r
        )
        self.identifiers = Gauge(
            "trackflow_identity_identifiers",
            "Identifiers in this worker's copy of the map.",
            registry=r,
        )
        self.writer_lag = Gauge(
            "trackflow_identity_writer_lag_seconds",
            "Age of the last link batch the identity writer applied, when it applied it.",
            registry=r,
        )
        self.identity_wait = Gauge(
            "trackflow_identity_wait_offsets",
            "identity.links offsets this worker's map lacks that open windows of persons "
            "(uv, funnels) wait for before they close.",
            registry=r,
        )

    def _declare_rollups_and_alerts(self, r: CollectorRegistry) -> None:
        """Business metrics (late events, values, windows) and alerts."""
        self.late_events = Counter(
            "trackflow_late_events_total",
            "Events later than the allowed lateness for a window size: stored in the lake, "
            "not counted in the stream's rollups.",
            ["window", "stage"],
            registry=r,
        )
        self.metric_value = Gauge(
            "trackflow_metric_value",
            "Provisional value per metric series: the running value of its newest open "
            "window, which still grows (absent while no window of the series is open). "
            "Finals are trackflow_metric_final.",
            ["metric", "window", "dimensions"],
            registry=r,
        )
        self.metric_final = Gauge(
            "trackflow_metric_final",
            "Final value per metric series: its newest closed window, as stored in the "
            "rollups table, shown by the worker holding the series' combine partition.",
            ["metric", "window", "dimensions"],
            registry=r,
        )
        self.windows_closed = Counter(
            "trackflow_metric_windows_closed_total",
            "Metric windows finalised, by how they closed.",
            ["window", "reason"],
            registry=r,
        )
        self.open_windows = Gauge(
            "trackflow_metric_open_windows", "Metric windows open in the combine stage.", registry=r
        )
        self.alert_active = Gauge(
            "trackflow_alert_active",
            "1 while an anomaly incident is open for a rule and series, 0 once resolved; "
            "shown only by the worker running the detect stage. severity is the rule's.",
            ["rule", "metric", "severity", "dimensions"],
            registry=r,
        )
        self.alerts_fired = Counter(
            "trackflow_alerts_fired_total",
            "Anomaly incidents opened.",
            ["rule", "severity"],
            registry=r,
        )
        self.alerts_resolved = Counter(
            "trackflow_alerts_resolved_total", "Anomaly incidents resolved.", ["rule"], registry=r
        )

    def _declare_data_quality(self, r: CollectorRegistry) -> None:
        """Ingest quality: per-event counts, missing properties, input gaps."""
        self.events_by_name = Counter(
            "trackflow_events_valid_by_event_total",
            "Valid events by event name (denominator of missing-property rates).",
            ["event_name"],
            registry=r,
        )
        self.dlq_by_event = Counter(
            "trackflow_dlq_events_by_event_total",
            "Events sent to the dead-letter topic by event name; '_unplanned' when the name "
            "is missing or not in the tracking plan (keeps the label set bounded).",
            ["event_name"],
            registry=r,
        )
        self.property_missing = Counter(
            "trackflow_property_missing_total",
            "Valid events that lacked one of their event's properties (absent or null).",
            ["event_name", "property"],
            registry=r,
        )
        self.offset_gaps = Counter(
            "trackflow_offset_gaps_total",
            "Input offsets that never arrived after repeated reads, given up on (input "
            "lost), per stage and topic partition. Should stay 0; see docs/architecture.md, "
            "Holes in the input.",
            ["stage", "topic", "partition"],
            registry=r,
        )

        self.input_stalls = Counter(
            "trackflow_input_stalls_total",
            "Times an owned input partition had messages waiting and nothing was read from it "
            "for TRACKFLOW_STALL_SECONDS outside a rebalance (the worker log says why). "
            "Should stay 0; see docs/runbooks/input-stall.md.",
            ["topic"],
            registry=r,
        )

    def _declare_privacy(self, r: CollectorRegistry) -> None:
        """Privacy (DESIGN 15): suppressed events, purged rows, requests, the barrier."""
        self.privacy_suppressed = Counter(
            "trackflow_privacy_suppressed_events_total",
            "Events of suppressed persons dropped before storage (never dead-lettered).",
            registry=r,
        )
        self.privacy_purged = Counter(
            "trackflow_privacy_purged_rows_total",
            "Rows of deleted persons the lake writers dropped before writing.",
            ["table"],
            registry=r,
        )
        self.identities_forgotten = Counter(
            "trackflow_identity_forgotten_total",
            "Identifiers of deleted persons removed from the identity map by the writer.",
            registry=r,
        )
        self.privacy_requests = Gauge(
            "trackflow_privacy_requests",
            "Privacy requests by action and status, as this worker has read them.",
            ["action", "status"],
            registry=r,
        )
        self.privacy_oldest_pending = Gauge(
            "trackflow_privacy_oldest_pending_age_seconds",
            "Age of the oldest privacy request not done (0 when none).",
            registry=r,
        )
        self.privacy_sync = Histogram(
            "trackflow_privacy_sync_seconds",
            "Time validate spends per take making sure it read privacy.requests to its end.",
            buckets=(0.0005, 0.001, 0.002, 0.005, 0.01, 0.025, 0.05, 0.1, 0.5, 1, 5),
            registry=r,
        )
        self.privacy_deletions = Counter(
            "trackflow_privacy_deletions_total",
            "Unfinished privacy deletions this worker ran, by outcome (done, failed).",
            ["outcome"],
            registry=r,
        )
        for outcome in ("done", "failed"):
            self.privacy_deletions.labels(outcome)
        self.privacy_oldest_pending.set(0)

    def count_unknown_property(self, event_name: str, prop: str) -> None:
        # Label values are bounded and never carry a value sent in the wrong place: a
        # property "name" that does not look like one (a phone number, an e-mail) is counted
        # as _invalid_name.
        if shown_name(prop) != prop:
            prop = "_invalid_name"
        key = (event_name, prop)
        if key not in self._drift_seen:
            if len(self._drift_seen) >= MAX_DRIFT_SERIES:
                key = (event_name, "_other")
            else:
                self._drift_seen.add(key)
        self.unknown_properties.labels(*key).inc()

    def render(self) -> bytes:
        return generate_latest(self.registry)
