"""Grafana dashboards: fixed uids, valid PromQL, only metrics a worker exports."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path

import yaml
from prometheus_client.registry import CollectorRegistry

from pipeline.runtime.telemetry import PipelineMetrics

ROOT = Path(__file__).resolve().parents[3]
BOARDS = sorted((ROOT / "grafana" / "dashboards").glob("*.json"))
PROMQL_WORDS = {
    "sum", "max", "min", "by", "rate", "increase", "histogram_quantile", "up", "and", "or",
    "without", "avg", "count", "le", "job",
}  # fmt: skip


def exprs() -> list[tuple[str, str]]:
    out = []
    for path in BOARDS:
        for panel in json.loads(path.read_text())["panels"]:
            for target in panel["targets"]:
                out.append((f"{path.stem}/{panel['title']}", target["expr"]))
    return out


def exported_names() -> set[str]:
    registry = PipelineMetrics(CollectorRegistry()).registry
    names = set()
    for family in registry.collect():
        base = family.name
        names |= {base, f"{base}_total", f"{base}_bucket", f"{base}_sum", f"{base}_count"}
    for path in (ROOT / "prometheus" / "rules").glob("*.yml"):
        for group in yaml.safe_load(path.read_text())["groups"]:
            names |= {r["record"] for r in group["rules"]}
    return names | {"up"}


def test_three_dashboards_with_fixed_uids_and_provisioning() -> None:
    uids = {json.loads(p.read_text())["uid"] for p in BOARDS}
    assert uids == {"trackflow-pipeline", "trackflow-business", "trackflow-quality"}
    for p in BOARDS:
        assert p.stem == json.loads(p.read_text())["uid"]
    provider = yaml.safe_load((ROOT / "grafana/provisioning/dashboards/trackflow.yml").read_text())
    assert provider["providers"][0]["options"]["path"] == "/var/lib/grafana/dashboards"
    source = yaml.safe_load((ROOT / "grafana/provisioning/datasources/prometheus.yml").read_text())
    assert source["datasources"][0]["uid"] == "trackflow-prometheus"


def test_every_panel_names_only_exported_metrics() -> None:
    known = exported_names()
    for where, expr in exprs():
        stripped = re.sub(r'"[^"]*"', '""', expr)  # label values
        stripped = re.sub(r"\{\{[^}]*\}\}", "", stripped)
        for token in re.findall(r"[a-zA-Z_:][a-zA-Z0-9_:]*", stripped):
            if token in PROMQL_WORDS or not (token.startswith("trackflow_") or ":" in token):
                continue
            assert token in known, f"{where}: {token} is not exported by a worker"


def test_every_panel_query_is_valid_promql(tmp_path: Path) -> None:
    promtool = shutil.which("promtool")
    assert promtool, "promtool missing: `make tools` installs Debian's prometheus package"
    rules = {
        "groups": [
            {
                "name": "dashboards",
                "rules": [
                    {"record": f"dashboard:panel_{i}:expr", "expr": expr}
                    for i, (_, expr) in enumerate(exprs())
                ],
            }
        ]
    }
    path = tmp_path / "panels.yml"
    path.write_text(yaml.safe_dump(rules))
    proc = subprocess.run([promtool, "check", "rules", str(path)], capture_output=True)
    assert proc.returncode == 0, proc.stdout.decode() + proc.stderr.decode()


def test_generated_files_are_up_to_date() -> None:
    import importlib.util

    spec = importlib.util.spec_from_file_location("build", ROOT / "grafana" / "build_dashboards.py")
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    for board in (module.PIPELINE, module.BUSINESS, module.QUALITY):
        on_disk = json.loads((ROOT / "grafana" / "dashboards" / f"{board['uid']}.json").read_text())
        assert on_disk == json.loads(json.dumps(board)), board["uid"]
