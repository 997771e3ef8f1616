"""Throughput, scale-out, memory and latency of the worker's chain, in one run, on one broker.

The chain is every stage the worker runs (today validate -> stitch -> sink, with the
identity writer, aggregate and combine beside it); ``stages`` in the output names them.

Prints (and with --out writes) JSON. Every throughput figure is events/s measured from the
first event a process sees to the moment the last one is done (stored in the lake for
trackflow), so start-up and group joins are excluded. Compare figures of the same run
only: this machine is shared and noisy.

Runs (``--only`` picks a subset, comma-separated; default all, in this order):

- ``ingest``: validate + sink only, 20 events per message (``ingest_only_batched_20``);
- ``chain20``: a no-op Faust agent and the whole chain on the same 20-event messages
  (``noop_faust_batched_input``, ``chain_batched_20``, ``ratio_chain_vs_noop_batched_20``);
- ``chain100``: the same with 100 events per message, the largest batch a mobile SDK sends
  (``noop_faust_batched_100_input``, ``chain_batched_100``,
  ``ratio_chain_vs_noop_batched_100``);
- ``single``: the same with one event per message (``noop_faust_single_input``,
  ``chain_single``, ``ratio_single_vs_noop``);
- ``scale``: one worker, then two workers of one deployment, started and assigned before
  the input is produced; total events/s and worker CPU seconds per event (``scale_out``);
- ``latency``: a paced producer at half the ``chain_batched_20`` rate into a warmed-up
  worker; seconds from send to visible in the lake (``latency``);
- ``memory``: worker peak RSS over ``--memory-events`` events (``memory``; 0 skips);
- ``breakdown``: microseconds per event of each piece of the hot path, in this process;
- ``writer``: links/s of the single identity writer.

Examples::

    python bench/run.py --out bench/results/latest.json
    python bench/run.py --only chain20,latency --events 40000 --latency-seconds 10
    python bench/run.py --only memory --memory-events 200000
"""

from __future__ import annotations

import argparse
import os
import platform
import re
import resource
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.report import emit, proc_status_mb  # noqa: E402
from pipeline.contract.sql import path_list  # noqa: E402
from pipeline.runtime.kafka_admin import ensure_topic  # noqa: E402
from pipeline.runtime.telemetry import scrape  # noqa: E402
from pipeline.tools.broker import EmbeddedBroker, free_port  # noqa: E402
from pipeline.tools.produce import RawProducer  # noqa: E402

BIN = Path(sys.executable).parent / "trackflow"
PARTITIONS = 4
DEVICES = 997
RUNS = (
    "ingest",
    "chain20",
    "chain100",
    "single",
    "scale",
    "latency",
    "memory",
    "breakdown",
    "writer",
)
STORED = "trackflow_events_stored_total"
RECEIVED = "trackflow_events_received_total"


def make_event(
    i: int, event_time: int, event_id: str | None = None, device: int | None = None
) -> dict[str, Any]:
    """Event number ``i`` of a realistic mix: mostly page views/exposures, some cart and
    payment events; device ``i % 997`` unless given."""
    kind = i % 10
    d = i % DEVICES if device is None else device
    e: dict[str, Any] = {
        "event_id": event_id or f"b{i}",
        "event_time": event_time,
        "anonymous_id": f"dev-{d}",
        "identities": {"openid": f"o-{d}"},
        "platform": "miniprogram",
        "app_version": "3.2.1",
    }
    if d % 3 == 0 and kind >= 5:  # a third of devices log in; their later events carry it
        e["user_id"] = f"u{d // 3}"
    if kind < 5:
        e.update(
            event_name="page_view",
            properties={"page": "product_detail", "product_id": f"p{i % 500}"},
        )
    elif kind < 8:
        e.update(
            event_name="exposure",
            properties={"page": "home", "element": "banner", "position": i % 8},
        )
    elif kind == 8:
        e.update(
            event_name="add_to_cart",
            properties={"product_id": f"p{i % 500}", "quantity": 1, "price": 59.9},
        )
    else:
        e.update(
            event_name="pay_success",
            properties={"order_id": f"o{i}", "amount": 119.8, "pay_method": "wechat_pay"},
        )
    return e


def whole_batches(n: int, per_message: int) -> int:
    """``n`` rounded down so every device gets full messages (batches are per device, so
    otherwise each device's last message is short), once ``n`` allows one per device."""
    unit = DEVICES * per_message
    return n - n % unit if n >= unit else n


def make_events(n: int, now_ms: int, start: int = 0) -> list[dict[str, Any]]:
    """Events ``start`` .. ``start + n - 1`` (ids ``b<i>``), times within the last minute."""
    return [make_event(i, now_ms - 60_000 + (i % 50_000)) for i in range(start, start + n)]


def encode_messages(events: list[dict[str, Any]], per_message: int) -> list[tuple[bytes, bytes]]:
    """(key, value) messages. Batches are per device, as SDKs send them: group by device,
    then chunk."""
    by_device: dict[str, list[dict[str, Any]]] = {}
    for e in events:
        by_device.setdefault(e["anonymous_id"], []).append(e)
    out = []
    for device, evs in by_device.items():
        for k in range(0, len(evs), per_message):
            chunk = evs[k : k + per_message]
            out.append((device.encode(), orjson.dumps(chunk if per_message > 1 else chunk[0])))
    return out


