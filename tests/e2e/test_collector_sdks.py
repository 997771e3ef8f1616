"""Real SDKs, unchanged but for their host, send to a running collector, the session's
broker and a real worker; the lake then holds exactly what they sent (DESIGN section 13).

Server SDKs: Segment's ``segment-analytics-python`` and RudderStack's ``rudder-sdk-python``
from PyPI (the dev extra), Segment's ``@segment/analytics-node`` and RudderStack's
``@rudderstack/rudder-sdk-node`` from npm (``tests/e2e/sdk/``, installed by ``make tools``
or here with ``npm ci``). The web path: Debian's headless chromium loads a page that
bundles ``@segment/analytics-next`` from another origin. Each SDK has its own source, so
the lake's ``source`` column tells its events apart. One worker and one collector for the
module.
"""

from __future__ import annotations

import base64
import http.server
import json
import shutil
import subprocess
import threading
import urllib.parse
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson
import pytest

from pipeline.contract.pii import PiiHasher
from pipeline.tools.broker import EmbeddedBroker
from tests.collector import Stack, running_stack
from tests.support import wait_for

SDK_DIR = Path(__file__).parent / "sdk"
PII_SECRET = "test-secret"  # tests.support.Deployment's
SDKS = ("segment-python", "rudderstack-python", "segment-node", "rudderstack-node")
BROWSER = "segment-browser"
SOURCES: list[dict[str, Any]] = [
    {"name": name, "write_key": f"wk-{name}-{uuid.uuid4().hex}", "platform": "server"}
    for name in SDKS
] + [{"name": BROWSER, "write_key": f"wk-{BROWSER}-{uuid.uuid4().hex}", "platform": "web"}]
KEYS = {s["name"]: s["write_key"] for s in SOURCES}
PLATFORMS = {s["name"]: s["platform"] for s in SOURCES}
# A call's type -> the envelope's event name (track: its event).
EVENT_NAMES = {"page": "page_view", "screen": "page_view"}
EVENT_NAMES.update(identify="identify", alias="alias", group="group")


