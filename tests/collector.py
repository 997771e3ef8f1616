"""A real ``trackflow collect`` process for tests, and a raw HTTP client for it.

Raw HTTP on purpose: the tests control every header and byte (gzip, text/plain, a key in
the body, CORS, oversized bodies), as SDKs and browsers send them.
"""

from __future__ import annotations

import base64
import gzip as gzip_module
import http.client
import signal
import subprocess
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

import orjson

from pipeline.lake.views import connect
from pipeline.runtime.telemetry import parse_text
from pipeline.tools.broker import free_port
from tests.support import BIN, Deployment, wait_for

if TYPE_CHECKING:
    from pipeline.tools.broker import EmbeddedBroker


def now_iso(offset_ms: int = 0) -> str:
    t = datetime.now(UTC).timestamp() + offset_ms / 1000
    return datetime.fromtimestamp(t, UTC).isoformat(timespec="milliseconds")


def message_id() -> str:
    return str(uuid.uuid4())


@dataclass
class Reply:
    status: int
    headers: dict[str, str]
    body: bytes

    def json(self) -> Any:
        return orjson.loads(self.body)


@dataclass
class CollectorProcess:
    """``trackflow collect`` with its own sources file, in a deployment's environment."""

    dep: Deployment
    sources: list[dict[str, Any]]
    env: dict[str, str] = field(default_factory=dict)
    port: int = 0
    proc: subprocess.Popen[bytes] | None = None

    @property
    def log(self) -> Path:
        return self.dep.tmp / f"collector-{self.port}.log"

    def start(self, wait: bool = True) -> CollectorProcess:
        self.port = free_port()
        path = self.dep.tmp / f"sources-{self.port}.json"
        path.write_bytes(orjson.dumps(self.sources))
        self.proc = subprocess.Popen(
            [str(BIN), "collect", "--port", str(self.port), "--sources", str(path)],
            env={**self.dep.env, "TRACKFLOW_LOG_LEVEL": "info", **self.env},
            stdout=open(self.log, "ab"),  # noqa: SIM115
            stderr=subprocess.STDOUT,
        )
        if wait:
            wait_for(lambda: self.get("/health").status == 200, timeout=60, what="collector")
        return self

    def request(
        self, method: str, path: str, body: bytes = b"", headers: dict[str, str] | None = None
    ) -> Reply:
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=60)
        try:
            conn.request(method, path, body=body, headers=headers or {})
            resp = conn.getresponse()
            return Reply(resp.status, dict(resp.getheaders()), resp.read())
        finally:
            conn.close()

    def get(self, path: str) -> Reply:
        return self.request("GET", path)

    def post(
        self,
        path: str,
        doc: Any,
        key: str | None = None,
        gzip: bool = False,
        headers: dict[str, str] | None = None,
    ) -> Reply:
        """POST ``doc`` (JSON-encoded unless bytes) to ``path``; ``key``: Basic auth."""
        body = doc if isinstance(doc, bytes) else orjson.dumps(doc)
        sent = {"Content-Type": "application/json", **(headers or {})}
        if key is not None:
            sent["Authorization"] = "Basic " + base64.b64encode(f"{key}:".encode()).decode()
        if gzip:
            body = gzip_module.compress(body)
            sent["Content-Encoding"] = "gzip"
        return self.request("POST", path, body, sent)

    def metrics(self) -> dict[str, float]:
        return parse_text(self.get("/metrics").body.decode())

    def stop(self, timeout: float = 30) -> int | None:
        """SIGTERM (graceful: drain and flush), the exit code."""
        if self.proc is None:
            return None
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)
        return self.proc.returncode

    def log_text(self) -> str:
        return self.log.read_text(errors="replace") if self.log.exists() else ""


class Stack:
    """A worker and a collector on the session's broker, and what their lake holds."""

    def __init__(self, dep: Deployment, collector: CollectorProcess) -> None:
        self.dep = dep
        self.collector = collector

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.collector.port}"

    def rows(self, sql: str, *params: Any) -> list[dict[str, Any]]:
        con = connect(self.dep.data_dir)
        try:
            cur = con.execute(sql, list(params))
            names = [d[0] for d in cur.description]
            return [dict(zip(names, row, strict=True)) for row in cur.fetchall()]
        finally:
            con.close()

    def stored(self, tag: str) -> list[dict[str, Any]]:
        """Stored events of a test: their ids start with its tag."""
        return self.rows(
            "SELECT * FROM events WHERE starts_with(event_id, ?) ORDER BY event_id", tag
        )

    def dead(self, tag: str) -> list[dict[str, Any]]:
        """Dead letters of a test: its tag is in their payload."""
        return self.rows(
            "SELECT *, decode(payload) AS text FROM dlq WHERE contains(decode(payload), ?) "
            "ORDER BY source_index",
            tag,
        )

    def assert_nowhere(self, *secrets: str) -> None:
        """None of ``secrets`` (an identifier in clear, a write key) is in the lake, in any
        letter case: not in its files, not in any of its views."""
        blob = self.dep.lake_bytes().lower()
        views = [
            orjson.dumps(self.rows(f"SELECT * FROM {view}"), default=str).decode().lower()
            for view in ("events", "dlq", "identities", "identity_merges")
        ]
        for secret in secrets:
            assert secret.lower().encode() not in blob, secret
            assert not any(secret.lower() in text for text in views), secret

    def settle(self, tag: str, events: int, dead: int = 0) -> None:
        self.dep.wait_settled(
            lambda: len(self.stored(tag)) == events and len(self.dead(tag)) == dead,
            timeout=120,
        )


@contextmanager
def running_stack(
    broker: EmbeddedBroker, tmp: Path, sources: list[dict[str, Any]]
) -> Iterator[Stack]:
    """One worker and one collector with ``sources``; on the way out the collector stops
    gracefully (exit 0) and must not have logged a write key."""
    dep = Deployment(broker.url, tmp, f"t-collector-{uuid.uuid4().hex[:8]}")
    collector = CollectorProcess(dep, sources)
    try:
        dep.start_worker()
        collector.start()
        yield Stack(dep, collector)
        assert collector.stop() == 0, collector.log_text()
        log = collector.log_text()
        assert not any(s["write_key"] in log for s in sources), "a write key was logged"
    finally:
        collector.stop()
        dep.stop()
