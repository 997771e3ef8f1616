"""A two-agent Faust worker for ``test_seek_back``: how a stage's seek back to a hole fares
against Faust's fetcher on a real broker.

Both agents read one single-partition topic, as sink_events and aggregate both read
``events.stitched``. ``all`` acks everything at once. ``one`` reads an event at a time
through ``OrderedInput`` like the sink, slowly, so its buffer stays full and the fetcher
is half-way through a fetched batch when ``one`` seeks; and the first time the offsets
from ``--drop`` are handed to it, it throws them away, as if Faust had never delivered
them (what the sixth soak saw: the events in the rollups, missing from the lake). Writes
what ``one`` processed, in order, and the counted gaps as JSON, once the group's commit has
passed the last offset (or at the timeout), then exits. With ``--drop-always`` those offsets never
reach ``one``: a hole to give up on.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import sys
import time
from pathlib import Path
from typing import Any

import faust
import orjson
from faust.types import TP

from pipeline.runtime import commit_offsets, read_offsets, rewind
from pipeline.runtime.ordered_input import OrderedInput
from pipeline.runtime.start_offsets import BrokerStartOffsets
from pipeline.runtime.telemetry import PipelineMetrics


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--bootstrap", required=True)
    p.add_argument("--topic", required=True)
    p.add_argument("--app-id", required=True)
    p.add_argument("--drop", type=int, required=True, help="the first offset not handed over")
    p.add_argument("--drop-count", type=int, default=1)
    p.add_argument("--drop-always", action="store_true", help="a hole that never fills")
    p.add_argument("--patience", type=float, default=10.0)
    p.add_argument("--total", type=int, required=True)
    p.add_argument("--out", type=Path, required=True)
    p.add_argument("--timeout", type=float, default=90.0)
    args = p.parse_args()
    logging.basicConfig(level=logging.INFO)

    app = faust.App(
        args.app_id,
        broker=f"kafka://{args.bootstrap}",
        store="memory://",
        autodiscover=False,
        topic_partitions=1,
        stream_buffer_maxsize=64,
        web_enabled=False,
        consumer_auto_offset_reset="earliest",
        broker_commit_interval=0.5,
        broker_rebalance_timeout=2.0,  # as the tests' workers: a first join waits for it
        broker_session_timeout=6.0,
        broker_heartbeat_interval=2.0,
        stream_wait_empty=False,
        logging_config=None,
    )
    topic = app.topic(args.topic, key_serializer="raw", value_serializer="raw", partitions=1)
    metrics = PipelineMetrics()
    offsets = BrokerStartOffsets(args.bootstrap, args.app_id)
    rewind.install(app, offsets)
    commit_offsets.install()
    read_offsets.install()
    processed: list[int] = []
    started = time.monotonic()

    async def finish(reason: str) -> None:
        if reason == "done":  # wait for the group's commit to pass the last offset
            tp = TP(args.topic, 0)
            while time.monotonic() - started < args.timeout:
                if await offsets.start(tp) == args.total:
                    break
                await asyncio.sleep(0.2)
            else:
                reason = f"not committed: the group stands at {await offsets.start(tp)}"
        gaps = metrics.registry.get_sample_value(
            "trackflow_offset_gaps_total",
            {"stage": "one", "topic": args.topic, "partition": "0"},
        )
        args.out.write_bytes(
            orjson.dumps({"reason": reason, "processed": processed, "gaps": gaps or 0})
        )
        os._exit(0)

    @app.agent(topic, name="all")
    async def all_(stream: Any) -> None:
        async for event in stream.noack().events():
            await stream.ack(event)

    @app.agent(topic, name="one")
    async def one(stream: Any) -> None:
        ordered = OrderedInput(app, "one", metrics, offsets, patience=args.patience)
        dropped: set[int] = set()
        async for event in stream.noack().events():
            offset = event.message.offset
            held_back = args.drop <= offset < args.drop + args.drop_count
            if held_back and (args.drop_always or offset not in dropped):
                dropped.add(offset)
                continue  # never handed over
            admitted = await ordered.admit([event])
            for e in admitted.already:
                await stream.ack(e)
            for e in admitted.process:
                processed.append(e.message.offset)
                await asyncio.sleep(0.002)
                await stream.ack(e)
            if processed and processed[-1] == args.total - 1:
                await finish("done")

    @app.timer(1.0)
    async def deadline() -> None:
        if time.monotonic() - started > args.timeout:
            await finish("timeout")

    sys.argv = [sys.argv[0], "worker", "--loglevel", "info"]
    app.main()


if __name__ == "__main__":
    main()
