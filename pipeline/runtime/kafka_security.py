"""How every Kafka client trackflow opens connects, built in one place from the settings.

trackflow talks to Kafka through three client libraries: Faust (the worker's consumer,
producer and topic creation, over aiokafka), aiokafka directly (start offsets, changelog
catch-up, the identity-map follower) and librdkafka (``confluent_kafka``: topic creation,
``trackflow produce`` and ``simulate``). Each spells TLS and SASL its own way; a client that
missed them would fail only against a secured cluster, so every construction site takes its
arguments from a :class:`KafkaCluster` (``tests/unit/runtime/test_kafka_security.py`` checks
the source for client constructors that do not).

A bare bootstrap string (the embedded broker, tests, benchmarks) is plaintext with
replication 1, as before these settings existed.
"""

from __future__ import annotations

import logging
import ssl
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pydantic import SecretStr

from pipeline.settings import SaslMechanism, SecurityProtocol, Settings

KAFKA_LOGGER = "trackflow.kafka"


class KafkaConfigError(ValueError):
    """Kafka settings that cannot work (an unreadable certificate, a bad key password)."""


@dataclass(frozen=True)
class KafkaCluster:
    """The cluster and how to reach it; ``repr`` never shows a secret (``SecretStr``)."""

    bootstrap: str
    url: str = ""  # the Faust broker URL as configured (default: kafka:// + bootstrap)
    protocol: SecurityProtocol = "PLAINTEXT"
    cafile: Path | None = None
    certfile: Path | None = None
    keyfile: Path | None = None
    key_password: SecretStr | None = None
    check_hostname: bool = True
    sasl_mechanism: SaslMechanism | None = None
    sasl_username: str | None = None
    sasl_password: SecretStr | None = None
    replication_factor: int = 1
    min_insync_replicas: int | None = None
    # librdkafka logs straight to stderr unless given a Python logger: with JSON logs on,
    # its lines must go through logging too.
    route_client_logs: bool = False

    @classmethod
    def from_settings(cls, settings: Settings) -> KafkaCluster:
        """The settings' cluster; loads the TLS files once, so a bad one fails here."""
        cluster = cls(
            bootstrap=settings.bootstrap_servers,
            url=settings.broker,
            protocol=settings.kafka_security_protocol,
            cafile=settings.kafka_ssl_cafile,
            certfile=settings.kafka_ssl_certfile,
            keyfile=settings.kafka_ssl_keyfile,
            key_password=settings.kafka_ssl_key_password,
            check_hostname=settings.kafka_ssl_check_hostname,
            sasl_mechanism=settings.kafka_sasl_mechanism,
            sasl_username=settings.kafka_sasl_username,
            sasl_password=settings.kafka_sasl_password,
            replication_factor=settings.replication_factor,
            min_insync_replicas=settings.min_insync_replicas,
            route_client_logs=settings.log_format == "json",
        )
        cluster.ssl_context()
        return cluster

    @property
    def tls(self) -> bool:
        return self.protocol in ("SSL", "SASL_SSL")

    @property
    def sasl(self) -> bool:
        return self.protocol in ("SASL_PLAINTEXT", "SASL_SSL")

    def ssl_context(self) -> ssl.SSLContext | None:
        """The Python TLS context (Faust, aiokafka); None for a plaintext protocol."""
        if not self.tls:
            return None
        try:
            context = ssl.create_default_context(cafile=str(self.cafile) if self.cafile else None)
        except (OSError, ssl.SSLError) as exc:
            raise KafkaConfigError(
                f"TRACKFLOW_KAFKA_SSL_CAFILE {self.cafile}: cannot load CA certificates ({exc})"
            ) from None
        if self.certfile and self.keyfile:
            password = self.key_password.get_secret_value() if self.key_password else None
            try:
                context.load_cert_chain(str(self.certfile), str(self.keyfile), password)
            except (OSError, ssl.SSLError) as exc:
                raise KafkaConfigError(
                    f"TRACKFLOW_KAFKA_SSL_CERTFILE {self.certfile} / TRACKFLOW_KAFKA_SSL_KEYFILE "
                    f"{self.keyfile}: cannot load the client certificate and key ({exc}; a "
                    "wrong TRACKFLOW_KAFKA_SSL_KEY_PASSWORD fails here too)"
                ) from None
        # Without the host check a certificate any CA-signed broker holds would do; turning
        # it off (a cluster reached by IP) still verifies the chain.
        context.check_hostname = self.check_hostname
        return context

    def confluent(self) -> dict[str, Any]:
        """librdkafka configuration (``Producer``, ``Consumer``, ``AdminClient``)."""
        config: dict[str, Any] = {
            "bootstrap.servers": self.bootstrap,
            "security.protocol": self.protocol,
        }
        if self.tls:
            config["ssl.ca.location"] = str(self.cafile) if self.cafile else "probe"
            if self.certfile and self.keyfile:
                config["ssl.certificate.location"] = str(self.certfile)
                config["ssl.key.location"] = str(self.keyfile)
            if self.key_password is not None:
                config["ssl.key.password"] = self.key_password.get_secret_value()
            config["ssl.endpoint.identification.algorithm"] = (
                "https" if self.check_hostname else "none"
            )
        if self.sasl:
            config["sasl.mechanism"] = self.sasl_mechanism
            config["sasl.username"] = self.sasl_username
            config["sasl.password"] = _secret(self.sasl_password)
        if self.route_client_logs:
            config["logger"] = logging.getLogger(KAFKA_LOGGER)
        return config

    def aiokafka(self) -> dict[str, Any]:
        """Keyword arguments of ``AIOKafkaConsumer`` / ``AIOKafkaProducer``."""
        kwargs: dict[str, Any] = {
            "bootstrap_servers": self.bootstrap,
            "security_protocol": self.protocol,
        }
        if self.tls:
            kwargs["ssl_context"] = self.ssl_context()
        if self.sasl:
            kwargs["sasl_mechanism"] = self.sasl_mechanism
            kwargs["sasl_plain_username"] = self.sasl_username
            kwargs["sasl_plain_password"] = _secret(self.sasl_password)
        return kwargs

    def faust(self) -> dict[str, Any]:
        """Keyword arguments of ``faust.App``: broker, credentials, replication factor.

        Faust hands the credentials to its consumer, its producer and the client that
        creates its topics and changelogs.
        """
        import faust

        kwargs: dict[str, Any] = {
            "broker": self.url or ";".join(f"kafka://{h}" for h in self.bootstrap.split(",")),
            "topic_replication_factor": self.replication_factor,
        }
        context = self.ssl_context()
        if self.sasl:
            kwargs["broker_credentials"] = faust.SASLCredentials(
                username=self.sasl_username,
                password=_secret(self.sasl_password),
                mechanism=self.sasl_mechanism,
                ssl_context=context,  # None: SASL_PLAINTEXT
            )
        elif context is not None:
            kwargs["broker_credentials"] = faust.SSLCredentials(context)
        return kwargs

    def topic_config(self) -> dict[str, str]:
        """Per-topic configuration of topics trackflow creates (min ISR when set)."""
        if self.min_insync_replicas is None:
            return {}
        return {"min.insync.replicas": str(self.min_insync_replicas)}


def cluster(target: KafkaCluster | str) -> KafkaCluster:
    """``target`` itself, or a plaintext cluster at a bootstrap string (embedded broker)."""
    return target if isinstance(target, KafkaCluster) else KafkaCluster(bootstrap=target)


def _secret(value: SecretStr | None) -> str | None:
    return value.get_secret_value() if value is not None else None
