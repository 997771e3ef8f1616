"""``trackflow demo``: embedded broker, a worker process and simulated traffic, then a summary."""

from __future__ import annotations

import os
import secrets
import shutil
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import IO

import orjson
from rich.console import Console
from rich.live import Live
from rich.table import Table

from pipeline.names import TOPIC_RAW
from pipeline.runtime.kafka_admin import ensure_topic
from pipeline.runtime.telemetry import scrape
from pipeline.settings import Settings
from pipeline.tools.broker import EmbeddedBroker, free_port, wait_for_port
from pipeline.tools.http_sender import HttpSender
from pipeline.tools.produce import RawProducer
from pipeline.tools.simulation_run import SimSummary, run_simulation
from pipeline.tools.simulator import SimConfig

MARKER = ".trackflow-demo"
SOURCES = "sources.json"  # --via http: the demo collector's one source, "demo"


def _sum(metrics: dict[str, float], prefix: str) -> float:
    return sum(v for k, v in metrics.items() if k == prefix or k.startswith(prefix + "{"))


def prepare_data_dir(data_dir: Path) -> None:
    """The demo's broker is new and empty, so an old demo lake must go (its checkpoints
    refer to offsets of a broker that no longer exists). Anything else is left alone."""
    if data_dir.exists() and any(data_dir.iterdir()):
        if not (data_dir / MARKER).exists():
            raise SystemExit(
                f"{data_dir} is not empty and was not made by `trackflow demo`; "
                "pass --data-dir with a new directory"
            )
        for child in ("lake", "faust", "worker.log", "broker.log", "collector.log", SOURCES):
            path = data_dir / child
            if path.is_dir():
                shutil.rmtree(path)
            elif path.exists():
                path.unlink()
    data_dir.mkdir(parents=True, exist_ok=True)
    (data_dir / MARKER).write_text("created by trackflow demo; `trackflow demo` may wipe it\n")


def progress_table(
    sim: SimSummary, m: dict[str, float], phase: str, collector: dict[str, float] | None = None
) -> Table:
    table = Table(title=f"trackflow demo — {phase}", show_header=True)
    table.add_column("measure")
    table.add_column("value", justify="right")
    rows: list[tuple[str, float]] = [("events sent by simulator", sim.events)]
    if collector is not None:  # --via http
        rows += [
            ("events accepted by the collector", _sum(collector, ACCEPTED)),
            ("requests refused (4xx)", _refused(collector)),
        ]
    rows += [
        ("events received by worker", _sum(m, "trackflow_events_received_total")),
        ("events stored in the lake", _sum(m, "trackflow_events_stored_total")),
        ("dead-lettered", _sum(m, "trackflow_dlq_events_total")),
        ("duplicates dropped", _sum(m, "trackflow_duplicates_total")),
        ("consent drops", _sum(m, "trackflow_consent_dropped_total")),
        ("persons known (One ID)", _sum(m, "trackflow_identity_persons")),
        ("metric windows finalised", _sum(m, "trackflow_metric_windows_closed_total")),
        ("lake files written", _sum(m, "trackflow_lake_files_written_total")),
    ]
    for name, value in rows:
        table.add_row(name, f"{int(value):,}")
    return table


