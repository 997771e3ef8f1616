"""How fast, and in how much memory, ``trackflow members import`` loads a large CSV.

Writes a generated member file of N rows (default 1,000,000) with the mess real CRM exports
have: phone numbers in several spellings, levels and regions in Chinese and English, two
date formats, comma lists, a few bad rows. Runs the real CLI on it twice, as a user would:
the first import into an empty lake, then the same file again with an incremental column
(every row at or below the watermark: read, skipped), then a third time without the
incremental column (every row compared with the profiles: unchanged). Times each command
whole (start-up included) and takes its peak RSS from the kernel (``ru_maxrss`` of the
child). Targets (issue 17): under 120 s and under 500 MB for the first import. No broker
runs: the One ID links stay in the outbox (their count is reported), as when the broker is
down.

Checks the lake afterwards (profiles, rejects, member_imports), so a fast run that lost
rows fails instead of reporting a time. Prints (and with --out writes) JSON.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import random
import resource
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

BIN = Path(sys.executable).parent / "trackflow"
LEVELS = ["金卡", "gold", "G", "银卡", "silver", "S", "普通", "basic", "钻石", "diamond"]
LEVEL_MAP = {
    "金卡": "gold",
    "G": "gold",
    "银卡": "silver",
    "S": "silver",
    "普通": "basic",
    "钻石": "diamond",
}
REGIONS = ["广东省", "广东", "粤", "北京", "北京市", "上海", "浙江省", "guangdong", "beijing"]
REGION_MAP = {
    "广东省": "guangdong",
    "广东": "guangdong",
    "粤": "guangdong",
    "北京": "beijing",
    "北京市": "beijing",
    "上海": "shanghai",
    "浙江省": "zhejiang",
}
MAPPING = {
    "source": "bench-crm",
    "key": "member_id",
    "incremental": "updated_at",
    "fields": {
        "name": {"from": "name", "transform": ["trim"]},
        "phone": {"from": "mobile", "transform": ["trim", "phone"]},
        "email": {"from": "email", "transform": ["trim", "email"]},
        "level": {"from": "level", "transform": ["trim", {"map": LEVEL_MAP}], "required": True},
        "region": {"from": "province", "transform": ["trim", {"map": REGION_MAP}]},
        "registered_at": {"from": "reg_date", "transform": [{"date": ["%Y-%m-%d", "%Y/%m/%d"]}]},
        "points": {"from": "points"},
        "tags": {"from": "tags", "transform": ["split"]},
        "status": {"from": "status", "transform": ["lower", {"default": "active"}]},
    },
}


def phone(i: int, rng: random.Random) -> str:
    n = f"13{i % 10}{i:08d}"[-11:]
    return rng.choice(
        [n, f"+86 {n[:3]}-{n[3:7]}-{n[7:]}", f"0086 {n}", f"{n[:3]} {n[3:7]} {n[7:]}"]
    )


def write_members(path: Path, n: int, seed: int) -> int:
    """N rows, about 0.5% bad (a phone that is not one, a date in the future); returns
    how many are bad."""
    rng = random.Random(seed)
    bad = 0
    with open(path, "w", encoding="utf-8", newline="") as f:
        f.write(
            "member_id,name,mobile,email,level,province,reg_date,points,tags,status,updated_at\n"
        )
        for i in range(n):
            broken = rng.random() < 0.005
            bad += broken
            reg = (
                f"{2000 + i % 24}-{1 + i % 12:02d}-{1 + i % 28:02d}"
                if i % 2
                else f"{2000 + i % 24}/{1 + i % 12}/{1 + i % 28}"
            )
            f.write(
                f"M{i:08d},会员{i % 997},{'12-34' if broken else phone(i, rng)},"
                f" User{i}@Example.com ,{rng.choice(LEVELS)},{rng.choice(REGIONS)},"
                f"{'2099-01-01' if broken and i % 2 else reg},{i % 5000},"
                f'"vip,tag{i % 7}",{rng.choice(["active", "Active", "", "frozen"])},'
                f"2024-05-01 {i % 24:02d}:{i % 60:02d}:00\n"
            )
    return bad


def run_import(csv: Path, mapping: Path, data: Path) -> dict[str, Any]:
    env = {
        **os.environ,
        "TRACKFLOW_DATA_DIR": str(data),
        "TRACKFLOW_DEV": "1",
        "TRACKFLOW_BROKER": "127.0.0.1:9",
        "TRACKFLOW_MEMBERS_LINK_TIMEOUT": "1",
    }
    before = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    start = time.perf_counter()
    proc = subprocess.run(
        [str(BIN), "members", "import", str(csv), "--mapping", str(mapping)],
        env=env,
        capture_output=True,
    )
    elapsed = time.perf_counter() - start
    peak = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    if proc.returncode != 0:
        raise SystemExit(f"import failed: {proc.stderr.decode()}")
    report = json.loads(proc.stdout)
    # ru_maxrss of children is the largest of any child so far: each run is measured only
    # when it sets a new high, so the runs go from the heaviest expected to the lightest.
    return {
        "seconds": round(elapsed, 1),
        "peak_rss_mb": round(max(peak, before) / 1024, 1),
        "report": {
            k: report[k]
            for k in (
                "rows_read",
                "rows_accepted",
                "rows_rejected",
                "rows_unchanged",
                "rows_skipped",
                "fields_changed",
                "members_new",
                "links",
            )
        },
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--rows", type=int, default=1_000_000)
    ap.add_argument("--seed", type=int, default=17)
    ap.add_argument("--out", type=Path, help="also write the JSON here")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory(prefix="members-bench-") as tmp:
        work = Path(tmp)
        csv, mapping = work / "members.csv", work / "mapping.json"
        t0 = time.perf_counter()
        bad = write_members(csv, args.rows, args.seed)
        generated = time.perf_counter() - t0
        mapping.write_text(json.dumps(MAPPING, ensure_ascii=False))
        first = run_import(csv, mapping, work / "data")
        again = run_import(csv, mapping, work / "data")
        plain = {**MAPPING, "incremental": None}
        mapping.write_text(json.dumps(plain, ensure_ascii=False))
        full = run_import(csv, mapping, work / "data")
        sys.path.insert(0, str(ROOT))
        from pipeline.lake import views

        con = views.connect(work / "data")
        profiles = con.execute(
            "SELECT count(*), count(phone), count(level) FROM profiles"
        ).fetchone()
        rejects = con.execute('SELECT count(DISTINCT "row") FROM member_rejects').fetchone()
        assert first["report"]["rows_read"] == args.rows, first
        assert first["report"]["rows_rejected"] >= bad, (first, bad)
        assert profiles, profiles
        assert profiles[0] == first["report"]["rows_accepted"], profiles
        assert rejects, rejects
        assert rejects[0] == first["report"]["rows_rejected"], rejects  # rows, each run
        assert again["report"]["rows_skipped"] == args.rows, again
        assert full["report"]["fields_changed"] == 0, full
        result = {
            "bench": "members_import",
            "date": datetime.now(UTC).strftime("%Y-%m-%d"),
            "rows": args.rows,
            "csv_mb": round(csv.stat().st_size / 2**20, 1),
            "generate_seconds": round(generated, 1),
            "first_import": first,
            "reimport_incremental": again,
            "reimport_full_compare": full,
            "profiles": profiles[0],
            "targets": {"seconds": 120, "peak_rss_mb": 500},
            "met": first["seconds"] < 120 and first["peak_rss_mb"] < 500,
            "machine": {
                "cpus": os.cpu_count(),
                "python": platform.python_version(),
                "load_avg_at_end": [round(x, 1) for x in os.getloadavg()],
            },
        }
    text = json.dumps(result, indent=2, ensure_ascii=False)
    print(text)
    if args.out:
        args.out.write_text(text + "\n")


if __name__ == "__main__":
    main()
