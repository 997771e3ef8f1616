"""Soak: two workers for an hour under steady traffic, a payment outage and SIGKILLs.

Issue 13, item 6. Run from the repository root (it reuses tests/support.py and the
rollup check of tests/integration/test_metrics.py); not part of ``make test``::

    make soak                                  # one hour, writes bench/results/<date>-soak.json
    .venv/bin/python -m bench.soak --minutes 6 --kill-every-minutes 2 --out /tmp/soak.json

What it runs: an embedded broker and one isolated deployment (own topic prefix and data
directory), two ``trackflow worker`` processes and ``trackflow simulate`` at a steady rate
for the whole run, with malformed messages, SDK retries and a payment outage in the middle.
Every ``--kill-every-minutes`` one worker (alternately) gets SIGKILL and a replacement is
started at once. The processes run on jemalloc, as the image does (``--malloc system`` for
glibc's malloc; the JSON says which, ``run.malloc``). Every minute it records each worker's
RSS, CPU and /metrics counters and lag, the consumer group's lag as the broker sees it
(committed offsets against log ends), and the lake's row counts. When the traffic ends it
waits until the pipeline has settled (group lag 0, lake unchanged), then checks:

- events: sent by the simulator vs stored in the lake, dead-lettered, and dropped as
  retries (events.raw read back and keyed as ingest keys its dedup memory); sent = stored
  + dead letters + retries, so nothing was lost; no event_id stored twice;
- rollups: every final value of the exact metrics equals the lake recomputation, as
  tests/integration/test_metrics.py computes it; uv within 2%; the purchase funnel; no
  final value stored twice; late events;
- alerts: the incidents in the ``alerts`` view (the outage should open one
  payment_success_rate_drop incident, which resolves); no incident stored twice;
- memory: each worker process's RSS every minute, and its growth after its first ten
  minutes (at most 10%);
- lag: max and final, of the group and as the workers report it; the time the group took
  to catch up after each SIGKILL.

Prints the JSON and writes it to ``--out``. The working directory (broker, worker and
simulator logs, the lake) is kept; its path is in the JSON (``run.work_dir``).
"""

from __future__ import annotations

import argparse
import hashlib
import importlib
import os
import platform
import re
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any

import orjson
import pyarrow as pa
import pyarrow.parquet as pq
from confluent_kafka import OFFSET_BEGINNING, Consumer, TopicPartition

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.report import emit, proc_status_mb  # noqa: E402
from pipeline.contract.errors import Rejected  # noqa: E402
from pipeline.contract.pii import PiiHasher  # noqa: E402
from pipeline.contract.plan import load_plan  # noqa: E402
from pipeline.ingest.codecs import Item, decode_message, element_bytes  # noqa: E402
from pipeline.ingest.validation import Validator  # noqa: E402
from pipeline.lake.views import connect  # noqa: E402
from pipeline.metrics.definitions import load_metrics  # noqa: E402
from pipeline.metrics.report import batch_values  # noqa: E402
from pipeline.names import TOPIC_RAW  # noqa: E402
from pipeline.runtime.allocator import find_jemalloc  # noqa: E402
from pipeline.runtime.telemetry import scrape  # noqa: E402
from pipeline.tools.broker import EmbeddedBroker  # noqa: E402
from tests.support import BIN, Deployment, Worker  # noqa: E402

# The rollup check of the integration test, reused as it is: its metric list and its reading
# of the stream's finals. Imported at run time so that mypy checks this file, not the test.
_TEST_METRICS = importlib.import_module("tests.integration.test_metrics")
EXACT: list[str] = list(_TEST_METRICS.EXACT)
RollupKey = tuple[str, str, int, str]


def stream_rollups(dep: Deployment) -> dict[RollupKey, dict[str, Any]]:
    rows: dict[RollupKey, dict[str, Any]] = _TEST_METRICS.stream_rollups(dep)
    return rows


PARTITIONS = 4
POLL_SECONDS = 5.0
SAMPLE_SECONDS = 60.0
RSS_WARMUP_MINUTES = 10.0  # RSS growth is measured from a process's 10th minute on
RSS_MAX_GROWTH = 0.10
LAKE_TABLES = ("events", "dlq", "rollups", "alerts")
PAYMENT_RULE = "payment_success_rate_drop"
SHOWN = 20  # examples listed per kind of mismatch
UV_WARMUP_MINUTES = 5.0  # uv windows this close to the start are judged apart (see below)


def metric_sum(metrics: dict[str, float], name: str, label: str = "") -> float:
    """Sum of every series of ``name`` (optionally only those whose labels contain ``label``)."""
    return sum(
        v
        for k, v in metrics.items()
        if (k == name or k.startswith(name + "{")) and (not label or label in k)
    )


def proc_rss_mb(pid: int) -> float | None:
    return proc_status_mb(pid, "VmRSS:")


