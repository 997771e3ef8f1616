"""Running the Faust worker in-process, with trackflow's settings and logging."""

from __future__ import annotations

import faust

from pipeline.app import create_app
from pipeline.runtime import heap, logs, task_dump
from pipeline.settings import Settings


def run_worker(settings: Settings) -> None:
    (settings.data_dir / "faust").mkdir(parents=True, exist_ok=True)
    json_logs = settings.log_format == "json"
    if json_logs:  # create_app already logs (topic creation), before Faust sets logging up
        logs.setup("json", settings.log_level)
    app, _ctx = create_app(settings)
    heap.register(app)  # free heap back to the OS each minute (RSS after a takeover)
    worker = faust.Worker(
        app,
        loglevel=settings.log_level,
        quiet=True,
        redirect_stdouts=False,
        override_logging=True,
        # None keeps Faust's own text format; JSON replaces its handlers entirely.
        logging_config=logs.logging_config("json", settings.log_level) if json_logs else None,
    )
    if json_logs:
        worker.spinner = None  # its progress characters would interleave with the JSON lines
    task_dump.install(worker.loop)  # kill -USR1: log every task's stack (a stuck worker)
    worker.execute_from_commandline()
