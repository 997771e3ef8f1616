"""The one typed settings object, built once at start-up from flags and TRACKFLOW_* env vars."""

from __future__ import annotations

import os
import secrets
from pathlib import Path
from typing import Literal

from pydantic import Field, SecretStr, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

SecurityProtocol = Literal["PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL"]
SaslMechanism = Literal["PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512"]

# The key earlier versions used when none was set: public, so refused like no key at all.
DEFAULT_PII_SECRET = "trackflow-dev-secret-change-me"
DEV_KEY_FILE = ".trackflow-dev-pii-key"


class MissingPiiKey(ValueError):
    """No usable PII key: the worker must not hash identifiers with a key anyone knows."""


class Settings(BaseSettings):
    """Runtime configuration. Every field reads ``TRACKFLOW_<FIELD>`` from the environment."""

    model_config = SettingsConfigDict(env_prefix="TRACKFLOW_", extra="ignore", frozen=True)

    broker: str = Field("kafka://127.0.0.1:9092", description="Kafka bootstrap URL(s).")
    data_dir: Path = Field(Path("./data"), description="Root of the lake and local state.")
    schemas_dir: Path | None = Field(
        None, description="Tracking plan directory (default: built-in)."
    )
    app_id: str = Field("trackflow", description="Faust app id = consumer group; one per pipeline.")
    topic_prefix: str = Field("", description="Prefix for every topic name (isolates pipelines).")
    partitions: int = Field(8, ge=1, le=1024, description="Partitions of events.raw when created.")
    web_port: int = Field(6066, ge=0, le=65535, description="Worker web port serving /metrics.")
    web_host: str = Field("127.0.0.1", description="Interface the worker's web server binds.")
    pii_secret: SecretStr | None = Field(
        None, description="HMAC-SHA256 key for phone/email hashing (required unless dev)."
    )
    dev: bool = Field(
        False,
        description="Development run: without a PII key, use one generated once per data "
        "directory (never in production: the key must outlive the data directory).",
    )
    dedup_horizon_hours: int = Field(24, ge=1, description="Minimum memory of seen event ids.")
    dlq_max_payload_bytes: int = Field(
        256 * 1024,
        ge=1024,
        le=700_000,
        description="Dead-letter payloads over this are kept cut, with payload_truncated "
        "and their size (a dead letter must fit in one Kafka message after base64).",
    )
    stages: Literal["full", "ingest"] = Field(
        "full",
        description="full: validate, stitch, identity, aggregate, combine, sink. ingest: "
        "validate and sink only (no person_id, no rollups), e.g. to measure or to backfill.",
    )
    identity_rules: Path | None = Field(
        None, description="One ID rules file or directory (default: built-in)."
    )
    identity_refresh_seconds: int = Field(
        3600, ge=1, description="Resend a known link after this much event time (last_seen)."
    )
    lateness_seconds: int = Field(60, ge=0, description="Allowed lateness of metric windows.")
    partition_idle_seconds: float = Field(
        60.0,
        gt=0,
        description="A source partition without input for this long stops holding metric "
        "windows open once the consumer group has read its input to the end, as the broker "
        "says (its later events are late, and counted).",
    )
    idle_close_seconds: float = Field(
        30.0,
        gt=0,
        description="Close every open metric window after this long without input, once the "
        "consumer group has read every upstream partition to its end, as the broker says.",
    )
    combine_partitions: int = Field(
        4,
        ge=1,
        description="Partitions of metrics.partials (when trackflow creates it): the combine "
        "stage is spread over them, metrics placed by name.",
    )
    combine_snapshot_bytes: int = Field(
        256 * 1024,
        ge=1,
        description="Write a snapshot of a combine partition's state once this many bytes "
        "of changes (and twice the last snapshot's size) were logged since the last one: a "
        "takeover reads the changelog from the newest snapshot.",
    )
    stall_seconds: float = Field(
        30.0,
        gt=0,
        description="Report an owned input partition with messages waiting and nothing read "
        "for this long (trackflow_input_stalls_total and a WARNING log).",
    )
    sink_flush_seconds: float = Field(2.5, gt=0, description="Max age of buffered lake rows.")
    sink_flush_rows: int = Field(50_000, ge=1, description="Flush a partition at this many rows.")
    take_max: int = Field(500, ge=1, description="Max messages an agent takes per batch.")
    take_within: float = Field(0.2, gt=0, description="Seconds an agent waits to fill a batch.")
    # Faust's default is 4096: a takeover's whole backlog then sits in the queues at once,
    # and the survivor keeps most of that burst (docs/performance.md).
    stream_buffer: int = Field(
        512,
        ge=1,
        description="Messages Faust queues per agent input before its fetcher waits "
        "(stream_buffer_maxsize).",
    )
    # Short enough that a worker restarted after SIGKILL takes over within seconds (the dead
    # member is evicted when its session times out); heartbeats run on aiokafka's own
    # thread, so long batches do not starve them.
    rebalance_timeout: float = Field(5.0, gt=0, description="Consumer-group rebalance timeout.")
    session_timeout: float = Field(10.0, gt=0, description="Consumer-group session timeout.")
    log_level: str = Field("info", description="Worker log level.")
    log_format: Literal["text", "json"] = Field(
        "text", description="text, or json: one JSON object per line (time, level, logger, ...)."
    )
    # Topics trackflow creates (events.raw, metrics.partials, Faust's topics and changelogs).
    # An existing topic is never changed.
    replication_factor: int = Field(
        1, ge=1, description="Replication factor of topics trackflow creates (production: 3)."
    )
    min_insync_replicas: int | None = Field(
        None,
        ge=1,
        description="min.insync.replicas of topics trackflow creates (production: 2); "
        "unset: the broker's default.",
    )
    # How every Kafka client trackflow opens connects (pipeline/runtime/kafka_security.py).
    # Environment only in the CLI, so passwords never show in a process list.
    kafka_security_protocol: SecurityProtocol = Field(
        "PLAINTEXT", description="PLAINTEXT, SSL, SASL_PLAINTEXT or SASL_SSL."
    )
    kafka_ssl_cafile: Path | None = Field(
        None, description="PEM CA bundle that signed the brokers' certificates (default: system)."
    )
    kafka_ssl_certfile: Path | None = Field(None, description="PEM client certificate (mTLS).")
    kafka_ssl_keyfile: Path | None = Field(None, description="PEM key of the client certificate.")
    kafka_ssl_key_password: SecretStr | None = Field(
        None, description="Password of an encrypted client key."
    )
    kafka_ssl_check_hostname: bool = Field(
        True, description="Check that the broker's certificate names the host connected to."
    )
    kafka_sasl_mechanism: SaslMechanism | None = Field(
        None, description="PLAIN, SCRAM-SHA-256 or SCRAM-SHA-512 (with a SASL_* protocol)."
    )
    kafka_sasl_username: str | None = Field(None, description="SASL user name.")
    kafka_sasl_password: SecretStr | None = Field(None, description="SASL password.")
    # Lake lifecycle (``trackflow lake maintain``, DESIGN section 15, docs/lake-lifecycle.md).
    retention: Path | None = Field(
        None,
        description="Retention file (days to keep per table and event name; default: "
        "retention.json of the schemas directory, else the built-in one).",
    )
    lake_maintain_seconds: float = Field(
        86400.0,
        ge=0,
        description="A worker runs lake maintenance (retention, compaction) this often, once "
        "for the whole deployment; 0: never (run trackflow lake maintain from cron instead).",
    )
    lake_compact_target_rows: int = Field(
        1_000_000,
        ge=2,
        description="Rows per file compaction aims at (about 40-100 MB of events); files of "
        "less than half of it are merged.",
    )
    lake_stats_seconds: float = Field(
        300.0,
        gt=0,
        description="How often a worker counts the lake's files per partition "
        "(trackflow_lake_partition_files_max).",
    )
    # The HTTP collector (``trackflow collect``, DESIGN section 13).
    sources: Path = Field(
        Path("./sources.json"),
        description="Collector sources file: JSON array of {name, write_key, enabled, "
        "platform, events_per_second}. Write keys are secrets: never logged or stored.",
    )
    collect_host: str = Field("127.0.0.1", description="Interface the collector binds.")
    collect_port: int = Field(8088, ge=0, le=65535, description="Port the collector listens on.")
    collect_delivery_timeout: float = Field(
        5.0,
        gt=0,
        le=300,
        description="Seconds the collector waits for Kafka to acknowledge a request's events "
        "before it answers 503 (SDKs retry; dedup by event_id keeps one copy).",
    )
    collect_shutdown_seconds: float = Field(
        10.0,
        ge=0,
        description="On SIGTERM: seconds for in-flight requests to finish and for Kafka to "
        "acknowledge what was produced.",
    )

    # User analytics (DESIGN 16): day and week boundaries of the reports.
    timezone: str = Field(
        "Asia/Shanghai",
        description="IANA time zone of the analytics reports' days and weeks (weeks start "
        "on Monday); member times without an offset are read in it, and 'today' of the "
        "profile rules follows it.",
    )
    # Member data and profiles (``trackflow members``, DESIGN 14, docs/members.md).
    members_memory_mb: int = Field(
        192,
        ge=64,
        description="Memory DuckDB may use when an import compares its rows with the "
        "profiles (it spills to the data directory beyond it).",
    )
    members_link_timeout: float = Field(
        10.0,
        gt=0,
        description="Seconds an import waits for Kafka to take its One ID links; links it "
        "could not send stay in <data-dir>/members/outbox/ for the next import.",
    )
    members_sla_hours: float = Field(
        24.0,
        gt=0,
        description="Default time within which every member source must import successfully "
        "again (a mapping's sla_hours overrides it); TrackflowMemberImportOverdue fires after.",
    )
    # Privacy (DESIGN 15, docs/privacy.md).
    actor: str | None = Field(
        None, description="Who makes privacy requests, for the audit (default: the OS user)."
    )
    privacy_resume_seconds: float = Field(
        30.0,
        gt=0,
        description="How often a worker looks for privacy deletions left unfinished (a "
        "killed command) and finishes them.",
    )

    @field_validator("broker")
    @classmethod
    def _broker_url(cls, value: str) -> str:
        return value if "://" in value else f"kafka://{value}"

    @field_validator("timezone")
    @classmethod
    def _known_zone(cls, value: str) -> str:
        from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

        try:
            ZoneInfo(value)
        except (ZoneInfoNotFoundError, ValueError):
            raise ValueError(
                f"unknown time zone {value!r} (an IANA name, e.g. Asia/Shanghai)"
            ) from None
        return value

    @model_validator(mode="after")
    def _kafka_combinations(self) -> Settings:
        problems = kafka_problems(self)
        if problems:
            raise ValueError("; ".join(problems))
        return self

    def topic(self, name: str) -> str:
        return f"{self.topic_prefix}{name}"

    def pii_key(self) -> str:
        """The HMAC key for phone and e-mail hashes.

        Hashes are only pseudonymous while the key is secret, so a missing key or the
        public default is refused; a development run (``dev``) generates a key once per
        data directory instead, so the demo and the tests need no set-up.
        """
        secret = self.pii_secret.get_secret_value() if self.pii_secret else ""
        if secret and secret != DEFAULT_PII_SECRET:
            return secret
        if not self.dev:
            raise MissingPiiKey(
                "TRACKFLOW_PII_SECRET is not set"
                + (" (or is the public default)" if secret else "")
                + ": set it to a long random secret, or pass --dev (TRACKFLOW_DEV=1) for a "
                "development run with a key generated for this data directory"
            )
        return _dev_key(self.data_dir)

    def has_dev_key(self) -> bool:
        return (self.data_dir / DEV_KEY_FILE).exists()

    @property
    def lake_dir(self) -> Path:
        return self.data_dir / "lake"

    @property
    def bootstrap_servers(self) -> str:
        """The broker URL(s) as a librdkafka ``bootstrap.servers`` string."""
        hosts = []
        for part in self.broker.split(";"):
            for host in part.split("://", 1)[-1].split(","):
                if host:
                    hosts.append(host)
        return ",".join(hosts)


