"""Everything the agents share, built once per worker by ``pipeline.app.create_app``."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from pipeline.alerting import AlertRule
from pipeline.identity_graph import IdentityGraph
from pipeline.identity_rules import IdentityRules
from pipeline.lake import TableWriter
from pipeline.lake_schema import EventBatches
from pipeline.metric_defs import MetricDef
from pipeline.metrics import PipelineMetrics
from pipeline.pii import PiiHasher
from pipeline.plan import TrackingPlan
from pipeline.rollup import CombineState
from pipeline.settings import Settings
from pipeline.stitching import Stitcher
from pipeline.validation import Validator
from tables.dedup import DedupTable, SeenIds
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
