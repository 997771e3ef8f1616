"""Privacy on every worker: the follower task and the timer that finishes deletions.

The follower (pipeline/runtime/privacy.py) keeps this worker's ``PrivacyState`` current for
validate's barrier. The timer runs ``Privacy.resume`` every
``TRACKFLOW_PRIVACY_RESUME_SECONDS`` when a delete request is not done (its command was
killed); the deletion's lock lets one process at a time do it, the others skip the round.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

import faust

from pipeline.names import TOPIC_LINKS
from pipeline.runtime.context import Context
from pipeline.runtime.privacy import PrivacyFollower

log = logging.getLogger(__name__)


def register(app: faust.App, ctx: Context) -> Any:
    follower: PrivacyFollower = ctx.privacy

    @app.task
    async def follow_privacy_requests() -> None:
        await follower.run()

    @app.timer(interval=ctx.settings.privacy_resume_seconds)
    async def resume_privacy_deletions() -> None:
        if not follower.state.unfinished():
            return
        try:
            done = await asyncio.to_thread(resume, ctx)
        except Exception:
            log.exception("privacy: resuming deletions failed; retried in %ss",
                          ctx.settings.privacy_resume_seconds)  # fmt: skip
            ctx.metrics.privacy_deletions.labels("failed").inc()
            return
        ctx.metrics.privacy_deletions.labels("done").inc(len(done))

    return follow_privacy_requests


def resume(ctx: Context) -> list[Any]:
    """Finish unfinished deletions (in a thread: DuckDB and file rewrites block)."""
    from pipeline.lake.views import connect
    from pipeline.privacy.deletion import Busy
    from pipeline.privacy.kafka import RequestLog
    from pipeline.privacy.service import Privacy
    from pipeline.runtime.kafka_security import KafkaCluster

    settings = ctx.settings
    log_ = RequestLog(
        KafkaCluster.from_settings(settings),
        ctx.privacy.topic,
        settings.topic(TOPIC_LINKS),
    )
    privacy = Privacy(
        settings.lake_dir,
        lambda: connect(settings.data_dir, ctx.domain.plan),
        ctx.domain.rules,
        log_,
        settings.pii_key(),
        log_.read_all,
    )
    try:
        return privacy.resume(wait=False)
    except Busy:
        return []  # another process is on it
    finally:
        log_.close()
