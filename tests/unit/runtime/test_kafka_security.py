"""The Kafka client configuration: one builder per client library, and no client without it."""

from __future__ import annotations

import ast
import shutil
import ssl
import subprocess
import sys
from pathlib import Path
from typing import Any

import faust
import pytest
from faust.transport.drivers.aiokafka import credentials_to_aiokafka_auth
from pydantic import SecretStr, ValidationError

from pipeline.app import create_app
from pipeline.runtime.kafka_security import KafkaCluster, KafkaConfigError, cluster
from pipeline.settings import Settings

ROOT = Path(__file__).resolve().parents[3]
MECHANISMS = ("PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512")
PASSWORD = "pa55-w0rd-never-shown"
KEY_PASSWORD = "k3y-pa55-never-shown"


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """A CA, and a client certificate it signed whose key is encrypted with KEY_PASSWORD."""
    if not shutil.which("openssl"):
        pytest.skip("openssl not installed")
    d = tmp_path_factory.mktemp("pki")

    def openssl(command: str, *extra: str) -> None:
        args = ["openssl", *command.split(), *extra]
        subprocess.run(args, cwd=d, check=True, capture_output=True)

    openssl("req -x509 -newkey rsa:2048 -nodes -keyout ca.key -out ca.pem -days 2 -subj /CN=ca")
    openssl(
        "req -newkey rsa:2048 -keyout client.key -out client.csr -subj /CN=trackflow",
        "-passout",
        f"pass:{KEY_PASSWORD}",
    )
    openssl("x509 -req -in client.csr -CA ca.pem -CAkey ca.key -CAcreateserial -out client.pem")
    return {"ca": d / "ca.pem", "cert": d / "client.pem", "key": d / "client.key"}


def _settings(**kw: Any) -> Settings:
    return Settings(broker="kafka://k1:9093,k2:9093", dev=True, **kw)


def _tls(pki: dict[str, Path], **kw: Any) -> dict[str, Any]:
    return {
        "kafka_ssl_cafile": pki["ca"],
        "kafka_ssl_certfile": pki["cert"],
        "kafka_ssl_keyfile": pki["key"],
        "kafka_ssl_key_password": SecretStr(KEY_PASSWORD),
        **kw,
    }


def _sasl(mechanism: str, protocol: str, **kw: Any) -> Settings:
    return _settings(
        kafka_security_protocol=protocol,
        kafka_sasl_mechanism=mechanism,
        kafka_sasl_username="trackflow",
        kafka_sasl_password=SecretStr(PASSWORD),
        **kw,
    )


# --------------------------------------------------------------------------- defaults


def test_defaults_are_todays_plaintext_clients_with_one_replica() -> None:
    k = KafkaCluster.from_settings(_settings())
    servers = "k1:9093,k2:9093"
    assert k.confluent() == {"bootstrap.servers": servers, "security.protocol": "PLAINTEXT"}
    assert k.aiokafka() == {"bootstrap_servers": servers, "security_protocol": "PLAINTEXT"}
    assert k.faust() == {"broker": "kafka://k1:9093,k2:9093", "topic_replication_factor": 1}
    assert k.topic_config() == {}
    assert k.ssl_context() is None


def test_a_bootstrap_string_is_a_plaintext_cluster() -> None:
    k = cluster("127.0.0.1:9092")
    assert k.confluent() == {
        "bootstrap.servers": "127.0.0.1:9092",
        "security.protocol": "PLAINTEXT",
    }
    assert k.faust()["broker"] == "kafka://127.0.0.1:9092"
    assert cluster(k) is k


def test_replication_and_min_isr_reach_the_topic_settings() -> None:
    k = KafkaCluster.from_settings(_settings(replication_factor=3, min_insync_replicas=2))
    assert k.faust()["topic_replication_factor"] == 3
    assert k.topic_config() == {"min.insync.replicas": "2"}


# --------------------------------------------------------------------------- TLS


