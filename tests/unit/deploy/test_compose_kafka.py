"""docker-compose.yml's Kafka, read statically (no Docker engine runs here): the containers
and the host each reach the broker at an address it advertises, replication fits the one
broker, and the README's compose quick start names services, ports and flags that exist."""

from __future__ import annotations

import re
import shlex
from pathlib import Path
from typing import Any

import typer
import yaml

from pipeline.cli import cli
from pipeline.runtime.readiness import register_probes

ROOT = Path(__file__).resolve().parents[3]


def compose() -> dict[str, Any]:
    return yaml.safe_load((ROOT / "docker-compose.yml").read_text())


def kafka_env() -> dict[str, str]:
    return {k: str(v) for k, v in compose()["services"]["kafka"]["environment"].items()}


def listeners(value: str) -> dict[str, tuple[str, int]]:
    """``NAME://host:port,...`` -> {NAME: (host, port)} (an empty host: every interface)."""
    found = {}
    for item in value.split(","):
        name, address = item.split("://")
        host, port = address.rsplit(":", 1)
        found[name] = (host, int(port))
    return found


def published(service: dict[str, Any]) -> dict[int, tuple[str, int]]:
    """Container port -> (host interface or "", host port) of the service's ``ports``."""
    found = {}
    for entry in service.get("ports", []):
        parts = str(entry).split(":")
        interface = parts[0] if len(parts) == 3 else ""
        found[int(parts[-1])] = (interface, int(parts[-2]))
    return found


def test_every_advertised_listener_is_declared_with_a_protocol() -> None:
    env = kafka_env()
    declared = listeners(env["KAFKA_LISTENERS"])
    advertised = listeners(env["KAFKA_ADVERTISED_LISTENERS"])
    protocols = dict(
        item.split(":") for item in env["KAFKA_LISTENER_SECURITY_PROTOCOL_MAP"].split(",")
    )
    assert set(advertised) <= set(declared)
    assert set(declared) <= set(protocols)
    for name, (_host, port) in advertised.items():
        assert declared[name][1] == port, f"{name} advertises another port than it listens on"
    assert env["KAFKA_CONTROLLER_LISTENER_NAMES"] not in advertised  # clients never see it
    assert env["KAFKA_INTER_BROKER_LISTENER_NAME"] in advertised


def test_the_workers_reach_kafka_at_an_advertised_container_address() -> None:
    doc = compose()
    advertised = listeners(kafka_env()["KAFKA_ADVERTISED_LISTENERS"]).values()
    kafka_names = {"kafka", doc["services"]["kafka"].get("hostname")}
    for name in ("worker-1", "worker-2"):
        url = doc["services"][name]["environment"]["TRACKFLOW_BROKER"]
        host, port = url.split("://", 1)[1].rsplit(":", 1)
        assert host in kafka_names
        assert (host, int(port)) in advertised, f"{name} bootstraps at {url}, not advertised"


def test_the_host_reaches_kafka_at_an_advertised_published_address() -> None:
    """The second listener: advertised as localhost, its port published on the host's
    loopback at the same number (a client follows the advertised address)."""
    advertised = listeners(kafka_env()["KAFKA_ADVERTISED_LISTENERS"])
    host_side = {name: port for name, (host, port) in advertised.items() if host == "localhost"}
    assert host_side, "no listener advertised for the host"
    ports = published(compose()["services"]["kafka"])
    for name, port in host_side.items():
        assert port in ports, f"{name} (localhost:{port}) is not published"
        interface, host_port = ports[port]
        assert host_port == port, f"{name} published on {host_port}, advertised on {port}"
        assert interface == "127.0.0.1"  # plaintext without authentication: loopback only
    container_side = [port for name, (host, port) in advertised.items() if host != "localhost"]
    for port in container_side:  # a container listener on the host would advertise kafka:
        assert port not in ports


