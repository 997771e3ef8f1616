"""What the agents share, built once per worker by ``pipeline.app.create_app``.

Three parts with different lifetimes: the domain objects (pure, testable without Kafka),
the Faust topology (topics and tables of this app), and the worker's telemetry.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

from pipeline import __version__, names
from pipeline.alerting.rules import AlertRule, load_alert_rules
from pipeline.contract.pii import PiiHasher
from pipeline.contract.plan import TrackingPlan, load_plan
from pipeline.contract.profiles import load_profile_dictionary
from pipeline.identity.graph import IdentityGraph
from pipeline.identity.rules import IdentityRules, load_identity_rules, node
from pipeline.identity.stitching import Stitcher
from pipeline.ingest.dedup import SeenIds
from pipeline.ingest.validation import Validator
from pipeline.lake.schema import EventBatches, EventsSplitter, split_by_day, split_dlq
from pipeline.lake.writer import TableWriter
from pipeline.members.identify import IdentifyProfiles
from pipeline.metrics import routing
from pipeline.metrics.combine import CombineState
from pipeline.metrics.combine_states import CombineStates
from pipeline.metrics.definitions import MetricDef, load_metrics
from pipeline.privacy.purge import Purger
from pipeline.privacy.state import PrivacyState
from pipeline.runtime.privacy import PrivacyFollower
from pipeline.runtime.start_offsets import StartOffsets
from pipeline.runtime.telemetry import PipelineMetrics
from pipeline.settings import Settings
from tables.dedup import DedupTable
from tables.identity import IdentityTable
from tables.rollup_state import AggregateProgress, CombineWindows


@dataclass
class Domain:
    """The pure objects of every concern, wired to each other but not to Kafka."""

    plan: TrackingPlan
    hasher: PiiHasher
    validator: Validator
    batches: EventBatches
    seen: SeenIds
    rules: IdentityRules
    graph: IdentityGraph
    stitcher: Stitcher
    metric_defs: dict[str, MetricDef]
    combine: CombineStates
    combine_place: dict[str, int]  # metric -> combine partition
    alert_rules: dict[str, AlertRule]
    lake: dict[str, TableWriter]  # lake table name -> writer
    identify: IdentifyProfiles  # identify traits -> member profile updates (DESIGN 14)
    privacy: PrivacyState  # suppressed and deleted persons (privacy.requests)

    @classmethod
    def build(cls, settings: Settings, partitions: int) -> Domain:
        plan = load_plan(settings.schemas_dir)
        hasher = PiiHasher(settings.pii_key())
        rules = load_identity_rules(settings.identity_rules)
        graph = IdentityGraph(rules)
        metric_defs = load_metrics(plan, settings.schemas_dir)

        def combine_state() -> CombineState:
            state = CombineState(metric_defs, partitions, settings.lateness_seconds)
            # Funnels follow persons: an identifier's person is read from the map when an
            # hour closes.
            state.resolve = lambda n: graph.lookup(n) or rules.person_id(n)
            state.idle_ms = int(settings.partition_idle_seconds * 1000)
            return state

        alert_rules = load_alert_rules(settings.schemas_dir, set(metric_defs))
        guards = [(r.metric, r.volume.metric) for r in alert_rules.values() if r.volume]
        return cls(
            plan=plan,
            hasher=hasher,
            validator=Validator(plan, hasher),
            batches=EventBatches(plan),
            seen=SeenIds(settings.dedup_horizon_hours * 3600 * 1000),
            rules=rules,
            graph=graph,
            stitcher=Stitcher(rules, graph, settings.identity_refresh_seconds * 1000),
            metric_defs=metric_defs,
            combine=CombineStates(combine_state),
            combine_place=routing.partitions(metric_defs, settings.combine_partitions, guards),
            alert_rules=alert_rules,
            lake=lake_writers(settings.lake_dir, plan),
            identify=identify_profiles(settings, plan, hasher, rules),
            privacy=PrivacyState(graph.person.get),
        )


def identify_profiles(
    settings: Settings, plan: TrackingPlan, hasher: PiiHasher, rules: IdentityRules
) -> IdentifyProfiles:
    """The plan's member dictionary (else the built-in one); 'today' in the project zone."""
    own = plan.root / "profiles" / "member"
    dictionary = load_profile_dictionary(own if own.is_dir() else None)
    zone = ZoneInfo(settings.timezone)
    return IdentifyProfiles(
        dictionary,
        hasher,
        lambda: datetime.now(zone).date(),
        __version__,
        lambda kind, value: rules.person_id(node(kind, value)),
    )


def lake_writers(lake_dir: Path, plan: TrackingPlan) -> dict[str, TableWriter]:
    def by_day(table: str, column: str, partition: str) -> TableWriter:
        return TableWriter(lake_dir, table, split_by_day(column, partition))

    writers = {
        names.LAKE_EVENTS: TableWriter(lake_dir, names.LAKE_EVENTS, EventsSplitter(plan)),
        names.LAKE_DLQ: TableWriter(lake_dir, names.LAKE_DLQ, split_dlq),
        names.LAKE_IDENTITIES: by_day(names.LAKE_IDENTITIES, "updated_at", "updated_date"),
        names.LAKE_MERGES: by_day(names.LAKE_MERGES, "decided_at", "decided_date"),
        names.LAKE_ROLLUPS: by_day(names.LAKE_ROLLUPS, "window_start", "window_date"),
        names.LAKE_ALERTS: by_day(names.LAKE_ALERTS, "window_end", "alert_date"),
        names.LAKE_PROFILE_CHANGES: by_day(
            names.LAKE_PROFILE_CHANGES, "recorded_at", "recorded_date"
        ),
        names.LAKE_MEMBER_REJECTS: by_day(names.LAKE_MEMBER_REJECTS, "at", "rejected_date"),
    }
    # Rows of deleted persons still on their way are dropped at the flush (DESIGN 15).
    purger = Purger(lake_dir)
    for name, writer in writers.items():
        if name not in (names.LAKE_ROLLUPS, names.LAKE_ALERTS):
            writer.purge = purger
    return writers


@dataclass
class Topics:
    """The app's Faust topics, one per entry of ``pipeline.names``."""

    raw: Any
    valid: Any
    dlq: Any
    stitched: Any
    links: Any
    changes: Any
    partials: Any
    rollups: Any
    alerts: Any


@dataclass
class Tables:
    """The app's Faust tables: the recoverable state of the stages."""

    dedup: DedupTable
    identity: IdentityTable
    aggregate_progress: AggregateProgress
    combine_windows: CombineWindows


@dataclass
class Context:
    settings: Settings
    partitions: int
    domain: Domain
    topics: Topics
    tables: Tables
    metrics: PipelineMetrics
    start_offsets: StartOffsets  # where each input partition starts after an assignment
    privacy: PrivacyFollower  # this worker's copy of privacy.requests, and the barrier
