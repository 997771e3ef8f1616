"""The PII key rule: no key or the public default is refused unless it is a development run."""

from __future__ import annotations

import stat
from pathlib import Path

import pytest
from pydantic import SecretStr

from pipeline.settings import DEFAULT_PII_SECRET, DEV_KEY_FILE, MissingPiiKey, Settings


def test_no_key_is_refused_outside_development(tmp_path: Path) -> None:
    with pytest.raises(MissingPiiKey, match="TRACKFLOW_PII_SECRET is not set"):
        Settings(data_dir=tmp_path, dev=False).pii_key()


def test_the_public_default_key_is_refused(tmp_path: Path) -> None:
    s = Settings(data_dir=tmp_path, dev=False, pii_secret=SecretStr(DEFAULT_PII_SECRET))
    with pytest.raises(MissingPiiKey, match="public default"):
        s.pii_key()


def test_a_set_key_is_used_as_it_is(tmp_path: Path) -> None:
    assert Settings(data_dir=tmp_path, dev=False, pii_secret=SecretStr("k" * 40)).pii_key() == (
        "k" * 40
    )
    assert not (tmp_path / DEV_KEY_FILE).exists()


def test_a_development_run_generates_one_key_per_data_directory(tmp_path: Path) -> None:
    a, b = tmp_path / "a", tmp_path / "b"
    key = Settings(data_dir=a, dev=True).pii_key()
    assert len(key) == 64
    assert Settings(data_dir=a, dev=True).pii_key() == key  # every process reads the same
    assert Settings(data_dir=b, dev=True).pii_key() != key
    mode = stat.S_IMODE((a / DEV_KEY_FILE).stat().st_mode)
    assert mode == 0o600
    assert [p.name for p in a.iterdir()] == [DEV_KEY_FILE]  # no temporary file left


def test_the_worker_refuses_to_start_without_a_key(tmp_path: Path) -> None:
    import os
    import subprocess
    import sys

    env = {k: v for k, v in os.environ.items() if not k.startswith("TRACKFLOW_")}
    proc = subprocess.run(
        [sys.executable, "-m", "pipeline", "worker", "--data-dir", str(tmp_path)],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 2
    assert "TRACKFLOW_PII_SECRET is not set" in proc.stderr
    assert "Traceback" not in proc.stderr
