"""Simulated traffic through the HTTP collector: the path a web page takes (``--via http``).

The simulator writes event envelopes; ``to_segment`` turns each into the Segment call an
SDK would have sent for it (the collector's mapping run backwards), and ``HttpSender``
posts them in ``/v1/batch`` requests, as the SDKs do, retrying 429 and 5xx answers with
their ``Retry-After``. A message that is not JSON is posted as it is: the collector answers
400, as it would to a broken client, and the sender counts it as refused.
"""

from __future__ import annotations

import base64
import http.client
import time
import urllib.parse
from datetime import UTC, datetime
from typing import Any

import orjson

from pipeline.tools.produce import ProduceStats

IDENTITY_TRAITS = ("phone", "email", "openid", "unionid")
MAX_ATTEMPTS = 5  # per request, like the SDKs' retry budget
MAX_BACKOFF = 10.0


def to_segment(env: Any) -> Any:
    """The Segment call of an envelope (anything else is passed on, to be dead-lettered)."""
    if not isinstance(env, dict):
        return env
    props = env.get("properties")
    call: dict[str, Any] = {"messageId": env.get("event_id"), "timestamp": _iso(env)}
    if env.get("event_name") == "page_view" and isinstance(props, dict) and "page" in props:
        call.update(type="page", name=props["page"])
        call["properties"] = {k: v for k, v in props.items() if k != "page"}
    else:
        call.update(type="track", event=env.get("event_name"), properties=props)
    call["anonymousId"] = env.get("anonymous_id")
    call["userId"] = env.get("user_id")
    context: dict[str, Any] = {"platform": env.get("platform")}
    identities = env.get("identities")
    if isinstance(identities, dict):
        context["traits"] = {k: identities[k] for k in IDENTITY_TRAITS if k in identities}
    consent = env.get("consent")
    if isinstance(consent, dict):
        context["consent"] = {"categoryPreferences": consent}
    if env.get("app_version") is not None:
        context["app"] = {"version": env["app_version"]}
    call["context"] = context
    return {k: v for k, v in call.items() if v is not None}


def _iso(env: dict[str, Any]) -> Any:
    value = env.get("event_time")
    if type(value) is int:
        try:
            moment = datetime.fromtimestamp(value / 1000, UTC)
        except (OverflowError, OSError, ValueError):
            return value
        return moment.isoformat(timespec="milliseconds")
    return value


class HttpSender:
    """``RawProducer``'s interface (send, flush_soon, flush, close, stats, errors) over HTTP."""

    def __init__(self, url: str, write_key: str, batch_size: int = 100) -> None:
        parsed = urllib.parse.urlsplit(url)
        if parsed.scheme not in ("http", "https") or not parsed.hostname:
            raise ValueError(f"collector URL must be http(s)://host[:port], not {url!r}")
        self._https = parsed.scheme == "https"
        self._host = parsed.hostname
        self._port = parsed.port or (443 if self._https else 80)
        self._auth = "Basic " + base64.b64encode(f"{write_key}:".encode()).decode()
        self._batch_size = batch_size
        self._pending: list[Any] = []
        self._conn: http.client.HTTPConnection | None = None
        self.stats = ProduceStats()
        self.errors: list[str] = []
        self.requests = 0
        self.refused = 0  # requests the collector refused (4xx): their events are not sent

    def send(self, _key: bytes | None, value: bytes) -> None:
        self.stats.messages += 1
        self.stats.bytes += len(value)
        try:
            decoded = orjson.loads(value)
        except orjson.JSONDecodeError:
            self._post(value)  # a broken client: the collector answers 400
            return
        calls = decoded if isinstance(decoded, list) and decoded else [decoded]
        self._pending.extend(to_segment(c) for c in calls)
        if len(self._pending) >= self._batch_size:
            self.flush_soon()

    def flush_soon(self) -> None:
        """Send what is waiting (the pacing loop calls this before it sleeps)."""
        if self._pending:
            calls, self._pending = self._pending, []
            self._post(orjson.dumps({"batch": calls, "sentAt": _now()}), len(calls))

    def flush(self, timeout: float = 60.0) -> int:
        self.flush_soon()
        return self.stats.failed

    def close(self, timeout: float = 5.0) -> None:
        self.flush(timeout)
        if self._conn is not None:
            self._conn.close()
            self._conn = None

    def _post(self, body: bytes, events: int = 1) -> None:
        """POST /v1/batch; 429 and 5xx are retried with backoff, other answers are final."""
        self.requests += 1
        delay = 0.5
        for attempt in range(MAX_ATTEMPTS):
            status, retry_after = self._request(body)
            if status == 200:
                return
            if status is not None and 400 <= status < 500 and status != 429:
                self.refused += 1
                self._note(f"the collector answered {status}")
                return
            if attempt + 1 < MAX_ATTEMPTS:
                time.sleep(retry_after if retry_after is not None else delay)
                delay = min(MAX_BACKOFF, delay * 2)
        self.stats.failed += events
        self._note(f"{events} events not accepted after {MAX_ATTEMPTS} attempts")

    def _request(self, body: bytes) -> tuple[int | None, float | None]:
        headers = {"Content-Type": "application/json", "Authorization": self._auth}
        try:
            conn = self._connection()
            conn.request("POST", "/v1/batch", body=body, headers=headers)
            resp = conn.getresponse()
            resp.read()
        except (OSError, http.client.HTTPException) as exc:
            self._drop_connection()
            self._note(f"collector unreachable: {exc}")
            return None, None
        retry = resp.getheader("Retry-After")
        return resp.status, float(retry) if retry and retry.isdigit() else None

    def _connection(self) -> http.client.HTTPConnection:
        if self._conn is None:
            cls = http.client.HTTPSConnection if self._https else http.client.HTTPConnection
            self._conn = cls(self._host, self._port, timeout=30)
        return self._conn

    def _drop_connection(self) -> None:
        if self._conn is not None:
            self._conn.close()
            self._conn = None

    def _note(self, error: str) -> None:
        if len(self.errors) < 20:
            self.errors.append(error)


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="milliseconds")
