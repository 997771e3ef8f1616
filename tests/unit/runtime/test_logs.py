"""JSON logs: one parseable object per line, whatever the record holds."""

from __future__ import annotations

import io
import json
import logging
import os
import subprocess
import sys
from pathlib import Path

import pytest

from pipeline.runtime.logs import JsonFormatter, logging_config

KEYS = {"time", "level", "logger", "message"}


def _record(msg: str, *args: object, exc: bool = False) -> logging.LogRecord:
    exc_info = None
    if exc:
        try:
            raise ValueError("boom\nsecond line")
        except ValueError:
            exc_info = sys.exc_info()
    return logging.LogRecord("trackflow.x", logging.ERROR, __file__, 1, msg, args, exc_info)


def test_a_record_is_one_line_of_json_with_the_agreed_keys() -> None:
    line = JsonFormatter().format(_record("sent %d events\nto %s", 3, "events.raw"))
    assert "\n" not in line
    entry = json.loads(line)
    assert set(entry) == KEYS
    assert entry["level"] == "ERROR"
    assert entry["logger"] == "trackflow.x"
    assert entry["message"] == "sent 3 events\nto events.raw"
    assert entry["time"].endswith("+00:00")  # UTC, RFC 3339


def test_an_exception_travels_as_text_inside_the_object() -> None:
    line = JsonFormatter().format(_record("failed", exc=True))
    assert "\n" not in line
    entry = json.loads(line)
    assert entry["exception"].startswith("Traceback")
    assert "ValueError: boom\nsecond line" in entry["exception"]


def test_a_broken_format_string_still_gives_a_record() -> None:
    entry = json.loads(JsonFormatter().format(_record("%d items", "not a number")))
    assert "%d items" in entry["message"]
    assert "unformattable" in entry["message"]


def test_the_logging_config_writes_json_lines_to_the_stream(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    import logging.config

    stream = io.StringIO()
    monkeypatch.setattr(sys, "stderr", stream)
    root = logging.getLogger()
    saved = root.handlers[:], root.level
    try:
        logging.config.dictConfig(logging_config("json", "info"))
        logging.getLogger("faust.worker").info("ready")
        logging.getLogger("trackflow").debug("below the level")
    finally:
        root.handlers[:], root.level = saved
    lines = stream.getvalue().splitlines()
    assert [json.loads(line)["message"] for line in lines] == ["ready"]


def test_the_cli_logs_json_lines_for_a_refused_start(tmp_path: Path) -> None:
    """``--log-format json`` before any command: even a refusal is a JSON line."""
    env = {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "TRACKFLOW_DEV": "1",
        "TRACKFLOW_DATA_DIR": str(tmp_path),
        "TRACKFLOW_KAFKA_SECURITY_PROTOCOL": "SASL_SSL",
    }
    proc = subprocess.run(
        [sys.executable, "-m", "pipeline", "--log-format", "json", "worker"],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 2
    lines = proc.stderr.splitlines()
    assert lines
    entries = [json.loads(line) for line in lines]  # every line parses
    assert all(set(e) >= KEYS for e in entries)
    assert any("TRACKFLOW_KAFKA_SASL_MECHANISM" in e["message"] for e in entries)


def test_an_unknown_log_format_is_refused(tmp_path: Path) -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "pipeline", "--log-format", "xml", "query", "select 1"],
        env={"PATH": os.environ.get("PATH", ""), "TRACKFLOW_DATA_DIR": str(tmp_path)},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 2
    assert "text or json" in proc.stderr
