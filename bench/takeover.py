"""Worker memory around one takeover: RSS every half second, before and after a SIGKILL.

Issue 13's soak showed a step in a worker's RSS at each takeover and peaks of 1.9-2.5 GB
while it happened. This bench isolates one takeover, so a change can be compared with
the one before it in minutes instead of an hour::

    .venv/bin/python -m bench.takeover --warm-minutes 8 --out /tmp/takeover.json

What it runs: an embedded broker, one isolated deployment (4 partitions, production
flush and group timeouts, as the soak), two workers and ``trackflow simulate --rate 200``.
After ``--warm-minutes`` the first worker gets SIGKILL and a replacement starts at once;
the run goes on for ``--after-minutes``. It reports, for the survivor and the
replacement, RSS before the kill, the peak after it and when, and RSS at the end; and the
lake's file count at the kill (each worker's lake reads bind files, see
``pipeline.lake.views.connect``). Extra environment for the workers (e.g. a glibc tunable)
can be given with ``--worker-env NAME=VALUE``.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.report import emit, machine, proc_status_mb  # noqa: E402
from pipeline.tools.broker import EmbeddedBroker  # noqa: E402
from tests.support import BIN, Deployment, Worker  # noqa: E402

SAMPLE_SECONDS = 0.5


def rss_mb(worker: Worker | None) -> float | None:
    if worker is None or worker.proc.poll() is not None:
        return None
    return proc_status_mb(worker.proc.pid, "VmRSS:")


def memory_map(worker: Worker | None, out: Path) -> dict[str, int]:
    """Resident MB by kind of mapping (glibc's heap, other anonymous memory: thread arenas
    and the allocators of pyarrow and DuckDB; files: code and data of libraries); the
    full ``/proc/PID/smaps`` is kept in the work directory."""
    if worker is None or worker.proc.poll() is not None:
        return {}
    text = Path(f"/proc/{worker.proc.pid}/smaps").read_text()
    out.write_text(text)
    return resident_by_kind(text)


def resident_by_kind(smaps: str) -> dict[str, int]:
    """Resident MB of ``/proc/PID/smaps`` text by kind of mapping."""
    kb = {"heap": 0, "anonymous": 0, "files": 0, "stack_and_other": 0}
    kind = "stack_and_other"
    for line in smaps.splitlines():
        head = line.split()
        if head and "-" in head[0] and len(head) >= 5:  # a mapping's first line
            path = head[5] if len(head) > 5 else ""
            if path == "[heap]":
                kind = "heap"
            elif not path:
                kind = "anonymous"
            else:
                kind = "files" if path.startswith("/") else "stack_and_other"
        elif line.startswith("Rss:"):
            kb[kind] += int(head[1])
    return {k: v // 1024 for k, v in kb.items()}


def summary(samples: list[dict[str, Any]], name: str, killed_at: float) -> dict[str, Any]:
    # Samples are stamped to 0.1 s: the one taken as the kill happened is not "before".
    before = [s[name] for s in samples if s["t"] < round(killed_at, 1) and s[name]]
    after = [s for s in samples if s["t"] >= killed_at and s[name]]
    if not after:
        return {}
    peak = max(after, key=lambda s: s[name])
    end = after[-1][name]
    out: dict[str, Any] = {
        "peak_after_kill_mb": peak[name],
        "peak_seconds_after_kill": round(peak["t"] - killed_at, 1),
        "end_mb": end,
    }
    if before:
        out["before_kill_mb"] = before[-1]
        out["step"] = round(end / before[-1] - 1, 3)
    return out


def run(opts: argparse.Namespace) -> dict[str, Any]:
    work = Path(tempfile.mkdtemp(prefix="trackflow-takeover-"))
    warm_s, after_s = opts.warm_minutes * 60, opts.after_minutes * 60
    samples: list[dict[str, Any]] = []
    with EmbeddedBroker(log=work / "broker.log") as broker:
        dep = Deployment(broker.url, work, "takeover", partitions=4)
        for name in ("SINK_FLUSH_SECONDS", "SESSION_TIMEOUT", "REBALANCE_TIMEOUT"):
            dep.env.pop(f"TRACKFLOW_{name}", None)
        for pair in opts.worker_env:
            key, _, value = pair.partition("=")
            dep.env[key] = value
        first, survivor = dep.start_worker(), dep.start_worker()
        replacement: Worker | None = None
        duration = str(int(warm_s + after_s))
        sim = subprocess.Popen(
            [str(BIN), "simulate", "--rate", str(opts.rate), "--seed", "7", "--duration", duration],
            env=dep.env,
            stdout=subprocess.DEVNULL,
            stderr=open(work / "simulate.log", "wb"),  # noqa: SIM115
        )
        t0 = time.monotonic()
        killed_at: float | None = None
        files_at_kill = 0
        try:
            while (t := time.monotonic() - t0) < warm_s + after_s:
                if killed_at is None and t >= warm_s:
                    files_at_kill = sum(1 for _ in (dep.data_dir / "lake").rglob("*.parquet"))
                    first.kill()
                    killed_at = t
                    replacement = dep.start_worker()
                samples.append(
                    {
                        "t": round(t, 1),
                        "first": rss_mb(first),
                        "survivor": rss_mb(survivor),
                        "replacement": rss_mb(replacement),
                    }
                )
                time.sleep(SAMPLE_SECONDS)
            maps = {
                "survivor": memory_map(survivor, work / "survivor.smaps"),
                "replacement": memory_map(replacement, work / "replacement.smaps"),
            }
        finally:
            sim.kill()
            for worker in dep.workers:
                worker.stop()
    assert killed_at is not None
    return {
        "bench": "takeover",
        "machine": machine(),
        "run": {
            "warm_minutes": opts.warm_minutes,
            "after_minutes": opts.after_minutes,
            "rate": opts.rate,
            "worker_env": opts.worker_env,
            "work_dir": str(work),
        },
        "lake_files_at_kill": files_at_kill,
        "survivor": summary(samples, "survivor", killed_at),
        "replacement": summary(samples, "replacement", killed_at),
        "resident_by_mapping_at_end_mb": maps,
        "samples_every_10s": [s for i, s in enumerate(samples) if i % 20 == 0],
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--warm-minutes", type=float, default=8.0, help="traffic before the kill")
    ap.add_argument("--after-minutes", type=float, default=4.0, help="traffic after the kill")
    ap.add_argument("--rate", type=float, default=200.0, help="simulated events per second")
    ap.add_argument("--worker-env", action="append", default=[], help="NAME=VALUE for the workers")
    ap.add_argument("--out", type=Path, help="also write the JSON here")
    opts = ap.parse_args()
    emit(run(opts), opts.out)


if __name__ == "__main__":
    main()
