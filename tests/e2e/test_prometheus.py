"""A real Prometheus scrapes a worker; the payment alert fires during an outage, not before."""

from __future__ import annotations

import json
import shutil
import subprocess
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml

from pipeline.tools.broker import free_port
from tests.support import Deployment, wait_for

ROOT = Path(__file__).resolve().parents[2]
M = 60_000


@pytest.fixture
def prometheus(tmp_path: Path) -> Iterator[tuple[Path, int]]:
    binary = shutil.which("prometheus")
    assert binary, "prometheus missing: `make tools` installs Debian's prometheus package"
    port = free_port()
    config = tmp_path / "prometheus.yml"
    proc: subprocess.Popen[bytes] | None = None

    def start(worker_port: int) -> None:
        nonlocal proc
        config.write_text(
            yaml.safe_dump(
                {
                    "global": {"scrape_interval": "1s", "evaluation_interval": "1s"},
                    "rule_files": [
                        str(ROOT / "prometheus" / "rules" / "trackflow.yml"),
                        str(ROOT / "prometheus" / "alerts" / "trackflow.yml"),
                    ],
                    "scrape_configs": [
                        {
                            "job_name": "trackflow",
                            "static_configs": [{"targets": [f"127.0.0.1:{worker_port}"]}],
                        }
                    ],
                }
            )
        )
        proc = subprocess.Popen(
            [
                binary,
                f"--config.file={config}",
                f"--storage.tsdb.path={tmp_path / 'tsdb'}",
                f"--web.listen-address=127.0.0.1:{port}",
            ],
            stdout=open(tmp_path / "prometheus.log", "wb"),  # noqa: SIM115
            stderr=subprocess.STDOUT,
        )

    yield start, port  # type: ignore[misc]
    if proc is not None:
        proc.terminate()
        proc.wait(20)


def firing(port: int, name: str) -> list[dict]:  # type: ignore[type-arg]
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/api/v1/alerts", timeout=3) as resp:
        alerts = json.load(resp)["data"]["alerts"]
    return [a for a in alerts if a["labels"]["alertname"] == name and a["state"] == "firing"]


def scraped(port: int) -> bool:
    url = f"http://127.0.0.1:{port}/api/v1/query?query=up%7Bjob%3D%22trackflow%22%7D"
    with urllib.request.urlopen(url, timeout=3) as resp:
        result = json.load(resp)["data"]["result"]
    return bool(result) and result[0]["value"][1] == "1"


def simulate(dep: Deployment, start: int, minutes: int, seed: int, outage: bool) -> None:
    args = ["simulate", "--rate", "40", "--duration", str(minutes * 60), "--fast"]
    args += ["--seed", str(seed), "--start-ms", str(start)]
    if outage:
        args += ["--outage-start", "0", "--outage-minutes", str(minutes)]
        args += ["--outage-success-rate", "0.3"]
    dep.run(*args)


def test_payment_alert_fires_in_prometheus_during_the_outage(
    deployment: Deployment, prometheus: tuple
) -> None:
    start_prometheus, prom_port = prometheus
    deployment.env["TRACKFLOW_IDLE_CLOSE_SECONDS"] = "4"
    worker = deployment.start_worker()
    start_prometheus(worker.web_port)
    wait_for(lambda: scraped(prom_port), timeout=60, what="prometheus scraping the worker")
    now = int(time.time() * 1000)
    start = now - now % M - 60 * M
    closed = 'trackflow_metric_windows_closed_total{reason="idle",window="1m"}'

    simulate(deployment, start, 35, seed=5, outage=False)
    wait_for(lambda: worker.metric(closed) >= 1, timeout=180, what="normal traffic rolled up")
    time.sleep(5)  # several evaluations
    assert firing(prom_port, "TrackflowAnomalyAlertActive") == []

    before = worker.metric(closed)
    simulate(deployment, start + 35 * M, 10, seed=6, outage=True)
    wait_for(lambda: worker.metric(closed) > before, timeout=180, what="outage rolled up")
    alerts = wait_for(
        lambda: firing(prom_port, "TrackflowAnomalyAlertActive"), timeout=60, what="firing"
    )
    assert alerts[0]["labels"]["rule"] == "payment_success_rate_drop"
    assert alerts[0]["annotations"]["runbook_url"].endswith("docs/runbooks/anomaly-alert.md")