def kafka_problems(s: Settings) -> list[str]:
    """Kafka settings that contradict each other, each named by its environment variable.

    Checked when the settings are built, so a worker refuses to start with a message rather
    than failing its first connection (or silently ignoring a TLS file it was given).
    """
    problems = []
    sasl = s.kafka_security_protocol.startswith("SASL_")
    tls = s.kafka_security_protocol in ("SSL", "SASL_SSL")
    if sasl and s.kafka_sasl_mechanism is None:
        problems.append(
            f"TRACKFLOW_KAFKA_SECURITY_PROTOCOL={s.kafka_security_protocol} needs "
            "TRACKFLOW_KAFKA_SASL_MECHANISM (PLAIN, SCRAM-SHA-256 or SCRAM-SHA-512)"
        )
    if not sasl and s.kafka_sasl_mechanism is not None:
        problems.append(
            "TRACKFLOW_KAFKA_SASL_MECHANISM is set but TRACKFLOW_KAFKA_SECURITY_PROTOCOL is "
            f"{s.kafka_security_protocol}: use SASL_SSL (or SASL_PLAINTEXT)"
        )
    if sasl and not s.kafka_sasl_username:
        problems.append("SASL needs TRACKFLOW_KAFKA_SASL_USERNAME")
    if sasl and not (s.kafka_sasl_password and s.kafka_sasl_password.get_secret_value()):
        problems.append("SASL needs TRACKFLOW_KAFKA_SASL_PASSWORD")
    if not sasl and (s.kafka_sasl_username or s.kafka_sasl_password):
        problems.append(
            "a SASL user name or password is set but TRACKFLOW_KAFKA_SECURITY_PROTOCOL is "
            f"{s.kafka_security_protocol}: use SASL_SSL (or SASL_PLAINTEXT)"
        )
    tls_files = {
        "TRACKFLOW_KAFKA_SSL_CAFILE": s.kafka_ssl_cafile,
        "TRACKFLOW_KAFKA_SSL_CERTFILE": s.kafka_ssl_certfile,
        "TRACKFLOW_KAFKA_SSL_KEYFILE": s.kafka_ssl_keyfile,
        "TRACKFLOW_KAFKA_SSL_KEY_PASSWORD": s.kafka_ssl_key_password,
    }
    given = [name for name, value in tls_files.items() if value is not None]
    if given and not tls:
        problems.append(
            f"{', '.join(given)} set but TRACKFLOW_KAFKA_SECURITY_PROTOCOL is "
            f"{s.kafka_security_protocol}: use SSL or SASL_SSL"
        )
    if (s.kafka_ssl_certfile is None) != (s.kafka_ssl_keyfile is None):
        problems.append("TRACKFLOW_KAFKA_SSL_CERTFILE and TRACKFLOW_KAFKA_SSL_KEYFILE go together")
    if s.kafka_ssl_key_password is not None and s.kafka_ssl_keyfile is None:
        problems.append("TRACKFLOW_KAFKA_SSL_KEY_PASSWORD without TRACKFLOW_KAFKA_SSL_KEYFILE")
    if s.min_insync_replicas is not None and s.min_insync_replicas > s.replication_factor:
        problems.append(
            f"TRACKFLOW_MIN_INSYNC_REPLICAS={s.min_insync_replicas} is above "
            f"TRACKFLOW_REPLICATION_FACTOR={s.replication_factor}: no write could succeed"
        )
    return problems


def _dev_key(data_dir: Path) -> str:
    path = data_dir / DEV_KEY_FILE
    if not path.exists():
        data_dir.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
        tmp.write_text(secrets.token_hex(32))
        tmp.chmod(0o600)
        try:
            os.link(tmp, path)  # first writer wins; every process then reads the same key
        except FileExistsError:
            pass
        finally:
            tmp.unlink()
    return path.read_text().strip()
