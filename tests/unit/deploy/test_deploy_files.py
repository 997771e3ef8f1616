"""Static checks of docker-compose.yml and the Dockerfile (no Docker engine runs here)."""

from __future__ import annotations

import fnmatch
import re
from pathlib import Path

import yaml

from pipeline.runtime.allocator import JEMALLOC_GLOBS
from pipeline.settings import Settings

ROOT = Path(__file__).resolve().parents[3]


def compose() -> dict:
    return yaml.safe_load((ROOT / "docker-compose.yml").read_text())


def test_services_and_pinned_images() -> None:
    services = compose()["services"]
    assert {"kafka", "worker-1", "worker-2", "prometheus", "alertmanager", "grafana"} <= set(
        services
    )
    for name, svc in services.items():
        image = svc.get("image")
        if image:
            assert ":" in image, f"{name} image not pinned"
            assert not image.endswith(":latest"), f"{name} image pinned to latest"
    assert "KAFKA_PROCESS_ROLES" in services["kafka"]["environment"]  # KRaft, no ZooKeeper
    assert "healthcheck" in services["kafka"]


def test_mounted_paths_exist() -> None:
    for svc in compose()["services"].values():
        for volume in svc.get("volumes", []):
            source = volume.split(":")[0]
            if source.startswith((".", "/")):
                assert (ROOT / source).exists(), f"mounted path {source} missing"


def test_worker_env_names_are_settings() -> None:
    fields = {f"TRACKFLOW_{name.upper()}" for name in Settings.model_fields}
    for name in ("worker-1", "worker-2"):
        env = compose()["services"][name]["environment"]
        unknown = {k for k in env if k.startswith("TRACKFLOW_")} - fields
        assert not unknown, f"{name} sets unknown settings {unknown}"


def test_no_secret_values_in_compose() -> None:
    text = (ROOT / "docker-compose.yml").read_text()
    assert re.search(r"PII_SECRET:\s*\$\{", text), "the PII secret must come from the env"


def test_distinct_host_ports() -> None:
    ports = [p.split(":")[0] for s in compose()["services"].values() for p in s.get("ports", [])]
    assert len(ports) == len(set(ports))


def test_dockerfile_copies_what_the_package_needs() -> None:
    text = (ROOT / "Dockerfile").read_text()
    for path in ("pipeline", "agents", "tables", "schemas", "pyproject.toml"):
        assert f"COPY {path}" in text or f" {path} " in text
        assert (ROOT / path).exists()
    assert "TRACKFLOW_SCHEMAS_DIR=/app/schemas" in text
    assert re.search(r"^FROM python:3\.11-slim-\w+$", text, re.M)


def test_the_image_runs_on_jemalloc() -> None:
    """The image preloads jemalloc (docs/decisions.md, "jemalloc: the image's malloc"): the
    package is installed and linked in the same RUN, the preload comes after that RUN (a
    preload of a missing library would only warn, and every later step would run on glibc),
    and the path is one the worker finds and reports."""
    text = (ROOT / "Dockerfile").read_text()
    preload = re.search(r"^ENV LD_PRELOAD=(\S+)$", text, re.M)
    assert preload, "no ENV LD_PRELOAD line"
    path = preload.group(1)
    install = re.search(r"^RUN apt-get update .*?libjemalloc2.*?(?=^\S)", text, re.M | re.S)
    assert install, "libjemalloc2 is not installed by a RUN"
    assert f'/usr/lib/*-linux-gnu/libjemalloc.so.2)" {path}' in install.group(0)
    assert install.end() <= preload.start()
    assert any(fnmatch.fnmatch(path, pattern) for pattern in JEMALLOC_GLOBS)
    assert text.index("ENV LD_PRELOAD") < text.index("USER trackflow")


def test_every_service_has_a_healthcheck_and_named_volumes_are_declared() -> None:
    doc = compose()
    declared = set(doc["volumes"])
    for name, svc in doc["services"].items():
        assert "healthcheck" in svc or name == "worker-2", f"{name} has no healthcheck"
        for volume in svc.get("volumes", []):
            source = volume.split(":")[0]
            if not source.startswith((".", "/")):
                assert source in declared, f"{name}: volume {source} not declared"


def test_prometheus_in_compose_loads_the_rules_and_alertmanager() -> None:
    prom = yaml.safe_load((ROOT / "prometheus" / "prometheus.yml").read_text())
    assert "/etc/prometheus/alerts/*.yml" in prom["rule_files"]
    target = prom["alerting"]["alertmanagers"][0]["static_configs"][0]["targets"][0]
    assert target.split(":")[0] in compose()["services"]
    scraped = prom["scrape_configs"][0]["static_configs"][0]["targets"]
    assert {t.split(":")[0] for t in scraped} == {"worker-1", "worker-2"}
