"""Static checks of the HTTP collector in docker-compose.yml and Prometheus (no Docker here)."""

from __future__ import annotations

import re
import shlex
from pathlib import Path
from typing import Any

import typer
import yaml

from pipeline.cli import cli
from pipeline.settings import Settings

ROOT = Path(__file__).resolve().parents[3]


def compose() -> dict[str, Any]:
    doc = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
    assert isinstance(doc, dict)
    return doc


def test_the_collector_service_runs_collect_behind_the_same_kafka() -> None:
    doc = compose()
    svc = doc["services"]["collector"]
    env = svc["environment"]
    assert svc["command"] == ["collect"]
    assert svc["image"] == doc["services"]["worker-1"]["image"]
    assert env["TRACKFLOW_BROKER"] == doc["services"]["worker-1"]["environment"]["TRACKFLOW_BROKER"]
    assert (
        env["TRACKFLOW_PARTITIONS"]
        == doc["services"]["worker-1"]["environment"]["TRACKFLOW_PARTITIONS"]
    )
    fields = {f"TRACKFLOW_{name.upper()}" for name in Settings.model_fields}
    assert {k for k in env if k.startswith("TRACKFLOW_")} <= fields
    assert env["TRACKFLOW_COLLECT_HOST"] == "0.0.0.0"  # reachable from outside its container
    port = env["TRACKFLOW_COLLECT_PORT"]
    assert f"{port}:{port}" in svc["ports"]
    probe = " ".join(svc["healthcheck"]["test"])
    assert f"localhost:{port}/health" in probe
    assert svc["depends_on"]["kafka"]["condition"] == "service_healthy"


def test_the_sources_file_is_a_secret_never_committed() -> None:
    doc = compose()
    svc = doc["services"]["collector"]
    (name,) = svc["secrets"]
    assert svc["environment"]["TRACKFLOW_SOURCES"] == f"/run/secrets/{name}"
    source = doc["secrets"][name]["file"]
    assert "/sources.json" in (ROOT / ".gitignore").read_text().splitlines()
    assert source == "./sources.json"


def test_prometheus_scrapes_the_collector_and_loads_its_alerts() -> None:
    prom = yaml.safe_load((ROOT / "prometheus" / "prometheus.yml").read_text())
    port = compose()["services"]["collector"]["environment"]["TRACKFLOW_COLLECT_PORT"]
    targets = [
        t for job in prom["scrape_configs"] for s in job["static_configs"] for t in s["targets"]
    ]
    assert f"collector:{port}" in targets
    assert "/etc/prometheus/alerts/*.yml" in prom["rule_files"]
    assert (ROOT / "prometheus" / "alerts" / "collector.yml").exists()


def test_the_quick_start_creates_the_sources_file_and_its_commands_parse() -> None:
    text = (ROOT / "README.md").read_text()
    start = text.index("## Quick start with Docker Compose\n")
    section = text[start : text.find("\n## ", start + 1)]
    commands = " ".join(re.findall(r"```bash\n(.*?)```", section, re.S))
    assert "> sources.json" in commands
    assert "localhost:8088/v1/" in commands
    root = typer.main.get_command(cli)
    ctx = root.context_class(root, info_name="trackflow")
    collect = root.get_command(ctx, "collect")  # type: ignore[attr-defined]
    assert collect is not None
    collect.make_context("collect", shlex.split("--port 8088 --sources sources.json"))