def send_messages(bootstrap: str, topic: str, messages: list[tuple[bytes, bytes]]) -> int:
    producer = RawProducer(bootstrap, topic)
    for key, value in messages:
        producer.send(key, value)
    if producer.flush(120):
        raise RuntimeError("produce failed")
    return len(messages)


def produce(bootstrap: str, topic: str, events: list[dict[str, Any]], per_message: int) -> int:
    ensure_topic(bootstrap, topic, PARTITIONS)
    return send_messages(bootstrap, topic, encode_messages(events, per_message))


def run_noop(broker: EmbeddedBroker, topic: str, messages: int, tmp: Path) -> dict[str, Any]:
    result = tmp / f"noop-{topic}.json"
    proc = subprocess.run(
        [
            sys.executable,
            str(ROOT / "bench" / "noop_worker.py"),
            broker.url,
            topic,
            str(messages),
            str(result),
        ],
        timeout=900,
        capture_output=True,
    )
    if not result.exists():
        raise RuntimeError(f"noop worker failed: {proc.stderr.decode()[-2000:]}")
    data = orjson.loads(result.read_bytes())
    return {
        "messages": messages,
        "seconds": round(data["seconds"], 3),
        "messages_per_s": round(messages / data["seconds"]),
    }


def worker_env(
    broker: EmbeddedBroker, prefix: str, tmp: Path, port: int, stages: str
) -> dict[str, str]:
    """One deployment per prefix: its app id, topics and data directory."""
    return {
        **os.environ,
        "TRACKFLOW_BROKER": broker.url,
        "TRACKFLOW_DATA_DIR": str(tmp / prefix),
        "TRACKFLOW_APP_ID": f"bench-{prefix}",
        "TRACKFLOW_TOPIC_PREFIX": prefix,
        "TRACKFLOW_PARTITIONS": str(PARTITIONS),
        "TRACKFLOW_REBALANCE_TIMEOUT": "2",
        "TRACKFLOW_WEB_PORT": str(port),
        "TRACKFLOW_LOG_LEVEL": "warning",
        "TRACKFLOW_STAGES": stages,
        "TRACKFLOW_DEV": "1",  # a PII key generated for this throwaway data directory
    }


class BenchWorker:
    """A ``trackflow worker`` process of deployment ``prefix``, on its own web port."""

    def __init__(
        self, broker: EmbeddedBroker, prefix: str, tmp: Path, stages: str = "full", name: str = ""
    ) -> None:
        self.port = free_port()
        self.prefix = prefix
        self.log_path = tmp / f"{prefix}worker{name}.log"
        self._log = open(self.log_path, "wb")  # noqa: SIM115
        self.proc = subprocess.Popen(
            [str(BIN), "worker"],
            env=worker_env(broker, prefix, tmp, self.port, stages),
            stdout=self._log,
            stderr=subprocess.STDOUT,
        )

    def metrics(self) -> dict[str, float]:
        if self.proc.poll() is not None:
            raise RuntimeError(
                f"trackflow worker exited {self.proc.returncode}; see {self.log_path}"
            )
        return scrape(self.port)

    def cpu(self) -> float | None:
        return _proc_cpu(self.proc.pid)

    def rss_peak_mb(self) -> float | None:
        return _proc_rss_mb(self.proc.pid)

    def rss_mb(self) -> float | None:
        return proc_status_mb(self.proc.pid, "VmRSS:")

    def partitions(self, m: dict[str, float]) -> dict[str, list[int]]:
        """Partitions per topic this worker has reported lag for: those it owned (the lag
        gauge keeps a partition's label after a rebalance takes it away)."""
        out: dict[str, set[int]] = {}
        for key in m:
            if key.startswith("trackflow_consumer_lag_messages{"):
                topic = re.search(r'topic="([^"]*)"', key)
                part = re.search(r'partition="(\d+)"', key)
                if topic and part and "__assignor" not in topic.group(1):
                    name = topic.group(1).removeprefix(self.prefix)
                    name = name.removeprefix(f"bench-{self.prefix}-")  # changelogs
                    out.setdefault(name, set()).add(int(part.group(1)))
        return {t: sorted(p) for t, p in sorted(out.items())}

    def assigned_input(self, m: dict[str, float]) -> bool:
        return bool(self.partitions(m).get("events.raw"))

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)
        self._log.close()


def wait_until(
    what: str, predicate: Callable[[], bool], timeout: float, every: float = 0.1
) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise RuntimeError(f"timed out after {timeout}s waiting for {what}")
        time.sleep(every)


