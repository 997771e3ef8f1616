"""The root ``trackflow`` app, the env-twin option helper and the options several commands share.

Every option has a TRACKFLOW_* twin. Command modules import from here; ``pipeline.cli``
registers their commands on ``cli`` in the order ``--help`` lists them.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Annotated, Any

import typer

from pipeline.settings import Settings

cli = typer.Typer(
    name="trackflow",
    help="Real-time tracking-event pipeline: validate, stitch, aggregate, detect, store.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)


def _opt(env: str, help: str, **kw: Any) -> Any:
    return typer.Option(envvar=f"TRACKFLOW_{env}", help=help, show_envvar=True, **kw)


Broker = Annotated[str | None, _opt("BROKER", "Kafka URL [default: kafka://127.0.0.1:9092]")]
DataDir = Annotated[Path | None, _opt("DATA_DIR", "Lake and state directory [default: ./data]")]
AppId = Annotated[str | None, _opt("APP_ID", "Consumer group / app id [default: trackflow]")]
TopicPrefix = Annotated[str | None, _opt("TOPIC_PREFIX", "Prefix of every topic name")]
Partitions = Annotated[int | None, _opt("PARTITIONS", "Partitions of events.raw when created")]
SchemasDir = Annotated[Path | None, _opt("SCHEMAS_DIR", "Schemas directory [default: built-in]")]
Dev = Annotated[
    bool | None, _opt("DEV", "Development run: a PII key generated once for the data directory")
]


LogFormat = Annotated[
    str | None, _opt("LOG_FORMAT", "text (default) or json: one JSON object per log line")
]


@cli.callback()
def _root(log_format: LogFormat = None) -> None:
    """Real-time tracking-event pipeline: validate, stitch, aggregate, detect, store."""
    if log_format not in (None, "text", "json"):
        typer.echo(f"trackflow: TRACKFLOW_LOG_FORMAT: text or json, not {log_format!r}", err=True)
        raise typer.Exit(2)
    if log_format == "json":  # text keeps Python's default: warnings and errors, as they are
        from pipeline.runtime import logs

        # The command's settings (librdkafka's log routing) and its subprocesses see it too.
        os.environ["TRACKFLOW_LOG_FORMAT"] = "json"
        logs.setup("json", "warning")


def settings_from(**given: Any) -> Settings:
    """Flags override TRACKFLOW_* env vars, which override defaults.

    Invalid or contradictory values end the command with each problem on a line (exit 2),
    not a traceback; the messages never echo the values, which may be secrets.
    """
    from pydantic import ValidationError

    try:
        return Settings(**{k: v for k, v in given.items() if v is not None})
    except ValidationError as exc:
        json_logs = (given.get("log_format") or os.environ.get("TRACKFLOW_LOG_FORMAT")) == "json"
        for error in exc.errors():
            where = ".".join(str(part) for part in error["loc"])
            name = f"TRACKFLOW_{where.upper()}: " if where else ""
            message = f"{name}{error['msg'].removeprefix('Value error, ')}"
            if json_logs:
                from pipeline.runtime import logs

                logs.setup("json")
                logging.getLogger("trackflow").critical("invalid settings: %s", message)
            else:
                typer.echo(f"trackflow: {message}", err=True)
        raise typer.Exit(2) from None
