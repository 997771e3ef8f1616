"""State at scale, issue 13's two targets for the dedup memory.

1. ``dedup_memory``: worker RSS of remembering ``--ids`` event ids (default 20 million;
   target: at most 1 GiB). A fresh subprocess adds 36-character UUID-like ids, spread over
   4 source partitions in one generation, through ``SeenIds.add`` (the ingest path), and
   reports VmRSS before and after (and VmHWM, the peak), bytes per id, ids added per second
   and lookups per second for hits and for misses.
2. ``restart``: start-up of a real worker after a restart with ``--history`` events of
   history (default 10 million; target: under 60 s). On an embedded broker a first worker
   creates the topics and joins the group and is stopped; the dedup table's changelog is then
   filled with the records those events would have left (``tables.dedup.encode_record``,
   keys as ``DedupTable.record`` makes them, full takes of 500 messages of 20 events); a
   second worker is started and timed from process start until its /metrics gauge
   ``trackflow_dedup_ids`` holds the whole history (the gauge is sampled every 2 s, so
   times are late by up to 2 s); also reported: when Faust logged the assignment and the
   end of the changelog read, and the worker's RSS then (and of the empty first worker).

Run: ``.venv/bin/python -m bench.state_scale [--ids N] [--history N] [--out PATH]``.
Prints (and with --out writes) JSON. The machine is shared: compare figures of one run.
"""

from __future__ import annotations

import argparse
import ctypes
import gc
import os
import random
import re
import shlex
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path
from typing import Any

import orjson

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.report import emit, machine  # noqa: E402
from pipeline import names  # noqa: E402
from pipeline.contract.positions import pack  # noqa: E402
from pipeline.ingest.dedup import SeenIds  # noqa: E402
from pipeline.runtime.telemetry import scrape  # noqa: E402
from pipeline.tools.broker import EmbeddedBroker, free_port  # noqa: E402
from tables.dedup import RECORD_IDS, encode_record  # noqa: E402

BIN = Path(sys.executable).parent / "trackflow"
PARTITIONS = 4
APP_ID = "bench-state"
PREFIX = "bst."
HORIZON_MS = 24 * 3600 * 1000  # settings.dedup_horizon_hours default
EVENTS_PER_MESSAGE = 20  # SDK batches, as in bench/run.py
TAKE_MESSAGES = 500  # settings.take_max: a full take of one partition
CHUNK = 100_000  # ids generated at a time in the memory run (not timed, not kept)
LOOKUPS = 200_000
_MIX = 0x9E3779B97F4A7C15F39CC0605CEDC835  # odd: i -> i * _MIX mod 2**128 is a bijection
_MASK = (1 << 128) - 1


def event_id(i: int) -> str:
    """The i-th of distinct UUID-like ids (36 characters, random-looking hex)."""
    h = f"{(i * _MIX) & _MASK:032x}"
    return f"{h[:8]}-{h[8:12]}-{h[12:16]}-{h[16:20]}-{h[20:]}"


def _status_kb(pid: int | str, field: str) -> int | None:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith(field + ":"):
                return int(line.split()[1])
    except OSError:
        return None
    return None


def _mb(kb: int | None) -> float | None:
    return None if kb is None else round(kb / 1024, 1)


