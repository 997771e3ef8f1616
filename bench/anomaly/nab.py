"""NAB-style evaluation of trackflow's detectors against published baselines; prints JSON.

    python bench/anomaly/nab.py                      # the generated NAB-like corpus
    python bench/anomaly/nab.py --seeds 11,12,13     # three corpora pooled (held-out seeds)
    python bench/anomaly/nab.py --nab-dir ~/NAB      # a local copy of the real NAB layout

trackflow runs through ``pipeline.alerting.scoring.score_rows``, the code behind
``trackflow anomaly score``, so what is measured is what users run. It is scored three
times: on its ``alert`` column as it stands and on its ``score`` column above the fixed
bar 0.5 (neither tuned on the labels), and, like every baseline, on its ``score``
column at the corpus-optimal threshold (NAB's protocol). Compare numbers of one run
only: scores depend on the corpus.
"""

from __future__ import annotations

import argparse
import bisect
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from bench.anomaly import baselines  # noqa: E402
from bench.anomaly.corpus import Series, make_corpus, read_nab_layout  # noqa: E402
from bench.anomaly.nab_score import (  # noqa: E402
    PROFILES,
    Counts,
    Layout,
    normalise,
    perfect_and_null,
    score_detections,
    sweep,
)
from bench.report import emit  # noqa: E402
from pipeline.alerting.scoring import ad_hoc_rule, score_rows  # noqa: E402

TRACKFLOW: dict[str, tuple[str, dict[str, Any], int, int]] = {"adaptive": ("adaptive", {}, 1, 3)}


def label_rows(series: Series) -> list[int]:
    return [
        min(bisect.bisect_left(series.timestamps_ms, t), len(series.values) - 1)
        for t in series.anomalies_ms
    ]


def run_trackflow(
    series: Series, spec: tuple[str, dict[str, Any], int, int]
) -> tuple[list[float], list[bool]]:
    kind, params, sustain, recover = spec
    rule = ad_hoc_rule(kind, params, sustain, recover)
    rows = (
        {"timestamp": str(t), "value": repr(v)}
        for t, v in zip(series.timestamps_ms, series.values, strict=True)
    )
    scores: list[float] = []
    alerts: list[bool] = []
    for out in score_rows(rule, rows):
        scores.append(float(out["score"]))
        alerts.append(out["alert"] == 1)
    return scores, alerts


def run_baseline(series: Series, name: str) -> list[float]:
    det = baselines.make(name, len(series.values), min(series.values), max(series.values))
    return [det.update(t, v) for t, v in zip(series.timestamps_ms, series.values, strict=True)]


def counts_json(c: Counts, normalised: float, threshold: float | None = None) -> dict[str, Any]:
    out: dict[str, Any] = {"score": round(normalised, 1), "tp": c.tp, "fp": c.fp, "fn": c.fn}
    if threshold is not None:
        out["threshold"] = round(threshold, 6)
    return out


def evaluate(corpus: list[Series], names: list[str]) -> dict[str, Any]:
    layouts = [Layout.of(len(s.values), label_rows(s)) for s in corpus]
    results: dict[str, Any] = {}
    by_category: dict[str, Any] = {}
    seconds: dict[str, float] = {}
    for tf_name, spec in TRACKFLOW.items():
        started = time.perf_counter()
        runs = [run_trackflow(s, spec) for s in corpus]
        seconds[f"trackflow_{tf_name}"] = time.perf_counter() - started
        alert_scores = {}
        fixed_scores = {}
        score_scores = {}
        for pname, profile in PROFILES.items():
            perfect, null = perfect_and_null(layouts, profile)
            total = Counts()
            for lay, (_, alerts) in zip(layouts, runs, strict=True):
                c = score_detections(lay, alerts, profile)
                total = Counts(
                    total.score + c.score, total.tp + c.tp, total.fp + c.fp, total.fn + c.fn
                )
            alert_scores[pname] = counts_json(total, normalise(total.score, perfect, null))
            fixed = Counts()
            for lay, (row_scores, _) in zip(layouts, runs, strict=True):
                c = score_detections(lay, [x > 0.5 for x in row_scores], profile)
                fixed = Counts(
                    fixed.score + c.score, fixed.tp + c.tp, fixed.fp + c.fp, fixed.fn + c.fn
                )
            fixed_scores[pname] = counts_json(fixed, normalise(fixed.score, perfect, null), 0.5)
            thr, best = sweep(layouts, [r[0] for r in runs], profile)
            score_scores[pname] = counts_json(best, normalise(best.score, perfect, null), thr)
        results[f"trackflow_{tf_name} (alert column)"] = alert_scores
        results[f"trackflow_{tf_name} (score > 0.5)"] = fixed_scores
        results[f"trackflow_{tf_name} (score, best threshold)"] = score_scores
        by_category[f"trackflow_{tf_name} (alert column)"] = per_category(corpus, layouts, runs)
    for name in names:
        started = time.perf_counter()
        scores = [run_baseline(s, name) for s in corpus]
        seconds[name] = time.perf_counter() - started
        per_profile = {}
        for pname, profile in PROFILES.items():
            perfect, null = perfect_and_null(layouts, profile)
            thr, best = sweep(layouts, scores, profile)
            per_profile[pname] = counts_json(best, normalise(best.score, perfect, null), thr)
        results[name] = per_profile
    return {
        "results": results,
        "by_category": by_category,
        "seconds": {k: round(v, 2) for k, v in seconds.items()},
    }


def per_category(
    corpus: list[Series], layouts: list[Layout], runs: list[tuple[list[float], list[bool]]]
) -> dict[str, Any]:
    """The alert column's standard score per category, each normalised on its own."""
    profile = PROFILES["standard"]
    groups: dict[str, list[tuple[Layout, list[bool]]]] = {}
    for s, lay, (_, alerts) in zip(corpus, layouts, runs, strict=True):
        groups.setdefault(s.category, []).append((lay, alerts))
    out: dict[str, Any] = {}
    for category, items in sorted(groups.items()):
        perfect, null = perfect_and_null([lay for lay, _ in items], profile)
        total = Counts()
        for lay, alerts in items:
            c = score_detections(lay, alerts, profile)
            total = Counts(total.score + c.score, total.tp + c.tp, total.fp + c.fp, total.fn + c.fn)
        out[category] = counts_json(total, normalise(total.score, perfect, null))
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--nab-dir", type=Path, help="a directory in NAB's data/ + labels/ layout")
    ap.add_argument("--seed", type=int, default=7)
    ap.add_argument("--seeds", help="comma-separated seeds, pooled into one corpus (e.g. 11,12,13)")
    ap.add_argument("--scale", type=float, default=1.0)
    ap.add_argument("--baselines", default=",".join(baselines.BASELINES))
    ap.add_argument("--out", type=Path)
    args = ap.parse_args()
    if args.nab_dir:
        corpus, source = read_nab_layout(args.nab_dir), str(args.nab_dir)
    else:
        seeds = [int(x) for x in args.seeds.split(",")] if args.seeds else [args.seed]
        corpus = [s for seed in seeds for s in make_corpus(seed, args.scale)]
        source = f"generated (seeds {', '.join(map(str, seeds))})"
    report = {
        "benchmark": "nab-style windowed scoring",
        "corpus": {
            "source": source,
            "series": len(corpus),
            "rows": sum(len(s.values) for s in corpus),
            "labels": sum(len(s.anomalies_ms) for s in corpus),
        },
        **evaluate(corpus, [b for b in args.baselines.split(",") if b]),
    }
    emit(report, args.out)


if __name__ == "__main__":
    main()