def test_replication_fits_the_brokers_the_stack_runs() -> None:
    env = kafka_env()
    brokers = len(env["KAFKA_CONTROLLER_QUORUM_VOTERS"].split(","))
    assert "broker" in env["KAFKA_PROCESS_ROLES"]
    for key in (
        "KAFKA_OFFSETS_TOPIC_REPLICATION_FACTOR",
        "KAFKA_TRANSACTION_STATE_LOG_REPLICATION_FACTOR",
        "KAFKA_DEFAULT_REPLICATION_FACTOR",
    ):
        assert 1 <= int(env[key]) <= brokers, key
    assert int(env["KAFKA_MIN_INSYNC_REPLICAS"]) <= int(env["KAFKA_DEFAULT_REPLICATION_FACTOR"])
    for name in ("worker-1", "worker-2"):
        worker = compose()["services"][name]["environment"]
        assert 1 <= int(worker.get("TRACKFLOW_REPLICATION_FACTOR", 1)) <= brokers
    text = (ROOT / "docker-compose.yml").read_text()
    assert "min ISR 2" in text  # why one replica here, and what production uses


def test_worker_healthchecks_probe_a_path_the_worker_serves() -> None:
    class Recorder:
        def __init__(self) -> None:
            self.paths: list[str] = []

        def page(self, path: str) -> Any:
            self.paths.append(path)
            return lambda view: view

    app = Recorder()
    register_probes(app)  # type: ignore[arg-type]
    assert {"/health", "/ready"} <= set(app.paths)
    probes = [
        " ".join(compose()["services"]["worker-1"]["healthcheck"]["test"]),
        (ROOT / "Dockerfile").read_text(),
    ]
    for probe in probes:
        path = re.search(r"http://[^/'\"]+(/\w+)", probe)
        assert path is not None
        assert path.group(1) == "/health"  # liveness: never restart a recovering worker


def readme_section(title: str) -> str:
    text = (ROOT / "README.md").read_text()
    start = text.index(f"## {title}\n")
    end = text.find("\n## ", start + 1)
    return text[start : end if end != -1 else None]


def quick_start_commands() -> list[str]:
    section = readme_section("Quick start with Docker Compose")
    blocks = re.findall(r"```bash\n(.*?)```", section, re.S)
    lines = "\n".join(blocks).replace("\\\n", " ").splitlines()
    return [re.sub(r"\s+#.*$", "", line).strip() for line in lines if line.strip()]


def test_the_quick_start_uses_services_and_published_ports_that_exist() -> None:
    doc = compose()
    commands = quick_start_commands()
    assert any(c.startswith("docker compose up") for c in commands)
    for command in commands:
        if command.startswith("docker compose exec"):
            assert shlex.split(command)[3] in doc["services"], command
    host_ports = {p for svc in doc["services"].values() for _i, p in published(svc).values()}
    for port in re.findall(r"localhost:(\d+)", readme_section("Quick start with Docker Compose")):
        assert int(port) in host_ports, f"localhost:{port} is not published"
    env_file = next(c for c in commands if "> .env" in c)
    needed = set(re.findall(r"\$\{(\w+):\?", (ROOT / "docker-compose.yml").read_text()))
    assert needed, "compose requires secrets from .env"
    for name in needed:
        assert f"{name}=" in env_file, f".env of the quick start lacks {name}"


def test_the_quick_start_trackflow_commands_parse() -> None:
    """Every trackflow command in the quick start is a command with options that exist
    (parsed by the real CLI, not run)."""
    root = typer.main.get_command(cli)
    assert hasattr(root, "get_command")  # a group of commands
    seen = 0
    for command in quick_start_commands():
        words = shlex.split(command)
        if "trackflow" not in [Path(w).name for w in words]:
            continue
        args = words[[Path(w).name for w in words].index("trackflow") + 1 :]
        ctx = root.context_class(root, info_name="trackflow")
        sub = root.get_command(ctx, args[0])
        assert sub is not None, command
        sub.make_context(args[0], args[1:], parent=ctx)  # raises on an unknown option
        seen += 1
    assert seen >= 3
