"""Data quality of member sources (DESIGN 14): per import run and field, the null rate over
the rows read, the value distribution of enum fields, and the rule violations; the report
compares the latest run of each source with the one before (drift).

``FieldStats`` is filled by the importer while it judges rows (no second pass over the
source); the CLI stores it as ``member_quality`` rows, and the report and the worker's
Prometheus metrics read them from the lake.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from typing import Any

import orjson

from pipeline.contract.profiles import ProfileDictionary
from pipeline.contract.sql import path_list

NULL = "(null)"


@dataclass
class FieldStats:
    rows: int = 0  # rows judged (malformed records excluded)
    nulls: Counter[str] = field(default_factory=Counter)  # field -> rows without a value
    values: dict[str, Counter[str]] = field(default_factory=dict)  # enum field -> accepted values
    violations: Counter[str] = field(default_factory=Counter)  # field -> rules broken

    def rows_of(
        self, run_id: str, source: str, fields: list[str], required: frozenset[str]
    ) -> list[dict[str, Any]]:
        out = []
        for name in fields:
            nulls = self.nulls.get(name, 0)
            values = self.values.get(name)
            out.append(
                {
                    "run_id": run_id,
                    "source": source,
                    "field": name,
                    "required": name in required,
                    "rows": self.rows,
                    "nulls": nulls,
                    "null_rate": nulls / self.rows if self.rows else 0.0,
                    "value_counts": orjson.dumps(dict(values)).decode() if values else None,
                    "violations": self.violations.get(name, 0),
                }
            )
        return out


def enum_fields(dictionary: ProfileDictionary) -> frozenset[str]:
    return frozenset(n for n, f in dictionary.fields.items() if f.allowed and f.type == "string")


def distance(a: dict[str, int] | None, b: dict[str, int] | None) -> float | None:
    """Total variation distance of two value distributions (0 same, 1 disjoint)."""
    if not a or not b:
        return None
    ta, tb = sum(a.values()), sum(b.values())
    if not ta or not tb:
        return None
    keys = set(a) | set(b)
    return round(0.5 * sum(abs(a.get(k, 0) / ta - b.get(k, 0) / tb) for k in keys), 6)


QUALITY_SQL = """
WITH runs AS (
  SELECT run_id, source, finished, rows_read, rows_rejected, sla_seconds,
         row_number() OVER (PARTITION BY source ORDER BY finished DESC) AS n
  FROM member_imports WHERE ($source IS NULL OR source = $source) AND rows_read > 0)
SELECT r.source, r.n, r.run_id, r.finished, r.rows_read, r.rows_rejected,
       q.field, q.required, q.rows, q.nulls, q.null_rate, q.value_counts, q.violations
