"""How fast one ``trackflow collect`` process is (issue 16, DESIGN 13).

Starts an embedded broker and one collector process, then measures two things over HTTP
with Segment ``/v1/batch`` requests of realistic track and page calls, each answered 200
only once Kafka acknowledged all its events:

- ``saturated``: ``--connections`` keep-alive connections send 100-event batches back to
  back for ``--seconds``: events/s acknowledged (target >= 20,000 events/s per process);
- ``paced``: 1,000 requests/s of 20-event batches on a fixed schedule (open loop, over
  ``--paced-connections`` connections) for ``--seconds``: request latency percentiles
  (target p99 < 50 ms). Latency counts from the moment a request was due, not when it
  could be sent, so a stalled collector is not hidden by a client that waited for it.

The load generator is a minimal HTTP/1.1 client on uvloop in this process, with the
requests encoded before the clock starts (each request gets its own message ids by a
fixed-width substitution), so the client is not the bottleneck; its CPU is reported
beside the collector's and the broker's. At the end every message on the broker is read
back: the events on it must be exactly the acknowledged ones, each id once.

Prints JSON and writes it to ``--out`` (default ``bench/results/<date>-collector.json``).
The machine is shared: the load average is recorded, and the collector's CPU per event is
the figure that least depends on it.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import os
import platform
import resource
import subprocess
import sys
import tempfile
import time
import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import orjson

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.report import emit  # noqa: E402
from bench.run import make_event  # noqa: E402
from pipeline.tools.broker import EmbeddedBroker, free_port  # noqa: E402

BIN = Path(sys.executable).parent / "trackflow"
PARTITIONS = 4
PREFIX = "bench-collector."
SLOT = b"RRRRRRRR"  # in every messageId of a template; a request's number replaces it
TARGET_EVENTS_PER_S = 20_000
TARGET_P99_MS = 50.0


def segment_call(e: dict[str, Any], message_id: str, timestamp: str) -> dict[str, Any]:
    """A bench event as an SDK sends it: a page or track call with its context."""
    props = dict(e["properties"])
    call: dict[str, Any] = {"messageId": message_id, "anonymousId": e["anonymous_id"]}
    if e["event_name"] == "page_view":
        call.update(type="page", name=props.pop("page"), properties=props)
    else:
        call.update(type="track", event=e["event_name"], properties=props)
    if "user_id" in e:
        call["userId"] = e["user_id"]
    call["timestamp"] = timestamp
    call["context"] = {
        "app": {"version": e["app_version"]},
        "traits": {"openid": e["identities"]["openid"]},
        "library": {"name": "analytics-python", "version": "2.3.4"},
    }
    return call


def templates(batch: int, count: int, run: str, timestamp: str) -> list[bytes]:
    """``count`` different /v1/batch bodies of ``batch`` calls; their message ids hold
    ``SLOT``, replaced by the request's number when sent."""
    out = []
    for t in range(count):
        calls = [
            segment_call(make_event(t * batch + j, 0), f"{run}-{SLOT.decode()}-{j:03d}", timestamp)
            for j in range(batch)
        ]
        out.append(orjson.dumps({"batch": calls, "sentAt": timestamp}))
    return out


def requests(host: str, port: int, key: str, bodies: list[bytes]) -> list[tuple[bytes, bytes]]:
    """Request heads for bodies of fixed size: (head, body template)."""
    auth = base64.b64encode(f"{key}:".encode()).decode()
    out = []
    for body in bodies:
        head = (
            f"POST /v1/batch HTTP/1.1\r\nHost: {host}:{port}\r\n"
            f"Authorization: Basic {auth}\r\nContent-Type: application/json\r\n"
            f"User-Agent: trackflow-bench\r\nContent-Length: {len(body)}\r\n\r\n"
        ).encode()
        out.append((head, body))
    return out


