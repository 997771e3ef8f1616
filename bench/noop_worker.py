"""A Faust agent that does nothing with each message: the per-message floor of Faust itself.

Run by bench/run.py: ``python bench/noop_worker.py BROKER TOPIC EXPECTED RESULT_FILE``.
"""

from __future__ import annotations

import os
import sys
import tempfile
import time

import faust
import orjson


def main() -> None:
    broker, topic_name, expected, result_file = (
        sys.argv[1],
        sys.argv[2],
        int(sys.argv[3]),
        sys.argv[4],
    )
    app = faust.App(
        f"bench-noop-{os.getpid()}",
        broker=broker,
        store="memory://",
        datadir=tempfile.mkdtemp(prefix="bench-noop-"),  # not the caller's directory
        autodiscover=False,
        web_enabled=False,
        broker_rebalance_timeout=2,
        consumer_auto_offset_reset="earliest",
    )
    topic = app.topic(topic_name, value_serializer="raw", key_serializer="raw")
    state = {"n": 0, "first": 0.0}

    @app.agent(topic, name="noop")
    async def noop(stream: faust.StreamT) -> None:
        async for _ in stream.events():
            if not state["n"]:
                state["first"] = time.perf_counter()
            state["n"] += 1
            if state["n"] == expected:
                elapsed = time.perf_counter() - state["first"]
                with open(result_file, "wb") as fh:
                    fh.write(orjson.dumps({"messages": expected, "seconds": elapsed}))
                os._exit(0)

    faust.Worker(app, loglevel="warning", quiet=True).execute_from_commandline()


if __name__ == "__main__":
    main()
