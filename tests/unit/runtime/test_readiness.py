"""/ready's decision: the first assignment recovered, and no rebalance or recovery running."""

from __future__ import annotations

import asyncio
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from pipeline.runtime.readiness import readiness, register_probes


def _app(*, completed: bool, rebalancing: bool = False, in_recovery: bool = False) -> Any:
    event = asyncio.Event()
    if completed:
        event.set()
    recovery = SimpleNamespace(completed=event, in_recovery=in_recovery)
    return SimpleNamespace(tables=SimpleNamespace(recovery=recovery), rebalancing=rebalancing)


@pytest.mark.parametrize(
    ("state", "ready", "reason"),
    [
        ({"completed": False}, False, "first partition assignment"),
        ({"completed": False, "rebalancing": True}, False, "first partition assignment"),
        ({"completed": True, "rebalancing": True}, False, "rebalancing"),
        ({"completed": True, "in_recovery": True}, False, "recovering"),
        ({"completed": True}, True, "recovered"),
    ],
)
def test_readiness(state: dict[str, bool], ready: bool, reason: str) -> None:
    ok, why = readiness(_app(**state))
    assert ok is ready
    assert reason in why


class _Web:
    def json(self, value: Any, *, status: int = 200) -> tuple[int, Any]:
        return status, value


def _views(app: Any) -> dict[str, Any]:
    views: dict[str, Any] = {}

    def page(path: str) -> Any:
        def register(view: Any) -> Any:
            views[path] = view
            return view

        return register

    app.page = page
    register_probes(app)
    return views


def test_ready_answers_503_with_the_reason_then_200_with_the_assignment() -> None:
    app = _app(completed=False)
    app.consumer = SimpleNamespace(assignment=lambda: {("events.raw", 0), ("events.raw", 1)})
    views = _views(app)
    status, body = asyncio.run(views["/ready"](_Web(), None))
    assert status == 503
    assert body["ready"] is False
    assert "assignment" in body["reason"]
    app.tables.recovery.completed.set()
    status, body = asyncio.run(views["/ready"](_Web(), None))
    assert (status, body["ready"], body["assigned_partitions"]) == (200, True, 2)
    assert asyncio.run(views["/health"](_Web(), None)) == (200, {"status": "ok"})


def test_the_worker_app_serves_the_probes(tmp_path: Path) -> None:
    """Wired into the real app (a rewrite of observability.py once dropped them: 404)."""
    from pipeline.app import create_app
    from pipeline.settings import Settings

    app, _ctx = create_app(Settings(data_dir=tmp_path, dev=True), ensure_topics=False)
    assert {"/health", "/ready", "/metrics"} <= set(app.web.views)