def settled_cpu(workers: list[BenchWorker], timeout: float = 30.0) -> float:
    """Total CPU seconds of ``workers`` once they are idle again (less than 3% of a core
    each over a second), so work of the later stages (aggregate, combine, identity writer)
    after the last event was stored is counted."""
    deadline = time.monotonic() + timeout
    before = sum(w.cpu() or 0.0 for w in workers)
    while True:
        time.sleep(1.0)
        now = sum(w.cpu() or 0.0 for w in workers)
        if now - before < 0.03 * len(workers) or time.monotonic() > deadline:
            return now
        before = now


def run_trackflow(
    broker: EmbeddedBroker, prefix: str, events: int, tmp: Path, stages: str = "full"
) -> dict[str, Any]:
    """One worker on input produced beforehand; timed from its first event to ``events``
    stored."""
    worker = BenchWorker(broker, prefix, tmp, stages)
    first = done = None
    deadline = time.monotonic() + max(900, events / 500)
    m: dict[str, float] = {}
    try:
        while time.monotonic() < deadline:
            m = worker.metrics()
            now = time.perf_counter()
            if first is None and m.get(RECEIVED, 0) > 0:
                first = now
            if m.get(STORED, 0) >= events:
                done = now
                break
            time.sleep(0.05)
        links = m.get("trackflow_identity_links_applied_total", 0)
        cpu = worker.cpu()
        rss = worker.rss_peak_mb()
    finally:
        worker.stop()
    if first is None or done is None:
        raise RuntimeError(f"trackflow worker did not finish; see {worker.log_path}")
    seconds = done - first
    return {
        "events": events,
        "seconds": round(seconds, 3),
        "events_per_s": round(events / seconds),
        "worker_cpu_seconds": cpu,
        "worker_max_rss_mb": rss,
        "identity_links_applied": links,
    }