def test_tls_with_a_client_certificate(pki: dict[str, Path]) -> None:
    k = KafkaCluster.from_settings(_settings(kafka_security_protocol="SSL", **_tls(pki)))
    assert k.confluent() == {
        "bootstrap.servers": "k1:9093,k2:9093",
        "security.protocol": "SSL",
        "ssl.ca.location": str(pki["ca"]),
        "ssl.certificate.location": str(pki["cert"]),
        "ssl.key.location": str(pki["key"]),
        "ssl.key.password": KEY_PASSWORD,
        "ssl.endpoint.identification.algorithm": "https",
    }
    kwargs = k.aiokafka()
    assert kwargs["security_protocol"] == "SSL"
    context = kwargs["ssl_context"]
    assert isinstance(context, ssl.SSLContext)
    assert context.check_hostname
    assert context.verify_mode == ssl.CERT_REQUIRED
    assert context.cert_store_stats()["x509_ca"] == 1  # our CA, not the system store
    credentials = k.faust()["broker_credentials"]
    assert isinstance(credentials, faust.SSLCredentials)
    auth = credentials_to_aiokafka_auth(credentials)  # what Faust hands aiokafka
    assert auth["security_protocol"] == "SSL"
    assert auth["ssl_context"].check_hostname


def test_tls_without_a_ca_file_uses_the_system_store_and_can_skip_the_host_check() -> None:
    k = KafkaCluster.from_settings(
        _settings(kafka_security_protocol="SSL", kafka_ssl_check_hostname=False)
    )
    config = k.confluent()
    assert config["ssl.ca.location"] == "probe"
    assert config["ssl.endpoint.identification.algorithm"] == "none"
    assert "ssl.certificate.location" not in config
    context = k.ssl_context()
    assert context is not None
    assert not context.check_hostname
    assert context.verify_mode == ssl.CERT_REQUIRED  # the chain is still verified


def test_unreadable_tls_files_fail_at_start_up_with_the_setting_named(
    pki: dict[str, Path], tmp_path: Path
) -> None:
    with pytest.raises(KafkaConfigError, match=r"TRACKFLOW_KAFKA_SSL_CAFILE .*missing\.pem"):
        KafkaCluster.from_settings(
            _settings(kafka_security_protocol="SSL", kafka_ssl_cafile=tmp_path / "missing.pem")
        )
    wrong = _tls(pki, kafka_ssl_key_password=SecretStr("not-the-key-password"))
    with pytest.raises(KafkaConfigError, match="TRACKFLOW_KAFKA_SSL_KEY_PASSWORD") as err:
        KafkaCluster.from_settings(_settings(kafka_security_protocol="SSL", **wrong))
    assert "not-the-key-password" not in str(err.value)


# --------------------------------------------------------------------------- SASL


@pytest.mark.parametrize("mechanism", MECHANISMS)
@pytest.mark.parametrize("protocol", ["SASL_SSL", "SASL_PLAINTEXT"])
def test_each_sasl_mechanism_reaches_every_client_library(
    mechanism: str, protocol: str, pki: dict[str, Path]
) -> None:
    tls = {"kafka_ssl_cafile": pki["ca"]} if protocol == "SASL_SSL" else {}
    k = KafkaCluster.from_settings(_sasl(mechanism, protocol, **tls))
    config = k.confluent()
    assert config["security.protocol"] == protocol
    assert config["sasl.mechanism"] == mechanism
    assert (config["sasl.username"], config["sasl.password"]) == ("trackflow", PASSWORD)
    assert ("ssl.ca.location" in config) is (protocol == "SASL_SSL")

    kwargs = k.aiokafka()
    assert kwargs["security_protocol"] == protocol
    assert kwargs["sasl_mechanism"] == mechanism
    assert (kwargs["sasl_plain_username"], kwargs["sasl_plain_password"]) == (
        "trackflow",
        PASSWORD,
    )
    assert isinstance(kwargs.get("ssl_context"), ssl.SSLContext) is (protocol == "SASL_SSL")

    # Faust turns its credentials into aiokafka arguments for its consumer, producer and
    # topic creation: the same protocol, mechanism and user come out.
    app = faust.App("t", **k.faust())
    auth = credentials_to_aiokafka_auth(app.conf.broker_credentials, app.conf.ssl_context)
    assert auth["security_protocol"] == protocol
    assert auth["sasl_mechanism"] == mechanism
    assert (auth["sasl_plain_username"], auth["sasl_plain_password"]) == ("trackflow", PASSWORD)
    assert (auth["ssl_context"] is not None) is (protocol == "SASL_SSL")


