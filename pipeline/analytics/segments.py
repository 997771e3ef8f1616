"""RFM segment rules as data (``schemas/segments/rfm.json``), compiled into one SQL CASE.

Rules are tried in file order and the first whose score ranges all hold names the
segment; a person no rule matches gets the file's ``default``. A score left out of a rule
matches any value.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson

from pipeline.contract.sql import literal

SCORES = ("r", "f", "m")


class SegmentRulesError(ValueError):
    """The rules file is not usable; the message names the file and the problem."""


@dataclass(frozen=True)
class SegmentRule:
    name: str
    description: str
    ranges: dict[str, tuple[int, int]]  # score -> (lowest, highest), inclusive


@dataclass(frozen=True)
class SegmentRules:
    rules: list[SegmentRule]
    default: str

    def names(self) -> list[str]:
        return [r.name for r in self.rules] + [self.default]

    def case_sql(self) -> str:
        """SQL naming the segment of a row that has columns r, f and m."""
        arms = []
        for rule in self.rules:
            cond = " AND ".join(f"{s} BETWEEN {lo} AND {hi}" for s, (lo, hi) in rule.ranges.items())
            arms.append(f"WHEN {cond or 'true'} THEN {literal(rule.name)}")
        return f"CASE {' '.join(arms)} ELSE {literal(self.default)} END"


def segments_file(schemas_dir: Path) -> Path:
    return schemas_dir / "segments" / "rfm.json"


def load_segment_rules(path: Path) -> SegmentRules:
    try:
        raw = orjson.loads(path.read_bytes())
    except (OSError, orjson.JSONDecodeError) as exc:
        raise SegmentRulesError(f"{path}: {exc}") from None
    try:
        return _parse(raw)
    except (KeyError, TypeError, ValueError) as exc:
        raise SegmentRulesError(f"{path}: {exc}") from None


def _parse(raw: dict[str, Any]) -> SegmentRules:
    rules = []
    for item in raw["segments"]:
        ranges: dict[str, tuple[int, int]] = {}
        for score, bounds in item.get("when", {}).items():
            if score not in SCORES:
                raise ValueError(f"segment {item['name']!r}: unknown score {score!r}")
            lo, hi = (int(b) for b in bounds)
            if not 1 <= lo <= hi <= 5:
                raise ValueError(f"segment {item['name']!r}: {score} range {bounds} not in 1..5")
            ranges[score] = (lo, hi)
        rules.append(SegmentRule(str(item["name"]), str(item["description"]), ranges))
    names = [r.name for r in rules]
    if len(set(names)) != len(names):
        raise ValueError("segment names repeat")
    return SegmentRules(rules, str(raw["default"]["name"]))
