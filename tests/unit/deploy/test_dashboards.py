"""Grafana dashboards: fixed uids, valid PromQL over metrics a worker exports, template
variables the panels use, a unit on every panel that fits its query, business panels
from final values (issue 15)."""

from __future__ import annotations

import importlib.util
import json
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml
from prometheus_client.metrics import MetricWrapperBase
from prometheus_client.registry import CollectorRegistry

from pipeline.runtime.member_metrics import MemberGauges
from pipeline.runtime.telemetry import PipelineMetrics

ROOT = Path(__file__).resolve().parents[3]
BOARDS = sorted((ROOT / "grafana" / "dashboards").glob("*.json"))
DATASOURCE_UID = yaml.safe_load(
    (ROOT / "grafana" / "provisioning" / "datasources" / "prometheus.yml").read_text()
)["datasources"][0]["uid"]
PROMQL_WORDS = {
    "sum", "max", "min", "by", "rate", "increase", "histogram_quantile", "up", "and", "or",
    "without", "avg", "count", "le", "job", "time",
}  # fmt: skip
# Grafana's own variables: durations, substituted by Grafana at query time.
BUILTIN_DURATIONS = {"__rate_interval", "__interval", "__range"}
REQUIRED_VARIABLES = {
    "trackflow-pipeline": {"job", "instance"},
    "trackflow-business": {"job", "metric"},
    "trackflow-quality": {"job", "event"},
}
CURRENCY_METRICS = {"gmv", "aov"}  # amounts in the shop's currency, CNY
RATIO_METRICS = {"payment_success_rate", "retention"}
VARIABLE_REF = re.compile(r"\$\{?(\w+)\}?")
LABEL_VALUES = re.compile(r"^label_values\((?P<selector>.+),\s*(?P<label>\w+)\)$")


def load(path: Path) -> dict[str, Any]:
    board: dict[str, Any] = json.loads(path.read_text())
    return board


def targets(board: dict[str, Any]) -> list[tuple[str, dict[str, Any], dict[str, Any]]]:
    """(where, panel, target) for every query of a dashboard."""
    return [
        (f"{board['uid']}/{panel['title']}", panel, target)
        for panel in board["panels"]
        for target in panel["targets"]
    ]


def variables(board: dict[str, Any]) -> list[dict[str, Any]]:
    found: list[dict[str, Any]] = board.get("templating", {}).get("list", [])
    return found


def exprs() -> list[tuple[str, str]]:
    """Every PromQL expression: panel queries and the selectors of variable queries."""
    out = []
    for path in BOARDS:
        board = load(path)
        out += [(where, target["expr"]) for where, _, target in targets(board)]
        for var in variables(board):
            match = LABEL_VALUES.match(var["query"])
            if match:
                out.append((f"{board['uid']}/${var['name']}", match["selector"]))
    return out


def declared() -> dict[str, set[str]]:
    """Series names a worker can export (counters with ``_total``, histogram parts) ->
    their label names, declared in pipeline/runtime/telemetry.py.

    Read from the module at test time, so a metric another change adds there (e.g.
    ``trackflow_metric_final``) counts as soon as it is declared.
    """
    registry = CollectorRegistry()
    metrics = PipelineMetrics(registry)
    members = MemberGauges(registry)  # member imports, read from the lake (DESIGN 14)
    out = {}
    for attr in [*vars(metrics).values(), *vars(members).values()]:
        if isinstance(attr, MetricWrapperBase):
            for suffix in ("", "_total", "_bucket", "_sum", "_count"):
                out[attr._name + suffix] = set(attr._labelnames)
    return out


def exported_names() -> set[str]:
    names = set(declared())
    for path in (ROOT / "prometheus" / "rules").glob("*.yml"):
        for group in yaml.safe_load(path.read_text())["groups"]:
            names |= {r["record"] for r in group["rules"]}
    return names | {"up"}


def substituted(expr: str) -> str:
    """A panel expression as Prometheus receives it: durations for Grafana's interval
    variables, a plain value for template variables (only legal inside label matchers)."""
    return VARIABLE_REF.sub(lambda m: "5m" if m[1] in BUILTIN_DURATIONS else "trackflow", expr)


def unit_for(expr: str) -> str:
    """The Grafana unit a query's values have, from the metric names it reads."""
    business = set(re.findall(r'metric="(\w+)"', expr))
    if business & CURRENCY_METRICS:
        return "currencyCNY"
    if business & RATIO_METRICS or ":ratio" in expr or "_ratio" in expr or " / " in expr:
        return "percentunit"
    if "_bytes" in expr:
        return "Bps" if "rate(" in expr else "bytes"
    if "_seconds" in expr:
        return "s"
    if "rate(" in expr:
        return "ops"
    return "short"


def test_three_dashboards_with_fixed_uids_and_provisioning() -> None:
    uids = {load(p)["uid"] for p in BOARDS}
    assert uids == {"trackflow-pipeline", "trackflow-business", "trackflow-quality"}
    for p in BOARDS:
        assert p.stem == load(p)["uid"]
    provider = yaml.safe_load((ROOT / "grafana/provisioning/dashboards/trackflow.yml").read_text())
    assert provider["providers"][0]["options"]["path"] == "/var/lib/grafana/dashboards"
    assert DATASOURCE_UID == "trackflow-prometheus"


def test_every_panel_query_and_variable_uses_the_provisioned_datasource() -> None:
    for path in BOARDS:
        board = load(path)
        for where, panel, target in targets(board):
            assert panel["datasource"]["uid"] == DATASOURCE_UID, where
            assert target["datasource"]["uid"] == DATASOURCE_UID, where
        for var in variables(board):
            assert var["datasource"]["uid"] == DATASOURCE_UID, var["name"]


