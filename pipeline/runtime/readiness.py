"""``/health`` (liveness) and ``/ready`` (readiness) on the worker's web server.

Orchestrators restart a container whose liveness probe fails and hold back traffic and
rollouts while readiness fails, so the two answer different questions:

- ``/health`` is 200 whenever the worker's event loop answers: restart only a hung process.
- ``/ready`` is 200 once the worker has received its assignment and Faust finished
  recovering its tables for it, and 503 with the reason while it waits for its first
  assignment, rebalances or recovers. A rolling update that waits for ``/ready`` starts the
  next worker only when this one processes again; a worker assigned no partitions (more
  workers than partitions) is ready: it is a standby member of the group.
"""

from __future__ import annotations

from typing import Any

import faust


def readiness(app: faust.App) -> tuple[bool, str]:
    """(ready, why): ready once the assignment is recovered, not while a rebalance runs."""
    tables: Any = app.tables  # a TableManager: recovery is not on its abstract type
    recovery = tables.recovery
    if not recovery.completed.is_set():
        return False, "waiting for the first partition assignment and table recovery"
    if app.rebalancing:
        return False, "rebalancing"
    if recovery.in_recovery:
        return False, "recovering tables"
    return True, "assignment received and tables recovered"


def register_probes(app: faust.App) -> None:
    @app.page("/health")
    async def health(web: Any, request: Any) -> Any:
        return web.json({"status": "ok"})

    @app.page("/ready")
    async def ready(web: Any, request: Any) -> Any:
        ok, why = readiness(app)
        body: dict[str, Any] = {"ready": ok, "reason": why}
        if ok:
            body["assigned_partitions"] = len(app.consumer.assignment())
        return web.json(body, status=200 if ok else 503)
