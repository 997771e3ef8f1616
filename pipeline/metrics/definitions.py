"""Business metrics as data: ``schemas/metrics/<name>/v<N>.json`` (DESIGN section 10).

A definition names its type, the events and fields it reads, filters, bounded dimensions
and windows. Loading checks it against the tracking plan, so a metric can never read a
field the plan does not have; ``trackflow schema check`` uses the same lineage to refuse
plan changes that would break a metric.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any, Literal

import orjson
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from pipeline.contract.plan import TrackingPlan, default_schemas_dir

ALL_EVENTS = "*"
# Envelope-level columns a metric may read besides event properties.
ENVELOPE_FIELDS = ("event_name", "person_id", "user_id", "anonymous_id", "platform", "channel")
_DURATION = re.compile(r"^(\d+)([smhd])$")
_UNIT = {"s": 1, "m": 60, "h": 3600, "d": 86400}


class MetricError(ValueError):
    pass


def seconds(duration: str) -> int:
    m = _DURATION.match(duration)
    if not m:
        raise MetricError(f"{duration!r} is not a duration like 30s, 1m, 1h")
    return int(m[1]) * _UNIT[m[2]]


class Filter(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
    property: str
    op: Literal["eq", "ne", "in"]
    value: Any

    def matches(self, value: Any) -> bool:
        if self.op == "eq":
            return bool(value == self.value)
        if self.op == "ne":
            return bool(value != self.value)
        return value in self.value


class FunnelStep(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
    event: str
    filters: tuple[Filter, ...] = ()


class Funnel(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
    within: str
    steps: tuple[FunnelStep, ...] = Field(min_length=2)


class MetricDef(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)
    name: str = Field(pattern=r"^[a-z][a-z0-9_]*$")
    version: int = Field(ge=1)
    description: str = Field(min_length=1)
    owner: str = Field(min_length=1)
    type: Literal["count", "sum", "distinct_count", "ratio", "funnel"]
    events: tuple[str, ...] = ()
    prop: str | None = Field(None, alias="property")
    exact: bool = True
    # distinct_count of person_id: count persons through the identity map at window close
    resolve_persons: bool = False
    numerator: str | None = None
    denominator: str | None = None
    funnel: Funnel | None = None
    filters: tuple[Filter, ...] = ()
    dimensions: tuple[str, ...] = ()
    windows: tuple[str, ...] = Field(min_length=1)

    @property
    def window_seconds(self) -> tuple[int, ...]:
        return tuple(seconds(w) for w in self.windows)

    def fields_read(self) -> list[tuple[str, str]]:
        """(event, field) pairs this metric reads; event ``*`` means every event."""
        out: list[tuple[str, str]] = []
        names = [f.property for f in self.filters] + [d for d in self.dimensions if d != "step"]
        if self.prop:
            names.append(self.prop)
        for event in self.events:
            out.extend((event, n) for n in names)
        if self.funnel:
            for step in self.funnel.steps:
                out.extend((step.event, f.property) for f in step.filters)
                out.append((step.event, "event_name"))
        return sorted(set(out))

    def events_read(self) -> list[str]:
        events = set(self.events)
        if self.funnel:
            events |= {s.event for s in self.funnel.steps}
        return sorted(events)


def _check(d: MetricDef, plan: TrackingPlan, defs: dict[str, MetricDef]) -> None:
    for w in d.windows:
        seconds(w)
    if d.type in ("sum", "distinct_count") and not d.prop:
        raise MetricError(f"{d.name}: a {d.type} metric needs a property")
    if d.resolve_persons and (d.type != "distinct_count" or d.prop != "person_id"):
        raise MetricError(f"{d.name}: resolve_persons applies to a distinct count of person_id")
    if d.type == "ratio":
        for ref in (d.numerator, d.denominator):
            if ref not in defs or defs[ref].type == "ratio":
                raise MetricError(f"{d.name}: {ref!r} is not a non-ratio metric")
            if not set(d.windows) <= set(defs[ref].windows):
                raise MetricError(f"{d.name}: {ref} lacks one of the windows {d.windows}")
        return
    if d.type == "funnel":
        if not d.funnel:
            raise MetricError(f"{d.name}: a funnel metric needs funnel.steps")
        seconds(d.funnel.within)
    elif not d.events:
        raise MetricError(f"{d.name}: no source events")
    for event, name in d.fields_read():
        if name in ENVELOPE_FIELDS:
            continue
        events = list(plan.latest) if event == ALL_EVENTS else [event]
        for e in events:
            schema = plan.event(e)
            if schema is None:
                raise MetricError(f"{d.name}: event {e!r} is not in the tracking plan")
            if name not in schema.fields:
                raise MetricError(f"{d.name}: {e} has no property {name!r}")
    for dim in d.dimensions:
        if dim == "step" and d.type == "funnel":
            continue
        if dim == "event_name":
            continue
        specs = [plan.latest[e].fields.get(dim) for e in d.events if e in plan.latest]
        if not specs or any(s is None or not s.symbols for s in specs):
            raise MetricError(
                f"{d.name}: dimension {dim!r} must be event_name or an enum property "
                "(bounded label values)"
            )


def load_metrics(plan: TrackingPlan, root: Path | None = None) -> dict[str, MetricDef]:
    """The latest version of every metric under ``<schemas>/metrics``, checked against plan."""
    root = (root or default_schemas_dir()) / "metrics"
    defs: dict[str, MetricDef] = {}
    for metric_dir in sorted(p for p in root.iterdir() if p.is_dir()):
        files = sorted(metric_dir.glob("v*.json"), key=lambda p: int(p.stem[1:]))
        if not files:
            continue
        path = files[-1]
        try:
            d = MetricDef.model_validate(orjson.loads(path.read_bytes()))
        except (ValidationError, orjson.JSONDecodeError) as exc:
            raise MetricError(f"{path}: {exc}") from None
        if d.name != metric_dir.name or d.version != int(path.stem[1:]):
            raise MetricError(f"{path}: name/version must match the file path")
        defs[d.name] = d
    for d in defs.values():
        _check(d, plan, defs)
    return defs


def lineage(defs: dict[str, MetricDef], name: str) -> tuple[list[str], list[tuple[str, str]]]:
    """Events and (event, field) pairs a metric reads, through the metrics it divides."""
    d = defs[name]
    if d.type != "ratio":
        return d.events_read(), d.fields_read()
    events: set[str] = set()
    fields: set[tuple[str, str]] = set()
    for ref in (d.numerator, d.denominator):
        if ref:
            e, f = lineage(defs, ref)
            events |= set(e)
            fields |= set(f)
    return sorted(events), sorted(fields)
