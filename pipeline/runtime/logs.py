"""Log output for the worker and the CLI: text for people, or one JSON object per line.

``TRACKFLOW_LOG_FORMAT=json`` (``--log-format json``) is for log collectors (Loki, Cloud
Logging, ...) that parse each line: every record is one object with ``time`` (UTC,
RFC 3339), ``level``, ``logger`` and ``message``, plus ``exception`` (the formatted
traceback) when there is one. Whatever else would write to stderr goes through logging in
that mode too: uncaught exceptions, Python warnings, and librdkafka's own log lines (see
``KafkaCluster.route_client_logs``), so a collector never meets a line it cannot parse.
"""

from __future__ import annotations

import logging
import sys
from datetime import UTC, datetime
from types import TracebackType
from typing import Any

import orjson

TEXT_FORMAT = "[%(asctime)s] %(levelname)s %(name)s: %(message)s"


class JsonFormatter(logging.Formatter):
    """One JSON object per record, on one line (newlines inside values are escaped)."""

    def format(self, record: logging.LogRecord) -> str:
        try:
            message = record.getMessage()
        except Exception as exc:  # a bad %-format in a log call must not lose the record
            message = f"{record.msg!r} (unformattable with {record.args!r}: {exc})"
        entry: dict[str, Any] = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname,
            "logger": record.name,
            "message": message,
        }
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        elif record.exc_text:
            entry["exception"] = record.exc_text
        if record.stack_info:
            entry["stack"] = self.formatStack(record.stack_info)
        return orjson.dumps(entry, default=str).decode()


def logging_config(log_format: str, level: str | int) -> dict[str, Any]:
    """A ``logging.config.dictConfig`` for stderr in ``log_format`` (text or json)."""
    formatter: dict[str, Any] = (
        {"()": f"{__name__}.JsonFormatter"} if log_format == "json" else {"format": TEXT_FORMAT}
    )
    return {
        "version": 1,
        "disable_existing_loggers": False,
        "formatters": {"trackflow": formatter},
        "handlers": {
            "stderr": {
                "class": "logging.StreamHandler",
                "stream": "ext://sys.stderr",
                "formatter": "trackflow",
            }
        },
        "root": {"level": _level(level), "handlers": ["stderr"]},
    }


def setup(log_format: str, level: str | int = "info") -> None:
    """Configure the root logger (the CLI; the worker hands ``logging_config`` to Faust)."""
    import logging.config

    logging.config.dictConfig(logging_config(log_format, level))
    if log_format == "json":
        route_stray_output()


def route_stray_output() -> None:
    """Uncaught exceptions and warnings become log records instead of raw stderr text."""
    logging.captureWarnings(True)
    sys.excepthook = _log_uncaught


def _log_uncaught(
    kind: type[BaseException], value: BaseException, tb: TracebackType | None
) -> None:
    if issubclass(kind, KeyboardInterrupt):
        sys.__excepthook__(kind, value, tb)
        return
    logging.getLogger("trackflow").critical("uncaught exception", exc_info=(kind, value, tb))


def _level(level: str | int) -> int | str:
    return level.upper() if isinstance(level, str) else level
