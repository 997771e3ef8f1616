"""Everything the agents share, built once per worker by ``pipeline.app.create_app``."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from pipeline.alerting.rules import AlertRule
from pipeline.contract.pii import PiiHasher
from pipeline.contract.plan import TrackingPlan
from pipeline.identity.graph import IdentityGraph
from pipeline.identity.rules import IdentityRules
from pipeline.identity.stitching import Stitcher
from pipeline.ingest.dedup import SeenIds
from pipeline.ingest.validation import Validator
from pipeline.lake.schema import EventBatches
from pipeline.lake.writer import TableWriter
from pipeline.metrics.definitions import MetricDef
from pipeline.metrics.rollup import CombineState
from pipeline.runtime.telemetry import PipelineMetrics
from pipeline.settings import Settings
from tables.dedup import DedupTable
from tables.identity import IdentityTable
from tables.windows import AggregateProgress, CombineWindows


@dataclass
class Topics:
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
class Context:
    settings: Settings
    plan: TrackingPlan
    hasher: PiiHasher
    validator: Validator
    metrics: PipelineMetrics
    partitions: int
    topics: Topics
    seen: SeenIds
    dedup: DedupTable
    lake: dict[str, TableWriter]  # lake table name -> writer
    rules: IdentityRules
    graph: IdentityGraph
    identity: IdentityTable
    stitcher: Stitcher
    metric_defs: dict[str, MetricDef]
    aggregate_progress: AggregateProgress
    combine: CombineState
    combine_windows: CombineWindows
    alert_rules: dict[str, AlertRule]
    batches: EventBatches
    agents: dict[str, Any] = field(default_factory=dict)