def _proc_cpu(pid: int) -> float | None:
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        return round((int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK"), 2)
    except OSError:
        return None


# -- 1. dedup memory (runs in a child process) -------------------------------------------


def dedup_memory_child(n: int) -> dict[str, Any]:
    """Runs in a fresh process: RSS and rates of ``n`` ids in one ``SeenIds``."""
    seen = SeenIds(HORIZON_MS)
    now_ms = int(time.time() * 1000)
    gen = seen.generation(now_ms)
    gc.collect()
    rss_before = _status_kb("self", "VmRSS")
    add_seconds = 0.0
    for base in range(0, n, CHUNK):
        chunk = [event_id(i) for i in range(base, min(n, base + CHUNK))]
        t = time.perf_counter()
        for k, eid in enumerate(chunk):
            i = base + k
            # Partition i % 4; per partition, messages of 20 events at consecutive offsets.
            j = i // PARTITIONS
            seen.add(
                i % PARTITIONS,
                gen,
                eid,
                pack(j // EVENTS_PER_MESSAGE, j % EVENTS_PER_MESSAGE),
                False,
            )
        add_seconds += time.perf_counter() - t
    del chunk
    gc.collect()
    rss_after = _status_kb("self", "VmRSS")
    peak = _status_kb("self", "VmHWM")
    rss_trimmed = _malloc_trim_rss()
    held = seen.size()

    gens = [g for part in seen._parts.values() for g in part.values()]
    array_bytes = sum(g.nbytes() for g in gens)
    runs = sorted(len(g.runs) for g in gens)
    recent = sum(len(g.recent) for g in gens)

    rng = random.Random(13)
    hits = [rng.randrange(n) for _ in range(min(LOOKUPS, n))]
    hit_ids = [(i % PARTITIONS, event_id(i)) for i in hits]
    miss_ids = [(i % PARTITIONS, event_id(n + i)) for i in range(LOOKUPS)]
    t = time.perf_counter()
    found = sum(1 for p, eid in hit_ids if seen.lookup(p, eid, now_ms) is not None)
    hit_seconds = time.perf_counter() - t
    t = time.perf_counter()
    false_hits = sum(1 for p, eid in miss_ids if seen.lookup(p, eid, now_ms) is not None)
    miss_seconds = time.perf_counter() - t

    delta = None if rss_before is None or rss_after is None else (rss_after - rss_before) * 1024
    return {
        "ids": n,
        "ids_held": held,
        "partitions": PARTITIONS,
        "rss_before_mb": _mb(rss_before),
        "rss_after_mb": _mb(rss_after),
        "peak_mb": _mb(peak),
        "rss_after_malloc_trim_mb": _mb(rss_trimmed),
        "bytes_per_id": None if delta is None else round(delta / n, 2),
        "array_bytes_per_id": round(array_bytes / n, 2),
        "runs_per_partition": runs,
        "ids_in_dicts": recent,
        "target_rss_mb": 1024,
        "within_target": rss_after is not None and rss_after <= 1024 * 1024,
        "add_seconds": round(add_seconds, 2),
        "add_ids_per_s": round(n / add_seconds),
        "lookups": len(hit_ids),
        "lookup_hits_found": found,
        "lookup_hit_per_s": round(len(hit_ids) / hit_seconds),
        "lookup_hit_us": round(hit_seconds / len(hit_ids) * 1e6, 2),
        "lookup_misses_found": false_hits,
        "lookup_miss_per_s": round(len(miss_ids) / miss_seconds),
        "lookup_miss_us": round(miss_seconds / len(miss_ids) * 1e6, 2),
        "note": "add rate excludes generating the ids; RSS after freeing them",
    }


def _malloc_trim_rss() -> int | None:
    """VmRSS after glibc returns free heap memory to the system (how much of the RSS is
    freed-but-kept allocator memory rather than live data)."""
    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):
        return None
    return _status_kb("self", "VmRSS")


def dedup_memory(n: int) -> dict[str, Any]:
    proc = subprocess.run(
        [sys.executable, str(Path(__file__).resolve()), "--child-dedup", "--ids", str(n)],
        capture_output=True,
        timeout=3600,
        cwd=ROOT,
    )
    if proc.returncode != 0:
        raise RuntimeError(f"dedup memory child exited {proc.returncode}: {proc.stderr.decode()}")
    result: dict[str, Any] = orjson.loads(proc.stdout)
    return result


# -- 2. restart with history ---------------------------------------------------------------


def ingest_at_scale(ids: int, events: int = 40_000) -> dict[str, Any]:
    """Validate-stage cost per event (``Ingestor.process``: decode, validate, dedup) when
    the dedup memory already holds ``ids`` ids in runs over two generations, as a busy
    partition's memory does late in a day. Fresh event ids, takes of 500 messages of 20."""
    import numpy as np

    from bench.run import make_events
    from pipeline.contract.pii import PiiHasher
    from pipeline.contract.plan import load_plan
    from pipeline.ingest.dedup import RUN_IDS, SeenIds
    from pipeline.ingest.ingestor import Ingestor, RawMessage
    from pipeline.ingest.validation import Validator

    plan, now = load_plan(), int(time.time() * 1000)
    seen = SeenIds(86_400_000)
    gen = seen.generation(now)
    rng = np.random.default_rng(1)
    for k, start in enumerate(range(0, ids, RUN_IDS)):
        n = min(RUN_IDS, ids - start)
        keys = rng.integers(0, 2**63, n, dtype=np.uint64)
        seen.add_run(0, gen - k % 2, keys, np.arange(n, dtype=np.int64) << 1)
    hasher = PiiHasher("bench")
    ingestor = Ingestor(plan, Validator(plan, hasher), hasher, seen, "events.raw")
    sample = make_events(3 * events, now)
    messages = [
        RawMessage(i, orjson.dumps(sample[i * 20 : (i + 1) * 20])) for i in range(len(sample) // 20)
    ]
    per_rep = events // 20
    best = float("inf")
    for rep in range(3):  # fresh ids every repetition; the best of three
        t = time.perf_counter()
        for k in range(rep * per_rep, (rep + 1) * per_rep, 500):
            ingestor.process(0, messages[k : min(k + 500, (rep + 1) * per_rep)], now)
        best = min(best, time.perf_counter() - t)
    runs = sum(len(g.runs) for g in seen._parts[0].values())
    return {"ids": ids, "runs": runs, "ingest_us_per_event": round(best / events * 1e6, 2)}


def worker_env(
    broker: EmbeddedBroker, data_dir: Path, port: int, partitions: int
) -> dict[str, str]:
    """As tests/support.py's Deployment, with the worker's default timeouts and log level."""
    return {
        **os.environ,
        "TRACKFLOW_BROKER": broker.url,
        "TRACKFLOW_DATA_DIR": str(data_dir),
        "TRACKFLOW_APP_ID": APP_ID,
        "TRACKFLOW_TOPIC_PREFIX": PREFIX,
        "TRACKFLOW_PARTITIONS": str(partitions),
        "TRACKFLOW_WEB_PORT": str(port),
        "TRACKFLOW_LOG_LEVEL": "info",
        "TRACKFLOW_DEV": "1",  # a PII key generated for this throwaway data directory
    }


def _raw_assigned(metrics: dict[str, float]) -> bool:
    raw = PREFIX + names.TOPIC_RAW
    return any(k.startswith("trackflow_consumer_lag_messages") and raw in k for k in metrics)


def _stop(proc: subprocess.Popen[bytes], timeout: float = 60) -> float | None:
    """SIGTERM and wait; SIGKILL after ``timeout``. Seconds it took, None if killed."""
    if proc.poll() is not None:
        return 0.0
    t = time.perf_counter()
    proc.terminate()
    try:
        proc.wait(timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()
        return None
    return round(time.perf_counter() - t, 2)


def _start(env: dict[str, str], log: Path) -> subprocess.Popen[bytes]:
    with open(log, "ab") as out:
        return subprocess.Popen(
            [str(BIN), "worker"], env=env, stdout=out, stderr=subprocess.STDOUT, cwd=ROOT
        )


def first_run(
    broker: EmbeddedBroker, data_dir: Path, tmp: Path, partitions: int
) -> tuple[float, int | None]:
    """A first worker creates every topic and joins the group; stopped once assigned.

    Returns its stop seconds and its RSS (kB) when assigned: a worker with empty state."""
    port = free_port()
    proc = _start(worker_env(broker, data_dir, port, partitions), tmp / "worker-1.log")
    try:
        deadline = time.monotonic() + 180
        while not _raw_assigned(scrape(port)):
            if proc.poll() is not None:
                raise RuntimeError(f"first worker exited {proc.returncode}; see worker-1.log")
            if time.monotonic() > deadline:
                raise RuntimeError("first worker not assigned after 180 s; see worker-1.log")
            time.sleep(0.2)
        rss = _status_kb(proc.pid, "VmRSS")
    finally:
        stopped = _stop(proc)
    if stopped is None:
        raise RuntimeError("first worker did not stop on SIGTERM within 60 s")
    return stopped, rss


def history_records(
    history: int, partitions: int, take_events: int, gen: int
) -> Iterator[tuple[int, bytes, bytes, int]]:
    """(partition, key, value, ids) of the changelog records ``history`` events leave.

    Events go round-robin to partitions; per partition they arrive in takes of
    ``take_events`` (messages of EVENTS_PER_MESSAGE events at consecutive offsets), and each
    take is logged as ``DedupTable.record`` logs it: chunks of RECORD_IDS ids, keyed
    ``"<partition>:<first offset>"`` and ``":<start>"`` after the first chunk.
    """
    for p in range(partitions):
        count = history // partitions + (1 if p < history % partitions else 0)
        offset = 0
        for take in range(0, count, take_events):
            size = min(take_events, count - take)
            entries = []
            for k in range(size):
                i = (take + k) * partitions + p
                pos = pack(offset + k // EVENTS_PER_MESSAGE, k % EVENTS_PER_MESSAGE)
                entries.append([event_id(i), pos << 1])
            for start in range(0, size, RECORD_IDS):
                key = f"{p}:{offset}" + (f":{start}" if start else "")
                chunk = entries[start : start + RECORD_IDS]
                # The table's schema is json for keys and values (topology._json()).
                yield p, orjson.dumps(key), orjson.dumps(encode_record(gen, chunk)), len(chunk)
            offset += -(-size // EVENTS_PER_MESSAGE)


def fill_changelog(
    bootstrap: str, topic: str, history: int, partitions: int, take_events: int, gen: int
) -> dict[str, Any]:
    from confluent_kafka import Producer
    from confluent_kafka.admin import AdminClient

    meta = AdminClient({"bootstrap.servers": bootstrap}).list_topics(topic=topic, timeout=15)
    found = meta.topics.get(topic)
    if found is None or found.error is not None or len(found.partitions) != partitions:
        raise RuntimeError(f"changelog topic {topic} missing or not {partitions} partitions")
    errors: list[str] = []

    def delivered(err: Any, _msg: Any) -> None:
        if err is not None:
            errors.append(str(err))

    producer = Producer(
        {
            "bootstrap.servers": bootstrap,
            "acks": "all",
            "linger.ms": 20,
            "queue.buffering.max.kbytes": 512 * 1024,
        }
    )
    t = time.perf_counter()
    records = ids = size = 0
    for p, key, value, n in history_records(history, partitions, take_events, gen):
        while True:
            try:
                producer.produce(topic, value, key, partition=p, on_delivery=delivered)
                break
            except BufferError:
                producer.poll(0.1)
        producer.poll(0)
        records += 1
        ids += n
        size += len(key) + len(value)
    if producer.flush(300):
        raise RuntimeError("changelog records still unsent after 300 s")
    if errors:
        raise RuntimeError(f"{len(errors)} changelog records failed: {errors[0]}")
    seconds = time.perf_counter() - t
    return {
        "topic": topic,
        "records": records,
        "ids": ids,
        "mb": round(size / 2**20, 1),
        "take_events": take_events,
        "ids_per_record_max": RECORD_IDS,
        "generation": gen,
        "fill_seconds": round(seconds, 1),
    }


_LOG_TIME = re.compile(r"^\[(\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3})\]")
_LOG_MARKS = (
    "Assigned",
    "assigned",
    "Recovery",
    "recovery",
    "Resuming",
    "Ready",
    "changelog records past",
    "Traceback",
    "ERROR",
    "CRITICAL",
)


def log_marks(log: Path, started_wall: float, limit: int = 40) -> list[str]:
    """Worker log lines about assignment and recovery, prefixed with seconds since start."""
    out: list[str] = []
    for line in log.read_text(errors="replace").splitlines():
        if not any(m in line for m in _LOG_MARKS):
            continue
        m = _LOG_TIME.match(line)
        if m:
            at = datetime.strptime(m.group(1), "%Y-%m-%d %H:%M:%S,%f").timestamp()
            line = f"+{at - started_wall:.1f}s {line[m.end() :].strip()}"
        out.append(line[:240])
    return out[:limit]


_LOG_STEPS = {
    "assigned": "Setting newly assigned partitions",
    "changelog_read_started": "Restoring state from changelog topics",
    "changelog_read_done": "Done reading from changelog topics",
    "worker_ready": "Worker ready",
}


def log_steps(log: Path, started_wall: float) -> dict[str, float | None]:
    """Seconds since start of the first log line of each step in _LOG_STEPS (Faust's
    INFO lines, to the millisecond; None if missing)."""
    steps: dict[str, float | None] = dict.fromkeys(_LOG_STEPS)
    for line in log.read_text(errors="replace").splitlines():
        m = _LOG_TIME.match(line)
        for step, text in _LOG_STEPS.items():
            if m and steps[step] is None and text in line:
                at = datetime.strptime(m.group(1), "%Y-%m-%d %H:%M:%S,%f").timestamp()
                steps[step] = round(at - started_wall, 2)
    return steps


def timed_restart(
    broker: EmbeddedBroker, data_dir: Path, tmp: Path, partitions: int, history: int, timeout: float
) -> dict[str, Any]:
    port = free_port()
    log = tmp / "worker-2.log"
    env = worker_env(broker, data_dir, port, partitions)
    started_wall = time.time()
    t0 = time.perf_counter()
    proc = _start(env, log)
    serving = lagged = recovered = None
    samples: list[tuple[float, float]] = []  # (s, dedup ids) when the gauge changes
    rss_kb = hwm_kb = None
    cpu = None
    ids = 0.0
    ids_later: float | None = None
    rss_serving_kb = rss_later_kb = None
    exited = None
    try:
        while (now := time.perf_counter() - t0) < timeout:
            if proc.poll() is not None:
                exited = proc.returncode
                break
            m = scrape(port)
            now = time.perf_counter() - t0
            if m and serving is None:
                serving = now
                rss_serving_kb = _status_kb(proc.pid, "VmRSS")
            if lagged is None and _raw_assigned(m):
                lagged = now
            if "trackflow_dedup_ids" in m:
                ids = m["trackflow_dedup_ids"]
                if not samples or samples[-1][1] != ids:
                    samples.append((round(now, 2), ids))
                if ids >= history:
                    recovered = now
                    rss_kb = _status_kb(proc.pid, "VmRSS")
                    hwm_kb = _status_kb(proc.pid, "VmHWM")
                    cpu = _proc_cpu(proc.pid)
                    break
            time.sleep(0.1)
        if recovered is None:
            rss_kb = _status_kb(proc.pid, "VmRSS")
            hwm_kb = _status_kb(proc.pid, "VmHWM")
            cpu = _proc_cpu(proc.pid)
        else:
            time.sleep(5)  # still up, and the memory holds, a little later?
            m = scrape(port)
            ids_later = m.get("trackflow_dedup_ids")
            rss_later_kb = _status_kb(proc.pid, "VmRSS")
    finally:
        stop_seconds = _stop(proc)
    steps = log_steps(log, started_wall)
    result: dict[str, Any] = {
        "history_events": history,
        "partitions": partitions,
        "seconds_to_metrics": None if serving is None else round(serving, 2),
        "seconds_to_assigned": steps["assigned"],
        "seconds_to_lag_gauge": None if lagged is None else round(lagged, 2),
        "seconds_to_recovered": None if recovered is None else round(recovered, 2),
        "target_seconds": 60,
        "within_target": recovered is not None and recovered < 60,
        "dedup_ids_seen": ids,
        "worker_rss_mb": _mb(rss_kb),
        "worker_peak_rss_mb": _mb(hwm_kb),
        "worker_rss_at_metrics_mb": _mb(rss_serving_kb),
        "worker_cpu_seconds": cpu,
        "worker_stop_seconds": stop_seconds,
        "seconds_from_log": steps,
        "dedup_ids_samples": samples[-30:],
        "log": log_marks(log, started_wall),
        "note": "seconds from Popen of `trackflow worker`. recovered: /metrics shows "
        "trackflow_dedup_ids >= history; lag_gauge: /metrics shows an events.raw consumer "
        "lag (only once the worker consumes, after recovery); both gauges are sampled every "
        "2 s, so late by up to 2 s. assigned and seconds_from_log: Faust's INFO log lines "
        "(assigned = 'Setting newly assigned partitions').",
    }
    if exited is not None:
        result["worker_exit_code"] = exited
        result["log_tail"] = log.read_text(errors="replace").splitlines()[-30:]
    elif recovered is None:
        result["timed_out_after_s"] = timeout
        result["log_tail"] = log.read_text(errors="replace").splitlines()[-30:]
    else:
        result["dedup_ids_5s_later"] = ids_later
        result["worker_rss_5s_later_mb"] = _mb(rss_later_kb)
    return result


def restart(
    history: int, partitions: int, take_events: int, timeout: float, keep: Path | None
) -> dict[str, Any]:
    with tempfile.TemporaryDirectory() as d:
        tmp = keep or Path(d)
        tmp.mkdir(parents=True, exist_ok=True)
        with EmbeddedBroker(log=tmp / "broker.log") as broker:
            data_dir = tmp / "data"
            first_stop, empty_rss_kb = first_run(broker, data_dir, tmp, partitions)
            gen = SeenIds(HORIZON_MS).generation(int(time.time() * 1000))
            topic = f"{APP_ID}-{names.TABLE_DEDUP}-changelog"  # Faust: <app id>-<table>-changelog
            fill = fill_changelog(broker.bootstrap, topic, history, partitions, take_events, gen)
            result = timed_restart(broker, data_dir, tmp, partitions, history, timeout)
        result["first_worker_stop_seconds"] = first_stop
        # A worker with empty state, once assigned: the baseline for bytes per id.
        result["empty_worker_rss_mb"] = _mb(empty_rss_kb)
        rss = result["worker_rss_mb"]
        if rss is not None and empty_rss_kb is not None:
            result["worker_bytes_per_id"] = round((rss * 1024 - empty_rss_kb) * 1024 / history, 1)
        result["changelog"] = fill
        return result


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0] if __doc__ else None)
    ap.add_argument("--ids", type=int, default=20_000_000, help="ids in the memory run")
    ap.add_argument("--history", type=int, default=10_000_000, help="events of history")
    ap.add_argument("--partitions", type=int, default=PARTITIONS, help="of the restart run")
    ap.add_argument(
        "--take-events",
        type=int,
        default=TAKE_MESSAGES * EVENTS_PER_MESSAGE,
        help="events per take (one DedupTable.record call) in the history",
    )
    ap.add_argument("--timeout", type=float, default=600, help="give up on the restart after")
    ap.add_argument(
        "--ingest-ids", type=int, default=4_000_000, help="ids held in the ingest timing (0 skips)"
    )
    ap.add_argument("--skip-memory", action="store_true")
    ap.add_argument("--skip-restart", action="store_true")
    ap.add_argument("--keep", type=Path, help="keep broker/worker logs in this directory")
    ap.add_argument("--out", type=Path)
    ap.add_argument("--child-dedup", action="store_true", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child_dedup:
        sys.stdout.write(orjson.dumps(dedup_memory_child(args.ids)).decode())
        return
    results: dict[str, Any] = {"machine": machine()}
    if args.ingest_ids:
        results["ingest_at_scale"] = ingest_at_scale(args.ingest_ids)
    if not args.skip_memory:
        results["dedup_memory"] = dedup_memory(args.ids)
    if not args.skip_restart:
        results["restart"] = restart(
            args.history, args.partitions, args.take_events, args.timeout, args.keep
        )
    results["command"] = ".venv/bin/python -m bench.state_scale " + shlex.join(sys.argv[1:])
    emit(results, args.out)


if __name__ == "__main__":
    main()
