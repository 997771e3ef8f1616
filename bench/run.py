"""Throughput of the worker's chain against a no-op Faust agent, in one run, on one broker.

The chain is every stage the worker runs (today validate -> stitch -> sink, with the
identity writer beside it); ``stages`` in the output names them.

Prints (and with --out writes) JSON. Every figure is events/s measured from the first
event a process sees to the moment the last one is done (stored in the lake for
trackflow), so start-up and group joins are excluded. Compare figures of the same run
only: this machine is shared and noisy.
"""

from __future__ import annotations

import argparse
import os
import platform
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import orjson

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from pipeline.runtime.kafka_admin import ensure_topic  # noqa: E402
from pipeline.runtime.telemetry import scrape  # noqa: E402
from pipeline.tools.broker import EmbeddedBroker, free_port  # noqa: E402
from pipeline.tools.produce import RawProducer  # noqa: E402

BIN = Path(sys.executable).parent / "trackflow"
PARTITIONS = 4


def make_events(n: int, now_ms: int) -> list[dict[str, Any]]:
    """A realistic mix: mostly page views/exposures, some cart and payment events."""
    events = []
    for i in range(n):
        kind = i % 10
        d = i % 997
        e: dict[str, Any] = {
            "event_id": f"b{i}",
            "event_time": now_ms - 60_000 + (i % 50_000),
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
        events.append(e)
    return events


def produce(bootstrap: str, topic: str, events: list[dict[str, Any]], per_message: int) -> int:
    ensure_topic(bootstrap, topic, PARTITIONS)
    producer = RawProducer(bootstrap, topic)
    # Batches are per device, as SDKs send them: group by device, then chunk.
    by_device: dict[str, list[dict[str, Any]]] = {}
    for e in events:
        by_device.setdefault(e["anonymous_id"], []).append(e)
    messages = 0
    for device, evs in by_device.items():
        for k in range(0, len(evs), per_message):
            chunk = evs[k : k + per_message]
            value = orjson.dumps(chunk if per_message > 1 else chunk[0])
            producer.send(device.encode(), value)
            messages += 1
    if producer.flush(120):
        raise RuntimeError("produce failed")
    return messages


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


def run_trackflow(
    broker: EmbeddedBroker, prefix: str, events: int, tmp: Path, stages: str = "full"
) -> dict[str, Any]:
    port = free_port()
    env = {
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
    log = open(tmp / f"{prefix}worker.log", "wb")  # noqa: SIM115
    proc = subprocess.Popen([str(BIN), "worker"], env=env, stdout=log, stderr=subprocess.STDOUT)
    first = done = None
    deadline = time.monotonic() + 900
    try:
        while time.monotonic() < deadline:
            if proc.poll() is not None:
                raise RuntimeError(f"trackflow worker exited {proc.returncode}; see its log")
            m = scrape(port)
            now = time.perf_counter()
            if first is None and m.get("trackflow_events_received_total", 0) > 0:
                first = now
            if m.get("trackflow_events_stored_total", 0) >= events:
                done = now
                break
            time.sleep(0.05)
        links = m.get("trackflow_identity_links_applied_total", 0)
        cpu = _proc_cpu(proc.pid)
        rss = _proc_rss_mb(proc.pid)
    finally:
        proc.terminate()
        proc.wait(30)
        log.close()
    if first is None or done is None:
        raise RuntimeError(f"trackflow worker did not finish; see {tmp / (prefix + 'worker.log')}")
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
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return round(int(line.split()[1]) / 1024, 1)
    except OSError:
        return None
    return None


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


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--events", type=int, default=200_000, help="events for the batched runs")
    ap.add_argument(
        "--single-events", type=int, default=30_000, help="events for single-event runs"
    )
    ap.add_argument("--out", type=Path)
    args = ap.parse_args()
    now = int(time.time() * 1000)
    results: dict[str, Any] = {
        "machine": {"cpus": os.cpu_count(), "python": platform.python_version()},
        "partitions": PARTITIONS,
    }
    with tempfile.TemporaryDirectory() as d, EmbeddedBroker(log=Path(d) / "broker.log") as broker:
        tmp = Path(d)
        batched_events = make_events(args.events, now)
        single_events = make_events(args.single_events, now)
        n_batched = produce(broker.bootstrap, "bb.events.raw", batched_events, 20)
        n_single = produce(broker.bootstrap, "bs.events.raw", single_events, 1)
        produce(broker.bootstrap, "bi.events.raw", batched_events, 20)
        results["noop_faust_batched_input"] = run_noop(broker, "bb.events.raw", n_batched, tmp)
        results["noop_faust_batched_input"]["events_per_s"] = round(
            args.events / results["noop_faust_batched_input"]["seconds"]
        )
        results["noop_faust_single_input"] = run_noop(broker, "bs.events.raw", n_single, tmp)
        results["ingest_only_batched_20"] = run_trackflow(
            broker, "bi.", args.events, tmp, stages="ingest"
        )
        results["chain_batched_20"] = run_trackflow(broker, "bb.", args.events, tmp)
        results["chain_single"] = run_trackflow(broker, "bs.", args.single_events, tmp)
    results["stages"] = [
        "validate",
        "stitch",
        "identity (writer)",
        "aggregate",
        "combine",
        "sink",
    ]
    results["ratio_chain_vs_ingest_only"] = round(
        results["chain_batched_20"]["events_per_s"]
        / results["ingest_only_batched_20"]["events_per_s"],
        2,
    )
    results["ratio_batched_vs_single"] = round(
        results["chain_batched_20"]["events_per_s"] / results["chain_single"]["events_per_s"],
        2,
    )
    results["hot_path_us_per_event"] = breakdown()
    results["identity_writer"] = identity_writer()
    results["bench_process_max_rss_mb"] = round(
        resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1
    )
    text = orjson.dumps(results, option=orjson.OPT_INDENT_2).decode()
    print(text)
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(text + "\n")


if __name__ == "__main__":
    main()