@pytest.fixture(scope="module")
def stack(broker: EmbeddedBroker, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    with running_stack(broker, tmp_path_factory.mktemp("sdks"), SOURCES) as stack:
        yield stack


@pytest.fixture(scope="module")
def node_sdks() -> Path:
    """``tests/e2e/sdk/node_modules``, installed from the lock file if missing."""
    node, npm = shutil.which("node"), shutil.which("npm")
    if node is None or npm is None:
        pytest.skip("node and npm are not installed: the npm SDKs cannot run")
    modules = SDK_DIR / "node_modules"
    lock = SDK_DIR / "package-lock.json"
    stamp = modules / ".package-lock.json"  # npm writes it; older than the lock: stale
    if not stamp.exists() or stamp.stat().st_mtime < lock.stat().st_mtime:
        proc = subprocess.run(
            [npm, "ci", "--no-audit", "--no-fund"],
            cwd=SDK_DIR,
            capture_output=True,
            timeout=300,
        )
        assert proc.returncode == 0, proc.stderr.decode()[-3000:]
    return SDK_DIR


def phone_of(name: str) -> str:
    """A mainland mobile number of its own for each SDK (11 digits)."""
    return f"1391234{list(KEYS).index(name):04d}"


def script(name: str) -> list[dict[str, Any]]:
    """A visitor's path, in the SDKs' own terms: browses anonymously, buys, signs in,
    pays; its app is aliased to the member; the member's company is a group. Every call
    differs in its identifiers or name, so the node sender can tell them apart."""
    device, app, member = f"{name}-device", f"{name}-app", f"{name}-member"
    order = f"{name}-order-1"
    return [
        {"type": "page", "anonymousId": device, "name": "home", "properties": {"referrer": "ad"}},
        {
            "type": "track",
            "anonymousId": device,
            "event": "add_to_cart",
            "properties": {"product_id": "p-1", "quantity": 2, "price": 59.9},
        },
        {
            "type": "identify",
            "anonymousId": device,
            "userId": member,
            "traits": {"phone": phone_of(name), "email": f"{name}@Example.com", "name": "Ada"},
        },
        {"type": "track", "userId": member, "event": "login", "properties": {"method": "phone"}},
        {
            "type": "track",
            "userId": member,
            "event": "pay_success",
            "properties": {"order_id": order, "amount": 129.5, "pay_method": "wechat_pay"},
        },
        {"type": "screen", "anonymousId": app, "name": "cart"},
        {"type": "alias", "previousId": app, "userId": member},
        {"type": "group", "userId": member, "groupId": f"{name}-co", "traits": {"plan": "pro"}},
    ]


def expected_row(name: str, call: dict[str, Any]) -> dict[str, Any]:
    """What the lake's ``events`` must hold for one call (DESIGN 13's mapping)."""
    kind = call["type"]
    properties: Any = call.get("properties") or {}  # the lake's properties: {} when none
    identities = None
    if kind in ("page", "screen"):
        properties = {**properties, "page": call["name"]}
    elif kind == "identify":
        hasher = PiiHasher(PII_SECRET)
        traits = call["traits"]
        identities = {
            "phone": hasher.hash_phone(traits["phone"]),
            "email": hasher.hash_email(traits["email"]),
        }
        properties = {k: v for k, v in traits.items() if k not in identities}
    elif kind == "group":
        properties = {**call["traits"], "group_id": call["groupId"]}
    return {
        "event_name": EVENT_NAMES.get(kind) or call["event"],
        "anonymous_id": call.get("previousId") or call.get("anonymousId"),
        "user_id": call.get("userId"),
        "source": name,
        "platform": PLATFORMS[name],
        "identities": identities,
        "properties": properties,
    }


PYTHON_ARGS = {"anonymousId": "anonymous_id", "userId": "user_id"}
PYTHON_ARGS.update(previousId="previous_id", groupId="group_id")


def send_python(name: str, calls: list[dict[str, Any]], host: str) -> list[str]:
    """The PyPI SDK's Client (a background thread posting /v1/batch), as an app uses it."""
    if name == "segment-python":
        from segment.analytics import Client
    else:
        from rudderstack.analytics import Client
    errors: list[str] = []
    client = Client(
        write_key=KEYS[name],
        host=host,
        on_error=lambda error, _batch: errors.append(repr(error)),
        max_retries=3,
    )
    ids = []
    for call in calls:
        args = {PYTHON_ARGS.get(k, k): v for k, v in call.items() if k != "type"}
        queued, message = getattr(client, call["type"])(**args)
        assert queued, message
        ids.append(message["messageId"])
    client.flush()
    client.join()
    assert not errors, errors
    return ids


def send_node(name: str, calls: list[dict[str, Any]], host: str, sdk_dir: Path) -> list[str]:
    """``tests/e2e/sdk/send.mjs``: the npm SDK in a node process, its message ids back."""
    spec = {"sdk": name.split("-")[0], "host": host, "writeKey": KEYS[name], "calls": calls}
    proc = subprocess.run(
        ["node", str(sdk_dir / "send.mjs")],
        input=orjson.dumps(spec),
        capture_output=True,
        timeout=60,
    )
    assert proc.returncode == 0, (proc.stdout.decode(), proc.stderr.decode())
    ids = json.loads(proc.stdout)["messageIds"]
    assert all(ids), ids
    return ids


def assert_stored_exactly(
    stack: Stack, name: str, calls: list[dict[str, Any]], ids: list[str]
) -> None:
    """Each call stored once, under the SDK's messageId, mapped as DESIGN 13 says; nothing
    dead-lettered; the identifiers hashed and none in clear; one person."""
    assert len(set(ids)) == len(calls)

    def stored() -> list[dict[str, Any]]:
        return stack.rows("SELECT * FROM events WHERE source = ?", name)

    stack.dep.wait_settled(lambda: len(stored()) >= len(calls), timeout=90)
    rows = {r["event_id"]: r for r in stored()}
    assert len(rows) == len(stored()) == len(calls)  # each once
    assert set(rows) == set(ids)
    for message_id, call in zip(ids, calls, strict=True):
        row = rows[message_id]
        got = {k: row[k] for k in ("event_name", "anonymous_id", "user_id", "source", "platform")}
        got["identities"] = orjson.loads(row["identities"]) if row["identities"] else None
        got["properties"] = orjson.loads(row["properties"])
        assert got == expected_row(name, call), call
    assert stack.rows("SELECT * FROM dlq WHERE source = ?", name) == []

    wait_for(
        lambda: (
            len(stack.rows("SELECT DISTINCT person_id FROM events_resolved WHERE source = ?", name))
            == 1
        ),
        timeout=60,
        what=f"one person for {name}'s events",
    )
    identify = next(c for c in calls if c["type"] == "identify")
    stack.assert_nowhere(identify["traits"]["phone"], identify["traits"]["email"], KEYS[name])


@pytest.mark.parametrize("name", ["segment-python", "rudderstack-python"])
def test_python_sdk_sends_unchanged(stack: Stack, name: str) -> None:
    calls = script(name)
    ids = send_python(name, calls, stack.url)
    assert_stored_exactly(stack, name, calls, ids)


@pytest.mark.parametrize("name", ["segment-node", "rudderstack-node"])
def test_node_sdk_sends_unchanged(stack: Stack, node_sdks: Path, name: str) -> None:
    calls = script(name)
    ids = send_node(name, calls, stack.url, node_sdks)
    assert_stored_exactly(stack, name, calls, ids)


class PageServer:
    """The web page's own origin: a static HTTP server of ``tests/e2e/sdk`` (the page and
    the SDK's bundle in node_modules) on another port than the collector's."""

    def __init__(self, root: Path) -> None:
        self.paths: list[str] = []
        paths = self.paths

        class Handler(http.server.SimpleHTTPRequestHandler):
            def __init__(self, *args: Any, **kwargs: Any) -> None:
                super().__init__(*args, directory=str(root), **kwargs)

            def log_message(self, format: str, *args: Any) -> None:
                paths.append(self.path)

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.port = self.server.server_address[1]
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def __enter__(self) -> PageServer:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.shutdown()
        self.server.server_close()


def chromium() -> Any:
    """Debian's chromium, headless, through Debian's chromedriver (no browser download).
    Every host but the loopback address resolves to nothing: the page cannot reach a CDN
    even by mistake."""
    browser, driver = shutil.which("chromium"), shutil.which("chromedriver")
    if browser is None or driver is None:
        pytest.skip("Debian's chromium and chromium-driver are not installed (make tools)")
    webdriver = pytest.importorskip("selenium.webdriver")
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = browser
    for arg in (
        "--headless=new",
        "--no-sandbox",  # root, as CI runs
        "--disable-dev-shm-usage",
        "--disable-gpu",
        "--no-first-run",
        "--disable-background-networking",
        "--host-resolver-rules=MAP * ~NOTFOUND , EXCLUDE 127.0.0.1",
    ):
        options.add_argument(arg)
    options.set_capability("goog:loggingPrefs", {"performance": "ALL", "browser": "ALL"})
    return webdriver.Chrome(service=Service(executable_path=driver), options=options)


def network_log(driver: Any) -> list[dict[str, Any]]:
    """The browser's own record of its requests (DevTools' Network events)."""
    events = [json.loads(e["message"])["message"] for e in driver.get_log("performance")]
    return [e for e in events if e["method"].startswith("Network.")]


@dataclass
class Exchange:
    """One request the browser made, as it made it, and the answer it got."""

    method: str
    url: str
    kind: str = ""  # DevTools' resource type: Document, Script, Fetch, Preflight, ...
    headers: dict[str, str] = field(default_factory=dict)  # as sent on the wire
    body: bytes = b""
    status: int | None = None


def exchanges(log: list[dict[str, Any]]) -> list[Exchange]:
    """The requests of a DevTools log. A request's headers as they went on the wire come
    in an event of their own, which may arrive before or after the request's."""
    by_id: dict[str, Exchange] = {}
    wire: dict[str, dict[str, str]] = {}
    for event in log:
        params = event["params"]
        rid = params.get("requestId")
        if event["method"] == "Network.requestWillBeSent":
            request = params["request"]
            body = b"".join(
                base64.b64decode(e.get("bytes", "")) for e in request.get("postDataEntries", [])
            )
            headers = {k.lower(): v for k, v in request["headers"].items()}
            by_id[rid] = Exchange(request["method"], request["url"], headers=headers, body=body)
        elif event["method"] == "Network.requestWillBeSentExtraInfo":
            wire.setdefault(rid, {}).update({k.lower(): v for k, v in params["headers"].items()})
        elif event["method"] == "Network.responseReceived" and rid in by_id:
            by_id[rid].kind = params["type"]
            by_id[rid].status = params["response"]["status"]
    for rid, exchange in by_id.items():
        exchange.headers.update(wire.get(rid, {}))
    return list(by_id.values())


def test_a_web_page_sends_across_origins_with_the_browser_sdk(
    stack: Stack, node_sdks: Path
) -> None:
    """A real browser (Debian's chromium, headless) loads a page that bundles
    ``@segment/analytics-next`` (its npm UMD bundle, served from node_modules by the page's
    own server: no CDN) from another origin than the collector's. The SDK sends page,
    track, identify and group calls as browsers send them: ``text/plain``, the write key in
    the body and an Authorization header, so a CORS preflight first. The lake then holds
    exactly what the browser posted, each call once."""
    name = BROWSER
    collector = f"127.0.0.1:{stack.collector.port}"
    with PageServer(node_sdks) as pages:
        driver = chromium()
        try:
            # In the fragment: the SDK sends the page's URL and query string with every
            # call, never its fragment, and the key and the phone must not be stored.
            config = urllib.parse.urlencode(
                {"key": KEYS[name], "collector": collector, "tag": name}
                | {"phone": phone_of(name), "email": f"{name}@Example.com"}
            )
            driver.set_script_timeout(60)
            driver.get(f"http://127.0.0.1:{pages.port}/analytics-next.html#{config}")
            called = driver.execute_async_script(
                "const done = arguments[arguments.length - 1];"
                "window.trackflow.then((sent) => done(sent.length), (e) => done(String(e)));"
            )
            assert called == 6, (called, driver.get_log("browser"))
            # Each call is delivered before the page's next: all six posts are answered.
            # (The browser hands its log out once: keep what it gave.)
            log: list[dict[str, Any]] = []

            def answered() -> bool:
                log.extend(network_log(driver))
                posts = [x for x in exchanges(log) if x.method == "POST"]
                delivered = sum(x.status == 200 for x in posts)
                return delivered >= called and all("origin" in x.headers for x in posts)

            wait_for(answered, timeout=30, what="the browser's six posts answered")
        finally:
            driver.quit()

    page_origin = f"http://127.0.0.1:{pages.port}"
    seen = exchanges(log)
    # Nothing left the machine: the page, its bundle (and favicon) from the page's origin,
    # the calls to the collector's.
    assert all(x.url.startswith((page_origin + "/", f"http://{collector}/")) for x in seen)
    assert "/node_modules/@segment/analytics-next/dist/umd/index.js" in pages.paths
    posts = [x for x in seen if x.method == "POST"]
    for post in posts:
        assert post.url.startswith(f"http://{collector}/v1/")
        assert post.headers["content-type"] == "text/plain"  # as browsers send, no JSON type
        assert post.headers["origin"] == page_origin  # across origins
    # One 200 per call; anything else can only be an answer the SDK retried (a 503 of a
    # machine too loaded for Kafka's acknowledgement in time), which must store nothing
    # twice.
    delivered = [x for x in posts if x.status == 200]
    assert len(delivered) == called
    retried = [x for x in posts if x.status != 200]
    assert all(x.status in (429, 503) for x in retried), retried
    ids = {orjson.loads(x.body)["messageId"] for x in delivered}
    assert {orjson.loads(x.body)["messageId"] for x in retried} <= ids
    preflights = [x for x in seen if x.method == "OPTIONS"]
    assert preflights, "no CORS preflight"  # the Authorization header needs one
    for pre in preflights:
        assert pre.kind == "Preflight"
        assert pre.status == 204
        assert pre.headers["access-control-request-method"] == "POST"
        assert "authorization" in pre.headers["access-control-request-headers"]

    calls = [orjson.loads(post.body) for post in delivered]
    assert {c["type"] for c in calls} == {"page", "track", "identify", "group"}
    assert all(c["writeKey"] == KEYS[name] for c in calls)  # the key in the body too
    assert_stored_exactly(stack, name, calls, [c["messageId"] for c in calls])
