"""Running the Faust worker in-process, with trackflow's settings and logging."""

from __future__ import annotations

import faust

from pipeline.app import create_app
from pipeline.runtime import task_dump
from pipeline.settings import Settings


def run_worker(settings: Settings) -> None:
    (settings.data_dir / "faust").mkdir(parents=True, exist_ok=True)
    app, _ctx = create_app(settings)
    worker = faust.Worker(
        app,
        loglevel=settings.log_level,
        quiet=True,
        redirect_stdouts=False,
        override_logging=True,
    )
    task_dump.install(worker.loop)  # kill -USR1: log every task's stack (a stuck worker)
    worker.execute_from_commandline()
