"""A real worker with production-shaped settings: /ready for orchestrators, JSON logs,
topics created with the replication factor and min ISR asked for (the embedded broker
accepts any replication factor and keeps topic configs, so both are observable here), and
jemalloc preloaded, the documented option."""

from __future__ import annotations

import json
import subprocess
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import pytest
from confluent_kafka.admin import AdminClient, ConfigResource

from pipeline.runtime.allocator import find_jemalloc
from pipeline.tools.broker import EmbeddedBroker, free_port
from tests import traffic
from tests.integration.test_ingest import expect_exact
from tests.support import BIN, Deployment, Worker

LOG_KEYS = {"time", "level", "logger", "message"}


def _get(port: int, path: str) -> tuple[int | None, dict[str, Any] | None]:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=5) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as exc:
        body = exc.read()
        try:
            return exc.code, json.loads(body)
        except ValueError:
            return exc.code, {"body": body.decode(errors="replace")}
    except OSError:
        return None, None  # not listening yet


def _start(deployment: Deployment) -> Worker:
    port = free_port()
    log = deployment.tmp / "worker-json.log"
    proc = subprocess.Popen(
        [str(BIN), "worker", "--web-port", str(port), "--log-format", "json"],
        env=deployment.env,
        stdout=open(log, "ab"),  # noqa: SIM115
        stderr=subprocess.STDOUT,
    )
    worker = Worker(proc, port, log)
    deployment.workers.append(worker)  # stopped by the fixture whatever happens
    return worker


def _topic_settings(broker: EmbeddedBroker, names: list[str]) -> dict[str, tuple[int, str]]:
    """{topic: (replicas of partition 0, min.insync.replicas)}."""
    admin = AdminClient({"bootstrap.servers": broker.bootstrap})
    meta = admin.list_topics(timeout=15).topics
    found = {}
    futures = admin.describe_configs([ConfigResource("topic", name) for name in names])
    for resource, future in futures.items():
        config = future.result(15)
        isr = config.get("min.insync.replicas")
        replicas = len(meta[resource.name].partitions[0].replicas)
        found[resource.name] = (replicas, isr.value if isr else "")
    return found


def test_ready_json_logs_and_replicated_topics(
    deployment: Deployment, broker: EmbeddedBroker
) -> None:
    deployment.env.update(
        {
            "TRACKFLOW_REPLICATION_FACTOR": "3",
            "TRACKFLOW_MIN_INSYNC_REPLICAS": "2",
            "TRACKFLOW_LOG_LEVEL": "info",
        }
    )
    worker = _start(deployment)

    # /ready: 503 with its reason from the moment the web server answers, 200 once the
    # worker has its assignment and recovered its tables.
    answers: list[tuple[int | None, dict[str, Any] | None]] = []
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and worker.proc.poll() is None:
        status, body = _get(worker.web_port, "/ready")
        if status is not None:
            answers.append((status, body))
        if status == 200:
            break
        time.sleep(0.05)
    statuses = [status for status, _ in answers]
    assert statuses, f"the web server never answered\n{worker.log_text()}"
    assert statuses[-1] == 200, f"never ready: {answers[-5:]}\n{worker.log_text()}"
    assert statuses[0] == 503, f"the first answer must come before the assignment: {answers[:3]}"
    assert set(statuses[:-1]) == {503}
    assert "assignment" in str(answers[0][1])
    ready_body = answers[-1][1]
    assert ready_body is not None
    assert ready_body["assigned_partitions"] > 0  # the only worker holds every partition
    assert _get(worker.web_port, "/health") == (200, {"status": "ok"})

    # Every topic trackflow and Faust created for this deployment.
    prefix, app_id = deployment.env["TRACKFLOW_TOPIC_PREFIX"], deployment.env["TRACKFLOW_APP_ID"]
    admin = AdminClient({"bootstrap.servers": broker.bootstrap})
    names = sorted(
        t for t in admin.list_topics(timeout=15).topics if t.startswith((prefix, f"{app_id}-"))
    )
    assert f"{prefix}events.raw" in names
    assert f"{app_id}-dedup-changelog" in names
    settings = _topic_settings(broker, names)
    leader = f"{app_id}-__assignor-__leader"
    for name, (replicas, isr) in settings.items():
        assert replicas == 3, name
        if name != leader:  # Faust builds its assignor topic without a config (README)
            assert isr == "2", name
    assert len(settings) >= 14  # 9 topics, 4 changelogs, the assignor's

    # JSON logs: every line of the worker's output is one object with the agreed keys.
    worker.stop()
    lines = [line for line in worker.log_text().splitlines() if line.strip()]
    assert len(lines) >= 5  # info level: Faust reports its start-up
    for line in lines:
        entry = json.loads(line)
        assert set(entry) >= LOG_KEYS, line
    assert any(json.loads(line)["logger"].startswith("faust") for line in lines)


@pytest.mark.skipif(find_jemalloc() is None, reason="libjemalloc2 not installed")
def test_a_worker_on_jemalloc_lands_traffic_exactly(
    deployment: Deployment,
) -> None:
    """jemalloc preloaded (docs/decisions.md): a worker must behave as on glibc's malloc,
    with DuckDB, pyarrow and the RocksDB store in the same process, and say which malloc
    it runs on."""
    deployment.env["LD_PRELOAD"] = str(find_jemalloc())
    deployment.env["TRACKFLOW_LOG_LEVEL"] = "info"
    t = traffic.build(200)
    worker = deployment.start_worker()
    maps = Path(f"/proc/{worker.proc.pid}/maps").read_text()
    assert "libjemalloc" in maps
    deployment.produce(t.lines)
    total = len(t.valid) + len(t.rejected)
    deployment.wait_settled(lambda: deployment.count("events") + deployment.count("dlq") == total)
    expect_exact(deployment, t)
    assert "malloc: jemalloc" in worker.log_text()