def test_librdkafka_accepts_the_configuration_it_is_given() -> None:
    """Every key is one librdkafka knows (a typo would only show against a real cluster)."""
    from confluent_kafka import Producer

    for mechanism in MECHANISMS:
        Producer(_cluster_config(_sasl(mechanism, "SASL_SSL", kafka_ssl_check_hostname=False)))


def _cluster_config(settings: Settings) -> dict[str, Any]:
    return KafkaCluster.from_settings(settings).confluent()


# --------------------------------------------------------------------------- bad settings


@pytest.mark.parametrize(
    ("settings", "message"),
    [
        ({"kafka_security_protocol": "SASL_SSL"}, "needs TRACKFLOW_KAFKA_SASL_MECHANISM"),
        (
            {
                "kafka_security_protocol": "SASL_SSL",
                "kafka_sasl_mechanism": "PLAIN",
                "kafka_sasl_password": "x",
            },
            "SASL needs TRACKFLOW_KAFKA_SASL_USERNAME",
        ),
        (
            {
                "kafka_security_protocol": "SASL_PLAINTEXT",
                "kafka_sasl_mechanism": "SCRAM-SHA-512",
                "kafka_sasl_username": "u",
            },
            "SASL needs TRACKFLOW_KAFKA_SASL_PASSWORD",
        ),
        ({"kafka_sasl_mechanism": "PLAIN"}, "TRACKFLOW_KAFKA_SECURITY_PROTOCOL is PLAINTEXT"),
        ({"kafka_sasl_username": "u"}, "use SASL_SSL"),
        ({"kafka_ssl_cafile": "/ca.pem"}, "TRACKFLOW_KAFKA_SSL_CAFILE set but"),
        (
            {"kafka_security_protocol": "SSL", "kafka_ssl_certfile": "/c.pem"},
            "TRACKFLOW_KAFKA_SSL_CERTFILE and TRACKFLOW_KAFKA_SSL_KEYFILE go together",
        ),
        (
            {"kafka_security_protocol": "SSL", "kafka_ssl_key_password": "x"},
            "TRACKFLOW_KAFKA_SSL_KEY_PASSWORD without TRACKFLOW_KAFKA_SSL_KEYFILE",
        ),
        ({"replication_factor": 2, "min_insync_replicas": 3}, "no write could succeed"),
        ({"kafka_sasl_mechanism": "GSSAPI"}, "PLAIN"),
        ({"kafka_security_protocol": "TLS"}, "SASL_SSL"),
    ],
)
def test_contradictory_settings_are_refused_with_the_variable_named(
    settings: dict[str, Any], message: str
) -> None:
    with pytest.raises(ValidationError, match=message):
        _settings(**settings)


