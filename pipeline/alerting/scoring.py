"""``trackflow anomaly score``: run a rule's detector offline over a recorded series.

The same ``SeriesState`` (detector + incident lifecycle) the detect stage runs, fed one
row at a time in file order, so the result is causal: each row's score and alert depend
only on the rows before it. ``alert`` is 1 on the row where an incident fires (once per
incident), which is what windowed scoring of streaming detectors counts.
"""

from __future__ import annotations

import csv
from collections.abc import Iterable, Iterator
from datetime import datetime
from typing import IO, Any

from pipeline.alerting.rules import AlertRule, DetectorSpec, SeriesState


def parse_time(text: str) -> int:
    text = text.strip()
    try:
        number = float(text)
    except ValueError:
        dt = datetime.fromisoformat(text.replace("Z", "+00:00"))
        if dt.tzinfo is None:
            from datetime import UTC

            dt = dt.replace(tzinfo=UTC)
        return int(dt.timestamp() * 1000)
    return int(number if number > 1e11 else number * 1000)  # seconds or milliseconds


def ad_hoc_rule(kind: str, params: dict[str, Any], sustain: int, recover: int) -> AlertRule:
    return AlertRule(
        name="ad_hoc",
        version=1,
        description="offline scoring",
        owner="offline",
        severity="info",
        runbook="docs/anomaly-detection.md",
        metric="series",
        detector=DetectorSpec(kind=kind, params=params),  # type: ignore[arg-type]
        sustain=sustain,
        recover=recover,
        smooth=1,
    )


def score_rows(rule: AlertRule, rows: Iterable[dict[str, str]]) -> Iterator[dict[str, Any]]:
    state = SeriesState(rule, "{}", rule.new_detector())
    for row in rows:
        t = parse_time(row["timestamp"])
        raw = (row.get("value") or "").strip()
        value = float(raw) if raw else None
        vol_raw = (row.get("volume") or "").strip()
        volume = float(vol_raw) if vol_raw else None
        if rule.volume is not None and volume is not None and volume < rule.volume.min:
            value = None
        event, verdict = state.update(t, t, value, volume)
        if event == "resolve":
            state.closed()
        yield {
            "timestamp": row["timestamp"],
            "value": raw,
            "score": round(verdict.score, 6),
            "alert": 1 if event == "fire" else 0,
        }


def score_csv(rule: AlertRule, src: IO[str], dst: IO[str]) -> int:
    reader = csv.DictReader(src)
    if not reader.fieldnames or not {"timestamp", "value"} <= set(reader.fieldnames):
        raise ValueError("input CSV needs a header with timestamp and value columns")
    writer = csv.DictWriter(dst, fieldnames=["timestamp", "value", "score", "alert"])
    writer.writeheader()
    n = 0
    for out in score_rows(rule, reader):
        writer.writerow(out)
        n += 1
    return n