class Connection:
    """One keep-alive HTTP/1.1 connection: a request, then its whole answer."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader = reader
        self.writer = writer

    @classmethod
    async def open(cls, host: str, port: int) -> Connection:
        reader, writer = await asyncio.open_connection(host, port)
        return cls(reader, writer)

    async def send(self, head: bytes, body: bytes) -> int:
        self.writer.write(head + body)
        answer = await self.reader.readuntil(b"\r\n\r\n")
        status = int(answer[9:12])
        lower = answer.lower()
        at = lower.find(b"content-length:")
        length = int(lower[at + 15 : lower.index(b"\r\n", at)]) if at >= 0 else 0
        if length:
            await self.reader.readexactly(length)
        return status

    def close(self) -> None:
        self.writer.close()


@dataclass
class Tally:
    requests: int = 0
    events: int = 0  # of requests answered 200
    statuses: dict[int, int] = field(default_factory=dict)
    latencies: list[float] = field(default_factory=list)  # seconds
    service: list[float] = field(default_factory=list)  # from the actual send, seconds

    def answered(self, status: int, events: int) -> None:
        self.requests += 1
        self.statuses[status] = self.statuses.get(status, 0) + 1
        if status == 200:
            self.events += events


class Numbers:
    """Request numbers: every request of the run gets its own message ids."""

    def __init__(self) -> None:
        self.n = 0

    def next(self) -> bytes:
        self.n += 1
        return b"%08d" % self.n


async def saturate(
    conns: list[Connection],
    reqs: list[tuple[bytes, bytes]],
    batch: int,
    seconds: float,
    numbers: Numbers,
) -> Tally:
    tally = Tally()
    deadline = time.perf_counter() + seconds

    async def loop(c: Connection, k: int) -> None:
        i = k
        while time.perf_counter() < deadline:
            head, body = reqs[i % len(reqs)]
            i += len(conns)
            started = time.perf_counter()
            status = await c.send(head, body.replace(SLOT, numbers.next()))
            tally.latencies.append(time.perf_counter() - started)
            tally.answered(status, batch)

    await asyncio.gather(*(loop(c, k) for k, c in enumerate(conns)))
    return tally


async def paced(
    conns: list[Connection],
    reqs: list[tuple[bytes, bytes]],
    batch: int,
    rate: float,
    seconds: float,
    numbers: Numbers,
) -> Tally:
    """Request i is due at start + i / rate, on connection i % len(conns)."""
    tally = Tally()
    total = int(rate * seconds)
    start = time.perf_counter() + 0.05

    async def loop(c: Connection, k: int) -> None:
        for i in range(k, total, len(conns)):
            due = start + i / rate
            wait = due - time.perf_counter()
            if wait > 0:
                await asyncio.sleep(wait)
            head, body = reqs[i % len(reqs)]
            sent = time.perf_counter()
            status = await c.send(head, body.replace(SLOT, numbers.next()))
            done = time.perf_counter()
            tally.latencies.append(done - due)
            tally.service.append(done - sent)
            tally.answered(status, batch)

    await asyncio.gather(*(loop(c, k) for k, c in enumerate(conns)))
    return tally


def percentiles(values: list[float]) -> dict[str, float]:
    if not values:
        return {}
    s = sorted(values)

    def at(q: float) -> float:
        return round(s[min(len(s) - 1, int(q * len(s)))] * 1000, 2)

    return {
        "p50": at(0.50),
        "p90": at(0.90),
        "p99": at(0.99),
        "p999": at(0.999),
        "max": round(s[-1] * 1000, 2),
    }


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def own_cpu() -> float:
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


@dataclass
class Procs:
    collector: int
    broker: int

    def cpu(self) -> tuple[float, float, float]:
        return cpu_seconds(self.collector), cpu_seconds(self.broker), own_cpu()


async def phase(name: str, procs: Procs, run: Any, batch: int) -> tuple[Tally, dict[str, Any]]:
    load = os.getloadavg()[0]
    before = procs.cpu()
    started = time.perf_counter()
    tally = await run
    elapsed = time.perf_counter() - started
    after = procs.cpu()
    collector, broker, client = (round(a - b, 2) for a, b in zip(after, before, strict=True))
    report: dict[str, Any] = {
        "batch_events": batch,
        "seconds": round(elapsed, 2),
        "requests": tally.requests,
        "answers": {str(k): v for k, v in sorted(tally.statuses.items())},
        "events_acknowledged": tally.events,
        "events_per_s": round(tally.events / elapsed),
        "requests_per_s": round(tally.requests / elapsed, 1),
        "cpu_seconds": {"collector": collector, "broker": broker, "client": client},
        "collector_cpu_share": round(collector / elapsed, 2),
        "collector_cpu_us_per_event": round(collector / max(tally.events, 1) * 1e6, 2),
        "collector_cpu_us_per_request": round(collector / max(tally.requests, 1) * 1e6),
        "load_average_1m": [round(load, 2), round(os.getloadavg()[0], 2)],
    }
    print(
        f"{name}: {report['events_per_s']} events/s, answers {report['answers']}", file=sys.stderr
    )
    return tally, report


def events_on_broker(bootstrap: str, topic: str, expected: int) -> tuple[int, int]:
    """(events, distinct event ids) in every message on ``topic``, read from offset 0."""
    from confluent_kafka import Consumer, TopicPartition

    consumer = Consumer(
        {
            "bootstrap.servers": bootstrap,
            "group.id": "bench-collector-check",
            "enable.auto.commit": False,
            "log.connection.close": False,
        }
    )
    events = 0
    ids: set[str] = set()
    try:
        partitions = consumer.list_topics(topic, timeout=10).topics[topic].partitions
        consumer.assign([TopicPartition(topic, p, 0) for p in partitions])
        idle_since = time.monotonic()
        while time.monotonic() - idle_since < (1 if events >= expected else 10):
            batch = consumer.consume(10_000, 0.5)
            if batch:
                idle_since = time.monotonic()
            for msg in batch:
                if msg.error() is not None:
                    continue
                value = orjson.loads(msg.value())
                for e in value if isinstance(value, list) else [value]:
                    events += 1
                    ids.add(e["event_id"])
        return events, len(ids)
    finally:
        consumer.close()


async def measure(args: argparse.Namespace, port: int, key: str, procs: Procs) -> dict[str, Any]:
    run = uuid.uuid4().hex[:6]
    timestamp = datetime.now(UTC).isoformat(timespec="milliseconds")
    host = "127.0.0.1"
    big = requests(host, port, key, templates(100, 64, run, timestamp))
    small = requests(host, port, key, templates(20, 256, run + "s", timestamp))
    numbers = Numbers()

    conns = [await Connection.open(host, port) for _ in range(args.connections)]
    warm = await saturate(conns, big, 100, args.warmup, numbers)  # producer, caches
    tally, saturated = await phase(
        "saturated", procs, saturate(conns, big, 100, args.seconds, numbers), 100
    )
    saturated["connections"] = args.connections
    saturated["latency_ms"] = percentiles(tally.latencies)
    for c in conns:
        c.close()

    conns = [await Connection.open(host, port) for _ in range(args.paced_connections)]
    warm_paced = await paced(conns, small, 20, args.rate, args.warmup, numbers)
    ptally, paced_report = await phase(
        "paced",
        procs,
        paced(conns, small, 20, args.rate, args.seconds, numbers),
        20,
    )
    for c in conns:
        c.close()
    paced_report["rate_requests_per_s"] = args.rate
    paced_report["connections"] = args.paced_connections
    paced_report["latency_ms"] = percentiles(ptally.latencies)
    paced_report["latency_ms_from_send"] = percentiles(ptally.service)
    acknowledged = sum(t.events for t in (warm, tally, warm_paced, ptally))
    return {"saturated": saturated, "paced": paced_report, "acknowledged": acknowledged}


def main() -> None:
    ap = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    ap.add_argument("--seconds", type=float, default=15.0, help="length of each measurement")
    ap.add_argument("--warmup", type=float, default=2.0, help="before each measurement")
    ap.add_argument("--connections", type=int, default=8, help="of the saturated run")
    ap.add_argument("--rate", type=float, default=1000.0, help="requests/s of the paced run")
    ap.add_argument("--paced-connections", type=int, default=64)
    ap.add_argument(
        "--nice",
        type=int,
        default=None,
        help="run the collector, the broker and the client at this nice value (needs root"
        " for a negative one): on a shared machine, an approximation of cores of their own",
    )
    ap.add_argument(
        "--out",
        type=Path,
        default=ROOT / "bench" / "results" / f"{datetime.now(UTC):%Y-%m-%d}-collector.json",
    )
    args = ap.parse_args()
    import uvloop

    load_before = os.getloadavg()
    key = f"wk-bench-{uuid.uuid4().hex}"
    with tempfile.TemporaryDirectory() as d, EmbeddedBroker(log=Path(d) / "broker.log") as broker:
        sources = Path(d) / "sources.json"
        sources.write_bytes(orjson.dumps([{"name": "bench", "write_key": key, "platform": "web"}]))
        port = free_port()
        env = {
            **os.environ,
            "TRACKFLOW_BROKER": broker.url,
            "TRACKFLOW_TOPIC_PREFIX": PREFIX,
            "TRACKFLOW_PARTITIONS": str(PARTITIONS),
            "TRACKFLOW_LOG_LEVEL": "warning",
        }
        log = open(Path(d) / "collector.log", "wb")  # noqa: SIM115
        collector = subprocess.Popen(
            [str(BIN), "collect", "--port", str(port), "--sources", str(sources)],
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        try:
            wait_ready(port)
            assert broker.proc is not None
            procs = Procs(collector.pid, broker.proc.pid)
            if args.nice is not None:
                for pid in (collector.pid, broker.proc.pid, os.getpid()):
                    renice(pid, args.nice)
            result = uvloop.run(measure(args, port, key, procs))
            accepted = accepted_events(port)
        finally:
            collector.terminate()
            code = collector.wait(60)
            log.close()
        if code != 0:
            raise RuntimeError(
                f"the collector exited {code}: {(Path(d) / 'collector.log').read_text()}"
            )
        on_broker, distinct = events_on_broker(broker.bootstrap, f"{PREFIX}events.raw", accepted)
    if not on_broker == distinct == accepted == result["acknowledged"]:
        raise RuntimeError(
            f"{on_broker} events ({distinct} ids) on the broker, {accepted} acknowledged by"
            f" the collector, {result['acknowledged']} answered 200"
        )
    saturated, paced_report = result["saturated"], result["paced"]
    report = {
        "bench": "collector",
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
        "command": "python bench/collector.py"
        + (" " + " ".join(sys.argv[1:]) if sys.argv[1:] else ""),
        "saturated": saturated,
        "paced": paced_report,
        "targets": {
            "events_per_s": TARGET_EVENTS_PER_S,
            "paced_p99_ms": TARGET_P99_MS,
            "events_per_s_met": saturated["events_per_s"] >= TARGET_EVENTS_PER_S,
            "paced_p99_met": paced_report["latency_ms"]["p99"] < TARGET_P99_MS
            and set(paced_report["answers"]) == {"200"},
        },
        "broker_check": {
            "events_answered_200_total": result["acknowledged"],
            "events_accepted_metric": accepted,
            "events_on_broker": on_broker,
            "distinct_event_ids": distinct,
            "partitions": PARTITIONS,
        },
        "machine": {
            "nice": args.nice,
            "cpus": os.cpu_count(),
            "python": platform.python_version(),
            "load_average_before": [round(x, 2) for x in load_before],
            "load_average_after": [round(x, 2) for x in os.getloadavg()],
        },
    }
    emit(report, args.out)


def renice(pid: int, nice: int) -> None:
    """Every thread of ``pid`` (Linux's nice value is per thread)."""
    for task in Path(f"/proc/{pid}/task").iterdir():
        os.setpriority(os.PRIO_PROCESS, int(task.name), nice)


def wait_ready(port: int, timeout: float = 60.0) -> None:
    import urllib.request

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/ready", timeout=2) as r:
                if r.status == 200:
                    return
        except OSError:
            pass
        time.sleep(0.2)
    raise RuntimeError("the collector did not get ready")


def accepted_events(port: int) -> int:
    """The collector's own count of acknowledged events (every phase, warm-ups included)."""
    from pipeline.runtime.telemetry import scrape

    return int(scrape(port)['trackflow_collector_events_accepted_total{source="bench"}'])


if __name__ == "__main__":
    main()
