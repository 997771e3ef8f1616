"""Where a worker's CPU goes per event: py-spy samples of the whole chain, by stage.

Issue 14, item 7. Pre-produces events (bench.run's mix) on an embedded broker, runs one
``trackflow worker`` under ``py-spy record`` until every event is stored, and attributes
each sample to a stage by the frames it holds. Prints JSON: the share of samples per
stage and, with the worker CPU per event measured in the same run, microseconds per event.
Idle samples (threads waiting on sockets or queues) and start-up imports are shown apart.

    .venv/bin/python bench/profile_chain.py --events 200000 --per-message 20
"""

from __future__ import annotations

import argparse
import collections
import contextlib
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.report import emit  # noqa: E402
from bench.run import BIN, PARTITIONS, _proc_cpu, make_events, produce  # noqa: E402
from pipeline.runtime.telemetry import scrape  # noqa: E402
from pipeline.tools.broker import EmbeddedBroker, free_port  # noqa: E402

PY_SPY = Path(sys.executable).parent / "py-spy"
IDLE = "idle (threads waiting on sockets or queues)"
STARTUP = "start-up imports"
# First match wins: (stage, a substring of the joined stack).
STAGES = [
    ("validate: decode, validate, dedup (Ingestor)", "Ingestor.process"),
    ("validate: Arrow build of stored rows", "build_each"),
    ("validate: IPC encode, sends, metrics", "agents/validate.py"),
    ("stitch", "agents/stitch.py"),
    ("identity writer", "agents/identity.py"),
    ("aggregate", "agents/aggregate.py"),
    ("combine", "agents/combine.py"),
    ("detect", "agents/detect.py"),
    ("sink (event loop side)", "agents/sink.py"),
    ("changelog tables", "tables/"),
    ("/metrics scrape", "prometheus_metrics"),
    ("Faust and aiokafka: consume, produce, commit", "faust/"),
    ("Faust and aiokafka: consume, produce, commit", "aiokafka/"),
]


def stage_of(frames: list[str]) -> str:
    stack, top = ";".join(frames), frames[-1]
    if "_find_and_load" in stack:
        return STARTUP
    if "concurrent/futures/thread.py:81" in top or "wait (threading" in top or "select (" in top:
        return IDLE
    if "concurrent/futures/thread.py" in stack:
        return "sink: Parquet write and fsync (thread pool)"
    if "mode/threads.py" in stack:
        return "aiokafka consumer thread"
    for name, key in STAGES:
        if key in stack:
            return name
    return "other (asyncio, timers)"


def _child(pid: int) -> int:
    """The worker: py-spy's child process."""
    return int(subprocess.check_output(["pgrep", "-P", str(pid)]).split()[0])


def profile(events: int, per_message: int, rate: int) -> dict[str, Any]:
    tmp = Path(tempfile.mkdtemp(prefix="trackflow-profile-"))
    raw = tmp / "py-spy.txt"
    with EmbeddedBroker(log=tmp / "broker.log") as broker:
        prefix = "prof."
        produce(
            broker.bootstrap,
            f"{prefix}events.raw",
            make_events(events, int(time.time() * 1000)),
            per_message,
        )
        port = free_port()
        env = {
            **os.environ,
            "TRACKFLOW_BROKER": broker.url,
            "TRACKFLOW_DATA_DIR": str(tmp / "data"),
            "TRACKFLOW_APP_ID": "bench-profile",
            "TRACKFLOW_TOPIC_PREFIX": prefix,
            "TRACKFLOW_PARTITIONS": str(PARTITIONS),
            "TRACKFLOW_REBALANCE_TIMEOUT": "2",
            "TRACKFLOW_WEB_PORT": str(port),
            "TRACKFLOW_LOG_LEVEL": "warning",
            "TRACKFLOW_DEV": "1",
        }
        cmd = [
            str(PY_SPY),
            "record",
            "--nonblocking",
            "-r",
            str(rate),
            "-f",
            "raw",
            "-o",
            str(raw),
            "--",
        ]
        log = open(tmp / "worker.log", "wb")  # noqa: SIM115
        spy = subprocess.Popen(
            [*cmd, str(BIN), "worker"], env=env, stdout=log, stderr=subprocess.STDOUT
        )
        first = done = None
        worker_pid: int | None = None
        cpu_at_first = 0.0
        try:
            while done is None:
                if spy.poll() is not None:
                    raise RuntimeError(f"py-spy or the worker exited; see {tmp / 'worker.log'}")
                try:
                    m = scrape(port)
                except OSError:
                    time.sleep(0.2)
                    continue
                now = time.perf_counter()
                if first is None and m.get("trackflow_events_received_total", 0) > 0:
                    first = now
                    worker_pid = _child(spy.pid)
                    cpu_at_first = _proc_cpu(worker_pid) or 0.0
                if m.get("trackflow_events_stored_total", 0) >= events:
                    done = now
                time.sleep(0.05)
            assert worker_pid is not None
            cpu = (_proc_cpu(worker_pid) or 0.0) - cpu_at_first
        finally:
            spy.send_signal(signal.SIGINT)  # py-spy writes its file, then we stop the worker
            spy.wait(60)
            if worker_pid is not None:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(worker_pid, signal.SIGTERM)
            log.close()
    counts: collections.Counter[str] = collections.Counter()
    for line in raw.read_text().splitlines():
        stack, _, n = line.rpartition(" ")
        counts[stage_of(stack.split(";"))] += int(n)
    total = sum(counts.values())
    busy = total - counts[IDLE] - counts[STARTUP]  # samples of threads doing work
    assert first is not None
    assert done is not None
    cpu_us = cpu / events * 1e6
    return {
        "events": events,
        "events_per_message": per_message,
        "events_per_s": round(events / (done - first)),
        "worker_cpu_us_per_event": round(cpu_us, 1),
        "samples": total,
        "share": {k: round(n / total, 3) for k, n in counts.most_common()},
        # The worker's CPU from its first event to its last, spread over the stages in
        # proportion to their samples (py-spy samples a thread that is runnable but not
        # on a core as well, so samples are shares, not CPU time).
        "us_per_event": {
            k: round(n / busy * cpu_us, 1)
            for k, n in counts.most_common()
            if k not in (IDLE, STARTUP)
        },
        "work_dir": str(tmp),
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--events", type=int, default=200_000)
    ap.add_argument("--per-message", type=int, default=20)
    ap.add_argument("--rate", type=int, default=200, help="py-spy samples per second")
    ap.add_argument("--out", type=Path)
    args = ap.parse_args()
    emit(profile(args.events, args.per_message, args.rate), args.out)


if __name__ == "__main__":
    main()