FROM runs r JOIN member_quality q USING (run_id)
WHERE r.n <= 2 ORDER BY r.source, q.field, r.n
"""


def quality_report(con: Any, dictionary: ProfileDictionary, source: str | None) -> dict[str, Any]:
    """Per source: its latest run with data, every field's null rate, enum values and
    violations, and the drift against the run before."""
    rows = con.execute(QUALITY_SQL, {"source": source}).fetchall()
    sources: dict[str, dict[str, Any]] = {}
    for (
        src,
        n,
        run_id,
        finished,
        read,
        rejected,
        fname,
        required,
        total,
        nulls,
        rate,
        counts,
        viol,
    ) in rows:
        s = sources.setdefault(src, {"source": src, "fields": {}})
        key = "latest" if n == 1 else "previous"
        if key not in s:
            s[key] = {
                "run_id": run_id,
                "finished": finished,
                "rows_read": read,
                "rows_rejected": rejected,
                "rejected_share": rejected / read if read else 0.0,
            }
        f = s["fields"].setdefault(fname, {"field": fname, "required": bool(required)})
        values = orjson.loads(counts) if counts else None
        f[key] = {
            "rows": total,
            "nulls": nulls,
            "null_rate": rate,
            "values": values,
            "violations": viol,
        }
    out = []
    for s in sources.values():
        if "latest" not in s:
            continue
        fields = []
        for f in s["fields"].values():
            latest, previous = f.get("latest"), f.get("previous")
            if latest is None:
                continue
            fields.append(
                {
                    "field": f["field"],
                    "required": f["required"],
                    "null_rate": latest["null_rate"],
                    "nulls": latest["nulls"],
                    "rows": latest["rows"],
                    "values": latest["values"],
                    "violations": latest["violations"],
                    "null_rate_previous": previous["null_rate"] if previous else None,
                    "null_rate_drift": (latest["null_rate"] - previous["null_rate"])
                    if previous
                    else None,
                    "values_drift": distance(
                        latest["values"], previous["values"] if previous else None
                    ),
                }
            )
        out.append(
            {
                "source": s["source"],
                "latest": s["latest"],
                "previous": s.get("previous"),
                "fields": fields,
            }
        )
    del dictionary
    return {"sources": out}


def rows_for_table(result: dict[str, Any]) -> list[tuple[str, list[str], list[tuple[Any, ...]]]]:
    """The report as (title, columns, rows) tables, one per source."""
    tables = []
    columns = ["field", "required", "null_rate", "drift", "violations", "values", "values_drift"]
    for s in result["sources"]:
        latest = s["latest"]
        title = (
            f"{s['source']}: run {latest['run_id']} ({latest['rows_read']} rows, "
            f"{latest['rejected_share']:.1%} rejected)"
        )
        rows = [
            (
                f["field"],
                "yes" if f["required"] else "",
                f"{f['null_rate']:.1%}",
                "" if f["null_rate_drift"] is None else f"{f['null_rate_drift']:+.1%}",
                f["violations"],
                ""
                if not f["values"]
                else ", ".join(
                    f"{k}={v}" for k, v in sorted(f["values"].items(), key=lambda kv: -kv[1])
                ),
                "" if f["values_drift"] is None else f"{f['values_drift']:.3f}",
            )
            for f in s["fields"]
        ]
        tables.append((title, columns, rows))
    return tables


@dataclass
class SourceMetrics:
    """What /metrics shows of one member source (``pipeline/runtime/member_metrics.py``)."""

    source: str
    last_success: float  # epoch seconds of the latest finished import
    sla_seconds: float
    rows: dict[str, int]  # outcome -> rows of the latest import that read rows
    rejected_ratio: float
    fields: list[tuple[str, bool, float, int]]  # field, required, null rate, violations
    values: list[tuple[str, str, float]]  # enum field, value, share of accepted rows


_LATEST_SQL = """
WITH imports AS (SELECT * FROM read_parquet({imports}, union_by_name = true)),
last AS (SELECT source, max(epoch_ms(finished)) / 1000.0 AS last_success,
                arg_max(sla_seconds, finished) AS sla FROM imports GROUP BY source),
data AS (SELECT * FROM imports WHERE rows_read > 0
         QUALIFY row_number() OVER (PARTITION BY source ORDER BY finished DESC) = 1)
SELECT l.source, l.last_success, l.sla, d.run_id, d.rows_read, d.rows_accepted,
       d.rows_rejected, d.rows_unchanged, d.rows_skipped
FROM last l LEFT JOIN data d USING (source) ORDER BY l.source
"""


def latest_metrics(lake_dir: Any, default_sla: float) -> list[SourceMetrics]:
    """Per source: its latest import, and the quality of its latest import with rows; read
    from the lake's ``member_imports`` and ``member_quality`` files (small: a row per run
    and field)."""
    import duckdb

    from pipeline.names import LAKE_MEMBER_IMPORTS, LAKE_MEMBER_QUALITY

    imports = sorted((lake_dir / LAKE_MEMBER_IMPORTS).glob("*.parquet"))
    if not imports:
        return []
    con = duckdb.connect()
    rows = con.execute(_LATEST_SQL.format(imports=path_list(imports))).fetchall()
    runs = [r[3] for r in rows if r[3]]
    quality: dict[str, list[tuple[Any, ...]]] = {}
    files = [lake_dir / LAKE_MEMBER_QUALITY / f"{run}.parquet" for run in runs]
    files = [f for f in files if f.exists()]
    if files:
        for q in con.execute(
            "SELECT run_id, field, required, null_rate, violations, value_counts "
            f"FROM read_parquet({path_list(files)}, union_by_name = true)"
        ).fetchall():
            quality.setdefault(q[0], []).append(q[1:])
    out = []
    for source, last, sla, run, read, accepted, rejected, unchanged, skipped in rows:
        fields, values = [], []
        for name, required, rate, viol, counts in quality.get(run, []):
            fields.append((name, bool(required), float(rate), int(viol)))
            if counts:
                decoded = orjson.loads(counts)
                total = sum(decoded.values()) or 1
                values += [(name, k, v / total) for k, v in decoded.items()]
        out.append(
            SourceMetrics(
                source=source,
                last_success=float(last),
                sla_seconds=float(sla or default_sla),
                rows={
                    "read": int(read or 0),
                    "accepted": int(accepted or 0),
                    "rejected": int(rejected or 0),
                    "unchanged": int(unchanged or 0),
                    "skipped": int(skipped or 0),
                },
                rejected_ratio=(rejected or 0) / read if read else 0.0,
                fields=fields,
                values=values,
            )
        )
    con.close()
    return out
