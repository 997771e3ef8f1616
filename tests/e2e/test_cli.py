"""The real CLI processes: broker, worker, produce, query."""

from __future__ import annotations

import signal
import subprocess
import time
from collections import Counter
from pathlib import Path

import orjson
import pyarrow.parquet as pq
import pytest

from pipeline.tools.broker import free_port, wait_for_port
from tests import traffic
from tests.support import BIN, Deployment, wait_for


def test_broker_command_serves_kafka_and_stops_on_sigterm(tmp_path: Path) -> None:
    port = free_port()
    proc = subprocess.Popen([str(BIN), "broker", "--port", str(port)], stdout=subprocess.DEVNULL)
    try:
        wait_for_port("127.0.0.1", port)
        from confluent_kafka.admin import AdminClient

        meta = AdminClient({"bootstrap.servers": f"127.0.0.1:{port}"}).list_topics(timeout=10)
        assert meta.brokers, "broker answered metadata with no brokers"
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(15) == 0
    finally:
        if proc.poll() is None:
            proc.kill()


def test_sigkill_mid_stream_loses_and_duplicates_nothing(deployment: Deployment) -> None:
    t = traffic.build(3000)
    chunks = [t.lines[i::3] for i in range(3)]
    worker = deployment.start_worker()
    total = len(t.valid) + len(t.rejected)
    for chunk in chunks:
        deployment.produce(chunk)
        # Kill as soon as the worker is visibly in the middle of the input.
        wait_for(
            lambda w=worker: w.metric("trackflow_events_received_total") > 0,
            timeout=60,
            what="worker consuming",
        )
        worker.kill()
        worker = deployment.start_worker()
    deployment.wait_settled(
        lambda: deployment.count("events") + deployment.count("dlq") == total,
        timeout=180,
        quiet=4,
    )
    ids = [r["event_id"] for r in deployment.query("SELECT event_id FROM events")]
    assert len(ids) == len(set(ids))
    assert set(ids) == t.valid
    codes = Counter(r["error_code"] for r in deployment.query("SELECT error_code FROM dlq"))
    assert codes == Counter(code for code, _ in t.rejected)
    # Every visible file is a complete Parquet file, and no clear phone is anywhere.
    lake = deployment.data_dir / "lake"
    for path in lake.rglob("*.parquet"):
        assert pq.ParquetFile(path).metadata.num_rows > 0, path
    assert traffic.PHONE.encode() not in b"".join(p.read_bytes() for p in lake.rglob("*.parquet"))


def test_query_formats_and_errors(deployment: Deployment) -> None:
    t = traffic.build(8)
    deployment.start_worker()
    deployment.produce(t.lines)
    deployment.wait_settled(lambda: deployment.count("events") == len(t.valid))
    sql = "SELECT event_name, count(*) AS n FROM events GROUP BY 1 ORDER BY 1"
    rows = deployment.query(sql)
    assert sum(r["n"] for r in rows) == len(t.valid)
    csv_out = deployment.run("query", sql, "--format", "csv").stdout.decode().splitlines()
    assert csv_out[0] == "event_name,n"
    assert len(csv_out) == len(rows) + 1
    table = deployment.run("query", sql).stdout.decode()
    assert "event_name" in table
    assert "page_view" in table
    bad = deployment.run("query", "SELECT nope FROM events", check=False)
    assert bad.returncode == 1
    assert b"nope" in bad.stderr
    fmt = deployment.run("query", sql, "--format", "xml", check=False)
    assert fmt.returncode == 2


def test_query_on_an_empty_lake_has_every_view_column(
    tmp_path: Path, deployment: Deployment
) -> None:
    rows = deployment.query("SELECT column_name, column_type FROM (DESCRIBE events)")
    types = {r["column_name"]: r["column_type"] for r in rows}
    for col in (
        "event_id", "event_name", "event_time", "received_at", "anonymous_id", "user_id",
        "person_id", "platform", "app_version", "channel", "properties",
    ):  # fmt: skip
        assert col in types
    assert types["event_time"] == "TIMESTAMP WITH TIME ZONE"
    assert types["amount"] == "DECIMAL(18,2)"
    dlq = {r["column_name"] for r in deployment.query("SELECT column_name FROM (DESCRIBE dlq)")}
    assert {"error_code", "error_detail", "payload", "source_topic", "source_partition",
            "source_offset", "received_at"} <= dlq  # fmt: skip


def test_produce_reports_missing_file(deployment: Deployment) -> None:
    proc = deployment.run("produce", "/nonexistent/events.jsonl", check=False)
    assert proc.returncode == 2
    assert b"No such file" in proc.stderr


def test_events_are_queryable_within_seconds(deployment: Deployment) -> None:
    deployment.start_worker()
    # Give the group time to settle, then time one event from produce to query.
    deployment.produce([orjson.dumps(traffic.base(1, int(time.time() * 1000)))])
    deployment.wait_settled(lambda: deployment.count("events") == 1, quiet=0)
    event = traffic.base(2, int(time.time() * 1000))
    started = time.monotonic()
    deployment.produce([orjson.dumps(event)])
    wait_for(lambda: deployment.count("events") == 2, timeout=30, interval=0.1)
    elapsed = time.monotonic() - started
    assert elapsed < 5.0, f"event took {elapsed:.1f}s to become queryable"


@pytest.mark.slow
def test_soak_repeated_sigkills(deployment: Deployment) -> None:
    t = traffic.build(20_000)
    worker = deployment.start_worker()
    deployment.produce(t.lines)
    for _ in range(5):
        time.sleep(3)
        worker.kill()
        worker = deployment.start_worker()
    total = len(t.valid) + len(t.rejected)
    deployment.wait_settled(
        lambda: deployment.count("events") + deployment.count("dlq") == total, timeout=600
    )
    ids = [r["event_id"] for r in deployment.query("SELECT event_id FROM events")]
    assert len(ids) == len(set(ids))
    assert set(ids) == t.valid
