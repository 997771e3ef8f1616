"""The root ``trackflow`` app, the env-twin option helper and the options several commands share.

Every option has a TRACKFLOW_* twin. Command modules import from here; ``pipeline.cli``
registers their commands on ``cli`` in the order ``--help`` lists them.
"""

from __future__ import annotations

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


def settings_from(**given: Any) -> Settings:
    """Flags override TRACKFLOW_* env vars, which override defaults."""
    return Settings(**{k: v for k, v in given.items() if v is not None})