def run_demo(
    settings: Settings,
    duration: float,
    rate: float,
    port: int | None = None,
    via: str = "kafka",
) -> int:
    """Broker, worker and traffic up; watch until the lake has it all; summary; teardown.

    ``via="http"``: a collector process too, and the traffic goes through it as Segment
    batch calls, as a web page or mini-program sends it.
    """
    console = Console()
    data_dir = settings.data_dir.resolve()
    prepare_data_dir(data_dir)
    broker = EmbeddedBroker(port=port, log=data_dir / "broker.log")
    web_port = _web_port(settings)
    console.print(f"[bold]starting embedded broker[/] on {broker.bootstrap} ...")
    broker.start()
    env = _worker_env(broker, data_dir, web_port)
    ensure_topic(broker.bootstrap, settings.topic(TOPIC_RAW), settings.partitions)
    log = open(data_dir / "worker.log", "ab")  # noqa: SIM115
    processes = [
        subprocess.Popen(
            [sys.executable, "-m", "pipeline", "worker"],
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
    ]
    console.print(
        f"[bold]worker[/] pid {processes[0].pid}, metrics on http://127.0.0.1:{web_port}/metrics"
    )
    producer: RawProducer | HttpSender
    collector_port = None
    if via == "http":
        collector_port, write_key = _start_collector(console, env, data_dir, processes, log)
        producer = HttpSender(f"http://127.0.0.1:{collector_port}", write_key)
    else:
        producer = RawProducer(broker.bootstrap, settings.topic(TOPIC_RAW))
    traffic = _Traffic(producer, _demo_config(duration, rate))
    traffic.start()
    watch = _Watch(console, web_port, traffic, processes, data_dir, collector_port)
    code = 0
    try:
        watch.run()
    except RuntimeError as exc:
        console.print(f"[red]{exc}[/]")
        code = 1
    finally:
        if traffic.done.is_set():  # else its thread still sends; the process exits anyway
            producer.close()
        _stop(processes, broker, log)
    if code == 0:
        print_summary(console, data_dir, watch.metrics)
    return code


ACCEPTED = "trackflow_collector_events_accepted_total"


def _refused(metrics: dict[str, float]) -> float:
    prefix = "trackflow_collector_requests_total{"
    return sum(v for k, v in metrics.items() if k.startswith(prefix) and 'code="4' in k)


def _start_collector(
    console: Console,
    env: dict[str, str],
    data_dir: Path,
    processes: list[subprocess.Popen[bytes]],
    log: IO[bytes],
) -> tuple[int, str]:
    """A collector process with one source, ``demo``, whose write key is made up here."""
    write_key = secrets.token_urlsafe(24)
    sources = data_dir / SOURCES
    sources.write_bytes(
        orjson.dumps([{"name": "demo", "write_key": write_key, "platform": "miniprogram"}])
    )
    sources.chmod(0o600)
    port = free_port()
    collector_log = open(data_dir / "collector.log", "ab")  # noqa: SIM115
    processes.append(
        subprocess.Popen(
            [sys.executable, "-m", "pipeline", "collect", "--port", str(port)],
            env={**env, "TRACKFLOW_SOURCES": str(sources)},
            stdout=collector_log,
            stderr=subprocess.STDOUT,
        )
    )
    try:
        wait_for_port("127.0.0.1", port, timeout=60)
    except TimeoutError:
        raise SystemExit(f"the collector did not start; see {data_dir}/collector.log") from None
    console.print(
        f"[bold]collector[/] pid {processes[-1].pid}, Tracking API on http://127.0.0.1:{port}"
        f"/v1/batch, metrics on http://127.0.0.1:{port}/metrics"
    )
    return port, write_key


def _web_port(settings: Settings) -> int:
    """The configured metrics port, or any free one when it is unset or taken."""
    web_port = settings.web_port if settings.web_port else free_port()
    try:
        wait_for_port("127.0.0.1", web_port, timeout=0.1)
        web_port = free_port()  # the default port is taken: use any free one
    except TimeoutError:
        pass
    return web_port


PRODUCTION_CLUSTER_ENV = (
    "TRACKFLOW_KAFKA_",
    "TRACKFLOW_REPLICATION_FACTOR",
    "TRACKFLOW_MIN_INSYNC_REPLICAS",
)


def _worker_env(broker: EmbeddedBroker, data_dir: Path, web_port: int) -> dict[str, str]:
    """Short timeouts so a demo worker joins, rebalances and finishes within seconds."""
    return {
        # The embedded broker is plaintext with one node: a shell set up for a production
        # cluster (TLS, SASL, replication 3) must not leak into the demo's worker.
        **{k: v for k, v in os.environ.items() if not k.startswith(PRODUCTION_CLUSTER_ENV)},
        "TRACKFLOW_BROKER": broker.url,
        "TRACKFLOW_DATA_DIR": str(data_dir),
        "TRACKFLOW_WEB_PORT": str(web_port),
        "TRACKFLOW_DEV": "1",  # a demo: a PII key generated for its own data directory
        "TRACKFLOW_REBALANCE_TIMEOUT": "2",
        "TRACKFLOW_SESSION_TIMEOUT": "6",
        "TRACKFLOW_LOG_LEVEL": "warning",
        # The demo's traffic stops at the end: close its last windows soon after.
        "TRACKFLOW_IDLE_CLOSE_SECONDS": "5",
    }


def _demo_config(duration: float, rate: float) -> SimConfig:
    """A little of every kind of bad traffic, and an outage in the second half to alert on."""
    return SimConfig(
        rate=rate,
        duration=duration,
        seed=int(time.time()) % 100_000,
        malformed_share=0.02,
        duplicate_share=0.01,
        consent_withdrawn_share=0.01,
        outage_start=duration * 0.6,
        outage_minutes=duration * 0.2 / 60,
    )


class _Traffic:
    """Paced simulated traffic on a background thread, so the live table can follow it."""

    def __init__(self, producer: RawProducer | HttpSender, config: SimConfig) -> None:
        self.summary = SimSummary()  # the live table reads it; run_simulation updates it
        self.done = threading.Event()
        self._producer = producer
        self._config = config

    def start(self) -> None:
        threading.Thread(target=self._simulate, daemon=True).start()

    def _progress(self, summary: SimSummary) -> None:
        self.summary = summary

    def _simulate(self) -> None:
        summary = run_simulation(
            self._producer, self._config, paced=True, on_progress=self._progress
        )
        self._progress(summary)
        self.done.set()


class _Watch:
    """The live table through the demo's phases: sending, draining, closing windows."""

    def __init__(
        self,
        console: Console,
        web_port: int,
        traffic: _Traffic,
        processes: list[subprocess.Popen[bytes]],
        data_dir: Path,
        collector_port: int | None = None,
    ) -> None:
        self.console = console
        self.web_port = web_port
        self.traffic = traffic
        self.processes = processes
        self.data_dir = data_dir
        self.collector_port = collector_port
        self.metrics: dict[str, float] = {}
        self.collector: dict[str, float] | None = {} if collector_port else None
        # What the worker must receive: what was sent, or (--via http) what the collector
        # accepted (it refuses what is not JSON: a 400 to a broken client).
        self.expected: Callable[[], float] = (
            (lambda: _sum(self.collector or {}, ACCEPTED))
            if collector_port
            else (lambda: self.traffic.summary.events)
        )

    def run(self) -> None:
        first = progress_table(self.traffic.summary, self.metrics, "sending")
        with Live(first, console=self.console, refresh_per_second=4) as live:
            self._sending(live)
            self._draining(live)
            self._closing(live)
            live.update(self._table("done"))

    def _table(self, phase: str) -> Table:
        return progress_table(self.traffic.summary, self.metrics, phase, self.collector)

    def _scrape(self) -> None:
        self.metrics = scrape(self.web_port) or self.metrics
        if self.collector_port:
            self.collector = scrape(self.collector_port) or self.collector

    def _sending(self, live: Live) -> None:
        while not self.traffic.done.is_set():
            time.sleep(0.5)
            self._scrape()
            live.update(self._table("sending"))
            for proc, name in zip(self.processes, ("worker", "collector"), strict=False):
                if proc.poll() is not None:
                    raise RuntimeError(
                        f"{name} exited with {proc.returncode}; see {self.data_dir}/{name}.log"
                    )

    def _draining(self, live: Live) -> None:
        """Until every event sent is received and accounted for, or 90 s pass."""
        deadline = time.monotonic() + 90
        while time.monotonic() < deadline:
            self._scrape()
            live.update(self._table("draining"))
            metrics = self.metrics
            accounted = (
                _sum(metrics, "trackflow_events_stored_total")
                + _sum(metrics, 'trackflow_lake_rows_written_total{table="dlq"}')
                + _sum(metrics, "trackflow_duplicates_total")
                + _sum(metrics, "trackflow_consent_dropped_total")
            )
            received = _sum(metrics, "trackflow_events_received_total")
            if received >= self.expected() and accounted >= received:
                break
            time.sleep(0.5)

    def _closing(self, live: Live) -> None:
        """The last windows close on idle input; wait up to 30 s for them."""
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            self._scrape()
            live.update(self._table("closing metric windows"))
            if _sum(self.metrics, "trackflow_metric_open_windows") == 0 and _sum(
                self.metrics, "trackflow_metric_windows_closed_total"
            ):
                time.sleep(1.0)  # let the sink store the last finals
                break
            time.sleep(0.5)


def _stop(processes: list[subprocess.Popen[bytes]], broker: EmbeddedBroker, log: IO[bytes]) -> None:
    for proc in reversed(processes):  # the collector first: it flushes to the broker
        proc.terminate()
        try:
            proc.wait(20)
        except subprocess.TimeoutExpired:
            proc.kill()
    broker.stop()
    log.close()


def print_summary(console: Console, data_dir: Path, metrics: dict[str, float]) -> None:
    from pipeline.lake.views import connect, run
    from pipeline.tools.console import print_table

    con = connect(data_dir)
    print_table(
        *run(con, "SELECT event_name, count(*) AS stored FROM events GROUP BY 1 ORDER BY 2 DESC"),
        title="events stored by name",
    )
    print_table(
        *run(con, "SELECT error_code, count(*) AS rows FROM dlq GROUP BY 1 ORDER BY 2 DESC"),
        title="dead-letter rows by error code",
    )
    print_table(
        *run(
            con,
            "SELECT coalesce(source, '(Kafka)') AS source, count(*) AS stored FROM events "
            "GROUP BY 1 ORDER BY 2 DESC",
        ),
        title="events stored by source (the HTTP collector's source; Kafka producers: none)",
    )
    console.print(
        f"duplicates dropped: {int(_sum(metrics, 'trackflow_duplicates_total')):,}    "
        f"consent drops: {int(_sum(metrics, 'trackflow_consent_dropped_total')):,}"
    )
    print_table(
        *run(
            con,
            "SELECT (SELECT count(DISTINCT person_id) FROM events_resolved) AS persons, "
            "(SELECT count(*) FROM identity_merges WHERE accepted) AS merges, "
            "(SELECT count(*) FROM identity_merges WHERE NOT accepted) AS refused_merges",
        ),
        title="One ID",
    )
    print_table(
        *run(
            con,
            "SELECT metric, strftime(window_start, '%H:%M') AS hour, dimensions, "
            "round(value, 4) AS value, numerator, denominator FROM rollups "
            "WHERE \"window\" = '1h' AND metric IN ('pv', 'uv', 'orders', 'gmv', "
            "'payment_success_rate', 'purchase_funnel') "
            "ORDER BY metric, window_start, dimensions",
        ),
        title="hourly rollups (stream)",
    )
    rel = os.path.relpath(data_dir)
    console.print(f"\nlake: [bold]{data_dir / 'lake'}[/]")
    console.print(
        "try:  [bold].venv/bin/trackflow query "
        f'"SELECT event_name, count(*) FROM events GROUP BY 1" --data-dir {rel}[/]'
    )
    member = run(con, "SELECT min(user_id) FROM events WHERE user_id IS NOT NULL")[1][0][0]
    if member:
        console.print(f"      [bold].venv/bin/trackflow report trail {member} --data-dir {rel}[/]")
