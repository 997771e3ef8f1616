"""``trackflow schema check``: would this tracking-plan change break a metric or a reader?

Compares the plan under ``schemas/`` with a base (a directory, or a git revision whose
``schemas/`` is extracted to a temporary directory) and reports:

* a published schema version whose file changed (versions are immutable: add a new one);
* an event a metric reads that is gone, a field it reads that is gone (renamed) or whose
  type changed; each problem names the metrics and their owners;
* Avro incompatibility: the latest version of an event cannot read data written with the
  base's latest version (a new field without a default, a type change that is not a
  promotion, a removed enum symbol).
"""

from __future__ import annotations

import subprocess
import tarfile
import tempfile
from dataclasses import dataclass, field
from io import BytesIO
from pathlib import Path
from typing import Any

from pipeline.contract.plan import TrackingPlan, load_plan
from pipeline.metrics.definitions import (
    ALL_EVENTS,
    ENVELOPE_FIELDS,
    MetricDef,
    lineage,
    load_metrics,
)

_PROMOTIONS = {
    ("int", "long"),
    ("int", "float"),
    ("int", "double"),
    ("long", "float"),
    ("long", "double"),
    ("float", "double"),
    ("string", "bytes"),
    ("bytes", "string"),
}


@dataclass
class Report:
    problems: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.problems


def extract_revision(repo: Path, rev: str, dest: Path) -> bool:
    """Write ``schemas/`` at ``rev`` under ``dest``; False when the revision is unknown."""
    proc = subprocess.run(
        ["git", "-C", str(repo), "archive", "--format=tar", rev, "schemas"],
        capture_output=True,
    )
    if proc.returncode != 0:
        return False
    with tarfile.open(fileobj=BytesIO(proc.stdout)) as tar:
        tar.extractall(dest, filter="data")
    return True


def _branches(t: Any) -> list[Any]:
    return list(t) if isinstance(t, list) else [t]


def _type_name(t: Any) -> str:
    if isinstance(t, dict):
        return str(t.get("logicalType") or t.get("type"))
    return str(t)


def _compatible(reader: Any, writer: Any) -> str | None:
    """Why ``reader`` cannot read data written with ``writer``; None when it can."""
    rb, wb = _branches(reader), _branches(writer)
    for w in wb:
        wn = _type_name(w)
        match = [r for r in rb if _type_name(r) == wn]
        if not match:
            promo = [r for r in rb if (wn, _type_name(r)) in _PROMOTIONS]
            if promo:
                continue
            return f"{wn} values are no longer readable (now {[_type_name(r) for r in rb]})"
        r = match[0]
        if isinstance(w, dict) and w.get("type") == "enum" and isinstance(r, dict):
            gone = set(w.get("symbols", ())) - set(r.get("symbols", ()))
            if gone and "default" not in r:
                return f"enum symbols removed: {', '.join(sorted(gone))}"
    return None


def avro_problems(base: TrackingPlan, new: TrackingPlan) -> list[str]:
    out: list[str] = []
    for name, old in base.latest.items():
        cur = new.latest.get(name)
        if cur is None:
            continue
        old_fields = {f["name"]: f for f in old.avro["fields"]}
        for f in cur.avro["fields"]:
            w = old_fields.get(f["name"])
            where = f"{name} v{old.version} -> v{cur.version}, field {f['name']}"
            if w is None:
                if "default" not in f:
                    out.append(f"Avro: {where} is new and has no default")
                continue
            why = _compatible(f["type"], w["type"])
            if why:
                out.append(f"Avro: {where}: {why}")
    return out


def _who(defs: dict[str, MetricDef], names: set[str]) -> str:
    return ", ".join(f"{n} (owner {defs[n].owner})" for n in sorted(names))


def check(base: TrackingPlan, new: TrackingPlan, defs: dict[str, MetricDef]) -> Report:
    report = Report()
    for key, old in base.versions.items():
        cur = new.versions.get(key)
        if cur is not None and cur.avro != old.avro:
            report.problems.append(
                f"{key[0]} v{key[1]} was edited; published versions are immutable, "
                f"add v{max(v for (n, v) in new.versions if n == key[0]) + 1} instead"
            )
    readers: dict[tuple[str, str], set[str]] = {}
    event_readers: dict[str, set[str]] = {}
    for name in defs:
        events, fields = lineage(defs, name)
        for e in events:
            event_readers.setdefault(e, set()).add(name)
        for pair in fields:
            readers.setdefault(pair, set()).add(name)
    for event, metrics in sorted(event_readers.items()):
        if event != ALL_EVENTS and event in base.latest and event not in new.latest:
            report.problems.append(f"event {event} removed; read by {_who(defs, metrics)}")
    for (event, fname), metrics in sorted(readers.items()):
        if fname in ENVELOPE_FIELDS:
            continue
        events = list(base.latest) if event == ALL_EVENTS else [event]
        for e in events:
            before = base.latest.get(e)
            after = new.latest.get(e)
            if before is None or fname not in before.fields or after is None:
                continue  # a removed event is reported above
            spec = after.fields.get(fname)
            if spec is None:
                report.problems.append(
                    f"{e}.{fname} removed or renamed; read by {_who(defs, metrics)}"
                )
            elif spec.kind != before.fields[fname].kind:
                report.problems.append(
                    f"{e}.{fname} changed type {before.fields[fname].kind} -> {spec.kind}; "
                    f"read by {_who(defs, metrics)}"
                )
    report.problems.extend(avro_problems(base, new))
    return report


def check_against(schemas: Path, base: str, repo: Path | None = None) -> tuple[Report | None, str]:
    """Run the check; (None, why) when there is no base to compare with."""
    new = load_plan(schemas)
    defs = load_metrics(new, schemas)
    base_path = Path(base)
    if base_path.is_dir():
        return check(load_plan(base_path), new, defs), f"base {base_path}"
    with tempfile.TemporaryDirectory() as tmp:
        if not extract_revision(repo or schemas.parent, base, Path(tmp)):
            return None, f"no git revision {base!r} here (shallow clone?)"
        return check(load_plan(Path(tmp) / "schemas"), new, defs), f"base revision {base}"