def test_the_worker_refuses_bad_kafka_settings_with_a_message_not_a_traceback(
    tmp_path: Path,
) -> None:
    env = {
        "PATH": "/usr/bin:/bin",
        "TRACKFLOW_DEV": "1",
        "TRACKFLOW_DATA_DIR": str(tmp_path),
        "TRACKFLOW_KAFKA_SECURITY_PROTOCOL": "SASL_SSL",
        "TRACKFLOW_KAFKA_SASL_MECHANISM": "SCRAM-SHA-512",
        "TRACKFLOW_KAFKA_SASL_PASSWORD": PASSWORD,
    }
    proc = subprocess.run(
        [sys.executable, "-m", "pipeline", "worker"],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 2, proc.stderr
    assert "TRACKFLOW_KAFKA_SASL_USERNAME" in proc.stderr
    assert "Traceback" not in proc.stderr
    assert PASSWORD not in proc.stderr + proc.stdout


# --------------------------------------------------------------------------- secrets


def test_secrets_never_show_in_reprs(pki: dict[str, Path]) -> None:
    settings = _sasl("SCRAM-SHA-512", "SASL_SSL", **_tls(pki))
    k = KafkaCluster.from_settings(settings)
    shown = [repr(settings), str(settings), repr(k), repr(k.faust()["broker_credentials"])]
    for text in shown:
        assert PASSWORD not in text
        assert KEY_PASSWORD not in text


# --------------------------------------------------------------------------- every client


def test_the_worker_app_wires_the_cluster_into_every_client(tmp_path: Path) -> None:
    settings = _sasl(
        "SCRAM-SHA-256",
        "SASL_PLAINTEXT",
        data_dir=tmp_path,
        replication_factor=3,
        min_insync_replicas=2,
    )
    app, ctx = create_app(settings, ensure_topics=False)
    assert app.conf.topic_replication_factor == 3
    assert isinstance(app.conf.broker_credentials, faust.SASLCredentials)
    assert app.conf.broker_credentials.mechanism.value == "SCRAM-SHA-256"
    expected = KafkaCluster.from_settings(settings).aiokafka()
    assert ctx.start_offsets.kafka.aiokafka() == expected  # type: ignore[attr-defined]
    for batchlog in (ctx.tables.dedup, ctx.tables.aggregate_progress, ctx.tables.combine_windows):
        assert batchlog.kafka is not None
        assert batchlog.kafka.aiokafka() == expected
    isr = {"min.insync.replicas": "2"}
    for topic in (ctx.topics.raw, ctx.topics.dlq, ctx.topics.links, ctx.topics.partials):
        assert topic.config == isr
    for table in (
        ctx.tables.dedup,
        ctx.tables.identity,
        ctx.tables.aggregate_progress,
        ctx.tables.combine_windows,
    ):
        assert dict(table.changelog_topic.config or {}).items() >= isr.items(), table.name


CLIENTS = frozenset(
    {
        "Producer",
        "Consumer",
        "AdminClient",
        "AIOKafkaConsumer",
        "AIOKafkaProducer",
        "AIOKafkaClient",
        "AIOKafkaAdminClient",
        "App",  # faust.App
    }
)
# Calls whose result carries a KafkaCluster's settings: the builders and the cluster itself.
BUILDERS = frozenset({"confluent", "aiokafka", "faust", "from_settings", "cluster"})
CONNECTION_KEYWORDS = frozenset({"bootstrap", "bootstrap_servers", "config", "kafka", "broker"})
SECURITY_MODULE = Path("pipeline/runtime/kafka_security.py")
SETTINGS_MODULE = Path("pipeline/settings.py")


def _name(call: ast.Call) -> str:
    func = call.func
    return func.attr if isinstance(func, ast.Attribute) else getattr(func, "id", "")


def _connection_arguments(call: ast.Call) -> list[ast.expr]:
    """Where a constructor's connection comes from: the first positional argument, ``**``
    splats and the keywords that name a connection."""
    found: list[ast.expr] = call.args[:1]
    for kw in call.keywords:
        if kw.arg is None or kw.arg in CONNECTION_KEYWORDS:
            found.append(kw.value)
    return found


def _uses_builder(nodes: list[ast.expr]) -> bool:
    return any(
        isinstance(inner, ast.Call) and _name(inner) in BUILDERS
        for node in nodes
        for inner in ast.walk(node)
    )


def _spells_a_connection(call: ast.Call) -> bool:
    """A literal ``bootstrap.servers`` or ``bootstrap_servers=``: a connection made here."""
    if any(kw.arg == "bootstrap_servers" for kw in call.keywords):
        return True
    return any(
        isinstance(inner, ast.Constant) and inner.value == "bootstrap.servers"
        for argument in [*call.args, *(kw.value for kw in call.keywords)]
        for inner in ast.walk(argument)
    )


def _scopes(tree: ast.Module) -> list[tuple[str, set[str], ast.FunctionDef | ast.AsyncFunctionDef]]:
    """(owner, parameter names, function): a method's owner is its class, so a wrapper class
    constructed with the connection is checked where it is constructed."""
    scopes = []
    for node in ast.walk(tree):
        if isinstance(node, ast.ClassDef):
            for item in node.body:
                if isinstance(item, ast.FunctionDef | ast.AsyncFunctionDef):
                    scopes.append((node.name, {a.arg for a in item.args.args}, item))
    for node in tree.body:
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
            scopes.append((node.name, {a.arg for a in node.args.args}, node))
    return scopes


def client_constructions_without_builder(sources: dict[Path, str]) -> list[str]:
    """Client constructions whose connection does not come from a KafkaCluster.

    A construction passes when its connection argument is built by ``KafkaCluster``
    (``.confluent()``, ``.aiokafka()``, ``.faust()``, ``cluster()``, ``from_settings()``).
    One that takes it from a parameter of its function (or from ``self``) is a pass-through:
    its function, or its class for a method, becomes a client constructor itself, and is
    checked the same way wherever it is called. Anything else is an offender.
    """
    trees = {path: ast.parse(source) for path, source in sources.items()}
    clients = set(CLIENTS)
    offenders: dict[str, str] = {}
    changed = True
    while changed:
        changed = False
        for path, tree in trees.items():
            for owner, params, function in _scopes(tree):
                params = params | {"self"}
                for call in ast.walk(function):
                    if not isinstance(call, ast.Call) or _name(call) not in clients:
                        continue
                    where = f"{path}:{call.lineno} {_name(call)}(...)"
                    connection = _connection_arguments(call)
                    if _uses_builder(connection):
                        continue
                    passed_through = not _spells_a_connection(call) and any(
                        isinstance(inner, ast.Name) and inner.id in params
                        for node in connection
                        for inner in ast.walk(node)
                    )
                    if passed_through:
                        if owner not in clients:
                            clients.add(owner)
                            changed = True
                    else:
                        offenders[where] = where
    return sorted(offenders)


def settings_connection_reads(sources: dict[Path, str]) -> list[str]:
    """``.bootstrap_servers`` or ``settings.broker`` read outside the cluster builder: a
    connection made from the settings without their TLS and SASL."""
    found = []
    for path, source in sources.items():
        if path in (SECURITY_MODULE, SETTINGS_MODULE):
            continue
        for node in ast.walk(ast.parse(source)):
            if not isinstance(node, ast.Attribute):
                continue
            settings_broker = (
                node.attr == "broker"
                and isinstance(node.value, ast.Name)
                and node.value.id == "settings"
            )
            if node.attr == "bootstrap_servers" or settings_broker:
                found.append(f"{path}:{node.lineno} .{node.attr}")
    return found


def _trackflow_sources() -> dict[Path, str]:
    sources = {}
    for package in ("pipeline", "agents", "tables"):
        for path in sorted((ROOT / package).rglob("*.py")):
            relative = path.relative_to(ROOT)
            if relative != SECURITY_MODULE:
                sources[relative] = path.read_text()
    return sources


def test_every_kafka_client_trackflow_opens_is_configured_by_the_builders() -> None:
    """pipeline/, agents/ and tables/: every Producer, Consumer, AdminClient, aiokafka client
    and faust.App takes its connection from a KafkaCluster (bench/ and tests/ run their own
    plaintext embedded broker)."""
    sources = _trackflow_sources()
    constructors = sum(src.count(f"{c}(") for src in sources.values() for c in CLIENTS)
    assert constructors >= 6  # the scan sees the constructors (it is not looking at nothing)
    offenders = client_constructions_without_builder(sources)
    offenders += settings_connection_reads(sources)
    assert not offenders, "Kafka connections not built by KafkaCluster:\n" + "\n".join(offenders)


def test_the_construction_check_can_fail() -> None:
    def check(source: str) -> list[str]:
        return client_constructions_without_builder({Path("x.py"): source})

    assert check("def f(b):\n    return Producer({'bootstrap.servers': b})\n") == [
        "x.py:2 Producer(...)"
    ]
    assert check("def f():\n    return faust.App('x', broker='kafka://a')\n") == ["x.py:2 App(...)"]
    assert check("def f(k):\n    return AIOKafkaConsumer(**k.aiokafka(), group_id=None)\n") == []
    wrapper = (
        "class W:\n"
        "    def __init__(self, config):\n"
        "        self.p = Producer({**config, 'acks': 'all'})\n"
        "def ok(settings):\n"
        "    return W(KafkaCluster.from_settings(settings).confluent())\n"
    )
    assert check(wrapper) == []
    bad_caller = wrapper + "def bad(host):\n    return W({'bootstrap.servers': host})\n"
    assert check(bad_caller) == ["x.py:7 W(...)"]
    local = "def f():\n    b = '127.0.0.1:9092'\n    return Producer(b)\n"
    assert check(local) == ["x.py:3 Producer(...)"]
    reads = {Path("y.py"): "def f(settings):\n    return g(settings.bootstrap_servers)\n"}
    assert settings_connection_reads(reads) == ["y.py:2 .bootstrap_servers"]
