"""How fast ``trackflow produce FILE`` sends a JSON-lines file to the embedded broker.

Starts an embedded broker, writes N realistic events (``bench.run.make_events``, one event
per line) to a file, runs the real CLI against it and times the whole command, start-up,
topic creation and the final flush included. Every message is then read back from the
broker and its key checked (the event's anonymous_id), so a fast run that lost or
mis-keyed messages fails instead of reporting a rate.

Prints (and with --out writes) JSON. The broker runs on the same machine and shares its
CPUs with the producer, so figures of a loaded machine are lower; say what else ran.
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
from collections import Counter
from pathlib import Path
from typing import Any

import orjson

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.report import emit  # noqa: E402
from bench.run import make_events  # noqa: E402
from pipeline.tools.broker import EmbeddedBroker  # noqa: E402

BIN = Path(sys.executable).parent / "trackflow"
PARTITIONS = 4


def write_events(path: Path, n: int, now_ms: int) -> Counter[bytes | None]:
    """N events from make_events, one JSON object per line; returns the count per key."""
    keys: Counter[bytes | None] = Counter()
    with open(path, "wb") as f:
        for e in make_events(n, now_ms):
            f.write(orjson.dumps(e, option=orjson.OPT_APPEND_NEWLINE))
            keys[e["anonymous_id"].encode()] += 1
    return keys


def keys_on(bootstrap: str, topic: str, expected: int) -> Counter[bytes | None]:
    """The keys of the messages on ``topic``, read back from offset 0 (the broker's high
    watermarks undercount here, so they are not used)."""
    from confluent_kafka import Consumer, TopicPartition

    consumer = Consumer(
        {
            "bootstrap.servers": bootstrap,
            "group.id": "bench-produce-rate",
            "enable.auto.commit": False,
            "log.connection.close": False,
        }
    )
    keys: Counter[bytes | None] = Counter()
    try:
        partitions = consumer.list_topics(topic, timeout=10).topics[topic].partitions
        consumer.assign([TopicPartition(topic, p, 0) for p in partitions])
        idle_since = time.monotonic()
        while time.monotonic() - idle_since < (1 if keys.total() >= expected else 10):
            batch = consumer.consume(10_000, 0.5)  # past ``expected``: only extra copies
            if batch:
                idle_since = time.monotonic()
            for msg in batch:
                if msg.error() is None:
                    keys[msg.key()] += 1
        return keys
    finally:
        consumer.close()


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def run_produce(broker: EmbeddedBroker, path: Path, prefix: str) -> dict[str, Any]:
    env = {
        **os.environ,
        "TRACKFLOW_BROKER": broker.url,
        "TRACKFLOW_TOPIC_PREFIX": prefix,
        "TRACKFLOW_PARTITIONS": str(PARTITIONS),
        "TRACKFLOW_LOG_LEVEL": "warning",
    }
    assert broker.proc is not None
    broker_cpu = cpu_seconds(broker.proc.pid)
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    started = time.perf_counter()
    proc = subprocess.run(
        [str(BIN), "produce", str(path)], env=env, capture_output=True, timeout=1800
    )
    seconds = time.perf_counter() - started
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    broker_cpu = cpu_seconds(broker.proc.pid) - broker_cpu
    if proc.returncode != 0:
        raise RuntimeError(f"trackflow produce exited {proc.returncode}: {proc.stderr.decode()}")
    return {
        "seconds": seconds,
        "cpu_seconds": after.ru_utime - before.ru_utime + after.ru_stime - before.ru_stime,
        "broker_cpu_seconds": broker_cpu,
        "stderr": proc.stderr.decode().strip(),
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    ap.add_argument("--events", type=int, default=1_000_000, help="events in the file")
    ap.add_argument("--out", type=Path, help="also write the JSON here")
    args = ap.parse_args()
    load_before = os.getloadavg()[0]
    with tempfile.TemporaryDirectory() as d, EmbeddedBroker(log=Path(d) / "broker.log") as broker:
        path = Path(d) / "events.jsonl"
        expected = write_events(path, args.events, int(time.time() * 1000))
        prefix = "bench-produce."
        run = run_produce(broker, path, prefix)
        on_broker = keys_on(broker.bootstrap, f"{prefix}events.raw", args.events)
        size = path.stat().st_size
    if on_broker != expected:
        raise RuntimeError(
            f"{on_broker.total()} messages on the broker, {args.events} expected"
            " (or keyed otherwise than by anonymous_id)"
        )
    result = {
        "events": args.events,
        "file_bytes": size,
        "partitions": PARTITIONS,
        "seconds": round(run["seconds"], 3),
        "events_per_s": round(args.events / run["seconds"]),
        "produce_cpu_seconds": round(run["cpu_seconds"], 2),
        "broker_cpu_seconds": round(run["broker_cpu_seconds"], 2),
        "messages_on_broker": on_broker.total(),
        "produce_stderr": run["stderr"],
        "machine": {
            "cpus": os.cpu_count(),
            "python": platform.python_version(),
            "load_average_1m_before": round(load_before, 2),
            "load_average_1m_after": round(os.getloadavg()[0], 2),
        },
    }
    emit(result, args.out)


if __name__ == "__main__":
    main()
