"""Prometheus rules: valid for the real promtool, tested firing and not firing, documented."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[3]
PROM = ROOT / "prometheus"


@pytest.fixture(scope="module")
def promtool() -> str:
    path = shutil.which("promtool")
    assert path, "promtool missing: `make tools` installs Debian's prometheus package"
    return path


def alerts() -> list[dict]:  # type: ignore[type-arg]
    out = []
    for path in sorted((PROM / "alerts").glob("*.yml")):
        for group in yaml.safe_load(path.read_text())["groups"]:
            out.extend(r for r in group["rules"] if "alert" in r)
    return out


def test_promtool_accepts_every_rule_file(promtool: str) -> None:
    files = sorted((PROM / "rules").glob("*.yml")) + sorted((PROM / "alerts").glob("*.yml"))
    proc = subprocess.run([promtool, "check", "rules", *map(str, files)], capture_output=True)
    assert proc.returncode == 0, proc.stdout.decode() + proc.stderr.decode()


def promtool_test_files() -> list[Path]:
    """Every promtool test file (trackflow_test.yml, collector_test.yml, ...)."""
    return sorted((PROM / "tests").glob("*.yml"))


def test_promtool_unit_tests_pass(promtool: str) -> None:
    files = [str(p.relative_to(PROM)) for p in promtool_test_files()]
    assert "tests/trackflow_test.yml" in files
    proc = subprocess.run([promtool, "test", "rules", *files], cwd=PROM, capture_output=True)
    assert proc.returncode == 0, proc.stdout.decode() + proc.stderr.decode()


def test_promtool_accepts_the_prometheus_config(promtool: str) -> None:
    proc = subprocess.run(
        [promtool, "check", "config", "--syntax-only", str(PROM / "prometheus.yml")],
        capture_output=True,
    )
    assert proc.returncode == 0, proc.stdout.decode() + proc.stderr.decode()


SEVERITIES = ("critical", "warning", "info")


def test_every_alert_is_documented_and_tested_both_ways() -> None:
    tests = [t for path in promtool_test_files() for t in yaml.safe_load(path.read_text())["tests"]]
    cases: dict[str, list[bool]] = {}
    for t in tests:
        for case in t["alert_rule_test"]:
            cases.setdefault(case["alertname"], []).append(bool(case["exp_alerts"]))
            for alert in case["exp_alerts"]:  # what Alertmanager routes on
                assert alert["exp_labels"].get("severity") in SEVERITIES, case["alertname"]
    for rule in alerts():
        name = rule["alert"]
        severity = rule.get("labels", {}).get("severity")
        if severity is None:
            # Carried from the series (the rule's own, e.g. an anomaly rule's): the
            # expression must keep the label.
            assert re.search(r"by \([^)]*\bseverity\b", rule["expr"]), f"{name}: no severity"
        else:
            assert severity in SEVERITIES, name
        for key in ("summary", "description", "runbook_url"):
            assert rule["annotations"].get(key), f"{name} lacks {key}"
        runbook = re.sub(r"^.*/blob/main/", "", rule["annotations"]["runbook_url"])
        assert (ROOT / runbook).exists(), f"{name}: {runbook} missing"
        assert True in cases.get(name, []), f"{name} has no firing test"
        assert False in cases.get(name, []), f"{name} has no not-firing test"


def test_recording_rules_follow_level_metric_operation() -> None:
    for path in (PROM / "rules").glob("*.yml"):
        for group in yaml.safe_load(path.read_text())["groups"]:
            for rule in group["rules"]:
                assert re.fullmatch(r"[a-z_]+:[a-z_0-9]+:[a-z_0-9]+", rule["record"]), rule


def test_no_rule_names_a_job() -> None:
    """Operators scrape workers under any job name: no rule may depend on one."""
    for folder in ("rules", "alerts"):
        for path in (PROM / folder).glob("*.yml"):
            for group in yaml.safe_load(path.read_text())["groups"]:
                for rule in group["rules"]:
                    assert not re.search(r"job\s*=", rule["expr"]), rule