def test_template_variables_are_label_values_of_exported_labels() -> None:
    labels = declared()
    for path in BOARDS:
        for var in variables(load(path)):
            where = f"{path.stem}/${var['name']}"
            assert var["type"] == "query", where
            assert var["definition"] == var["query"], where
            match = LABEL_VALUES.match(var["query"])
            assert match, f"{where}: {var['query']} is not label_values(selector, label)"
            metric = re.match(r"\w+", match["selector"])
            assert metric, where
            assert metric[0] in labels, f"{where}: {metric[0]} is not exported by a worker"
            assert match["label"] in labels[metric[0]] | {"job", "instance"}, where


def test_panels_filter_by_the_dashboards_variables() -> None:
    for path in BOARDS:
        board = load(path)
        defined = {var["name"] for var in variables(board)}
        assert REQUIRED_VARIABLES[board["uid"]] <= defined, board["uid"]
        used: set[str] = set()
        for where, panel, target in targets(board):
            refs = set(VARIABLE_REF.findall(target["expr"] + panel["title"]))
            assert refs <= defined | BUILTIN_DURATIONS, f"{where}: undefined {refs - defined}"
            assert 'job="' not in target["expr"], f"{where}: job is the $job variable"
            used |= refs
        for var in variables(board):
            used |= set(VARIABLE_REF.findall(var["query"]))
        assert defined <= used, f"{board['uid']}: variables no query uses: {defined - used}"
        # Every query of a dashboard with $instance filters by it (a worker's view).
        if "instance" in defined:
            for where, _, target in targets(board):
                assert "$instance" in target["expr"], where


def test_every_panel_names_only_exported_metrics() -> None:
    known = exported_names()
    for where, expr in exprs():
        stripped = re.sub(r'"[^"]*"', '""', expr)  # label values
        stripped = re.sub(r"\{\{[^}]*\}\}", "", stripped)
        stripped = VARIABLE_REF.sub("", stripped)
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
                    {"record": f"dashboard:panel_{i}:expr", "expr": substituted(expr)}
                    for i, (_, expr) in enumerate(exprs())
                ],
            }
        ]
    }
    path = tmp_path / "panels.yml"
    path.write_text(yaml.safe_dump(rules))
    proc = subprocess.run([promtool, "check", "rules", str(path)], capture_output=True)
    assert proc.returncode == 0, proc.stdout.decode() + proc.stderr.decode()


@pytest.mark.parametrize(
    ("expr", "unit"),
    [
        ('max by (dimensions) (trackflow_metric_final{metric="gmv", window="1h"})', "currencyCNY"),
        ('trackflow_metric_final{metric="payment_success_rate"}', "percentunit"),
        ("job:trackflow_dlq_share:ratio_rate5m", "percentunit"),
        ("sum(rate(trackflow_lake_bytes_written_total[5m]))", "Bps"),
        ("histogram_quantile(0.95, sum by (le) (rate(x_seconds_bucket[5m])))", "s"),
        ("sum(rate(trackflow_events_stored_total[5m]))", "ops"),
        ("sum by (topic) (trackflow_consumer_lag_messages)", "short"),
    ],
)
def test_unit_for_reads_the_unit_off_the_query(expr: str, unit: str) -> None:
    assert unit_for(expr) == unit


def test_every_panel_has_a_unit_that_fits_its_query() -> None:
    for path in BOARDS:
        for panel in load(path)["panels"]:
            where = f"{path.stem}/{panel['title']}"
            unit = panel["fieldConfig"]["defaults"].get("unit")
            assert unit not in (None, "", "none"), f"{where}: no unit"
            for target in panel["targets"]:
                expected = unit_for(target["expr"])
                assert unit == expected, f"{where}: unit {unit}, query reads {expected}"
            for override in panel["fieldConfig"]["overrides"]:
                assert all(p["id"] != "unit" for p in override["properties"]), where


def test_business_panels_read_final_values() -> None:
    """Provisional values (the open window's running total) only as a series of their own,
    titled and drawn apart, next to the final one."""
    (board,) = (load(p) for p in BOARDS if p.stem == "trackflow-business")
    finals = 0
    for panel in board["panels"]:
        where = f"business/{panel['title']}"
        exprs = [t["expr"] for t in panel["targets"]]
        if not any("trackflow_metric_" in e for e in exprs):
            continue
        assert any("trackflow_metric_final" in e for e in exprs), f"{where}: no final series"
        dashed = {o["matcher"]["options"] for o in panel["fieldConfig"]["overrides"]}
        for target in panel["targets"]:
            if "trackflow_metric_value" in target["expr"]:
                assert "trackflow_metric_final" not in target["expr"], where
                assert "provisional" in target["legendFormat"], where
                assert target["refId"] in dashed, f"{where}: provisional drawn like final"
            else:
                assert "provisional" not in target["legendFormat"], where
        finals += 1
    assert finals >= 7


def test_anomaly_panels_show_the_rules_severity() -> None:
    for path in BOARDS:
        for where, _, target in targets(load(path)):
            if "trackflow_alert_active" in target["expr"]:
                assert re.search(r"by \([^)]*severity", target["expr"]), where
                assert "{{severity}}" in target["legendFormat"], where


def test_generated_files_are_up_to_date() -> None:
    spec = importlib.util.spec_from_file_location("build", ROOT / "grafana" / "build_dashboards.py")
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    for board in (module.PIPELINE, module.BUSINESS, module.QUALITY):
        on_disk = json.loads((ROOT / "grafana" / "dashboards" / f"{board['uid']}.json").read_text())
        assert on_disk == json.loads(json.dumps(board)), board["uid"]
