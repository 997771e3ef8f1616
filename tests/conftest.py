from __future__ import annotations

import hashlib
import os
import re
from collections.abc import Iterator
from pathlib import Path

import pytest

from pipeline.tools.broker import EmbeddedBroker
from tests.support import Deployment

# Tests are development runs: without TRACKFLOW_PII_SECRET, a key is generated per data
# directory (the worker refuses to start without a key otherwise).
os.environ.setdefault("TRACKFLOW_DEV", "1")


@pytest.fixture(scope="session")
def broker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[EmbeddedBroker]:
    """One embedded Tansu broker for the whole test session, on a free port."""
    log = tmp_path_factory.mktemp("broker") / "broker.log"
    with EmbeddedBroker(log=log) as b:
        yield b


@pytest.fixture
def deployment(
    broker: EmbeddedBroker, tmp_path: Path, request: pytest.FixtureRequest
) -> Iterator[Deployment]:
    # Unique per test, parametrized ones included: two cases cut to the same 40 characters
    # shared their topics and group, and the second saw the first's events as duplicates.
    name = re.sub(r"[^a-z0-9]+", "-", request.node.name.lower()).strip("-")[:40]
    digest = hashlib.blake2b(request.node.nodeid.encode(), digest_size=3).hexdigest()
    dep = Deployment(broker.url, tmp_path, f"t-{name}-{digest}")
    yield dep
    dep.stop()
