"""``trackflow collect``, ``simulate --via http`` and ``demo --via http`` as processes."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import orjson

from pipeline.lake.views import connect
from tests.collector import CollectorProcess
from tests.support import BIN, Deployment, wait_for

KEY = "wk-sim-0123456789abcdef"


def test_collect_refuses_a_bad_sources_file_without_showing_keys(tmp_path: Path) -> None:
    cases = {
        "missing.json": None,
        "not-json.json": b'[{"name": "web", "write_key": "' + KEY.encode(),
        "platform.json": orjson.dumps([{"name": "web", "write_key": KEY, "platform": "tv"}]),
        "twice.json": orjson.dumps(
            [{"name": "a", "write_key": KEY}, {"name": "b", "write_key": KEY}]
        ),
    }
    for name, content in cases.items():
        path = tmp_path / name
        if content is not None:
            path.write_bytes(content)
        proc = subprocess.run(
            [str(BIN), "collect", "--sources", str(path), "--port", "0"],
            capture_output=True,
            timeout=60,
        )
        err = proc.stderr.decode()
        assert proc.returncode == 2, (name, err)
        assert err.startswith("trackflow collect: "), err
        assert "Traceback" not in err
        assert KEY not in err


def test_simulate_via_http_goes_through_the_collector(deployment: Deployment) -> None:
    worker = deployment.start_worker()
    collector = CollectorProcess(
        deployment, [{"name": "sim", "write_key": KEY, "platform": "h5"}]
    ).start()
    try:
        url = f"http://127.0.0.1:{collector.port}"
        args = ["simulate", "--via", "http", "--collector", url, "--duration", "20"]
        args += ["--rate", "30", "--fast", "--malformed-share", "0.05"]
        args += ["--duplicate-share", "0.05"]
        proc = subprocess.run(
            [str(BIN), *args],
            env={**deployment.env, "TRACKFLOW_WRITE_KEY": KEY},
            capture_output=True,
            timeout=120,
        )
        assert proc.returncode == 0, proc.stderr.decode()
        assert "requests to http://127.0.0.1" in proc.stderr.decode()
        accepted = collector.metrics()['trackflow_collector_events_accepted_total{source="sim"}']
        assert accepted > 300

        def accounted() -> bool:
            m = worker.metrics()
            done = (
                m.get("trackflow_events_stored_total", 0)
                + m.get('trackflow_lake_rows_written_total{table="dlq"}', 0)
                + m.get("trackflow_duplicates_total", 0)
                + m.get("trackflow_consent_dropped_total", 0)
            )
            return m.get("trackflow_events_received_total") == accepted and done == accepted

        wait_for(accounted, timeout=120, what="every accepted event accounted for")
        con = connect(deployment.data_dir)
        try:
            by_source = con.execute("SELECT source, count(*) FROM events GROUP BY 1").fetchall()
            dlq = con.execute("SELECT DISTINCT source FROM dlq").fetchall()
            duplicated = con.execute(
                "SELECT count(*) FROM (SELECT event_id FROM events GROUP BY 1 HAVING count(*) > 1)"
            ).fetchone()
        finally:
            con.close()
        assert len(by_source) == 1
        assert by_source[0][0] == "sim"
        assert by_source[0][1] > 250
        assert dlq == [("sim",)]
        assert duplicated == (0,)
    finally:
        assert collector.stop() == 0


def test_simulate_via_http_needs_a_write_key(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if k != "TRACKFLOW_WRITE_KEY"}
    proc = subprocess.run(
        [str(BIN), "simulate", "--via", "http", "--duration", "1"],
        env=env,
        capture_output=True,
        timeout=60,
    )
    assert proc.returncode == 2
    assert "TRACKFLOW_WRITE_KEY" in proc.stderr.decode()


def test_demo_via_http(tmp_path: Path) -> None:
    data = tmp_path / "demo"
    env = {k: v for k, v in os.environ.items() if not k.startswith("TRACKFLOW_")}
    proc = subprocess.run(
        [str(BIN), "demo", "--via", "http", "--duration", "8", "--data-dir", str(data)],
        env={**env, "COLUMNS": "120", "TRACKFLOW_DEV": "1"},
        capture_output=True,
        timeout=400,
    )
    out = proc.stdout.decode() + proc.stderr.decode()
    assert proc.returncode == 0, out[-5000:]
    assert "events accepted by the collector" in out
    assert "collector pid" in out
    con = connect(data)
    try:
        sources = con.execute("SELECT DISTINCT source FROM events").fetchall()
    finally:
        con.close()
    assert sources == [("demo",)]