def _proc_cpu(pid: int) -> float | None:
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        return round((int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK"), 2)
    except OSError:
        return None


def _proc_rss_mb(pid: int) -> float | None:
    """Peak resident set size (VmHWM) of a process, in MiB."""
    return proc_status_mb(pid, "VmHWM:")


# -- the runs -------------------------------------------------------------------------------


@dataclass
class Bench:
    broker: EmbeddedBroker
    tmp: Path
    args: argparse.Namespace
    results: dict[str, Any] = field(default_factory=dict)

    @staticmethod
    def now_ms() -> int:
        return int(time.time() * 1000)


def run_ingest(b: Bench) -> None:
    n = whole_batches(b.args.events, 20)
    events = make_events(n, b.now_ms())
    messages = produce(b.broker.bootstrap, "bi.events.raw", events, 20)
    del events
    b.results["ingest_only_batched_20"] = {
        **run_trackflow(b.broker, "bi.", n, b.tmp, stages="ingest"),
        "mean_events_per_message": round(n / messages, 1),
    }
    _ratio(b.results, "ratio_chain_vs_ingest_only", "chain_batched_20", "ingest_only_batched_20")


def batched_pair(b: Bench, per_message: int, prefix: str, noop_key: str, chain_key: str) -> None:
    """The no-op agent and the chain on the same topic (each its own consumer group)."""
    n = whole_batches(b.args.events, per_message)
    events = make_events(n, b.now_ms())
    messages = produce(b.broker.bootstrap, f"{prefix}events.raw", events, per_message)
    del events
    noop = run_noop(b.broker, f"{prefix}events.raw", messages, b.tmp)
    noop["events_per_s"] = round(n / noop["seconds"])
    # Per device, so below 997 * per_message events every message is short.
    shape = {"events_per_message": per_message, "mean_events_per_message": round(n / messages, 1)}
    b.results[noop_key] = {**noop, **shape}
    b.results[chain_key] = {**run_trackflow(b.broker, prefix, n, b.tmp), **shape}


def run_chain20(b: Bench) -> None:
    batched_pair(b, 20, "bb.", "noop_faust_batched_input", "chain_batched_20")
    _ratio(
        b.results, "ratio_chain_vs_noop_batched_20", "chain_batched_20", "noop_faust_batched_input"
    )
    _ratio(b.results, "ratio_chain_vs_ingest_only", "chain_batched_20", "ingest_only_batched_20")
    _ratio(b.results, "ratio_batched_vs_single", "chain_batched_20", "chain_single")


def run_chain100(b: Bench) -> None:
    batched_pair(b, 100, "bc.", "noop_faust_batched_100_input", "chain_batched_100")
    _ratio(
        b.results,
        "ratio_chain_vs_noop_batched_100",
        "chain_batched_100",
        "noop_faust_batched_100_input",
    )


def run_single(b: Bench) -> None:
    n = b.args.single_events
    events = make_events(n, b.now_ms())
    messages = produce(b.broker.bootstrap, "bs.events.raw", events, 1)
    del events
    noop = run_noop(b.broker, "bs.events.raw", messages, b.tmp)
    noop["events_per_s"] = noop["messages_per_s"]  # one event per message
    b.results["noop_faust_single_input"] = noop
    b.results["chain_single"] = run_trackflow(b.broker, "bs.", n, b.tmp)
    _ratio(b.results, "ratio_single_vs_noop", "chain_single", "noop_faust_single_input")
    _ratio(b.results, "ratio_batched_vs_single", "chain_batched_20", "chain_single")


def _ratio(results: dict[str, Any], key: str, num: str, den: str) -> None:
    if num in results and den in results:
        results[key] = round(results[num]["events_per_s"] / results[den]["events_per_s"], 2)


def scale_deployment(b: Bench, prefix: str, count: int) -> dict[str, Any]:
    """``count`` workers of one deployment; the 20-event input is produced once every worker
    holds events.raw partitions, so start-up and group join are outside the timing."""
    n = whole_batches(b.args.scale_events, 20)
    topic = f"{prefix}events.raw"
    ensure_topic(b.broker.bootstrap, topic, PARTITIONS)
    workers = [BenchWorker(b.broker, prefix, b.tmp, name=f"-{i}") for i in range(count)]
    try:
        wait_until(
            f"{count} worker(s) of {prefix} holding {topic} partitions",
            lambda: all(w.assigned_input(w.metrics()) for w in workers),
            timeout=180,
            every=0.5,
        )
        time.sleep(2.0)  # the group is stable: the last joiner got its share
        startup_cpu = [w.cpu() or 0.0 for w in workers]
        # Events now carry the time they are produced at (nothing late).
        messages = encode_messages(make_events(n, b.now_ms()), 20)
        send_messages(b.broker.bootstrap, topic, messages)
        first = done = None
        deadline = time.monotonic() + max(900, n / 500)
        ms: list[dict[str, float]] = []
        while time.monotonic() < deadline:
            ms = [w.metrics() for w in workers]
            now = time.perf_counter()
            if first is None and sum(m.get(RECEIVED, 0) for m in ms) > 0:
                first = now
            if sum(m.get(STORED, 0) for m in ms) >= n:
                done = now
                break
            time.sleep(0.05)
        if first is None or done is None:
            raise RuntimeError(f"{prefix} workers did not finish; see {b.tmp}/{prefix}worker-*.log")
        cpu_at_stored = [w.cpu() or 0.0 for w in workers]
        cpu_settled = settled_cpu(workers)
        ms = [w.metrics() for w in workers]
        per_worker = [
            {
                "events_received": m.get(RECEIVED, 0),
                "events_stored": m.get(STORED, 0),
                "startup_cpu_seconds": round(s, 2),
                "cpu_seconds_for_input": round((w.cpu() or 0.0) - s, 2),
                "max_rss_mb": w.rss_peak_mb(),
                "partitions_owned": {t: ",".join(map(str, p)) for t, p in w.partitions(m).items()},
            }
            for w, m, s in zip(workers, ms, startup_cpu, strict=True)
        ]
    finally:
        for w in workers:
            w.stop()
    seconds = done - first
    cpu = cpu_settled - sum(startup_cpu)
    return {
        "workers": count,
        "events": n,
        "seconds": round(seconds, 3),
        "events_per_s": round(n / seconds),
        "events_stored": sum(m.get(STORED, 0) for m in ms),
        "worker_cpu_seconds": round(cpu, 2),
        "worker_cpu_seconds_at_stored": round(sum(cpu_at_stored) - sum(startup_cpu), 2),
        "cpu_us_per_event": round(cpu / n * 1e6, 1),
        "per_worker": per_worker,
    }


def run_scale(b: Bench) -> None:
    one = scale_deployment(b, "s1.", 1)
    two = scale_deployment(b, "s2.", 2)
    b.results["scale_out"] = {
        "method": (
            "workers started and assigned before the 20-event input is produced; rate from "
            "the first event any worker receives to the sum of trackflow_events_stored_total "
            "over the workers' /metrics reaching the input; CPU = utime+stime of the workers "
            "after they are idle again minus their CPU before the input (start-up, join)"
        ),
        "one_worker": one,
        "two_workers": two,
        "ratio_events_per_s_two_vs_one": round(two["events_per_s"] / one["events_per_s"], 2),
        "cpu_per_event_ratio_two_vs_one": round(
            two["cpu_us_per_event"] / one["cpu_us_per_event"], 2
        ),
        "cpu_per_event_ratio_two_vs_one_at_stored": round(
            (two["worker_cpu_seconds_at_stored"] / two["events"])
            / (one["worker_cpu_seconds_at_stored"] / one["events"]),
            2,
        ),
        "cpu_per_event_ratio_target": 1.15,
    }


def run_memory(b: Bench) -> None:
    """Peak RSS (VmHWM) of one worker over ``--memory-events`` events through the chain."""
    n = b.args.memory_events
    if n <= 0:
        b.results["memory"] = {"skipped": "--memory-events 0"}
        return
    prefix = "bm."
    topic = f"{prefix}events.raw"
    ensure_topic(b.broker.bootstrap, topic, PARTITIONS)
    producer = RawProducer(b.broker.bootstrap, topic)
    chunk = DEVICES * 20 * 3  # every device gets three full 20-event messages per chunk
    messages = 0
    t0 = time.monotonic()
    for start in range(0, n, chunk):
        for key, value in encode_messages(
            make_events(min(chunk, n - start), b.now_ms(), start), 20
        ):
            producer.send(key, value)
            messages += 1
    if producer.flush(300):
        raise RuntimeError("produce failed")
    produce_s = time.monotonic() - t0
    worker = BenchWorker(b.broker, prefix, b.tmp)
    samples: list[dict[str, Any]] = []
    first = done = None
    m: dict[str, float] = {}
    last_sample = 0.0
    deadline = time.monotonic() + max(900, n / 300)
    try:
        while time.monotonic() < deadline:
            m = worker.metrics()
            now = time.perf_counter()
            if first is None and m.get(RECEIVED, 0) > 0:
                first = now
            if first is not None and now - last_sample >= 5.0:
                last_sample = now
                samples.append(
                    {
                        "t_s": round(now - first, 1),
                        # None: /metrics did not answer in time (a loaded machine)
                        "stored": int(m[STORED]) if STORED in m else None,
                        "rss_mb": worker.rss_mb(),
                        "dedup_ids": int(m["trackflow_dedup_ids"])
                        if "trackflow_dedup_ids" in m
                        else None,
                    }
                )
            if m.get(STORED, 0) >= n:
                done = now
                break
            time.sleep(0.2)
        if first is None or done is None:
            raise RuntimeError(f"memory run did not finish; see {worker.log_path}")
        rss_at_stored = worker.rss_mb()
        cpu = settled_cpu([worker])
        m = worker.metrics()
        peak = worker.rss_peak_mb()
        rss_end = worker.rss_mb()
        broker_rss = proc_status_mb(b.broker.proc.pid, "VmRSS:") if b.broker.proc else None
    finally:
        worker.stop()
    seconds = done - first
    b.results["memory"] = {
        "events": n,
        "messages": messages,
        "events_per_message": 20,
        "produce_seconds": round(produce_s, 1),
        "seconds": round(seconds, 3),
        "events_per_s": round(n / seconds),
        "worker_cpu_seconds": round(cpu, 2),
        "worker_peak_rss_mb": peak,
        "worker_peak_rss_gib": round(peak / 1024, 3) if peak is not None else None,
        "target_peak_rss_gib": 1.0,
        "worker_rss_mb_at_stored": rss_at_stored,
        "worker_rss_mb_idle_after": rss_end,
        "dedup_ids_at_end": int(m.get("trackflow_dedup_ids", 0)),
        "identities_at_end": int(m.get("trackflow_identity_identifiers", 0))
        if "trackflow_identity_identifiers" in m
        else None,
        "broker_rss_mb_at_end": broker_rss,
        "rss_samples": samples,
    }


def _histogram(m: dict[str, float], name: str) -> dict[str, dict[float, float]]:
    """{stage: {le: cumulative count}} of a Prometheus histogram with a ``stage`` label."""
    out: dict[str, dict[float, float]] = {}
    for key, value in m.items():
        if key.startswith(f"{name}_bucket{{"):
            stage = re.search(r'stage="([^"]*)"', key)
            le = re.search(r'le="([^"]*)"', key)
            if stage and le:
                out.setdefault(stage.group(1), {})[float(le.group(1))] = value
    return out


def _bucket_quantiles(
    before: dict[str, dict[float, float]], after: dict[str, dict[float, float]]
) -> dict[str, dict[str, Any]]:
    """Per stage: observations between two scrapes and the bucket bound of p50/p99."""
    out: dict[str, dict[str, Any]] = {}
    for stage, buckets in sorted(after.items()):
        delta = {le: c - before.get(stage, {}).get(le, 0.0) for le, c in buckets.items()}
        total = delta.get(float("inf"), 0.0)
        if total <= 0:
            continue
        row: dict[str, Any] = {"observations": int(total)}
        for q in (0.5, 0.99):
            bound = next(le for le in sorted(delta) if delta[le] >= q * total)
            row[f"p{round(q * 100)}_at_most_s"] = None if bound == float("inf") else bound
        out[stage] = row
    return out


class PacedProducer(threading.Thread):
    """Sends 20-event messages at a steady rate; every event id embeds its send time
    (``lat-<message>-<index>-<send time in µs>``) and its event_time is the send time."""

    def __init__(self, bootstrap: str, topic: str, rate: float, seconds: float) -> None:
        super().__init__(daemon=True)
        self.producer = RawProducer(bootstrap, topic)
        self.interval = 20 / rate
        self.messages = max(1, int(seconds * rate / 20))
        self.sent = 0
        self.max_behind = 0.0
        self.started = self.finished = 0.0
        self.error: BaseException | None = None

    def run(self) -> None:
        try:
            start = time.time() + 0.05
            self.started = start
            for msg in range(self.messages):
                target = start + msg * self.interval
                delay = target - time.time()
                if delay > 0:
                    time.sleep(delay)
                sent = time.time()
                self.max_behind = max(self.max_behind, sent - target)
                us = int(sent * 1e6)
                device = msg % DEVICES
                batch = [
                    make_event(msg * 20 + k, int(sent * 1000), f"lat-{msg}-{k}-{us}", device)
                    for k in range(20)
                ]
                self.producer.send(f"dev-{device}".encode(), orjson.dumps(batch))
                self.sent += 1
            self.finished = time.time()
            if self.producer.flush(60):
                raise RuntimeError("latency produce failed")
        except BaseException as exc:  # reported by the main thread
            self.error = exc


def run_latency(b: Bench) -> None:
    """Produce-to-queryable latency at half the maximum rate of this run."""
    if b.args.latency_rate:
        rate, source = float(b.args.latency_rate), "--latency-rate"
    else:
        full = b.results["chain_batched_20"]["events_per_s"]
        rate, source = full / 2, f"half of chain_batched_20 ({full} events/s)"
    prefix = "bl."
    topic = f"{prefix}events.raw"
    ensure_topic(b.broker.bootstrap, topic, PARTITIONS)
    worker = BenchWorker(b.broker, prefix, b.tmp)
    lake_events = b.tmp / prefix / "lake" / "events"
    try:
        wait_until(
            "the latency worker holding events.raw partitions",
            lambda: worker.assigned_input(worker.metrics()),
            timeout=180,
            every=0.5,
        )
        # Warm-up: every stage has run (and flushed) once before the measurement.
        warm = [make_event(i, b.now_ms(), f"w{i}") for i in range(2000)]
        send_messages(b.broker.bootstrap, topic, encode_messages(warm, 20))
        wait_until(
            "warm-up events stored", lambda: worker.metrics().get(STORED, 0) >= 2000, timeout=180
        )
        time.sleep(3.0)
        before = worker.metrics()
        cpu_before = worker.cpu() or 0.0
        result = measure_latency(b, worker, topic, lake_events, rate, b.args.latency_seconds)
        after = worker.metrics()
        cpu = (worker.cpu() or 0.0) - cpu_before
    finally:
        worker.stop()
    from pipeline.lake.views import connect

    con = connect(b.tmp / prefix)
    try:
        row = con.execute(
            "SELECT count(*), count(DISTINCT event_id) FROM events WHERE event_id LIKE 'lat-%'"
        ).fetchone()
    finally:
        con.close()
    from pipeline.settings import Settings

    flush = os.environ.get(
        "TRACKFLOW_SINK_FLUSH_SECONDS", str(Settings.model_fields["sink_flush_seconds"].default)
    )
    take_within = os.environ.get(
        "TRACKFLOW_TAKE_WITHIN", str(Settings.model_fields["take_within"].default)
    )
    name = "trackflow_processing_latency_seconds"
    b.results["latency"] = {
        "rate_source": source,
        **result,
        "events_in_events_view_after": int(row[0]) if row else None,
        "distinct_event_ids_in_view_after": int(row[1]) if row else None,
        "worker_cpu_seconds": round(cpu, 2),
        "worker_sink_flush_seconds": float(flush),
        "worker_take_within_seconds": float(take_within),
        "worker_stage_latency": _bucket_quantiles(
            _histogram(before, name), _histogram(after, name)
        ),
        "method": (
            "a producer thread sends 20-event messages at a steady rate into a running, "
            "warmed-up worker; every ~100 ms the bench lists the lake's events Parquet files "
            "(the files the events view reads) and reads the event ids of new files with "
            "DuckDB; latency = time of the first listing that shows an event - its send time "
            "(embedded in the event id); split at received_at, the time validate took the "
            "event's message. worker_stage_latency: the worker's own histogram "
            "(seconds from the Kafka timestamp of a stage's input message), bucket bounds"
        ),
    }


def measure_latency(
    b: Bench, worker: BenchWorker, topic: str, lake_events: Path, rate: float, seconds: float
) -> dict[str, Any]:
    import duckdb

    producer = PacedProducer(b.broker.bootstrap, topic, rate, seconds)
    expected = producer.messages * 20
    seen_files: set[Path] = set()
    visible: dict[str, tuple[float, int]] = {}  # event id: (listed at, received_at ms)
    poll_s: list[float] = []
    con = duckdb.connect()
    producer.start()
    deadline: float | None = None
    try:
        while True:
            listed = time.time()
            files = [p for p in lake_events.rglob("*.parquet") if p not in seen_files]
            if files:
                rows = con.execute(
                    f"SELECT event_id, epoch_ms(received_at) FROM read_parquet({path_list(files)}, "
                    "union_by_name = true) WHERE event_id LIKE 'lat-%'"
                ).fetchall()
                for eid, received in rows:
                    visible.setdefault(eid, (listed, received))
                seen_files.update(files)
            poll_s.append(time.time() - listed)
            if producer.error is not None:
                raise RuntimeError(f"latency producer failed: {producer.error!r}")
            if not producer.is_alive():
                if len(visible) >= expected:
                    break
                deadline = deadline or time.monotonic() + 120
                if time.monotonic() > deadline:
                    break
            worker.metrics()  # fails at once if the worker died
            time.sleep(max(0.0, listed + 0.1 - time.time()))
    finally:
        producer.join(60)
        con.close()
    sent_at = {eid: int(eid.rsplit("-", 1)[1]) / 1e6 for eid in visible}
    lat = sorted(t - sent_at[eid] for eid, (t, _) in visible.items())
    sent_events = producer.sent * 20
    send_seconds = producer.finished - producer.started

    def q(p: float, values: list[float] = lat) -> float | None:
        return round(values[min(len(values) - 1, int(p * len(values)))], 3) if values else None

    def spread(values: list[float]) -> dict[str, float | None]:
        values.sort()
        return {"p50_s": q(0.5, values), "p99_s": q(0.99, values), "max_s": q(1.0, values)}

    return {
        "events_per_message": 20,
        "target_events_per_s": round(rate),
        "send_seconds": round(send_seconds, 2),
        "events_sent": sent_events,
        "achieved_events_per_s": round(sent_events / send_seconds) if send_seconds else None,
        "producer_max_behind_schedule_s": round(producer.max_behind, 3),
        "events_visible": len(visible),
        "events_never_visible": sent_events - len(visible),
        "p50_s": q(0.50),
        "p99_s": q(0.99),
        "max_s": round(lat[-1], 3) if lat else None,
        "min_s": round(lat[0], 3) if lat else None,
        "mean_s": round(sum(lat) / len(lat), 3) if lat else None,
        "polls": len(poll_s),
        "poll_interval_target_s": 0.1,
        "poll_mean_s": round(sum(poll_s) / len(poll_s), 4) if poll_s else None,
        "poll_max_s": round(max(poll_s), 4) if poll_s else None,
        "lake_event_files_seen": len(seen_files),
        # received_at: the wall time (ms) validate took the event's message from events.raw.
        "send_to_received_at": spread([r / 1000 - sent_at[eid] for eid, (_, r) in visible.items()]),
        "received_at_to_visible": spread([t - r / 1000 for t, r in visible.values()]),
    }


def breakdown(n: int = 20_000) -> dict[str, float]:
    """Microseconds per event of each piece of the hot path, measured in this process."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    from pipeline.contract.pii import PiiHasher
    from pipeline.contract.plan import load_plan
    from pipeline.ingest.codecs import decode_message
    from pipeline.ingest.dedup import SeenIds
    from pipeline.ingest.ingestor import Ingestor, RawMessage
    from pipeline.ingest.validation import Validator
    from pipeline.lake.schema import EventBatches, EventsSplitter
    from pipeline.runtime.wire import decode_events, encode_events

    plan = load_plan()
    now = int(time.time() * 1000)
    events = make_events(n, now)
    msgs = [orjson.dumps(events[i : i + 20]) for i in range(0, n, 20)]
    out: dict[str, float] = {}

    def timed(name: str, fn: Any) -> Any:
        t = time.perf_counter()
        r = fn()
        out[name] = round((time.perf_counter() - t) / n * 1e6, 2)
        return r

    timed("json_decode_us", lambda: [decode_message(m, plan) for m in msgs])
    hasher = PiiHasher("k")
    validator = Validator(plan, hasher)
    timed("validate_us", lambda: [validator.validate(e, now) for e in events])
    ingestor = Ingestor(plan, validator, hasher, SeenIds(86_400_000), "events.raw")
    raw = [RawMessage(i, m, None) for i, m in enumerate(msgs)]
    result = timed("ingest_total_us (decode+validate+dedup)", lambda: ingestor.process(0, raw, now))
    batches = EventBatches(plan)
    # The validate stage works per take of up to 500 messages per partition: 10,000 events.
    tables = timed(
        "arrow_build_us",
        lambda: [batches.build(result.valid[i : i + 10_000]) for i in range(0, n, 10_000)],
    )
    wire = timed("arrow_ipc_encode_us", lambda: [v for t in tables for v in encode_events(t)])
    decoded = timed("arrow_ipc_decode_us", lambda: [decode_events(v) for v in wire])
    from pipeline.identity.graph import IdentityGraph
    from pipeline.identity.rules import load_identity_rules
    from pipeline.identity.stitching import Stitcher

    rules = load_identity_rules()
    stitcher = Stitcher(rules, IdentityGraph(rules), 3_600_000)
    first = timed(
        "stitch_us (first sight: every link new)", lambda: [stitcher.stitch(t) for t in decoded]
    )
    stitcher.graph.add([link for _, links in first for link in links])
    timed("stitch_us (known links)", lambda: [stitcher.stitch(t) for t in decoded])
    splitter = EventsSplitter(plan)
    parts = timed("split_us", lambda: list(splitter(pa.concat_tables(decoded))))
    with tempfile.TemporaryDirectory() as d:
        timed(
            "parquet_write_us",
            lambda: [
                pq.write_table(t, f"{d}/{i}.parquet", compression="zstd")
                for i, (_, t) in enumerate(parts)
            ],
        )
    return out


def identity_writer(persons: int = 50_000, batch: int = 500) -> dict[str, Any]:
    """Links/s the single identity writer applies (IdentityGraph.add), all links new.

    Each synthetic person has 1-3 devices, an openid and, for half, a member id; links come
    in stitch-sized batches, shuffled, so clusters are recomputed as links arrive out of
    order, as they do from many partitions.
    """
    import random

    from pipeline.identity.graph import IdentityGraph
    from pipeline.identity.rules import load_identity_rules

    rules = load_identity_rules()
    rng = random.Random(1)
    links: list[tuple[str, str, int]] = []
    for p in range(persons):
        t = 1_795_000_000_000 + p * 1000
        ids = [f"openid:o{p}"] + [f"anonymous_id:d{p}-{k}" for k in range(1 + p % 3)]
        if p % 2 == 0:
            ids.insert(0, f"user_id:u{p}")
        for k, other in enumerate(ids[1:]):
            links.append((ids[0], other, t + rng.randrange(600_000) + k))
    rng.shuffle(links)
    graph = IdentityGraph(rules)
    start = time.perf_counter()
    for i in range(0, len(links), batch):
        graph.add(links[i : i + batch])
    seconds = time.perf_counter() - start
    lookups = [f"anonymous_id:d{rng.randrange(persons)}-0" for _ in range(200_000)]
    t0 = time.perf_counter()
    for n in lookups:
        graph.lookup(n)
    lookup_s = time.perf_counter() - t0
    return {
        "links": len(links),
        "batch": batch,
        "seconds": round(seconds, 3),
        "links_per_s": round(len(links) / seconds),
        "persons": graph.person_count(),
        "lookup_ns": round(lookup_s / len(lookups) * 1e9),
    }


RUNNERS: dict[str, Callable[[Bench], None]] = {
    "ingest": run_ingest,
    "chain20": run_chain20,
    "chain100": run_chain100,
    "single": run_single,
    "scale": run_scale,
    "latency": run_latency,
    "memory": run_memory,
    "breakdown": lambda b: b.results.__setitem__("hot_path_us_per_event", breakdown()),
    "writer": lambda b: b.results.__setitem__("identity_writer", identity_writer()),
}


def parse_args() -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--events", type=int, default=200_000, help="events for the batched runs")
    ap.add_argument(
        "--single-events", type=int, default=30_000, help="events for single-event runs"
    )
    ap.add_argument(
        "--scale-events", type=int, help="events for the scale-out runs (default: --events)"
    )
    ap.add_argument(
        "--memory-events",
        type=int,
        default=1_000_000,
        help="events for the memory run (0 skips it)",
    )
    ap.add_argument(
        "--latency-seconds", type=float, default=30.0, help="how long the paced producer sends"
    )
    ap.add_argument(
        "--latency-rate",
        type=float,
        help="events/s of the latency run (default: half of chain_batched_20, measured first)",
    )
    ap.add_argument(
        "--only", help=f"comma-separated runs, of: {', '.join(RUNS)} (default: all of them)"
    )
    ap.add_argument("--out", type=Path)
    args = ap.parse_args()
    runs = [r.strip() for r in args.only.split(",") if r.strip()] if args.only else list(RUNS)
    unknown = [r for r in runs if r not in RUNS]
    if unknown:
        ap.error(f"unknown run(s) {', '.join(unknown)}; choose from {', '.join(RUNS)}")
    if "latency" in runs and not args.latency_rate and "chain20" not in runs:
        runs.append("chain20")  # the latency rate is half of what the chain reached
    if args.memory_events <= 0 and "memory" in runs:
        runs.remove("memory")
    args.runs = [r for r in RUNS if r in runs]
    if args.scale_events is None:
        args.scale_events = args.events
    return args


def main() -> None:
    args = parse_args()
    results: dict[str, Any] = {
        "machine": {"cpus": os.cpu_count(), "python": platform.python_version()},
        "partitions": PARTITIONS,
    }
    timing: dict[str, Any] = {}
    with tempfile.TemporaryDirectory() as d, EmbeddedBroker(log=Path(d) / "broker.log") as broker:
        bench = Bench(broker, Path(d), args, results)
        for name in args.runs:
            if name not in ("breakdown", "writer"):  # these two after the broker is gone
                timing[name] = _timed(bench, name)
    results["stages"] = [
        "validate",
        "stitch",
        "identity (writer)",
        "aggregate",
        "combine",
        "sink",
    ]
    for name in ("breakdown", "writer"):
        if name in args.runs:
            timing[name] = _timed(bench, name)
    results["bench_process_max_rss_mb"] = round(
        resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1
    )
    results["runs"] = timing
    results["args"] = {
        k: v for k, v in vars(args).items() if k not in ("out", "only") and v is not None
    }
    emit(results, args.out)


def _timed(bench: Bench, name: str) -> dict[str, Any]:
    """Runs one part; its wall time and the machine's load average around it (the
    machine is shared: a high load explains low figures)."""
    load = os.getloadavg()[0]
    t = time.monotonic()
    RUNNERS[name](bench)
    return {
        "wall_seconds": round(time.monotonic() - t, 1),
        "load_1m_before": round(load, 2),
        "load_1m_after": round(os.getloadavg()[0], 2),
    }


if __name__ == "__main__":
    main()