def proc_cpu_s(pid: int) -> float | None:
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        return round((int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK"), 2)
    except OSError:
        return None


class LakeRows:
    """Rows in each lake table's Parquet files, from their footers, each file read once.

    Cheap enough to run every few seconds on a lake of ~100,000 small files, where a
    DuckDB count over the views reads every footer each time. Raw rows: a final value or
    incident re-sent after a crash counts twice here (the views keep it once).
    """

    def __init__(self, lake: Path) -> None:
        self.lake = lake
        self.rows: dict[str, dict[str, int]] = {t: {} for t in LAKE_TABLES}

    def __call__(self) -> dict[str, int | None]:
        out: dict[str, int | None] = {}
        for table, known in self.rows.items():
            root = self.lake / table
            paths = {str(p) for p in root.rglob("*.parquet")} if root.exists() else set()
            for gone in set(known) - paths:
                del known[gone]  # a file of a flush that never committed, cleaned up
            try:
                for path in paths - set(known):
                    known[path] = pq.read_metadata(path).num_rows
            except (OSError, pa.ArrowException):
                out[table] = None  # renamed away while listed: read again next time
                continue
            out[table] = sum(known.values())
        return out

    def files(self) -> dict[str, int]:
        return {t: len(known) for t, known in self.rows.items()}


def retry_drops(bootstrap: str, topic: str, timeout: float = 900.0) -> dict[str, Any]:
    """Read ``topic`` back and count the events ingest drops as retries, by its own rules.

    Per partition, an item (event, or batch element) is a retry of an earlier one with the
    same key: its event_id when usable, otherwise a digest of its bytes (for a batch
    element, of the element alone). So an SDK retry, a repeat of the same keyless junk
    (the simulator sends ``true`` or a 502 page more than once) and a bad batch element
    equal to an earlier one (``[event, 42]`` twice) land neither in the lake nor in the DLQ.
    """
    plan = load_plan()
    event_id = Validator(plan, PiiHasher("soak"))._event_id
    c = Consumer(
        {
            "bootstrap.servers": bootstrap,
            "group.id": f"soak-scan-{os.getpid()}",
            "enable.auto.commit": False,
        }
    )

    def key(item: Item, value: bytes) -> bytes:
        if isinstance(item.obj, dict):
            try:
                usable = event_id(item.obj.get("event_id"))
            except Rejected:
                usable = None
            if isinstance(usable, str):
                return hashlib.blake2b(usable.encode(), digest_size=16).digest()
        return hashlib.blake2b(b"~" + element_bytes(item, value), digest_size=16).digest()

    try:
        parts = list(c.list_topics(topic=topic, timeout=10).topics[topic].partitions)
        ends = {p: c.get_watermark_offsets(TopicPartition(topic, p), timeout=10)[1] for p in parts}
        c.assign([TopicPartition(topic, p, OFFSET_BEGINNING) for p in parts])
        seen: dict[int, set[bytes]] = {p: set() for p in parts}
        left = {p for p in parts if ends[p] > 0}
        messages = items = dropped = 0
        deadline = time.monotonic() + timeout
        while left and time.monotonic() < deadline:
            for msg in c.consume(1000, timeout=1):
                p, offset = msg.partition(), msg.offset()
                if msg.error() or p is None or offset is None:
                    continue
                value = msg.value() or b""
                messages += 1
                for item in decode_message(value, plan):
                    items += 1
                    k = key(item, value)
                    if k in seen[p]:
                        dropped += 1
                    else:
                        seen[p].add(k)
                if offset + 1 >= ends[p]:
                    left.discard(p)
        return {
            "messages": messages,
            "items": items,
            "complete": not left,
            "retries_dropped_expected": dropped,
        }
    finally:
        c.close()


def gauge_by_topic(metrics: dict[str, float]) -> dict[str, float]:
    """The worker's lag gauge summed per topic (non-zero topics only)."""
    out: dict[str, float] = {}
    for k, v in metrics.items():
        if k.startswith("trackflow_consumer_lag_messages{") and v:
            topic = re.search(r'topic="([^"]*)"', k)
            name = topic.group(1) if topic else "?"
            out[name] = out.get(name, 0.0) + v
    return out


def load_average() -> float | None:
    try:
        return float(Path("/proc/loadavg").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return None


Offsets = dict[tuple[str, int], tuple[int, int]]


def by_topic(offsets: Offsets) -> dict[str, int]:
    out: dict[str, int] = {}
    for (topic, _), (position, end) in offsets.items():
        out[topic] = out.get(topic, 0) + max(0, end - position)
    return out


class GroupLag:
    """The consumer group's lag per topic, from the broker: log end - committed offset.

    Independent of the workers' gauges (which keep the last value of a partition a
    worker no longer owns). A partition the group never committed counts from its start.
    """

    def __init__(self, bootstrap: str, group: str, prefix: str) -> None:
        self.consumer = Consumer(
            {"bootstrap.servers": bootstrap, "group.id": group, "enable.auto.commit": False}
        )
        self.prefix = prefix

    def offsets(self) -> Offsets | None:
        """(topic, partition) -> (position, log end); position = the committed offset, or
        the log start while the group has committed none. None if the broker did not answer.
        """
        try:
            meta = self.consumer.list_topics(timeout=10)
            tps = [
                TopicPartition(name, p)
                for name, t in meta.topics.items()
                if name.startswith(self.prefix)
                for p in t.partitions
            ]
            out: Offsets = {}
            for tp in self.consumer.committed(tps, timeout=10):
                low, high = self.consumer.get_watermark_offsets(
                    TopicPartition(tp.topic, tp.partition), timeout=10, cached=False
                )
                out[tp.topic, tp.partition] = (tp.offset if tp.offset >= 0 else low, high)
            return out
        except Exception:
            return None

    def __call__(self) -> dict[str, int] | None:
        offsets = self.offsets()
        return None if offsets is None else by_topic(offsets)

    def close(self) -> None:
        self.consumer.close()


@dataclass
class Proc:
    """One worker process: its lifetime and its per-minute samples."""

    name: str
    worker: Worker
    started_s: float
    ended_s: float | None = None
    end: str = "running"
    samples: list[dict[str, Any]] = field(default_factory=list)
    last_metrics: dict[str, float] = field(default_factory=dict)

    @property
    def pid(self) -> int:
        return self.worker.proc.pid

    def poll(self) -> dict[str, float]:
        """Scrape /metrics; keep the last non-empty scrape (counters of a dead process)."""
        m = scrape(self.worker.web_port, timeout=5)
        if m:
            self.last_metrics = m
        return m

    def sample(self, t_s: float, raw_topic: str) -> dict[str, Any]:
        m = self.poll()
        s: dict[str, Any] = {
            "t_min": round(t_s / 60, 2),
            "rss_mb": proc_rss_mb(self.pid),
            "cpu_s": proc_cpu_s(self.pid),
            "metrics_served": bool(m),
        }
        if m:
            s |= {
                "received": metric_sum(m, "trackflow_events_received_total"),
                "stored": metric_sum(m, "trackflow_events_stored_total"),
                "dlq": metric_sum(m, "trackflow_dlq_events_total"),
                "duplicates": metric_sum(m, "trackflow_duplicates_total"),
                "late": metric_sum(m, "trackflow_late_events_total"),
                "offset_gaps": metric_sum(m, "trackflow_offset_gaps_total"),
                "lag": metric_sum(m, "trackflow_consumer_lag_messages"),
                "lag_raw": metric_sum(m, "trackflow_consumer_lag_messages", f'"{raw_topic}"'),
                "lag_partitions": sorted(
                    k.split("{", 1)[1].rstrip("}")
                    for k in m
                    if k.startswith("trackflow_consumer_lag_messages{") and f'"{raw_topic}"' in k
                ),
                "lag_by_topic": gauge_by_topic(m),
                "open_windows": metric_sum(m, "trackflow_metric_open_windows"),
                "dedup_ids": metric_sum(m, "trackflow_dedup_ids"),
            }
        self.samples.append(s)
        return s


@dataclass
class Options:
    minutes: float
    rate: float
    kill_every_minutes: float
    seed: int
    outage_start_minute: float
    outage_minutes: float
    outage_success_rate: float
    malformed_share: float
    duplicate_share: float
    idle_close_seconds: float
    settle_minutes: float
    log_level: str
    malloc: str


class Soak:
    def __init__(self, opts: Options, broker: EmbeddedBroker, work: Path) -> None:
        self.opts = opts
        self.work = work
        self.dep = Deployment(broker.url, work, "soak", partitions=PARTITIONS)
        env = self.dep.env
        # Production defaults for flushing and group timeouts, not the tests' short ones.
        for name in ("SINK_FLUSH_SECONDS", "SESSION_TIMEOUT", "REBALANCE_TIMEOUT"):
            env.pop(f"TRACKFLOW_{name}", None)
        env["TRACKFLOW_IDLE_CLOSE_SECONDS"] = str(opts.idle_close_seconds)
        env["TRACKFLOW_LOG_LEVEL"] = opts.log_level
        self.malloc = preload_malloc(env, opts.malloc)
        self.prefix = env["TRACKFLOW_TOPIC_PREFIX"]
        self.raw_topic = self.prefix + TOPIC_RAW
        self.broker_bootstrap = broker.bootstrap
        self.group_lag = GroupLag(broker.bootstrap, env["TRACKFLOW_APP_ID"], self.prefix)
        self.broker = broker
        self.broker_pid = broker.proc.pid if broker.proc else None
        self.procs: list[Proc] = []
        self.live: list[Proc] = []
        self.kills: list[dict[str, Any]] = []
        self.incidents: list[str] = []  # unexpected things seen, with evidence
        self.lake_rows = LakeRows(self.dep.data_dir / "lake")
        self.lake_series: list[dict[str, Any]] = []
        self.group_series: list[dict[str, Any]] = []
        self.t0 = time.monotonic()
        self.sim: subprocess.Popen[bytes] | None = None
        self.sim_started: datetime | None = None
        self.max_group_lag: dict[str, Any] = {"all": 0, "raw": 0}
        self.max_worker_lag: dict[str, Any] = {"all": 0.0, "raw": 0.0, "all_at": None}

    # -- processes -------------------------------------------------------------------

    def elapsed(self) -> float:
        return time.monotonic() - self.t0

    def start_worker(self) -> Proc:
        name = f"w{len(self.procs)}"
        try:
            worker = self.dep.start_worker()
        except AssertionError as exc:  # /metrics not served within 30 s: keep going
            worker = self.dep.workers[-1]
            self.incidents.append(f"{name} at minute {self.elapsed() / 60:.1f}: {exc}")
        proc = Proc(name, worker, self.elapsed())
        self.procs.append(proc)
        return proc

    def start_simulator(self) -> None:
        o = self.opts
        args = [str(BIN), "simulate", "--rate", str(o.rate), "--duration", str(o.minutes * 60)]
        args += ["--seed", str(o.seed), "--outage-start", str(o.outage_start_minute * 60)]
        args += ["--outage-minutes", str(o.outage_minutes)]
        args += ["--outage-success-rate", str(o.outage_success_rate)]
        args += ["--malformed-share", str(o.malformed_share)]
        args += ["--duplicate-share", str(o.duplicate_share)]
        self.sim_started = datetime.now(UTC)
        self.sim = subprocess.Popen(
            args,
            env=self.dep.env,
            stdout=subprocess.DEVNULL,
            stderr=open(self.work / "simulate.log", "wb"),  # noqa: SIM115
        )

    def kill_one(self, number: int) -> None:
        """SIGKILL the worker in slot ``number % 2`` and start its replacement at once."""
        slot = number % len(self.live)
        victim = self.live[slot]
        victim.poll()
        victim.worker.kill()
        victim.ended_s, victim.end = self.elapsed(), "sigkill"
        before = self.group_lag.offsets() or {}  # after the kill: no commit is in flight
        replacement = self.start_worker()
        self.live[slot] = replacement
        self.kills.append(
            {
                "t_min": round(victim.ended_s / 60, 2),
                "killed": victim.name,
                "replacement": replacement.name,
                "replacement_serving_after_s": round(replacement.started_s - victim.ended_s, 1),
                "group_lag_raw_at_kill": by_topic(before).get(self.raw_topic),
                "raw_committed_at_kill": {
                    str(p): pos for (t, p), (pos, _) in before.items() if t == self.raw_topic
                },
                "all_raw_partitions_resumed_after_s": None,
                "caught_up_after_s": None,
                "group_lag_raw_max_after": 0,
                "group_lag_raw_max_after_at_s": None,
            }
        )

    def check_crashes(self) -> None:
        for slot, p in enumerate(self.live):
            code = p.worker.proc.poll()
            if code is not None:
                p.ended_s, p.end = self.elapsed(), f"exited {code}"
                self.incidents.append(
                    f"{p.name} exited by itself with code {code} at minute "
                    f"{p.ended_s / 60:.1f}; log tail: {p.worker.log_text()[-1500:]}"
                )
                self.live[slot] = self.start_worker()

    # -- observation -----------------------------------------------------------------

    def poll(self) -> dict[str, int] | None:
        """Every few seconds: lag maxima and the catch-up of the last kill."""
        for p in self.live:
            m = p.poll()
            lag = metric_sum(m, "trackflow_consumer_lag_messages")
            raw = metric_sum(m, "trackflow_consumer_lag_messages", f'"{self.raw_topic}"')
            if lag > self.max_worker_lag["all"]:
                self.max_worker_lag["all"] = lag
                self.max_worker_lag["all_at"] = {
                    "t_min": round(self.elapsed() / 60, 2),
                    "worker": p.name,
                    "worker_age_s": round(self.elapsed() - p.started_s, 1),
                    "nonzero": {
                        k.split("{", 1)[1].rstrip("}"): v
                        for k, v in m.items()
                        if k.startswith("trackflow_consumer_lag_messages{") and v
                    },
                }
            self.max_worker_lag["raw"] = max(self.max_worker_lag["raw"], raw)
        offsets = self.group_lag.offsets()
        if offsets is None:
            return None
        group = by_topic(offsets)
        raw_lag = group.get(self.raw_topic, 0)
        t_min = round(self.elapsed() / 60, 2)
        if sum(group.values()) > self.max_group_lag["all"]:
            self.max_group_lag["all"], self.max_group_lag["all_at_min"] = sum(group.values()), t_min
        if raw_lag > self.max_group_lag["raw"]:
            self.max_group_lag["raw"], self.max_group_lag["raw_at_min"] = raw_lag, t_min
        if self.kills and self.kills[-1]["caught_up_after_s"] is None:
            self.follow_kill(self.kills[-1], offsets, raw_lag)
        return group

    def follow_kill(self, kill: dict[str, Any], offsets: Offsets, raw_lag: int) -> None:
        """Resumed: every events.raw partition with input since the kill has committed past
        its position at the kill. Caught up: resumed, and the raw lag back under ``rate``
        messages (about two seconds of input)."""
        since = round(self.elapsed() - kill["t_min"] * 60, 1)
        if raw_lag > kill["group_lag_raw_max_after"]:
            kill["group_lag_raw_max_after"], kill["group_lag_raw_max_after_at_s"] = raw_lag, since
        at_kill = kill["raw_committed_at_kill"]
        resumed = all(
            pos > at_kill.get(str(p), -1) or end <= at_kill.get(str(p), -1)
            for (t, p), (pos, end) in offsets.items()
            if t == self.raw_topic
        )
        if resumed and kill["all_raw_partitions_resumed_after_s"] is None:
            kill["all_raw_partitions_resumed_after_s"] = since
        if resumed and raw_lag <= self.opts.rate:
            kill["caught_up_after_s"] = since

    def sample(self, group: dict[str, int] | None) -> None:
        t = self.elapsed()
        gauges = [p.sample(t, self.raw_topic).get("lag") for p in self.live]
        counts = self.lake_rows()
        files = self.lake_rows.files()
        broker_rss = proc_rss_mb(self.broker_pid) if self.broker_pid else None
        self.lake_series.append(
            {
                "t_min": round(t / 60, 2),
                "lake_rows": counts,
                "lake_files": files,
                "broker_rss_mb": broker_rss,
                "bench_rss_mb": proc_rss_mb(os.getpid()),
                "group_lag_raw": None if group is None else group.get(self.raw_topic, 0),
                "group_lag_all": None if group is None else sum(group.values()),
                "workers_lag_gauge_sum": sum(g or 0 for g in gauges),
                "load_average_1m": load_average(),
            }
        )
        nonzero = None if group is None else {k: v for k, v in group.items() if v}
        self.group_series.append({"t_min": round(t / 60, 2), "lag": nonzero})

    # -- phases ----------------------------------------------------------------------

    def run(self) -> dict[str, Any]:
        self.live = [self.start_worker(), self.start_worker()]
        try:
            self.dep.wait_assigned([p.worker for p in self.live], timeout=180)
        except AssertionError as exc:
            self.incidents.append(f"before the traffic: {exc}")
        self.t0 = time.monotonic()
        for p in self.live:
            p.started_s = 0.0
        self.start_simulator()
        self.traffic_phase()
        settle = self.settle_phase()
        final_group = self.group_lag()
        final_workers = {p.name: p.sample(self.elapsed(), self.raw_topic) for p in self.live}
        return self.report(settle, final_group, final_workers)

    def traffic_phase(self) -> None:
        o = self.opts
        assert self.sim is not None
        kill_every = o.kill_every_minutes * 60
        next_kill, kills = kill_every, 0
        next_sample = 0.0
        deadline = o.minutes * 60 + 300  # the simulator may run a little over its duration
        while self.sim.poll() is None and self.elapsed() < deadline:
            if self.broker.proc is None or self.broker.proc.poll() is not None:
                self.incidents.append(f"the broker died at minute {self.elapsed() / 60:.1f}")
                break
            self.check_crashes()
            if kill_every > 0 and self.elapsed() >= next_kill and next_kill < o.minutes * 60:
                self.kill_one(kills)
                kills += 1
                next_kill += kill_every
            group = self.poll()
            if self.elapsed() >= next_sample:
                self.sample(group)
                next_sample += SAMPLE_SECONDS
            time.sleep(POLL_SECONDS)
        if self.sim.poll() is None:
            self.incidents.append("the simulator was still running past its duration + 5 min")
            self.sim.terminate()
            self.sim.wait(30)

    def settle_phase(self) -> dict[str, Any]:
        """Until the group has no lag and the lake stayed the same for ``quiet`` seconds."""
        o = self.opts
        started = self.elapsed()
        quiet = max(60.0, 3 * o.idle_close_seconds)
        last: dict[str, int | None] | None = None
        stable_since = started
        next_sample = started + SAMPLE_SECONDS
        while self.elapsed() - started < o.settle_minutes * 60:
            self.check_crashes()
            group = self.poll()
            counts = self.lake_rows()
            if counts != last or group is None or any(group.values()):
                last, stable_since = counts, self.elapsed()
            elif self.elapsed() - stable_since >= quiet:
                return {
                    "settled": True,
                    "seconds": round(self.elapsed() - started, 1),
                    "quiet_seconds": quiet,
                }
            if self.elapsed() >= next_sample:
                self.sample(group)
                next_sample += SAMPLE_SECONDS
            time.sleep(POLL_SECONDS)
        self.incidents.append(
            f"the pipeline did not settle within {o.settle_minutes} minutes after the traffic: "
            f"group lag {self.group_lag()}, lake {self.lake_rows()}"
        )
        return {"settled": False, "seconds": round(self.elapsed() - started, 1)}

    def stop(self) -> None:
        if self.sim is not None and self.sim.poll() is None:
            self.sim.terminate()
            self.sim.wait(30)
        for p in self.live:
            if p.end == "running":
                p.ended_s, p.end = self.elapsed(), "stopped"
        self.dep.stop()
        self.group_lag.close()

    # -- results ---------------------------------------------------------------------

    def report(
        self,
        settle: dict[str, Any],
        final_group: dict[str, int] | None,
        final_workers: dict[str, dict[str, Any]],
    ) -> dict[str, Any]:
        sim = simulator_summary(self.work / "simulate.log", self.sim)
        events = self.events_section(sim)
        rollups = self.rollups_section()
        alerts = self.alerts_section()
        rss = rss_section(self.procs)
        lag = {
            "group_max": self.max_group_lag,
            "group_final": final_group,
            "workers_max_gauge": self.max_worker_lag,
            "workers_final_gauge": {
                k: {"lag": v.get("lag"), "by_topic": v.get("lag_by_topic")}
                for k, v in final_workers.items()
            },
            "note": "group = the broker's log end minus the group's committed offset, summed "
            "per topic; gauge = trackflow_consumer_lag_messages as each worker reports it",
        }
        checks = {
            "settled": settle["settled"],
            "events_accounted": events["unaccounted"] == 0 and events["producer_copies"] >= 0,
            "no_event_stored_twice": events["stored_twice"] == 0,
            "rollups_exact": rollups["exact"]["mismatches"] == 0,
            "uv_within_2pct_after_warmup": rollups["uv"]["outside_2pct_after_warmup"] == 0,
            "funnel_exact": rollups["purchase_funnel"]["mismatches"] == 0,
            "no_rollup_stored_twice": rollups["stored_twice"] == 0,
            "one_payment_incident_in_outage_resolved": alerts["outage_incident_ok"],
            "no_incident_stored_twice": alerts["fire_records_stored_twice"] == 0,
            "rss_growth_after_10min_within_10pct": rss["all_within_limit"],
            "final_group_lag_zero": final_group is not None and not any(final_group.values()),
            "caught_up_after_every_kill": all(
                k["caught_up_after_s"] is not None for k in self.kills
            ),
            "no_worker_exited_by_itself": not any(p.end.startswith("exited") for p in self.procs),
        }
        summary = {
            "events_sent": events["sent"],
            "events_stored": events["stored"],
            "dlq_rows": events["dlq_rows"],
            "retries_dropped": events["retries_dropped_expected"],
            "unaccounted": events["unaccounted"],
            "producer_copies": events["producer_copies"],
            "rollup_mismatches_exact": rollups["exact"]["mismatches"],
            "rollup_series_exact": rollups["exact"]["series"],
            "alerts": alerts["by_rule"],
            "rss_max_mb": rss["max_mb"],
            "rss_growth_after_10min": {
                k: v.get("growth_after_10min") for k, v in rss["per_process"].items()
            },
            "group_lag_max": self.max_group_lag,
            "group_lag_final_total": None if final_group is None else sum(final_group.values()),
            "kill_catch_up_s": [k["caught_up_after_s"] for k in self.kills],
        }
        return {
            "run": self.run_section(),
            "checks": checks,
            "summary": summary,
            "simulator": sim,
            "events": events,
            "rollups": rollups,
            "alerts": alerts,
            "rss": rss,
            "lag": lag,
            "kills": self.kills,
            "settle": settle,
            "incidents": self.incidents,
            "minute_series": self.lake_series,
            "group_lag_series": self.group_series,
            "processes": [
                {
                    "name": p.name,
                    "pid": p.pid,
                    "started_min": round(p.started_s / 60, 2),
                    "ended_min": None if p.ended_s is None else round(p.ended_s / 60, 2),
                    "end": p.end,
                    "log": str(p.worker.log),
                    "samples": p.samples,
                }
                for p in self.procs
            ],
        }

    def partial(self, why: str) -> dict[str, Any]:
        """What was seen before an interruption; no end-of-run checks."""
        self.incidents.append(why)
        return {
            "run": self.run_section(),
            "partial": True,
            "incidents": self.incidents,
            "simulator": simulator_summary(self.work / "simulate.log", self.sim),
            "kills": self.kills,
            "lag": {"group_max": self.max_group_lag, "workers_max_gauge": self.max_worker_lag},
            "rss": rss_section(self.procs),
            "minute_series": self.lake_series,
            "group_lag_series": self.group_series,
            "processes": [{"name": p.name, "end": p.end, "samples": p.samples} for p in self.procs],
        }

    def run_section(self) -> dict[str, Any]:
        o = self.opts
        start = self.sim_started or datetime.now(UTC)
        outage_start = start.timestamp() + o.outage_start_minute * 60
        return {
            "started_at": start.isoformat(timespec="seconds"),
            "minutes": o.minutes,
            "rate_events_per_s": o.rate,
            "kill_every_minutes": o.kill_every_minutes,
            "workers": 2,
            "partitions": PARTITIONS,
            "seed": o.seed,
            "outage": {
                "start_minute": o.outage_start_minute,
                "minutes": o.outage_minutes,
                "success_rate": o.outage_success_rate,
                "start": datetime.fromtimestamp(outage_start, UTC).isoformat(timespec="seconds"),
                "end": datetime.fromtimestamp(outage_start + o.outage_minutes * 60, UTC).isoformat(
                    timespec="seconds"
                ),
            },
            "malformed_share": o.malformed_share,
            "duplicate_share": o.duplicate_share,
            "idle_close_seconds": o.idle_close_seconds,
            "malloc": self.malloc,
            "worker_env": {
                k: v
                for k, v in self.dep.env.items()
                if k.startswith("TRACKFLOW_") and k != "TRACKFLOW_PII_SECRET"
            },
            "machine": {"cpus": os.cpu_count(), "python": platform.python_version()},
            "code": code_version(),
            "work_dir": str(self.work),
        }

    def events_section(self, sim: dict[str, Any]) -> dict[str, Any]:
        con = connect(self.dep.data_dir)
        try:
            stored, distinct = con.execute(
                "SELECT count(*), count(DISTINCT event_id) FROM events"
            ).fetchone() or (0, 0)
            dlq = con.execute("SELECT count(*) FROM dlq").fetchone()
            by_code = con.execute(
                "SELECT error_code, count(*) FROM dlq GROUP BY 1 ORDER BY 2 DESC"
            ).fetchall()
            dlq_twice = con.execute(
                "SELECT count(*) FROM (SELECT source_topic, source_partition, source_offset, "
                "source_index, event_id FROM dlq GROUP BY ALL HAVING count(*) > 1)"
            ).fetchone()
        finally:
            con.close()
        dlq_rows = int(dlq[0]) if dlq else 0
        sent = int(sim.get("events", 0))
        wire = retry_drops(self.broker_bootstrap, self.raw_topic)
        return {
            "sent": sent,
            "sent_messages": sim.get("messages"),
            "raw_topic": wire,
            "stored": int(stored),
            "stored_twice": int(stored) - int(distinct),
            "dlq_rows": dlq_rows,
            "dlq_by_error_code": dict(by_code),
            "dlq_stored_twice": int(dlq_twice[0]) if dlq_twice else 0,
            "sdk_retries_sent": int(sim.get("kinds", {}).get("duplicate", 0)),
            "retries_dropped_expected": wire["retries_dropped_expected"],
            # Items in events.raw beyond those the simulator had acknowledged: copies the
            # producer's own retries appended (ingest drops them as retries).
            "producer_copies": wire["items"] - sent,
            "unaccounted": wire["items"]
            - int(distinct)
            - dlq_rows
            - wire["retries_dropped_expected"],
            "note": "unaccounted = items in events.raw - distinct event ids stored - dead "
            "letters - events "
            "ingest drops as retries (raw_topic: events.raw read back, keyed as ingest keys "
            "its dedup memory: SDK retries, repeated keyless junk, bad batch elements equal "
            "to an earlier one of the partition); 0 when nothing was lost or stored twice",
            "worker_counters_summed_over_processes": {
                name: sum(metric_sum(p.last_metrics, metric) for p in self.procs)
                for name, metric in (
                    ("received", "trackflow_events_received_total"),
                    ("stored", "trackflow_events_stored_total"),
                    ("dlq", "trackflow_dlq_events_total"),
                    ("duplicates_dropped", "trackflow_duplicates_total"),
                    ("late_events", "trackflow_late_events_total"),
                    ("offset_gaps", "trackflow_offset_gaps_total"),
                    ("lake_fenced_flushes", "trackflow_lake_fenced_flushes_total"),
                )
            },
            "worker_counters_note": "each process's last scrape (every 5 s), summed: a killed "
            "process's last seconds are missing, and work redone after a kill counts twice",
        }

    def rollups_section(self) -> dict[str, Any]:
        defs = load_metrics(load_plan())
        start = (self.sim_started or datetime.now(UTC)).timestamp()
        lo = datetime.fromtimestamp(start - 3600, UTC)
        hi = datetime.fromtimestamp(time.time() + 3600, UTC)
        con = connect(self.dep.data_dir)
        try:
            expected = {
                name: {
                    (r["metric"], r["window"], r["window_start"], r["dimensions"]): r
                    for r in batch_values(con, defs, name, lo, hi)
                }
                for name in [*EXACT, "uv", "purchase_funnel"]
            }
            glob = str(self.dep.data_dir / "lake" / "rollups" / "**" / "*.parquet")
            twice = con.execute(
                'SELECT metric, "window", window_start, dimensions, count(*) AS n FROM '
                f"read_parquet('{glob}') GROUP BY ALL HAVING count(*) > 1"
            ).fetchall()
        finally:
            con.close()
        got = stream_rollups(self.dep)
        exact = compare(got, expected, EXACT, ("value", "numerator", "denominator"))
        funnel = compare(got, expected, ["purchase_funnel"], ("value",))
        uv_out = []
        warm_ms = (start + UV_WARMUP_MINUTES * 60) * 1000
        for key, want in expected["uv"].items():
            have = got.get(key)
            if have is None or abs(have["value"] - want["value"]) > 0.02 * want["value"]:
                uv_out.append([*key, None if have is None else have["value"], want["value"]])
        uv_late = [u for u in uv_out if u[1] == "1h" or u[2] >= warm_ms]
        return {
            "exact_metrics": EXACT,
            "stream_rows": len(got),
            "exact": exact,
            "uv": {
                "series": len(expected["uv"]),
                "outside_2pct": len(uv_out),
                "outside_2pct_after_warmup": len(uv_late),
                "shown (stream, lake)": uv_out[:SHOWN],
                "note": "uv counts persons as the identity map knows them when a window "
                "closes; the lake recomputation uses the final map. In the first minutes "
                "most devices are linked to members for the first time, after their first "
                "windows closed, so those windows count more persons in the stream. 1m "
                f"windows starting in the first {UV_WARMUP_MINUTES:g} minutes are left out "
                "of outside_2pct_after_warmup",
            },
            "purchase_funnel": funnel,
            "stored_twice": len(twice),
            "stored_twice_shown": [list(map(str, r)) for r in twice[:SHOWN]],
        }

    def alerts_section(self) -> dict[str, Any]:
        o = self.opts
        con = connect(self.dep.data_dir)
        try:
            cur = con.execute(
                'SELECT alert_id, rule, metric, dimensions, severity, window_start, "at", '
                "window_end, observed, expected, resolved_at, resolved_window_end, message "
                'FROM alerts ORDER BY "at"'
            )
            cols = [d[0] for d in cur.description]
            rows = [dict(zip(cols, r, strict=True)) for r in cur.fetchall()]
            glob = str(self.dep.data_dir / "lake" / "alerts" / "**" / "*.parquet")
            fire_twice = 0
            if rows:
                res = con.execute(
                    "SELECT count(*) FROM (SELECT alert_id FROM read_parquet("
                    f"'{glob}') WHERE kind = 'fire' GROUP BY 1 HAVING count(*) > 1)"
                ).fetchone()
                fire_twice = int(res[0]) if res else 0
        finally:
            con.close()
        start = (self.sim_started or datetime.now(UTC)).timestamp()
        out_lo = start + o.outage_start_minute * 60
        out_hi = out_lo + o.outage_minutes * 60
        payment = [r for r in rows if r["rule"] == PAYMENT_RULE]
        in_outage = [
            r
            for r in payment
            if r["window_start"].timestamp() < out_hi + 300 and r["window_end"].timestamp() > out_lo
        ]
        plain = orjson.loads(orjson.dumps(rows, default=str))
        return {
            "incidents": len(rows),
            "by_rule": {
                rule: sum(1 for r in rows if r["rule"] == rule)
                for rule in {r["rule"] for r in rows}
            },
            "payment_incidents_in_outage": len(in_outage),
            "payment_incidents_outside_outage": len(payment) - len(in_outage),
            "outage_incident_ok": len(payment) == 1
            and len(in_outage) == 1
            and in_outage[0]["resolved_at"] is not None,
            "fire_records_stored_twice": fire_twice,
            "rows": plain,
        }


def compare(
    got: dict[RollupKey, dict[str, Any]],
    expected: dict[str, dict[RollupKey, dict[str, Any]]],
    names: list[str],
    fields: tuple[str, ...],
) -> dict[str, Any]:
    """Stream finals vs the lake recomputation: differing, missing and extra series."""
    want = {k: v for n in names for k, v in expected[n].items()}
    differ = [
        [*map(str, k), {f: [got[k][f], v[f]] for f in fields if got[k][f] != v[f]}]
        for k, v in want.items()
        if k in got and any(got[k][f] != v[f] for f in fields)
    ]
    missing = [list(map(str, k)) for k in want if k not in got]
    extra = [list(map(str, k)) for k in got if k[0] in names and k not in want]
    return {
        "series": len(want),
        "mismatches": len(differ) + len(missing) + len(extra),
        "differ": len(differ),
        "missing_in_stream": len(missing),
        "extra_in_stream": len(extra),
        "differ_shown (stream, lake)": sorted(differ)[:SHOWN],
        "missing_shown": sorted(missing)[:SHOWN],
        "extra_shown": sorted(extra)[:SHOWN],
    }


def rss_section(procs: list[Proc]) -> dict[str, Any]:
    """Per process: first, 10th-minute and last RSS; growth after its first ten minutes."""
    per: dict[str, Any] = {}
    within = True
    for p in procs:
        series = [(s["t_min"] - p.started_s / 60, s["rss_mb"]) for s in p.samples if s["rss_mb"]]
        if not series:
            continue
        entry: dict[str, Any] = {
            "sampled_min": round(series[-1][0], 1),
            "first_mb": series[0][1],
            "last_mb": series[-1][1],
            "max_mb": max(r for _, r in series),
            "growth_first_to_last": round(series[-1][1] / series[0][1] - 1, 3),
            "series_mb": [r for _, r in series],
        }
        warm = [(t, r) for t, r in series if t >= RSS_WARMUP_MINUTES - 0.5]
        if len(warm) >= 2:
            growth = warm[-1][1] / warm[0][1] - 1
            entry["at_10min_mb"] = warm[0][1]
            entry["growth_after_10min"] = round(growth, 3)
            within = within and growth <= RSS_MAX_GROWTH
        per[p.name] = entry
    return {
        "max_mb": max((e["max_mb"] for e in per.values()), default=None),
        "limit_growth_after_10min": RSS_MAX_GROWTH,
        "all_within_limit": within,
        "per_process": per,
    }


def preload_malloc(env: dict[str, str], choice: str) -> dict[str, str | None]:
    """Preload jemalloc into the soak's processes unless ``system`` is asked for;
    ``jemalloc`` without the library is an error, not a quiet fallback, so a run never
    reports the wrong allocator."""
    lib = find_jemalloc() if choice != "system" else None
    if choice == "jemalloc" and lib is None:
        raise SystemExit(
            "--malloc jemalloc: no libjemalloc.so.2"
            " (apt-get install libjemalloc2, or --malloc system for glibc's)"
        )
    if lib is None:
        env.pop("LD_PRELOAD", None)
        return {"name": "system", "library": None}
    env["LD_PRELOAD"] = str(lib)
    return {"name": "jemalloc", "library": str(lib)}


def code_version() -> dict[str, Any]:
    """Which code ran: the checkout (workers inherit PYTHONPATH) and its commit."""
    import pipeline

    def git(*args: str) -> str | None:
        try:
            out = subprocess.run(
                ["git", "-C", str(ROOT), *args], capture_output=True, timeout=30, check=True
            )
        except (OSError, subprocess.SubprocessError):
            return None
        return out.stdout.decode().strip()

    changed = git("status", "--porcelain", "--", "pipeline", "agents", "tables", "schemas")
    return {
        "pipeline_dir": str(Path(pipeline.__file__).resolve().parent),
        "pythonpath": os.environ.get("PYTHONPATH"),
        "git_head": git("rev-parse", "HEAD"),
        "production_code_changed_since_head": None if changed is None else bool(changed),
    }


def simulator_summary(log: Path, proc: subprocess.Popen[bytes] | None) -> dict[str, Any]:
    text = log.read_text(errors="replace") if log.exists() else ""
    found = re.findall(r"sent (\d+) messages / (\d+) events in ([\d.]+)s \(([^)]*)\)", text)
    out: dict[str, Any] = {"exit_code": None if proc is None else proc.returncode}
    if not found:
        return out | {"log_tail": text[-2000:]}
    messages, events, seconds, kinds = found[-1]
    out |= {
        "messages": int(messages),
        "events": int(events),
        "seconds": float(seconds),
        "kinds": {k: int(v) for k, v in (kv.split("=") for kv in kinds.split(", ") if kv)},
    }
    return out


def parse_args() -> tuple[Options, Path, Path | None]:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    ap.add_argument("--minutes", type=float, default=60.0, help="minutes of traffic")
    ap.add_argument("--rate", type=float, default=200.0, help="simulated events per second")
    ap.add_argument("--kill-every-minutes", type=float, default=10.0, help="0: no SIGKILLs")
    ap.add_argument("--seed", type=int, default=13)
    ap.add_argument("--outage-start-minute", type=float, help="default: 25/60 of the run")
    ap.add_argument("--outage-minutes", type=float, help="default: 8/60 of the run")
    ap.add_argument("--outage-success-rate", type=float, default=0.3)
    ap.add_argument("--malformed-share", type=float, default=0.01)
    ap.add_argument("--duplicate-share", type=float, default=0.01)
    ap.add_argument("--idle-close-seconds", type=float, default=20.0)
    ap.add_argument("--settle-minutes", type=float, default=15.0, help="max wait at the end")
    ap.add_argument("--log-level", default="info", help="workers' TRACKFLOW_LOG_LEVEL")
    ap.add_argument(
        "--malloc",
        choices=("auto", "jemalloc", "system"),
        default="jemalloc",
        help="the workers' malloc (the image runs jemalloc; auto: jemalloc when installed)",
    )
    ap.add_argument("--work-dir", type=Path, help="default: a new directory under /tmp (kept)")
    ap.add_argument(
        "--out", type=Path, default=ROOT / "bench" / "results" / f"{date.today()}-soak.json"
    )
    a = ap.parse_args()
    opts = Options(
        minutes=a.minutes,
        rate=a.rate,
        kill_every_minutes=a.kill_every_minutes,
        seed=a.seed,
        outage_start_minute=(
            a.outage_start_minute if a.outage_start_minute is not None else a.minutes * 25 / 60
        ),
        outage_minutes=a.outage_minutes if a.outage_minutes is not None else a.minutes * 8 / 60,
        outage_success_rate=a.outage_success_rate,
        malformed_share=a.malformed_share,
        duplicate_share=a.duplicate_share,
        idle_close_seconds=a.idle_close_seconds,
        settle_minutes=a.settle_minutes,
        log_level=a.log_level,
        malloc=a.malloc,
    )
    return opts, a.out, a.work_dir


class Terminated(Exception):
    """SIGTERM: stop, and still write what was seen so far."""


def _terminate(signum: int, _frame: object) -> None:
    raise Terminated(f"signal {signum}")


def main() -> None:
    opts, out, work_dir = parse_args()
    work = work_dir or Path(tempfile.mkdtemp(prefix="trackflow-soak-"))
    work.mkdir(parents=True, exist_ok=True)
    print(f"soak: {opts.minutes} min, work dir {work}", file=sys.stderr)
    signal.signal(signal.SIGTERM, _terminate)
    with EmbeddedBroker(log=work / "broker.log") as broker:
        soak = Soak(opts, broker, work)
        try:
            result = soak.run()
        except Terminated as exc:
            result = soak.partial(f"the soak got {exc} at minute {soak.elapsed() / 60:.1f}")
        finally:
            signal.signal(signal.SIGTERM, signal.SIG_DFL)
            soak.stop()
    emit(result, out)


if __name__ == "__main__":
    main()
