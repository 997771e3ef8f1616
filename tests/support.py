"""Test harness: one embedded broker per session, one isolated deployment per test."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any, TypeVar

import orjson

from pipeline.runtime.telemetry import scrape
from pipeline.tools.broker import free_port

T = TypeVar("T")
BIN = Path(sys.executable).parent / "trackflow"


def wait_for(
    predicate: Callable[[], T], timeout: float = 60.0, interval: float = 0.25, what: str = ""
) -> T:
    deadline = time.monotonic() + timeout
    last: Any = None
    while time.monotonic() < deadline:
        try:
            last = predicate()
        except Exception as exc:  # the condition may not be observable yet
            last = exc
        else:
            if last:
                return last
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout}s waiting for {what or predicate}: {last!r}")


class Worker:
    def __init__(self, proc: subprocess.Popen[bytes], web_port: int, log: Path) -> None:
        self.proc = proc
        self.web_port = web_port
        self.log = log

    def metrics(self) -> dict[str, float]:
        metrics = scrape(self.web_port, timeout=5)
        if not metrics:
            raise ConnectionError(f"worker /metrics on port {self.web_port} not serving")
        return metrics

    def metric(self, name: str) -> float:
        return self.metrics().get(name, 0.0)

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait(10)

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                self.kill()

    def log_text(self) -> str:
        return self.log.read_text(errors="replace") if self.log.exists() else ""


class Deployment:
    """An isolated trackflow on the shared broker: own app id, topic prefix and data dir."""

    def __init__(self, broker_url: str, tmp: Path, name: str, partitions: int = 4) -> None:
        self.tmp = tmp
        self.name = name
        self.data_dir = tmp / "data"
        self.env = {
            **os.environ,
            "TRACKFLOW_BROKER": broker_url,
            "TRACKFLOW_DATA_DIR": str(self.data_dir),
            "TRACKFLOW_APP_ID": name,
            "TRACKFLOW_TOPIC_PREFIX": f"{name}.",
            "TRACKFLOW_PARTITIONS": str(partitions),
            "TRACKFLOW_REBALANCE_TIMEOUT": "2",
            "TRACKFLOW_SESSION_TIMEOUT": "6",
            "TRACKFLOW_SINK_FLUSH_SECONDS": "0.3",
            "TRACKFLOW_LOG_LEVEL": "warning",
            "TRACKFLOW_PII_SECRET": "test-secret",
        }
        self.workers: list[Worker] = []

    def run(
        self, *args: str, input: bytes | None = None, check: bool = True
    ) -> subprocess.CompletedProcess[bytes]:
        proc = subprocess.run(
            [str(BIN), *args], input=input, env=self.env, capture_output=True, timeout=120
        )
        if check and proc.returncode != 0:
            raise AssertionError(
                f"trackflow {' '.join(args)} exited {proc.returncode}: {proc.stderr.decode()}"
            )
        return proc

    def start_worker(self) -> Worker:
        port = free_port()
        log = self.tmp / f"worker-{len(self.workers)}.log"
        proc = subprocess.Popen(
            [str(BIN), "worker", "--web-port", str(port)],
            env=self.env,
            stdout=open(log, "ab"),  # noqa: SIM115
            stderr=subprocess.STDOUT,
        )
        worker = Worker(proc, port, log)
        self.workers.append(worker)
        wait_for(lambda: worker.metrics(), timeout=30, what="worker /metrics")
        return worker

    def wait_assigned(self, workers: list[Worker], timeout: float = 90.0) -> None:
        """Until every worker reports events.raw partitions of its own (it has joined the
        group and holds input). Tests of work sharing produce only then, or the first worker
        may do it all alone; not a workaround any more for the silent stall of input
        produced while the group forms (fixed, tested without waiting in test_ingest.py).
        """
        raw = self.env["TRACKFLOW_TOPIC_PREFIX"] + "events.raw"
        wait_for(
            lambda: all(
                any(k.startswith("trackflow_consumer_lag") and raw in k for k in w.metrics())
                for w in workers
            ),
            timeout=timeout,
            what="every worker assigned events.raw partitions",
        )

    def produce(self, lines: Iterable[bytes]) -> subprocess.CompletedProcess[bytes]:
        return self.run("produce", "-", input=b"\n".join(lines) + b"\n")

    def query(self, sql: str) -> list[dict[str, Any]]:
        out = self.run("query", sql, "--format", "json").stdout
        rows = orjson.loads(out)
        assert isinstance(rows, list)
        return rows

    def count(self, table: str, where: str = "true") -> int:
        from pipeline.lake.views import connect

        con = connect(self.data_dir)
        try:
            row = con.execute(f"SELECT count(*) FROM {table} WHERE {where}").fetchone()
        finally:
            con.close()
        return int(row[0]) if row else 0

    def lake_bytes(self) -> bytes:
        """Every Parquet file of the lake, concatenated: to look for what must not be there
        (an identifier in clear, a write key)."""
        return b"".join(p.read_bytes() for p in (self.data_dir / "lake").rglob("*.parquet"))

    def wait_settled(
        self, expect: Callable[[], bool], timeout: float = 90.0, quiet: float = 2.0
    ) -> None:
        """Wait until ``expect()`` holds and still holds after ``quiet`` seconds."""
        wait_for(expect, timeout=timeout, what="expected lake state")
        time.sleep(quiet)
        assert expect(), "lake changed after it looked settled (duplicates?)"

    def stop(self) -> None:
        for worker in self.workers:
            worker.stop()
