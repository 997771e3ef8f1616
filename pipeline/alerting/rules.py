"""Alert rules as data and the incident lifecycle around a detector.

A rule (``schemas/alerts/<name>/v<N>.json``) names a metric series, a detector and its
parameters, an optional volume guard (another metric of the same window that must reach a
minimum, e.g. pay requests), how many anomalous points in a row open an incident
(``sustain``) and how many normal points in a row close it (``recover``), plus severity,
owner and runbook. One incident fires once and resolves once: no repeat per window, and
the two counts give hysteresis against flapping.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import orjson
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from pipeline.alerting.detectors import Detector, Verdict, make
from pipeline.contract.plan import default_schemas_dir


class RuleError(ValueError):
    pass


class VolumeGuard(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
    metric: str
    min: float = Field(ge=0)


class DetectorSpec(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
    kind: Literal["threshold", "relative_drop", "adaptive"]
    params: dict[str, Any] = Field(default_factory=dict)


class AlertRule(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
    name: str = Field(pattern=r"^[a-z][a-z0-9_]*$")
    version: int = Field(ge=1)
    description: str = Field(min_length=1)
    owner: str = Field(min_length=1)
    severity: Literal["critical", "warning", "info"]
    runbook: str = Field(min_length=1)
    metric: str
    window: str = "1m"
    dimensions: dict[str, Any] | None = None  # None: every series of the metric, each alone
    detector: DetectorSpec
    volume: VolumeGuard | None = None
    sustain: int = Field(1, ge=1)
    recover: int = Field(3, ge=1)
    # Judge the trailing sum of this many windows (a ratio as sum(numerator) /
    # sum(denominator), the volume guard as a sum), evaluated at every window.
    smooth: int = Field(1, ge=1)

    def new_detector(self) -> Detector:
        return make(self.detector.kind, dict(self.detector.params))

    def matches(self, metric: str, window: str, dims: dict[str, Any]) -> bool:
        if metric != self.metric or window != self.window:
            return False
        return self.dimensions is None or all(dims.get(k) == v for k, v in self.dimensions.items())


def load_alert_rules(
    root: Path | None = None, metrics: set[str] | None = None
) -> dict[str, AlertRule]:
    root = (root or default_schemas_dir()) / "alerts"
    rules: dict[str, AlertRule] = {}
    if not root.exists():
        return rules
    for rule_dir in sorted(p for p in root.iterdir() if p.is_dir()):
        files = sorted(rule_dir.glob("v*.json"), key=lambda p: int(p.stem[1:]))
        if not files:
            continue
        try:
            rule = AlertRule.model_validate(orjson.loads(files[-1].read_bytes()))
        except (ValidationError, orjson.JSONDecodeError) as exc:
            raise RuleError(f"{files[-1]}: {exc}") from None
        if rule.name != rule_dir.name:
            raise RuleError(f"{files[-1]}: name must match the directory")
        try:
            rule.new_detector()
        except (TypeError, ValueError) as exc:
            raise RuleError(f"{rule.name}: detector parameters: {exc}") from None
        if metrics is not None:
            for m in [rule.metric] + ([rule.volume.metric] if rule.volume else []):
                if m not in metrics:
                    raise RuleError(f"{rule.name}: unknown metric {m!r}")
        rules[rule.name] = rule
    return rules


@dataclass
class Incident:
    alert_id: str
    rule: str
    metric: str
    dimensions: str
    severity: str
    window_start: int
    window_end: int
    observed: float | None
    expected: float | None
    message: str
    runbook: str
    resolved_end: int | None = None  # event time of the data that resolved it

    def row(self) -> dict[str, Any]:
        return {
            "alert_id": self.alert_id,
            "rule": self.rule,
            "metric": self.metric,
            "dimensions": self.dimensions,
            "severity": self.severity,
            "window_start": self.window_start,
            "window_end": self.window_end,
            "observed": self.observed,
            "expected": self.expected,
            "message": self.message,
            "runbook_url": self.runbook,
            "resolved_window_end": self.resolved_end,
        }


@dataclass
class SeriesState:
    """One rule on one series: its detector and where the incident lifecycle stands."""

    rule: AlertRule
    dimensions: str
    detector: Detector
    run: int = 0  # anomalous points in a row
    run_start: int | None = None
    calm: int = 0  # normal points in a row while an incident is open
    active: Incident | None = None
    last: Verdict | None = field(default=None)

    def update(
        self, start: int, end: int, value: float | None, volume: float | None
    ) -> tuple[str | None, Verdict]:
        """Feed one window; returns ("fire" | "resolve" | None, the detector's verdict)."""
        verdict = self.detector.update(start, value, volume)
        self.last = verdict
        if verdict.anomalous:
            self.calm = 0
            self.run += 1
            if self.run_start is None:
                self.run_start = start
            if self.active is None and self.run >= self.rule.sustain:
                self.active = self._incident(self.run_start, end, value, verdict)
                return "fire", verdict
            return None, verdict
        self.run, self.run_start = 0, None
        if self.active is not None:
            self.calm += 1
            if self.calm >= self.rule.recover:
                self.active.resolved_end = end
                self.calm = 0
                return "resolve", verdict
        return None, verdict

    def _incident(self, start: int, end: int, value: float | None, v: Verdict) -> Incident:
        key = f"{self.rule.name}|{self.dimensions}|{start}"
        alert_id = hashlib.blake2b(key.encode(), digest_size=8).hexdigest()
        expected = "n/a" if v.expected is None else f"{v.expected:.4g}"
        observed = "n/a" if value is None else f"{value:.4g}"
        dims = "" if self.dimensions == "{}" else f" {self.dimensions}"
        message = (
            f"{self.rule.metric}{dims} ({self.rule.window}) is {observed}, expected about "
            f"{expected}: {self.rule.description}"
        )
        return Incident(
            alert_id=alert_id,
            rule=self.rule.name,
            metric=self.rule.metric,
            dimensions=self.dimensions,
            severity=self.rule.severity,
            window_start=start,
            window_end=end,
            observed=value,
            expected=v.expected,
            message=message,
            runbook=self.rule.runbook,
        )

    def closed(self) -> Incident | None:
        """The incident just resolved (after ``update`` returned "resolve")."""
        done, self.active = self.active, None
        return done
