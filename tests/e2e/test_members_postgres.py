"""``trackflow members import postgresql://... --query`` against a real PostgreSQL: Debian's
``postgresql`` package (``make tools``), a throw-away cluster started here (initdb into a
temporary directory, pg_ctl on a free port, as an unprivileged user when run as root:
PostgreSQL refuses to run as root), psycopg 3 as the driver."""

from __future__ import annotations

import glob
import json
import os
import pwd
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import orjson
import pytest

from pipeline.tools.broker import free_port
from tests.support import BIN


def _bin_dir() -> Path | None:
    found = shutil.which("pg_ctl")
    if found:
        return Path(os.path.realpath(found)).parent
    dirs = sorted(glob.glob("/usr/lib/postgresql/*/bin"))
    return Path(dirs[-1]) if dirs else None


@pytest.fixture(scope="module")
def postgres() -> Iterator[str]:
    """A running cluster; yields its URL (trust auth on 127.0.0.1, user postgres)."""
    bin_dir = _bin_dir()
    if bin_dir is None or not (bin_dir / "initdb").exists():
        pytest.skip("PostgreSQL binaries missing: `make tools` installs Debian's postgresql")
    pytest.importorskip("psycopg", reason="psycopg missing: `make install` installs it")
    root = Path(tempfile.mkdtemp(prefix="trackflow-pg-"))
    data, sockets = root / "data", root / "sockets"
    sockets.mkdir()
    user: dict[str, Any] = {}
    if os.geteuid() == 0:
        nobody = pwd.getpwnam("nobody")
        os.chmod(root, 0o755)
        for path in (root, sockets):
            os.chown(path, nobody.pw_uid, nobody.pw_gid)
        user = {"user": nobody.pw_uid, "group": nobody.pw_gid}
    env = {**os.environ, "LC_ALL": "C.UTF-8"}

    def run(*args: str) -> None:
        proc = subprocess.run(args, capture_output=True, env=env, cwd=root, timeout=120, **user)
        assert proc.returncode == 0, proc.stdout.decode() + proc.stderr.decode()

    port = free_port()
    run(str(bin_dir / "initdb"), "-D", str(data), "-U", "postgres", "--auth=trust", "-E", "UTF8")
    options = f"-p {port} -k {sockets} -c listen_addresses=127.0.0.1 -c fsync=off"
    run(
        str(bin_dir / "pg_ctl"),
        "-D",
        str(data),
        "-o",
        options,
        "-l",
        str(root / "log"),
        "-w",
        "start",
    )
    try:
        yield f"postgresql://postgres@127.0.0.1:{port}/postgres"
    finally:
        subprocess.run(
            [str(bin_dir / "pg_ctl"), "-D", str(data), "-m", "immediate", "stop"],
            capture_output=True,
            env=env,
            cwd=root,
            timeout=60,
            **user,
        )
        shutil.rmtree(root, ignore_errors=True)


MAPPING = {
    "source": "shop-db",
    "key": "member_no",
    "incremental": "modified",
    "fields": {
        "phone": {"from": "mobile", "transform": ["phone"]},
        "level": {
            "from": "tier",
            "transform": ["trim", {"map": {"金卡": "gold", "G": "gold"}}],
            "required": True,
        },
        "registered_at": {"from": "joined"},
        "points": {"from": "points"},
        "birthday": {"from": "born", "transform": [{"date": ["%Y/%m/%d", "%Y-%m-%d"]}]},
    },
}


def test_import_from_postgres_streams_and_is_incremental(postgres: str, tmp_path: Path) -> None:
    import psycopg

    with psycopg.connect(postgres, autocommit=True) as con:
        con.execute("DROP TABLE IF EXISTS members")
        con.execute(
            "CREATE TABLE members (member_no text, mobile text, tier text, joined date, "
            "points numeric(12, 0), born text, modified timestamptz)"
        )
        rows = [
            (
                f"P{i:05d}",
                f"1380013{i:04d}",
                "金卡" if i % 2 else "G",
                "2020-01-02",
                i,
                "1990/05/06",
                "2024-05-01T10:00:00+08:00",
            )
            for i in range(3000)
        ]
        rows.append(("BAD1", "12345", "gold", "2035-01-01", 1, None, "2024-05-01T10:00:00+08:00"))
        with con.cursor() as cur:
            cur.executemany("INSERT INTO members VALUES (%s, %s, %s, %s, %s, %s, %s)", rows)
    mapping = tmp_path / "mapping.json"
    mapping.write_text(json.dumps(MAPPING, ensure_ascii=False))
    env = {
        **os.environ,
        "TRACKFLOW_DATA_DIR": str(tmp_path / "data"),
        "TRACKFLOW_BROKER": f"127.0.0.1:{free_port()}",
        "TRACKFLOW_MEMBERS_LINK_TIMEOUT": "1",
        "TRACKFLOW_PII_SECRET": "pg-secret",
    }

    def trackflow(*args: str) -> Any:
        proc = subprocess.run([str(BIN), *args], env=env, capture_output=True, timeout=300)
        assert proc.returncode == 0, proc.stderr.decode()
        return orjson.loads(proc.stdout)

    query = "SELECT * FROM members ORDER BY member_no"
    first = trackflow("members", "import", postgres, "--query", query, "--mapping", str(mapping))
    assert (first["rows_read"], first["rows_accepted"], first["rows_rejected"]) == (3001, 3000, 1)
    rules = {
        r["rule"] for r in trackflow("query", "SELECT rule FROM member_rejects", "--format", "json")
    }
    assert rules == {"transform.phone", "registered_at.max"}
    (p7,) = trackflow(
        "query",
        "SELECT level, registered_at, points, birthday FROM profiles WHERE user_id = 'P00007'",
        "--format",
        "json",
    )
    assert p7 == {
        "level": "gold",
        "registered_at": "2020-01-02",
        "points": 7,
        "birthday": "1990-05-06",
    }

    with psycopg.connect(postgres, autocommit=True) as con:
        con.execute(
            "UPDATE members SET tier = 'G', points = 99, "
            "modified = '2024-06-01T10:00:00+08:00' WHERE member_no = 'P00001'"
        )
    second = trackflow("members", "import", postgres, "--query", query, "--mapping", str(mapping))
    assert (second["rows_read"], second["rows_skipped"]) == (1, 3000)
    assert second["changes_by_field"] == {"points": 1}  # 金卡 and G are both gold
    assert second["watermark"] == "2024-06-01T02:00:00Z"


def test_a_failing_query_is_one_line_and_writes_nothing(postgres: str, tmp_path: Path) -> None:
    mapping = tmp_path / "mapping.json"
    mapping.write_text(json.dumps(MAPPING))
    env = {
        **os.environ,
        "TRACKFLOW_DATA_DIR": str(tmp_path / "data"),
        "TRACKFLOW_PII_SECRET": "pg-secret",
    }
    proc = subprocess.run(
        [
            str(BIN),
            "members",
            "import",
            postgres,
            "--query",
            "SELECT * FROM no_such_table",
            "--mapping",
            str(mapping),
        ],
        env=env,
        capture_output=True,
        timeout=120,
    )
    err = proc.stderr.decode()
    assert proc.returncode == 2, err
    assert "no_such_table" in err
    assert len(err.strip().splitlines()) == 1, err
    assert not (tmp_path / "data" / "lake").exists()
