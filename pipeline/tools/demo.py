"""``trackflow demo``: embedded broker, a worker process and simulated traffic, then a summary."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import threading
import time
from pathlib import Path

from rich.console import Console
from rich.live import Live
from rich.table import Table

from pipeline.runtime.kafka_admin import ensure_topic
from pipeline.runtime.telemetry import scrape
from pipeline.settings import Settings
from pipeline.tools.broker import EmbeddedBroker, free_port, wait_for_port
from pipeline.tools.produce import RawProducer
from pipeline.tools.simulation_run import SimSummary, run_simulation
from pipeline.tools.simulator import SimConfig

MARKER = ".trackflow-demo"


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
        for child in ("lake", "faust", "worker.log", "broker.log"):
            path = data_dir / child
            if path.is_dir():
                shutil.rmtree(path)
            elif path.exists():
                path.unlink()
    data_dir.mkdir(parents=True, exist_ok=True)
    (data_dir / MARKER).write_text("created by trackflow demo; `trackflow demo` may wipe it\n")


def progress_table(sim: SimSummary, m: dict[str, float], phase: str) -> Table:
    table = Table(title=f"trackflow demo — {phase}", show_header=True)
    table.add_column("measure")
    table.add_column("value", justify="right")
    rows = [
        ("events sent by simulator", sim.events),
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


def run_demo(settings: Settings, duration: float, rate: float, port: int | None = None) -> int:
    console = Console()
    data_dir = settings.data_dir.resolve()
    prepare_data_dir(data_dir)
    broker = EmbeddedBroker(port=port, log=data_dir / "broker.log")
    web_port = settings.web_port if settings.web_port else free_port()
    try:
        wait_for_port("127.0.0.1", web_port, timeout=0.1)
        web_port = free_port()  # the default port is taken: use any free one
    except TimeoutError:
        pass
    console.print(f"[bold]starting embedded broker[/] on {broker.bootstrap} ...")
    broker.start()
    env = {
        **os.environ,
        "TRACKFLOW_BROKER": broker.url,
        "TRACKFLOW_DATA_DIR": str(data_dir),
        "TRACKFLOW_WEB_PORT": str(web_port),
        "TRACKFLOW_REBALANCE_TIMEOUT": "2",
        "TRACKFLOW_SESSION_TIMEOUT": "6",
        "TRACKFLOW_LOG_LEVEL": "warning",
        # The demo's traffic stops at the end: close its last windows soon after.
        "TRACKFLOW_IDLE_CLOSE_SECONDS": "5",
    }
    ensure_topic(broker.bootstrap, settings.topic("events.raw"), settings.partitions)
    log = open(data_dir / "worker.log", "ab")  # noqa: SIM115
    worker = subprocess.Popen(
        [sys.executable, "-m", "pipeline", "worker"], env=env, stdout=log, stderr=subprocess.STDOUT
    )
    console.print(
        f"[bold]worker[/] pid {worker.pid}, metrics on http://127.0.0.1:{web_port}/metrics"
    )
    config = SimConfig(
        rate=rate,
        duration=duration,
        seed=int(time.time()) % 100_000,
        malformed_share=0.02,
        duplicate_share=0.01,
        consent_withdrawn_share=0.01,
        outage_start=duration * 0.6,
        outage_minutes=duration * 0.2 / 60,
    )
    producer = RawProducer(broker.bootstrap, settings.topic("events.raw"))
    sim = SimSummary()
    done = threading.Event()

    def progress(summary: SimSummary) -> None:
        nonlocal sim
        sim = summary  # the live table reads it; run_simulation updates it in place

    def simulate() -> None:
        progress(run_simulation(producer, config, paced=True, on_progress=progress))
        done.set()

    thread = threading.Thread(target=simulate, daemon=True)
    thread.start()
    metrics: dict[str, float] = {}
    code = 0
    try:
        with Live(
            progress_table(sim, metrics, "sending"), console=console, refresh_per_second=4
        ) as live:
            while not done.is_set():
                time.sleep(0.5)
                metrics = scrape(web_port) or metrics
                live.update(progress_table(sim, metrics, "sending"))
                if worker.poll() is not None:
                    raise RuntimeError(
                        f"worker exited with {worker.returncode}; see {data_dir}/worker.log"
                    )
            deadline = time.monotonic() + 90
            while time.monotonic() < deadline:
                metrics = scrape(web_port) or metrics
                live.update(progress_table(sim, metrics, "draining"))
                accounted = (
                    _sum(metrics, "trackflow_events_stored_total")
                    + _sum(metrics, 'trackflow_lake_rows_written_total{table="dlq"}')
                    + _sum(metrics, "trackflow_duplicates_total")
                    + _sum(metrics, "trackflow_consent_dropped_total")
                )
                received = _sum(metrics, "trackflow_events_received_total")
                if received >= sim.events and accounted >= received:
                    break
                time.sleep(0.5)
            deadline = time.monotonic() + 30
            while time.monotonic() < deadline:  # the last windows close on idle input
                metrics = scrape(web_port) or metrics
                live.update(progress_table(sim, metrics, "closing metric windows"))
                if _sum(metrics, "trackflow_metric_open_windows") == 0 and _sum(
                    metrics, "trackflow_metric_windows_closed_total"
                ):
                    time.sleep(1.0)  # let the sink store the last finals
                    break
                time.sleep(0.5)
            live.update(progress_table(sim, metrics, "done"))
    except RuntimeError as exc:
        console.print(f"[red]{exc}[/]")
        code = 1
    finally:
        worker.terminate()
        try:
            worker.wait(20)
        except subprocess.TimeoutExpired:
            worker.kill()
        broker.stop()
        log.close()
    if code == 0:
        print_summary(console, data_dir, metrics)
    return code


def print_summary(console: Console, data_dir: Path, metrics: dict[str, float]) -> None:
    from pipeline.cli.output import print_table
    from pipeline.lake.views import connect, run

    con = connect(data_dir)
    print_table(
        *run(con, "SELECT event_name, count(*) AS stored FROM events GROUP BY 1 ORDER BY 2 DESC"),
        title="events stored by name",
    )
    print_table(
        *run(con, "SELECT error_code, count(*) AS rows FROM dlq GROUP BY 1 ORDER BY 2 DESC"),
        title="dead-letter rows by error code",
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
